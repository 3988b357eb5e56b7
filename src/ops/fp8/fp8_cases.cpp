// Bench cases of the per-tensor FP8 ops (fp8_amax, fp8_quantize, fp8_dequantize, fp8_pack).
// Every output is checked bit for bit against the reference backend run on CPU copies of the
// same inputs. No C++ peer exists for these ops; the copy ceiling is the yardstick.
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>

#include "bench/cases.hpp"
#include "cppmega/error.hpp"
#include "cppmega/ops/fp8.hpp"

namespace cppmega::fp8 {

namespace {

using bench::Case;
using bench::CaseParams;
using bench::CaseSuite;
using bench::views;

constexpr Fp8Format kFormat = Fp8Format::e4m3;
// Dequantisation scale of the dequantize case: not a power of two, so the bf16 rounding of
// decode(q) * scale is exercised.
constexpr float kDequantScale = 0.0137f;

// Must equal `elementwise_bucket` in fp8_ops.cpp: AUTO looks receipts up by this key
// (tests/cpp/test_bench.cpp checks that a receipt routes the op).
std::string elementwise_bucket(DType dtype, std::int64_t n) {
  const auto un = static_cast<std::uint64_t>(n);
  const int lg = un <= 1024 ? 10 : static_cast<int>(std::bit_width(un - 1));
  return std::string(dtype_name(dtype)) + ":n<=2^" + std::to_string(lg);
}

// A float as a JSON number that reads back to the same value.
std::string json_number(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
  return buf;
}

// One fp8 op on one input tensor with one or more outputs; `invoke` calls the public API.
class Fp8Case final : public Case {
 public:
  using Invoke = std::function<void(const TensorView& in, const std::vector<TensorView>& outs, const CallOptions&)>;

  // `input_host` is the CPU input; `outputs` lists each output's dtype and shape.
  Fp8Case(const CaseParams& p, Tensor input_host, std::vector<std::pair<DType, std::vector<std::int64_t>>> outputs,
          Invoke invoke, bool scalar_metric)
      : input_host_(std::move(input_host)), invoke_(std::move(invoke)), scalar_metric_(scalar_metric) {
    device = p.device;
    stream = p.stream;
    input_ = device.is_cuda() ? input_host_.to(device) : input_host_;
    for (auto& [t, shape] : outputs) {
      outputs_.push_back(Tensor::empty(t, shape.data(), static_cast<int>(shape.size()), device));
      reference_.push_back(Tensor::empty(t, shape.data(), static_cast<int>(shape.size()), Device::cpu()));
    }
  }

  void run(const CallOptions& opts) override { invoke_(input_.view(), views(outputs_), opts); }

  void compute_reference() override {
    if (have_reference_) return;
    invoke_(input_host_.view(), views(reference_), CallOptions{"reference", nullptr});
    have_reference_ = true;
  }

  bench::Parity check(const CallOptions& opts) override {
    compute_reference();
    for (auto& o : outputs_) bench::poison(o.view(), stream);
    run(opts);
    bench::sync_stream(device, stream);
    std::int64_t diff = 0;
    for (std::size_t i = 0; i < outputs_.size(); ++i) {
      const Tensor got = device.is_cuda() ? outputs_[i].to(Device::cpu()) : outputs_[i];
      diff += bench::mismatched_bytes(got.view(), reference_[i].view());
      if (scalar_metric_) {  // one f32 value: report its distance, require bit equality
        float a = 0, b = 0;
        std::memcpy(&a, got.data(), 4);
        std::memcpy(&b, reference_[i].data(), 4);
        return {diff == 0, "abs_diff", static_cast<double>(std::fabs(a - b)), 0.0};
      }
    }
    return {diff == 0, "mismatched_bytes", static_cast<double>(diff), 0.0};
  }

