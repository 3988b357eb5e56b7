// Bench cases of fp8_gemv: the shapes. CaseParams::n selects a preset (the case registry
// has one size parameter):
//   n = 16 * variant + 4 * shape + m, shape (N, K) in {(8192,8192), (16384,7168), (7168,2048),
//   (4096,4096)}, m indexes M in {1, 4, 16, 64};
//   variant 0: per-row w scales, x of the case dtype (f32/bf16/f16);
//   variant 1: (128,128) w block scales, x of the case dtype;
//   variant 2: (128,128) w block scales, e4m3 x with (1,128) x block scales.
//   n = 48: a small preset for the CPU (N = K = 1024, M = 4, per-row).
// out is bf16. Parity: relative L2 against the reference (f64 accumulation, f32 out) <= 1e-2
// (the contract's FP8-compute tolerance; bf16 rounding of the output is ~2^-9).
// On CUDA the weight rotates over enough copies (>= 128 MB) that no call finds it in L2, and two
// C++ peers run on the same shapes: cuBLASLt bf16 `x @ W.T` on a bf16 copy of the weight (what
// torch runs), and cuBLASLt FP8 with per-tensor scales (what torch._scaled_mm runs; M a multiple
// of 16). The torch peers (_scaled_mm, x @ W.T) come from the Python bench.
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/cases.hpp"
#include "cppmega/error.hpp"
#include "cppmega/numerics.hpp"
#include "cppmega/ops/fp8_gemv.hpp"
#include "ops/fp8_gemv/fp8_gemv_args.hpp"
#include "ops/fp8_gemv/fp8_gemv_peers.hpp"

namespace cppmega::gemv_op {

namespace {

using bench::Case;
using bench::CaseParams;
using bench::CaseSuite;

struct Preset {
  std::int64_t N, K, M;
  int variant;
};

constexpr std::int64_t kShapes[4][2] = {{8192, 8192}, {16384, 7168}, {7168, 2048}, {4096, 4096}};
constexpr std::int64_t kMs[4] = {1, 4, 16, 64};
constexpr std::int64_t kNumPresets = 49;
constexpr double kMinRotateBytes = 128.0 * (1 << 20);

Preset preset(std::int64_t n) {
  if (n == 48) return {1024, 1024, 4, 0};
  return {kShapes[(n % 16) / 4][0], kShapes[(n % 16) / 4][1], kMs[n % 4], static_cast<int>(n / 16)};
}

// Positive scales over a few binades, deterministic in (seed, i).
Tensor random_scales(std::int64_t n, std::uint64_t seed, std::vector<std::int64_t> shape) {
  Tensor t = Tensor::empty(DType::f32, shape.data(), static_cast<int>(shape.size()));
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint64_t r = bench::mix64(seed ^ (0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(i + 1)));
    t.ptr<float>()[i] = std::ldexp(1.0f + static_cast<float>(r % 1000) / 1000.0f, static_cast<int>((r >> 20) % 6) - 8);
  }
  return t;
}

Tensor to_device(const Tensor& t, const Device& d) { return d.is_cuda() ? t.to(d) : t; }

class GemvCase final : public Case {
 public:
  GemvCase(const CaseParams& p, const Preset& pr) : pr_(pr) {
    device = p.device;
    stream = p.stream;
    const std::int64_t M = pr.M, N = pr.N, K = pr.K, nkb = (K + 127) / 128;
    xdt_ = pr.variant == 2 ? DType::e4m3 : p.dtype;
    // Inputs (CPU originals for the reference).
    if (xdt_ == DType::e4m3) {
      x_host_ = bench::random_bytes(DType::e4m3, M * K, p.seed, {0x7F, 0xFF});
    } else {
      x_host_ = bench::random_floats(xdt_, M * K, p.seed);
    }
    x_host_ = reshape(x_host_, {M, K});
    w_host_ = reshape(bench::random_bytes(DType::e4m3, N * K, p.seed + 1, {0x7F, 0xFF}), {N, K});
    ws_host_ = pr.variant == 0 ? random_scales(N, p.seed + 2, {N}) : random_scales(((N + 127) / 128) * nkb, p.seed + 2, {(N + 127) / 128, nkb});
    if (xdt_ == DType::e4m3) xs_host_ = random_scales(M * nkb, p.seed + 3, {M, nkb});
    // Device copies; the weight rotates over several copies on CUDA.
    x_ = to_device(x_host_, device);
    ws_ = to_device(ws_host_, device);
    if (xs_host_.data()) xs_ = to_device(xs_host_, device);
    const double wbytes = static_cast<double>(N) * static_cast<double>(K);
    const int copies = device.is_cuda() ? static_cast<int>(std::max(1.0, std::ceil(kMinRotateBytes / wbytes))) : 1;
    for (int i = 0; i < copies; ++i) w_.push_back(to_device(w_host_, device));
    out_ = Tensor::empty(DType::bf16, {M, N}, device);
    ref_ = Tensor::empty(DType::f32, {M, N});

    op = "fp8_gemv";
    dtype = dtype_name(xdt_);
    static const char* kVariant[3] = {"per-row w", "128x128 w", "128x128 w, 1x128 e4m3 x"};
    name = detail::cat(dtype, " M=", M, " N=", N, " K=", K, " ", kVariant[pr.variant]);
    bucket = gemv_bucket(xdt_, M, N, K);
    shape = {M, N, K};
    // The weight read once, x read once, out written once (bf16).
    bytes = wbytes + static_cast<double>(M * K) * static_cast<double>(dtype_size(xdt_)) + static_cast<double>(M * N) * 2.0;
    flops = 2.0 * static_cast<double>(M) * wbytes;
    extra_json = detail::cat("{\"M\":", M, ",\"N\":", N, ",\"K\":", K, ",\"w_scale\":\"", pr.variant == 0 ? "row" : "block128x128",
                             "\",\"x_scale\":\"", xdt_ == DType::e4m3 ? "block1x128" : "none", "\",\"out\":\"bf16\",\"weight_copies\":",
                             copies, "}");
  }

