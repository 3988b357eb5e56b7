// The per-tensor FP8 ops: contract checks (run once per call, before any backend), the
// backend tables, and the public C++ API.
#include <bit>
#include <cmath>

#include "core/checks.hpp"
#include "cppmega/ops/fp8.hpp"
#include "ops/fp8/fp8_args.hpp"
#include "ops/registry.hpp"

namespace cppmega {

DType fp8_dtype(Fp8Format f) { return f == Fp8Format::e4m3 ? DType::e4m3 : DType::e5m2; }
const char* fp8_format_name(Fp8Format f) { return f == Fp8Format::e4m3 ? "e4m3" : "e5m2"; }
Fp8Format parse_fp8_format(const std::string& s) {
  if (s == "e4m3" || s == "float8_e4m3fn" || s == "e4m3fn") return Fp8Format::e4m3;
  if (s == "e5m2" || s == "float8_e5m2") return Fp8Format::e5m2;
  invalid_argument("fp8: format must be e4m3 or e5m2, got '", s, "'");
}

namespace fp8 {
namespace {

constexpr auto kFloat = {DType::f32, DType::bf16, DType::f16};

Fp8Format format_of(DType t) { return t == DType::e4m3 ? Fp8Format::e4m3 : Fp8Format::e5m2; }

// AUTO bucket for elementwise ops: input dtype and the power of two that bounds numel.
std::string elementwise_bucket(const TensorView& x) {
  const std::uint64_t n = static_cast<std::uint64_t>(x.numel());
  int lg = n <= 1024 ? 10 : static_cast<int>(std::bit_width(n - 1));
  return std::string(dtype_name(x.dtype)) + ":n<=2^" + std::to_string(lg);
}

void check_scale(const char* op, const ScaleArg& s, const TensorView& x) {
  if (s.tensor) {
    check::dtype_in(op, "scale", *s.tensor, {DType::f32});
    check::numel(op, "scale", *s.tensor, 1);
    check::same_device(op, "scale", *s.tensor, "x", x);
    check::not_null(op, "scale", *s.tensor);
  } else if (!(std::isfinite(s.value) && s.value > 0.0f)) {
    invalid_argument(op, ": scale must be finite and > 0, got ", s.value);
  }
}


template <class Args>
Backend<Args> reference_backend(void (*fn)(const Args&), const char* features) {
  return {"reference", DeviceKind::cpu, features, nullptr, [fn](const Args& a, const CallOptions&) { fn(a); }};
}

#if CPPMEGA_WITH_CUDA
template <class Args>
Backend<Args> cuda_backend(void (*fn)(const Args&, void*), const char* features) {
  return {"cuda", DeviceKind::cuda, features, nullptr, [fn](const Args& a, const CallOptions& o) { fn(a, o.stream); }};
}
#endif

const OpTable<AmaxArgs>& amax_table() {
  static const OpTable<AmaxArgs> t = [] {
    OpTable<AmaxArgs> t("fp8_amax", [](const AmaxArgs& a) { return a.x.device; },
                        [](const AmaxArgs& a) { return elementwise_bucket(a.x); });
    t.add(reference_backend(&amax_reference, "f32/bf16/f16, any size"));
#if CPPMEGA_WITH_CUDA
    t.add(cuda_backend(&amax_cuda, "f32/bf16/f16, any size; 16-byte loads, one atomic per block"));
#endif
    return t;
  }();
  return t;
}

const OpTable<QuantizeArgs>& quantize_table() {
  static const OpTable<QuantizeArgs> t = [] {
    OpTable<QuantizeArgs> t("fp8_quantize", [](const QuantizeArgs& a) { return a.x.device; },
                            [](const QuantizeArgs& a) { return elementwise_bucket(a.x); });
    t.add(reference_backend(&quantize_reference, "f32/bf16/f16 -> e4m3/e5m2"));
#if CPPMEGA_WITH_CUDA
    t.add(cuda_backend(&quantize_cuda, "f32/bf16/f16 -> e4m3/e5m2; vectorised, any size and alignment"));
#endif
    return t;
  }();
  return t;
}

const OpTable<DequantizeArgs>& dequantize_table() {
  static const OpTable<DequantizeArgs> t = [] {
    OpTable<DequantizeArgs> t("fp8_dequantize", [](const DequantizeArgs& a) { return a.q.device; },
                              [](const DequantizeArgs& a) { return elementwise_bucket(a.out); });
    t.add(reference_backend(&dequantize_reference, "e4m3/e5m2 -> f32/bf16/f16"));
#if CPPMEGA_WITH_CUDA
    t.add(cuda_backend(&dequantize_cuda, "e4m3/e5m2 -> f32/bf16/f16; vectorised"));
#endif
    return t;
  }();
  return t;
}

const OpTable<PackArgs>& pack_table() {
  static const OpTable<PackArgs> t = [] {
    OpTable<PackArgs> t("fp8_pack", [](const PackArgs& a) { return a.x.device; },
                        [](const PackArgs& a) { return elementwise_bucket(a.x); });
    t.add(reference_backend(&pack_reference, "f32/bf16/f16 -> e4m3/e5m2, optional pow2 scale"));
#if CPPMEGA_WITH_CUDA
    t.add(cuda_backend(&pack_cuda,
                       "f32/bf16/f16 -> e4m3/e5m2; scale derived on the device; one host sync only for the finite check; "
                       "single-launch path for small tensors"));
#endif
    return t;
  }();
  return t;
}

template <class T>
OpListing listing(const OpTable<T>& t) {
  return {t.op(), t.list()};
}

}  // namespace

std::vector<OpListing> listings() {
  return {listing(amax_table()), listing(quantize_table()), listing(dequantize_table()), listing(pack_table())};
}

}  // namespace fp8

using namespace fp8;

void fp8_amax_out(const TensorView& x, const TensorView& out, const CallOptions& opts) {
  const char* op = "fp8_amax";
  check::dtype_in(op, "x", x, kFloat);
  check::contiguous(op, "x", x);
  check::not_null(op, "x", x);
  check::dtype_in(op, "out", out, {DType::f32});
  check::numel(op, "out", out, 1);
  check::same_device(op, "out", out, "x", x);
  check::not_null(op, "out", out);
  amax_table().dispatch({x, out}, opts);
}

Tensor fp8_amax(const TensorView& x, const CallOptions& opts) {
  Tensor out = Tensor::empty(DType::f32, {}, x.device);
  fp8_amax_out(x, out, opts);
  return out;
}

void fp8_quantize_out(const TensorView& x, const ScaleArg& scale, const TensorView& out, const CallOptions& opts) {
  const char* op = "fp8_quantize";
  check::dtype_in(op, "x", x, kFloat);
  check::contiguous(op, "x", x);
  check::not_null(op, "x", x);
  check::dtype_in(op, "out", out, {DType::e4m3, DType::e5m2});
  check::same_shape(op, "out", out, "x", x);
  check::same_device(op, "out", out, "x", x);
  check::contiguous(op, "out", out);
  check::not_null(op, "out", out);
  check_scale(op, scale, x);
  quantize_table().dispatch({x, scale, out, format_of(out.dtype)}, opts);
}

Tensor fp8_quantize(const TensorView& x, const ScaleArg& scale, Fp8Format format, const CallOptions& opts) {
  Tensor out = Tensor::empty_like(x, fp8_dtype(format), x.device);
  fp8_quantize_out(x, scale, out, opts);
  return out;
}

void fp8_dequantize_out(const TensorView& q, const ScaleArg& scale, const TensorView& out, const CallOptions& opts) {
  const char* op = "fp8_dequantize";
  check::dtype_in(op, "q", q, {DType::e4m3, DType::e5m2});
  check::contiguous(op, "q", q);
  check::not_null(op, "q", q);
  check::dtype_in(op, "out", out, kFloat);
  check::same_shape(op, "out", out, "q", q);
  check::same_device(op, "out", out, "q", q);
  check::contiguous(op, "out", out);
  check::not_null(op, "out", out);
  check_scale(op, scale, q);
  dequantize_table().dispatch({q, scale, out, format_of(q.dtype)}, opts);
}

Tensor fp8_dequantize(const TensorView& q, const ScaleArg& scale, DType out_dtype, const CallOptions& opts) {
  Tensor out = Tensor::empty_like(q, out_dtype, q.device);
  fp8_dequantize_out(q, scale, out, opts);
  return out;
}

void fp8_pack_out(const TensorView& x, const TensorView& q, const TensorView& scale, const PackOptions& pack,
                  const CallOptions& opts) {
  const char* op = "fp8_pack";
  check::dtype_in(op, "x", x, kFloat);
  check::contiguous(op, "x", x);
  check::not_null(op, "x", x);
  if (q.dtype != fp8_dtype(pack.format))
    invalid_argument(op, ": q must have the format's dtype ", fp8_format_name(pack.format), ", got ", q.describe());
  check::same_shape(op, "q", q, "x", x);
  check::same_device(op, "q", q, "x", x);
  check::contiguous(op, "q", q);
  check::not_null(op, "q", q);
  check::dtype_in(op, "scale", scale, {DType::f32});
  check::numel(op, "scale", scale, 1);
  check::same_device(op, "scale", scale, "x", x);
  check::not_null(op, "scale", scale);
  pack_table().dispatch({x, q, scale, pack}, opts);
}

std::pair<Tensor, Tensor> fp8_pack(const TensorView& x, const PackOptions& pack, const CallOptions& opts) {
  Tensor q = Tensor::empty_like(x, fp8_dtype(pack.format), x.device);
  Tensor scale = Tensor::empty(DType::f32, {}, x.device);
  fp8_pack_out(x, q, scale, pack, opts);
  return {std::move(q), std::move(scale)};
}

}  // namespace cppmega
