// The CPU oracle for block-scaled FP8: one block at a time, the contract written out literally
// (block amax with NaN propagation, the shared scale rule, f32 multiply, encode).
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "core/host_values.hpp"
#include "cppmega/error.hpp"
#include "ops/fp8_blocks/fp8_blocks_args.hpp"

namespace cppmega::fp8_blocks {

namespace {

using host::load_f32;
using host::store_f32;

// Calls f(element index) for every element of block (b, rb, cb), row by row.
template <class F>
void for_block(const Geometry& g, std::int64_t b, std::int64_t rb, std::int64_t cb, F&& f) {
  const std::int64_t r0 = rb * g.block_rows, r1 = std::min(g.rows, r0 + g.block_rows);
  const std::int64_t c0 = cb * g.block_cols, c1 = std::min(g.cols, c0 + g.block_cols);
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t c = c0; c < c1; ++c) f((b * g.rows + r) * g.cols + c);
}

}  // namespace

void quantize_reference(const QuantArgs& a) {
  const Geometry& g = a.geo;
  auto* q = a.q.ptr<std::uint8_t>();
  std::string first_bad;
  std::int64_t idx = 0;
  for (std::int64_t b = 0; b < g.batch; ++b)
    for (std::int64_t rb = 0; rb < g.row_blocks(); ++rb)
      for (std::int64_t cb = 0; cb < g.col_blocks(); ++cb, ++idx) {
        float amax = 0.0f;
        for_block(g, b, rb, cb, [&](std::int64_t i) {
          const float v = std::fabs(load_f32(a.x, i));
          if (std::isnan(v) || std::isnan(amax))
            amax = std::numeric_limits<float>::quiet_NaN();  // NaN is never dropped
          else if (v > amax)
            amax = v;
        });
        float inv;
        if (a.mx) {
          a.scales.ptr<std::uint8_t>()[idx] = mx_scale(amax, inv);
        } else {
          a.scales.ptr<float>()[idx] = block_scale(amax, a.format, a.pow2, inv);
        }
        if (!std::isfinite(amax) && first_bad.empty())
          first_bad = detail::cat(" (first in the block at scale index ", idx, ")");
        for_block(g, b, rb, cb, [&](std::int64_t i) { q[i] = num::f32_to_fp8(load_f32(a.x, i) * inv, a.format); });
      }
  if (a.check_finite && !first_bad.empty()) throw_non_finite(a.mx, first_bad);
}

void dequantize_reference(const DequantArgs& a) {
  const Geometry& g = a.geo;
  const auto* q = a.q.ptr<const std::uint8_t>();
  std::int64_t idx = 0;
  for (std::int64_t b = 0; b < g.batch; ++b)
    for (std::int64_t rb = 0; rb < g.row_blocks(); ++rb)
      for (std::int64_t cb = 0; cb < g.col_blocks(); ++cb, ++idx) {
        const float s = a.mx ? num::e8m0_to_f32(a.scales.ptr<const std::uint8_t>()[idx]) : a.scales.ptr<const float>()[idx];
        for_block(g, b, rb, cb, [&](std::int64_t i) { store_f32(a.out, i, num::fp8_to_f32(q[i], a.format) * s); });
      }
}

}  // namespace cppmega::fp8_blocks