  void run(const CallOptions& opts) override {
    const Tensor& w = w_[next_++ % w_.size()];
    fp8_gemv_out(x_, w, ScaleArg(ws_.view()), x_scale(xs_), out_, opts);
  }

  void compute_reference() override {
    if (have_reference_) return;
    fp8_gemv_out(x_host_, w_host_, ScaleArg(ws_host_.view()), x_scale(xs_host_), ref_, CallOptions{"reference", nullptr});
    have_reference_ = true;
  }

  bench::Parity check(const CallOptions& opts) override {
    compute_reference();
    bench::poison(out_.view(), stream);
    run(opts);
    bench::sync_stream(device, stream);
    const Tensor got = device.is_cuda() ? out_.to(Device::cpu()) : out_;
    double num = 0, den = 0;
    bool nan = false;
    for (std::int64_t i = 0; i < got.numel(); ++i) {
      const double g = num::bf16_to_f32(got.ptr<std::uint16_t>()[i]), r = ref_.ptr<float>()[i];
      nan |= std::isnan(g);
      num += (g - r) * (g - r);
      den += r * r;
    }
    const double rel = nan ? INFINITY : std::sqrt(num / std::max(den, 1e-300));
    return {rel <= 1e-2, "rel_l2", rel, 1e-2};
  }

  std::vector<bench::Callable> peers() override {
    std::vector<bench::Callable> out;
    if (!device.is_cuda()) return out;
    const int M = static_cast<int>(pr_.M), N = static_cast<int>(pr_.N), K = static_cast<int>(pr_.K);
    try {
      bf16_ = std::make_unique<CublasLtGemm>(CublasLtGemm::Kind::bf16, M, N, K, device.index);
      // The same weight in bf16 (exact), rotating like the FP8 copies; x in bf16.
      Tensor wb = Tensor::empty(DType::bf16, {pr_.N, pr_.K});
      for (std::int64_t i = 0; i < wb.numel(); ++i)
        wb.ptr<std::uint16_t>()[i] = num::f32_to_bf16(num::fp8_to_f32(w_host_.ptr<std::uint8_t>()[i], Fp8Format::e4m3));
      const double bbytes = 2.0 * static_cast<double>(pr_.N) * static_cast<double>(pr_.K);
      const int copies = static_cast<int>(std::max(1.0, std::ceil(kMinRotateBytes / bbytes)));
      for (int i = 0; i < copies; ++i) wb_.push_back(wb.to(device));
      Tensor xb = Tensor::empty(DType::bf16, {pr_.M, pr_.K});
      for (std::int64_t i = 0; i < xb.numel(); ++i) xb.ptr<std::uint16_t>()[i] = num::f32_to_bf16(value(x_host_, i));
      xb_ = xb.to(device);
      yb_ = Tensor::empty(DType::bf16, {pr_.M, pr_.N}, device);
      out.push_back({"cublaslt:bf16_gemm", [this] {
                       bf16_->run(xb_.data(), wb_[next_b_++ % wb_.size()].data(), yb_.data(), nullptr, nullptr, stream);
                     }});
    } catch (const Error&) {
      // no bf16 algorithm for this shape: no peer
    }
    if (M % 16 == 0 && K % 16 == 0) {
      try {
        fp8_ = std::make_unique<CublasLtGemm>(CublasLtGemm::Kind::fp8, M, N, K, device.index);
        Tensor xq = bench::random_bytes(DType::e4m3, pr_.M * pr_.K, 7, {0x7F, 0xFF});
        xq_ = xq.to(device);
        Tensor one = Tensor::empty(DType::f32, {1});
        *one.ptr<float>() = 1.0f;
        one_ = one.to(device);
        yq_ = Tensor::empty(DType::bf16, {pr_.M, pr_.N}, device);
        out.push_back({"cublaslt:fp8_gemm", [this] {
                         fp8_->run(xq_.data(), w_[next_q_++ % w_.size()].data(), yq_.data(), one_.ptr<float>(), one_.ptr<float>(),
                                   stream);
                       }});
      } catch (const Error&) {
      }
    }
    return out;
  }

