// fp8_gemv: the decode-time product of an FP8 weight and a few activation rows
// (docs/contracts.md section 3).
//
//   y[m, n] = sum_k deq(x)[m, k] * deq(w)[n, k]      (f32 accumulation)
//
// w [N, K] e4m3 (row-major like a Linear weight); x [M, K] f32/bf16/f16, or e4m3 with x_scale.
// Scales are dequantisation multipliers; their granularity follows from their shape:
//   w_scale: a host float or a 1-element f32 tensor (per tensor), f32 [N] (per row), or
//            f32 [ceil(N/128), ceil(K/128)] (rank 2: per (128,128) block);
//   x_scale: only with e4m3 x, and then required: host float / 1-element tensor (per tensor),
//            f32 [M] (per row), or f32 [M, ceil(K/128)] (rank 2: per (1,128) block).
// Where both readings fit (N == 1, M == 1, a single block) they mean the same product.
// Scales are applied after the dot products: block scales multiply each 128-wide partial sum
// (k in [128j, 128j+128)), per-tensor and per-row scales multiply the final sum.
// out [M, N]: f32, bf16 or f16 (rounded once from the f32 result).
// Strides: the innermost dim of x, w and out must be contiguous; their row strides are free
// (rows of out must not overlap). Scale tensors must be contiguous.
// Empty calls: M == 0 or N == 0 give an empty out and launch nothing; K == 0 gives y = 0
// (the empty sum), written with one memset.
// The CUDA backend's fast path covers 1 <= M <= 64 with a 16-byte aligned w (base and row
// stride); any other call (M > 64, misaligned w) runs a correct, slower general kernel.
#pragma once

#include <optional>

#include "cppmega/ops/fp8.hpp"

namespace cppmega {

inline constexpr int kFp8GemvMaxFastM = 64;

void fp8_gemv_out(const TensorView& x, const TensorView& w, const ScaleArg& w_scale,
                  const std::optional<ScaleArg>& x_scale, const TensorView& out, const CallOptions& opts = {});
Tensor fp8_gemv(const TensorView& x, const TensorView& w, const ScaleArg& w_scale,
                const std::optional<ScaleArg>& x_scale = std::nullopt, DType out_dtype = DType::bf16,
                const CallOptions& opts = {});

}  // namespace cppmega
