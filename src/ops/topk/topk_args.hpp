// Internal to the topk op: the checked, normalised arguments every backend receives.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "cppmega/ops/topk.hpp"

namespace cppmega::topk_op {

// Rows are flattened: row r is (b, s) = (r / S, r % S) and starts at
// scores.data + b * stride_b + s * stride_s (elements). For [R,T] input, S = R and stride_b = 0.
struct TopkArgs {
  TensorView scores;                   // f32 | bf16, rank 2 or 3
  std::int64_t k = 1;                  // >= 1, <= INT32_MAX
  std::optional<TensorView> starts;    // i32 | i64, R elements, contiguous
  std::optional<TensorView> ends;      // i32 | i64, R elements, contiguous
  TensorView out;                      // i32, R * k elements, contiguous
  std::int64_t rows = 0;               // R (= B * S)
  std::int64_t S = 0;                  // rows per batch entry (R for rank 2)
  std::int64_t T = 0;                  // columns, <= INT32_MAX
  std::int64_t stride_b = 0, stride_s = 0;
};

// The clamped valid range [lo, hi) of row r (hi >= lo), shared by every backend's host code.
inline std::int64_t load_index(const TensorView& t, std::int64_t r) {
  return t.dtype == DType::i64 ? t.ptr<const std::int64_t>()[r] : t.ptr<const std::int32_t>()[r];
}

// AUTO's shape bucket for a call (topk_ops.cpp); bench cases use the same key.
std::string bucket(DType dtype, std::int64_t rows, std::int64_t T, std::int64_t k);

// reference (topk_reference.cpp): a stable sort of each row's selectable entries.
void topk_reference(const TopkArgs& a);

#if CPPMEGA_WITH_CUDA
// cuda (topk_cuda.cu): radix select on an order-preserving key, one thread-block cluster per row.
void topk_cuda(const TopkArgs& a, void* stream);
#endif

}  // namespace cppmega::topk_op
