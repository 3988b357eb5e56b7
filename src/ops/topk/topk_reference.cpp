// The CPU oracle for topk: for each row, collect the selectable entries (in range, neither NaN
// nor -inf) in column order, stable-sort them by value descending, keep the first k, pad -1.
// Comparing the values as floats makes -0.0 and +0.0 equal, and the stable sort then keeps the
// lower column first among equal values: exactly the contract's order, with nothing clever.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cppmega/error.hpp"
#include "cppmega/numerics.hpp"
#include "ops/topk/topk_args.hpp"

namespace cppmega::topk_op {

namespace {

struct Entry {
  float value;
  std::int32_t column;
};

}  // namespace

void topk_reference(const TopkArgs& a) {
  const std::int64_t T = a.T, k = a.k;
  std::int32_t* out = a.out.ptr<std::int32_t>();
  std::vector<Entry> row;
  for (std::int64_t r = 0; r < a.rows; ++r) {
    const std::int64_t b = r / a.S, s = r % a.S;
    const std::int64_t offset = b * a.stride_b + s * a.stride_s;
    std::int64_t lo = a.starts ? std::clamp<std::int64_t>(load_index(*a.starts, r), 0, T) : 0;
    std::int64_t hi = a.ends ? std::clamp<std::int64_t>(load_index(*a.ends, r), 0, T) : T;
    row.clear();
    for (std::int64_t j = lo; j < hi; ++j) {
      float v;
      if (a.scores.dtype == DType::f32)
        v = a.scores.ptr<const float>()[offset + j];
      else
        v = num::bf16_to_f32(a.scores.ptr<const std::uint16_t>()[offset + j]);
      if (std::isnan(v) || v == -INFINITY) continue;  // never selected
      row.push_back({v, static_cast<std::int32_t>(j)});
    }
    std::stable_sort(row.begin(), row.end(), [](const Entry& x, const Entry& y) { return x.value > y.value; });
    std::int32_t* o = out + r * k;
    const std::int64_t n = std::min<std::int64_t>(k, static_cast<std::int64_t>(row.size()));
    for (std::int64_t j = 0; j < n; ++j) o[j] = row[j].column;
    for (std::int64_t j = n; j < k; ++j) o[j] = -1;
  }
}

}  // namespace cppmega::topk_op
