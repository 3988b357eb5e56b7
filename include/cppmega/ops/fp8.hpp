// Per-tensor FP8 ops (docs/contracts.md sections 2-3).
//
// Each op has an `_out` form that writes caller-provided tensors (what the Python layer
// uses, so outputs come from the caller's allocator) and an allocating form.
#pragma once

#include <optional>
#include <utility>

#include "cppmega/dispatch.hpp"
#include "cppmega/numerics.hpp"
#include "cppmega/tensor.hpp"

namespace cppmega {

using num::Fp8Format;
DType fp8_dtype(Fp8Format f);
const char* fp8_format_name(Fp8Format f);
Fp8Format parse_fp8_format(const std::string& s);  // "e4m3" | "e5m2" (InvalidArgument otherwise)

// A dequantisation scale: a host value, or a 1-element f32 tensor on the inputs' device.
struct ScaleArg {
  float value = 1.0f;
  std::optional<TensorView> tensor;
  ScaleArg(float v = 1.0f) : value(v) {}  // NOLINT: a float is the common case
  ScaleArg(const TensorView& t) : tensor(t) {}  // NOLINT
};

// max |x| over f32/bf16/f16 x of any shape into `out` (f32, one element, on x's device).
// 0 for an empty x; NaN anywhere gives NaN; Inf gives Inf.
void fp8_amax_out(const TensorView& x, const TensorView& out, const CallOptions& opts = {});
Tensor fp8_amax(const TensorView& x, const CallOptions& opts = {});

// q = encode(x * (1/scale)); the format is `out`'s dtype (e4m3 or e5m2).
void fp8_quantize_out(const TensorView& x, const ScaleArg& scale, const TensorView& out, const CallOptions& opts = {});
Tensor fp8_quantize(const TensorView& x, const ScaleArg& scale, Fp8Format format = Fp8Format::e4m3,
                    const CallOptions& opts = {});

// x = decode(q) * scale, rounded to `out`'s dtype (f32, bf16 or f16).
void fp8_dequantize_out(const TensorView& q, const ScaleArg& scale, const TensorView& out, const CallOptions& opts = {});
Tensor fp8_dequantize(const TensorView& q, const ScaleArg& scale, DType out_dtype, const CallOptions& opts = {});

// Current scaling in one call: amax, scale = amax/fmax (pow2: rounded up), q = quantize.
// check_finite: a NaN/Inf amax raises NonFinite and q is not written (one host sync);
// without it no host sync happens and the scale becomes NaN.
struct PackOptions {
  Fp8Format format = Fp8Format::e4m3;
  bool pow2_scale = false;
  bool check_finite = true;
};
void fp8_pack_out(const TensorView& x, const TensorView& q, const TensorView& scale, const PackOptions& pack = {},
                  const CallOptions& opts = {});
std::pair<Tensor, Tensor> fp8_pack(const TensorView& x, const PackOptions& pack = {}, const CallOptions& opts = {});

}  // namespace cppmega
