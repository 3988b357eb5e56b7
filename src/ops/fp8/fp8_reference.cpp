// The CPU oracle for the per-tensor FP8 ops: one element at a time, the arithmetic of the
// contract written out literally (f32 reciprocal taken once, f32 multiply, then encode).
#include <cmath>

#include "core/host_values.hpp"
#include "cppmega/error.hpp"
#include "ops/fp8/fp8_args.hpp"

namespace cppmega::fp8 {

namespace {

using host::load_f32;
using host::store_f32;

float scale_value(const ScaleArg& s) { return s.tensor ? *s.tensor->ptr<const float>() : s.value; }

float amax_of(const TensorView& x) {
  float m = 0.0f;
  const std::int64_t n = x.numel();
  for (std::int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(load_f32(x, i));
    if (std::isnan(a)) return a;  // NaN is never dropped
    if (a > m) m = a;
  }
  return m;
}

void quantize_with(const TensorView& x, float scale, const TensorView& q, Fp8Format fmt) {
  const float inv = 1.0f / scale;
  auto* out = q.ptr<std::uint8_t>();
  const std::int64_t n = x.numel();
  for (std::int64_t i = 0; i < n; ++i) out[i] = num::f32_to_fp8(load_f32(x, i) * inv, fmt);
}

}  // namespace

void amax_reference(const AmaxArgs& a) { *a.out.ptr<float>() = amax_of(a.x); }

void quantize_reference(const QuantizeArgs& a) { quantize_with(a.x, scale_value(a.scale), a.out, a.format); }

void dequantize_reference(const DequantizeArgs& a) {
  const float s = scale_value(a.scale);
  const auto* q = a.q.ptr<const std::uint8_t>();
  const std::int64_t n = a.q.numel();
  for (std::int64_t i = 0; i < n; ++i) store_f32(a.out, i, num::fp8_to_f32(q[i], a.format) * s);
}

void pack_reference(const PackArgs& a) {
  const float amax = amax_of(a.x);
  if (!std::isfinite(amax) && a.pack.check_finite) {
    *a.scale.ptr<float>() = num::scale_from_amax(amax, a.pack.format, false);  // NaN, as every backend
    fail(ErrorKind::NonFinite, "fp8_pack: x contains ", std::isnan(amax) ? "NaN" : "Inf", " (amax = ", amax,
         "); refusing to derive a scale (pass check_finite=false to get a NaN scale instead); q was not written");
  }
  const float scale = num::scale_from_amax(amax, a.pack.format, a.pack.pow2_scale);
  quantize_with(a.x, scale, a.q, a.pack.format);
  *a.scale.ptr<float>() = scale;
}

}  // namespace cppmega::fp8
