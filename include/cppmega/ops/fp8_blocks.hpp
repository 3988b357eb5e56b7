// Block-scaled FP8 (docs/contracts.md section 3, "Block scaling" and "MXFP8").
//
// fp8_quantize_blocks: x [..., M, K] f32/bf16/f16 -> q (e4m3/e5m2, x's shape) and one f32
// dequantisation scale per block, scales [..., ceil(M/bm), ceil(K/128)]:
//   (1,128)   per-token blocks (DeepSeek activations): scales = x.shape[:-1] + [ceil(K/128)], rank >= 1;
//   (128,128) weight tiles: scales = x.shape[:-2] + [ceil(M/128), ceil(K/128)], rank >= 2.
// Each block: amax over the block, scale = scale_from_amax(amax) exactly as fp8_pack (amax/fmax,
// an all-zero block gets 1, pow2 rounds up to a power of two), q = encode(x * (1/scale)) with the
// reciprocal taken once in f32. Partial edge blocks (M or K not multiples of the block) are
// blocks of their own. A block holding NaN/Inf gets a NaN scale and NaN codes.
//
// mxfp8_quantize: x [..., K] with K % 32 == 0 -> q e4m3 and one e8m0 scale byte per 32 values,
// scales = x.shape[:-1] + [K/32]. Scale exponent X = floor(log2(amax)) - 8 (8 = e4m3's largest
// exponent, the OCP MX rule) clamped to [-127, 127]; an all-zero block (amax 0) and blocks with
// amax below 2^-127 get X = -127 (byte 0x00: the clamp of floor(log2 0) = -inf). q =
// encode_e4m3(x * 2^-X) with saturation (the multiply by a power of two is exact). A block
// holding NaN/Inf gets the NaN byte 0xFF and NaN codes.
//
// check_finite (both quantizers): a NaN/Inf block raises NonFinite after the outputs have been
// written (one pass over x; on CUDA one stream synchronisation per call, like fp8_pack). The
// written outputs are those of check_finite=false. Without the check nothing synchronises.
//
// Dequantize: out = decode(q) * scale of q's block (f32 multiply), rounded to out's dtype.
// All tensors must be contiguous; outputs of the allocating forms live on x's device.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "cppmega/ops/fp8.hpp"

namespace cppmega {

enum class Fp8BlockShape : std::uint8_t { b1x128, b128x128 };
inline constexpr int kFp8BlockK = 128;  // block length along K for both shapes
inline constexpr int kMxBlock = 32;     // MXFP8 block length

int fp8_block_rows(Fp8BlockShape b);                       // 1 or 128
const char* fp8_block_shape_name(Fp8BlockShape b);         // "1x128" | "128x128"
Fp8BlockShape parse_fp8_block_shape(const std::string& s);  // "1x128", "128x128" (InvalidArgument otherwise)

// The shape of the scales tensor for x's shape (rank >= 1; rank >= 2 for 128x128).
std::vector<std::int64_t> fp8_block_scales_shape(const TensorView& x, Fp8BlockShape block);
std::vector<std::int64_t> mxfp8_scales_shape(const TensorView& x);

struct BlockQuantOptions {
  Fp8BlockShape block = Fp8BlockShape::b1x128;
  Fp8Format format = Fp8Format::e4m3;
  bool pow2_scale = false;
  bool check_finite = true;
};

// q: x's shape, the format's dtype; scales: f32 of fp8_block_scales_shape(x).
void fp8_quantize_blocks_out(const TensorView& x, const TensorView& q, const TensorView& scales,
                             const BlockQuantOptions& bq = {}, const CallOptions& opts = {});
std::pair<Tensor, Tensor> fp8_quantize_blocks(const TensorView& x, const BlockQuantOptions& bq = {},
                                              const CallOptions& opts = {});

// out (f32/bf16/f16, q's shape) = decode(q) * scales[block]; q e4m3 or e5m2.
void fp8_dequantize_blocks_out(const TensorView& q, const TensorView& scales, const TensorView& out,
                               Fp8BlockShape block = Fp8BlockShape::b1x128, const CallOptions& opts = {});
Tensor fp8_dequantize_blocks(const TensorView& q, const TensorView& scales, DType out_dtype,
                             Fp8BlockShape block = Fp8BlockShape::b1x128, const CallOptions& opts = {});

struct MxQuantOptions {
  bool check_finite = true;
};

// q: x's shape, e4m3; scales: e8m0 of mxfp8_scales_shape(x).
void mxfp8_quantize_out(const TensorView& x, const TensorView& q, const TensorView& scales, const MxQuantOptions& mx = {},
                        const CallOptions& opts = {});
std::pair<Tensor, Tensor> mxfp8_quantize(const TensorView& x, const MxQuantOptions& mx = {}, const CallOptions& opts = {});

// out (f32/bf16/f16, q's shape) = decode_e4m3(q) * 2^(scale byte - 127) (byte 0xFF: NaN).
void mxfp8_dequantize_out(const TensorView& q, const TensorView& scales, const TensorView& out, const CallOptions& opts = {});
Tensor mxfp8_dequantize(const TensorView& q, const TensorView& scales, DType out_dtype, const CallOptions& opts = {});

}  // namespace cppmega