 private:
  static Tensor reshape(const Tensor& t, std::vector<std::int64_t> shape) {
    Tensor r = Tensor::empty(t.view().dtype, shape.data(), static_cast<int>(shape.size()));
    std::memcpy(r.data(), t.data(), static_cast<std::size_t>(t.numel()) * t.view().itemsize());
    return r;
  }
  static float value(const Tensor& t, std::int64_t i) {
    switch (t.view().dtype) {
      case DType::f32: return t.ptr<float>()[i];
      case DType::bf16: return num::bf16_to_f32(t.ptr<std::uint16_t>()[i]);
      case DType::f16: return num::f16_to_f32(t.ptr<std::uint16_t>()[i]);
      default: return num::fp8_to_f32(t.ptr<std::uint8_t>()[i], Fp8Format::e4m3);
    }
  }
  static std::optional<ScaleArg> x_scale(const Tensor& t) {
    if (!t.data()) return std::nullopt;
    return ScaleArg(t.view());
  }

  Preset pr_;
  DType xdt_ = DType::bf16;
  Tensor x_host_, w_host_, ws_host_, xs_host_, x_, ws_, xs_, out_, ref_;
  std::vector<Tensor> w_;
  std::size_t next_ = 0;
  bool have_reference_ = false;
  // peers
  std::unique_ptr<CublasLtGemm> bf16_, fp8_;
  std::vector<Tensor> wb_;
  Tensor xb_, yb_, xq_, one_, yq_;
  std::size_t next_b_ = 0, next_q_ = 0;
};

std::unique_ptr<Case> make_gemv(const CaseParams& p) {
  if (p.n < 0 || p.n >= kNumPresets)
    invalid_argument("fp8_gemv bench case: n selects a preset 0..", kNumPresets - 1,
                     " (16*variant + 4*shape + m; shapes (8192,8192), (16384,7168), (7168,2048), (4096,4096); M 1, 4, 16, 64; "
                     "variant 0 per-row w, 1 128x128 w, 2 128x128 w + e4m3 x; 48: N=K=1024 M=4), got ",
                     p.n);
  if (!is_floating(p.dtype)) invalid_argument("fp8_gemv bench case: dtype must be f32, bf16 or f16, got ", dtype_name(p.dtype));
  return std::make_unique<GemvCase>(p, preset(p.n));
}

// GPU: every shape and M with per-row scales, and every shape at M = 1 and 16 with block scales
// (bf16 x and e4m3 x). CPU: the small preset.
std::vector<std::int64_t> default_presets(const Device& d) {
  if (!d.is_cuda()) return {48};
  std::vector<std::int64_t> v;
  for (std::int64_t i = 0; i < 16; ++i) v.push_back(i);
  for (std::int64_t s = 0; s < 4; ++s)
    for (std::int64_t m : {0, 2}) {
      v.push_back(16 + 4 * s + m);
      v.push_back(32 + 4 * s + m);
    }
  return v;
}

}  // namespace
}  // namespace cppmega::gemv_op

namespace cppmega::bench {

std::vector<CaseSuite> fp8_gemv_case_suites() { return {{"fp8_gemv", &gemv_op::default_presets, &gemv_op::make_gemv}}; }

}  // namespace cppmega::bench