 private:
  Tensor input_host_, input_;
  std::vector<Tensor> outputs_, reference_;
  Invoke invoke_;
  bool scalar_metric_;
  bool have_reference_ = false;
};

void check_params(const char* op, const CaseParams& p) {
  if (p.n < 1) invalid_argument(op, " bench case: n must be >= 1, got ", p.n);
  if (!is_floating(p.dtype)) invalid_argument(op, " bench case: dtype must be f32, bf16 or f16, got ", dtype_name(p.dtype));
}

void describe(Case& c, const char* op, const CaseParams& p, double bytes_per_element, const std::string& extra) {
  c.op = op;
  c.dtype = dtype_name(p.dtype);
  c.name = c.dtype + " n=" + std::to_string(p.n);
  c.bucket = elementwise_bucket(p.dtype, p.n);
  c.shape = {p.n};
  c.bytes = bytes_per_element * static_cast<double>(p.n);
  c.extra_json = extra;
}

double elem(const CaseParams& p) { return static_cast<double>(dtype_size(p.dtype)); }

std::unique_ptr<Case> make_amax(const CaseParams& p) {
  check_params("fp8_amax", p);
  auto c = std::make_unique<Fp8Case>(
      p, bench::random_floats(p.dtype, p.n, p.seed), std::vector<std::pair<DType, std::vector<std::int64_t>>>{{DType::f32, {}}},
      [](const TensorView& x, const std::vector<TensorView>& o, const CallOptions& opts) { fp8_amax_out(x, o[0], opts); },
      /*scalar_metric=*/true);
  describe(*c, "fp8_amax", p, elem(p), "{}");
  return c;
}

std::unique_ptr<Case> make_quantize(const CaseParams& p) {
  check_params("fp8_quantize", p);
  Tensor x = bench::random_floats(p.dtype, p.n, p.seed);
  // The scale a current-scaling recipe would pick, so the codes span the format.
  const Tensor amax = fp8_amax(x, CallOptions{"reference", nullptr});
  const float scale = num::scale_from_amax(*amax.ptr<float>(), kFormat, false);
  auto c = std::make_unique<Fp8Case>(
      p, std::move(x), std::vector<std::pair<DType, std::vector<std::int64_t>>>{{fp8_dtype(kFormat), {p.n}}},
      [scale](const TensorView& in, const std::vector<TensorView>& o, const CallOptions& opts) {
        fp8_quantize_out(in, ScaleArg(scale), o[0], opts);
      },
      false);
  describe(*c, "fp8_quantize", p, elem(p) + 1.0,
           std::string("{\"format\":\"") + fp8_format_name(kFormat) + "\",\"scale\":" + json_number(scale) + "}");
  return c;
}

std::unique_ptr<Case> make_dequantize(const CaseParams& p) {
  check_params("fp8_dequantize", p);
  // Every e4m3 code but the two NaNs.
  Tensor q = bench::random_bytes(fp8_dtype(kFormat), p.n, p.seed, {0x7F, 0xFF});
  auto c = std::make_unique<Fp8Case>(
      p, std::move(q), std::vector<std::pair<DType, std::vector<std::int64_t>>>{{p.dtype, {p.n}}},
      [](const TensorView& in, const std::vector<TensorView>& o, const CallOptions& opts) {
        fp8_dequantize_out(in, ScaleArg(kDequantScale), o[0], opts);
      },
      false);
  describe(*c, "fp8_dequantize", p, 1.0 + elem(p),
           std::string("{\"format\":\"") + fp8_format_name(kFormat) + "\",\"scale\":" + json_number(kDequantScale) + "}");
  return c;
}

std::unique_ptr<Case> make_pack(const CaseParams& p) {
  check_params("fp8_pack", p);
  auto c = std::make_unique<Fp8Case>(
      p, bench::random_floats(p.dtype, p.n, p.seed),
      std::vector<std::pair<DType, std::vector<std::int64_t>>>{{fp8_dtype(kFormat), {p.n}}, {DType::f32, {}}},
      [](const TensorView& in, const std::vector<TensorView>& o, const CallOptions& opts) {
        fp8_pack_out(in, o[0], o[1], PackOptions{kFormat, false, true}, opts);
      },
      false);
  // x is read twice (amax, then quantize) and q written once.
  describe(*c, "fp8_pack", p, 2.0 * elem(p) + 1.0,
           std::string("{\"format\":\"") + fp8_format_name(kFormat) + "\",\"pow2_scale\":false,\"check_finite\":true}");
  return c;
}

// 64M elements on a GPU (far past L2: a bandwidth measurement); 1M on the CPU so the
// reference bench runs in seconds.
std::vector<std::int64_t> large_size(const Device& d) { return {d.is_cuda() ? std::int64_t(1) << 26 : std::int64_t(1) << 20}; }
// fp8_pack also at 4096 elements: the end-to-end latency of a small call, finite check included.
std::vector<std::int64_t> pack_sizes(const Device& d) { return {large_size(d).front(), 4096}; }

}  // namespace
}  // namespace cppmega::fp8

namespace cppmega::bench {

std::vector<CaseSuite> fp8_case_suites() {
  using namespace fp8;
  return {{"fp8_amax", &large_size, &make_amax},
          {"fp8_quantize", &large_size, &make_quantize},
          {"fp8_dequantize", &large_size, &make_dequantize},
          {"fp8_pack", &pack_sizes, &make_pack}};
}

}  // namespace cppmega::bench
