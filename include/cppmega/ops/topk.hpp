// Exact top-k selection for DeepSeek Sparse Attention (docs/contracts.md section 4, `topk`).
//
// For every row of `scores` ([R,T], or [B,S,T] with starts/ends [B,S]) returns the column
// indices of the k largest selectable entries, sorted by value descending, ties broken by the
// lower column index. An entry is selectable when its column lies in the row's range
// [start, end) (both clamped to [0, T]; missing starts = 0, missing ends = T) and its value is
// neither NaN nor -inf. Values compare as floats, so -0.0 ties with +0.0. Rows with fewer than k
// selectable entries are padded with -1 after the selected ones; any k >= 1 is allowed.
// The result is deterministic: the same input gives the same output on every backend, always.
#pragma once

#include <cstdint>
#include <optional>

#include "cppmega/dispatch.hpp"
#include "cppmega/tensor.hpp"

namespace cppmega {

// scores: f32 or bf16, [R,T] or [B,S,T]; the innermost dim contiguous, the outer strides free
//         (so a row stride larger than T works).
// starts, ends: optional i32 (or i64) [R] / [B,S], contiguous.
// out: i32 [R,k] / [B,S,k], contiguous, on the scores' device.
void topk_out(const TensorView& scores, std::int64_t k, const std::optional<TensorView>& starts,
              const std::optional<TensorView>& ends, const TensorView& out, const CallOptions& opts = {});

// Allocating form: returns i32 [R,k] (or [B,S,k]) on the scores' device.
Tensor topk(const TensorView& scores, std::int64_t k, const std::optional<TensorView>& starts = std::nullopt,
            const std::optional<TensorView>& ends = std::nullopt, const CallOptions& opts = {});

}  // namespace cppmega
