// fp8_gemv: the reference against an independent formula, every bad-input rule, and the CUDA
// backend (fast tensor-core path, general path, every split/chunk variant) against the reference.
// Tolerance (relative L2 against the f64 reference on the same quantised inputs): f32 out
// <= 1e-5; bf16/f16 out <= 4e-3 (one rounding of the output; the contract allows 1e-2).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <functional>
#include <optional>
#include <vector>

#include "cppmega/ops/fp8_gemv.hpp"
#include "bench/cases.hpp"
#include "ops/fp8_gemv/fp8_gemv_args.hpp"
#include "test_util.hpp"

namespace cppmega::bench {
std::vector<CaseSuite> fp8_gemv_case_suites();  // src/ops/fp8_gemv/fp8_gemv_cases.cpp
}

#if CPPMEGA_WITH_CUDA
#include <cuda_runtime_api.h>

#include "ops/fp8_gemv/fp8_gemv_peers.hpp"
#endif

namespace cppmega {
namespace {

using test::Rng;
using test::cuda;
using test::expect_error;
using test::ref;
using test::median_us;



double as_double(const TensorView& t, std::int64_t i) {
  switch (t.dtype) {
    case DType::f32: return t.ptr<float>()[i];
    case DType::bf16: return num::bf16_to_f32(t.ptr<std::uint16_t>()[i]);
    case DType::f16: return num::f16_to_f32(t.ptr<std::uint16_t>()[i]);
    case DType::e4m3: return num::fp8_to_f32(t.ptr<std::uint8_t>()[i], Fp8Format::e4m3);
    default: return NAN;
  }
}

// A random e4m3 code that is not NaN.
std::uint8_t random_e4m3(Rng& rng) {
  for (;;) {
    const auto b = static_cast<std::uint8_t>(rng.bits());
    if ((b & 0x7F) != 0x7F) return b;
  }
}

// x [M, K] (row stride ldx >= K) of dtype dt: normal values of a magnitude that varies per row,
// some exact zeros; e4m3 as random codes.
Tensor random_x(Rng& rng, DType dt, std::int64_t M, std::int64_t ldx) {
  Tensor t = Tensor::empty(dt, {std::max<std::int64_t>(M, 1), ldx});
  const std::int64_t n = t.numel();
  for (std::int64_t i = 0; i < n; ++i) {
    const float mag = std::ldexp(1.0f, static_cast<int>((i / ldx) % 9) - 4);
    const float v = i % 17 == 5 ? 0.0f : rng.normal(mag);
    switch (dt) {
      case DType::f32: t.ptr<float>()[i] = v; break;
      case DType::bf16: t.ptr<std::uint16_t>()[i] = num::f32_to_bf16(v); break;
      case DType::f16: t.ptr<std::uint16_t>()[i] = num::f32_to_f16(v); break;
      case DType::e4m3: t.ptr<std::uint8_t>()[i] = random_e4m3(rng); break;
      default: break;
    }
  }
  return t;
}

Tensor random_w(Rng& rng, std::int64_t N, std::int64_t ldw) {
  Tensor t = Tensor::empty(DType::e4m3, {std::max<std::int64_t>(N, 1), ldw});
  for (std::int64_t i = 0; i < t.numel(); ++i) t.ptr<std::uint8_t>()[i] = random_e4m3(rng);
  return t;
}

// Positive scales over several binades, times `mul` (f16 outputs use 2^-12 so sums of up to
// ~10^5 stay below f16's 65504).
Tensor random_scales(Rng& rng, std::vector<std::int64_t> shape, float mul = 1.0f) {
  Tensor t = Tensor::empty(DType::f32, shape.data(), static_cast<int>(shape.size()));
  for (std::int64_t i = 0; i < t.numel(); ++i)
    t.ptr<float>()[i] = mul * std::ldexp(0.5f + 0.5f * std::fabs(rng.normal(1.0f)), static_cast<int>(rng.uniform(-6, 2)));
  return t;
}

// A [rows, cols] view with row stride ld over t's storage.
TensorView strided_view(const Tensor& t, std::int64_t rows, std::int64_t cols, std::int64_t ld, std::int64_t byte_offset = 0) {
  TensorView v = t.view();
  v.data = static_cast<char*>(v.data) + byte_offset;
  v.rank = 2;
  v.shape[0] = rows;
  v.shape[1] = cols;
  v.strides[0] = ld;
  v.strides[1] = 1;
  return v;
}

double rel_l2(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i])) return INFINITY;
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

std::vector<double> read_out(const TensorView& out_dev) {
  // Copy the whole [M, ld] storage span, then read rows.
  const std::int64_t M = out_dev.shape[0], N = out_dev.shape[1], ld = out_dev.strides[0];
  const std::int64_t span = M == 0 ? 0 : (M - 1) * ld + N;
  Tensor host = Tensor::empty(out_dev.dtype, {span});
  if (span > 0) {
    TensorView src = out_dev;
    src.rank = 1;
    src.shape[0] = span;
    src.strides[0] = 1;
    copy_bytes(host, src);
  }
  std::vector<double> v;
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n) v.push_back(as_double(host, m * ld + n));
  return v;
}

// ---- reference vs an independent formula ---------------------------------------------------------

TEST(Fp8GemvReference, MatchesElementwiseFormula) {
  Rng rng;
  SCOPED_TRACE(rng.trace());
  const std::int64_t M = 3, N = 130, K = 300;
  for (int variant = 0; variant < 4; ++variant) {
    const DType xdt = variant == 3 ? DType::e4m3 : (variant == 0 ? DType::bf16 : (variant == 1 ? DType::f32 : DType::f16));
    Tensor x = random_x(rng, xdt, M, K), w = random_w(rng, N, K);
    Tensor wsb = random_scales(rng, {2, 3}), wsr = random_scales(rng, {N});
    Tensor xsb = random_scales(rng, {M, 3}), xsr = random_scales(rng, {M});
    for (int wk = 0; wk < 3; ++wk) {
      ScaleArg ws = wk == 0 ? ScaleArg(0.75f) : wk == 1 ? ScaleArg(wsr.view()) : ScaleArg(wsb.view());
      for (int xk = 0; xk < (xdt == DType::e4m3 ? 3 : 1); ++xk) {
        std::optional<ScaleArg> xs;
        if (xdt == DType::e4m3) xs = xk == 0 ? ScaleArg(1.5f) : xk == 1 ? ScaleArg(xsr.view()) : ScaleArg(xsb.view());
        Tensor y = fp8_gemv(x, w, ws, xs, DType::f32, ref());
        for (std::int64_t m = 0; m < M; ++m)
          for (std::int64_t n = 0; n < N; ++n) {
            double want = 0;
            for (std::int64_t k = 0; k < K; ++k) {
              const double sw = wk == 0 ? 0.75 : wk == 1 ? wsr.ptr<float>()[n] : wsb.ptr<float>()[(n / 128) * 3 + k / 128];
              double sx = 1.0;
              if (xdt == DType::e4m3) sx = xk == 0 ? 1.5 : xk == 1 ? xsr.ptr<float>()[m] : xsb.ptr<float>()[m * 3 + k / 128];
              want += as_double(x, m * K + k) * sx * as_double(w, n * K + k) * sw;
            }
            const double got = y.ptr<float>()[m * N + n];
            ASSERT_NEAR(got, want, 1e-6 * std::fabs(want) + 1e-30) << "variant " << variant << " wk " << wk << " xk " << xk;
          }
      }
    }
  }
}

TEST(Fp8GemvReference, EmptyAndZeroK) {
  Rng rng;
  Tensor w = random_w(rng, 5, 16);
  Tensor x0 = Tensor::empty(DType::bf16, {0, 16});
  EXPECT_EQ(fp8_gemv(x0, w, 1.0f, std::nullopt, DType::bf16, ref()).numel(), 0);
  Tensor x = random_x(rng, DType::bf16, 2, 16);
  Tensor w0 = Tensor::empty(DType::e4m3, {0, 16});
  EXPECT_EQ(fp8_gemv(x, w0, 1.0f, std::nullopt, DType::f32, ref()).numel(), 0);
  Tensor xk0 = Tensor::empty(DType::bf16, {2, 0}), wk0 = Tensor::empty(DType::e4m3, {5, 0});
  Tensor y = Tensor::empty(DType::f32, {2, 5});
  test::poison(y);
  fp8_gemv_out(xk0, wk0, 1.0f, std::nullopt, y, ref());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(y.ptr<float>()[i], 0.0f);
}

// ---- bad input -----------------------------------------------------------------------------------

TEST(Fp8GemvErrors, EveryRuleHasAClearMessage) {
  Rng rng;
  Tensor x = random_x(rng, DType::bf16, 4, 256);
  Tensor xq = random_x(rng, DType::e4m3, 4, 256);
  Tensor w = random_w(rng, 300, 256);
  Tensor w_k = random_w(rng, 300, 200);
  expect_error(ErrorKind::InvalidArgument,
               "fp8_gemv: x [M,K] and w [N,K] must have the same K, got x bf16[4,256] cpu and w e4m3[300,200] cpu",
               [&] { fp8_gemv(x, w_k, 1.0f); });
  expect_error(ErrorKind::InvalidArgument, "fp8_gemv: x is e4m3 (e4m3[4,256] cpu) and needs x_scale", [&] { fp8_gemv(xq, w, 1.0f); });
  expect_error(ErrorKind::InvalidArgument, "fp8_gemv: x_scale is only for e4m3 x; x is bf16[4,256]", [&] { fp8_gemv(x, w, 1.0f, 2.0f); });
  Tensor ws_bad = random_scales(rng, {299});
  expect_error(ErrorKind::InvalidArgument,
               "fp8_gemv: w_scale must be f32 with one element (per tensor), shape [N]=[300] (per row) or "
               "[ceil(N/128),ceil(K/128)]=[3,2] (per block), got f32[299]",
               [&] { fp8_gemv(x, w, ScaleArg(ws_bad.view())); });
  Tensor ws_blk_bad = random_scales(rng, {2, 2});
  expect_error(ErrorKind::InvalidArgument, "fp8_gemv: w_scale must be f32 with one element", [&] { fp8_gemv(x, w, ScaleArg(ws_blk_bad.view())); });
  Tensor ws_i32 = Tensor::empty(DType::i32, {300});
  expect_error(ErrorKind::InvalidArgument, "fp8_gemv: w_scale must be f32, got i32[300]", [&] { fp8_gemv(x, w, ScaleArg(ws_i32.view())); });
  Tensor xs_bad = random_scales(rng, {4, 3});
  expect_error(ErrorKind::InvalidArgument,
               "fp8_gemv: x_scale must be f32 with one element (per tensor), shape [M]=[4] (per row) or [M,ceil(K/128)]=[4,2] "
               "(per block), got f32[4,3]",
               [&] { fp8_gemv(xq, w, 1.0f, ScaleArg(xs_bad.view())); });
  expect_error(ErrorKind::InvalidArgument, "fp8_gemv: w_scale must be finite and > 0, got 0", [&] { fp8_gemv(x, w, 0.0f); });
  expect_error(ErrorKind::InvalidArgument, "fp8_gemv: x_scale must be finite and > 0, got -1", [&] { fp8_gemv(xq, w, 1.0f, -1.0f); });
  expect_error(ErrorKind::InvalidArgument, "fp8_gemv: w must be e4m3, got bf16[4,256]", [&] { fp8_gemv(x, x, 1.0f); });
  expect_error(ErrorKind::InvalidArgument, "fp8_gemv: x must be f32, bf16, f16 or e4m3, got i32", [&] {
    Tensor xi = Tensor::empty(DType::i32, {4, 256});
    fp8_gemv(xi, w, 1.0f);
  });
  Tensor x3 = Tensor::empty(DType::bf16, {1, 4, 256});
  expect_error(ErrorKind::InvalidArgument, "fp8_gemv: x must have rank 2 [M,K], got bf16[1,4,256]", [&] { fp8_gemv(x3, w, 1.0f); });
  Tensor out_bad = Tensor::empty(DType::bf16, {4, 299});
  expect_error(ErrorKind::InvalidArgument, "fp8_gemv: out must have shape [M,N]=[4,300], got bf16[4,299]",
               [&] { fp8_gemv_out(x, w, 1.0f, std::nullopt, out_bad); });
  expect_error(ErrorKind::InvalidArgument, "fp8_gemv: out must be f32, bf16 or f16, got e4m3",
               [&] { fp8_gemv(x, w, 1.0f, std::nullopt, DType::e4m3); });
  TensorView w_strided = w.view();
  w_strided.shape[1] = 128;
  w_strided.strides[1] = 2;
  expect_error(ErrorKind::InvalidArgument, "fp8_gemv: w must have a contiguous innermost dimension", [&] { fp8_gemv(x, w_strided, 1.0f); });
  TensorView on_gpu = w.view();
  on_gpu.device = Device::cuda(0);
  expect_error(ErrorKind::InvalidArgument, "fp8_gemv: all tensors of one call must be on one device: w is on cuda:0, x on cpu",
               [&] { fp8_gemv(x, on_gpu, 1.0f); });
  // M = 0 / N = 0: empty results, no error; forced CUDA on CPU tensors is Unsupported.
  Tensor x0 = Tensor::empty(DType::bf16, {0, 256});
  EXPECT_EQ(fp8_gemv(x0, w, 1.0f).numel(), 0);
  expect_error(ErrorKind::Unsupported, "fp8_gemv: backend 'cuda' (argument backend=)", [&] { fp8_gemv(x, w, 1.0f, std::nullopt, DType::bf16, cuda()); });
}

// ---- bench cases ---------------------------------------------------------------------------------

void run_bench_cases(const Device& dev, const std::vector<std::int64_t>& presets, bool time_them) {
  auto suites = bench::fp8_gemv_case_suites();
  ASSERT_EQ(suites.size(), 1u);
  EXPECT_EQ(suites[0].op, "fp8_gemv");
  for (std::int64_t n : presets) {
    bench::CaseParams p;
    p.device = dev;
    p.n = n;
    p.dtype = DType::bf16;
    p.seed = 1234 + static_cast<std::uint64_t>(n);
    auto c = suites[0].make(p);
    SCOPED_TRACE(c->name);
    const std::vector<std::string> backends = bench::runnable_backends("fp8_gemv", dev);
    ASSERT_FALSE(backends.empty());
    if (!time_them) {
      for (auto& b : backends) {
        const bench::Parity pr = c->check({b, nullptr});
        EXPECT_TRUE(pr.ok) << b << ": " << pr.metric << " " << pr.value;
      }
      continue;
    }
    const bench::Result r = bench::bench_case(*c, backends, 5, 30);
    for (auto& [label, st] : r.timings)
      std::printf("[bench] %-44s %-22s %9.2f us %6.3f TB/s\n", r.name.c_str(), label.c_str(), st.median_us,
                  r.bytes / st.median_us * 1e-6);
    for (auto& [label, pr] : r.parity) EXPECT_TRUE(pr.ok) << label << ": " << pr.metric << " " << pr.value;
  }
  expect_error(ErrorKind::InvalidArgument, "fp8_gemv bench case: n selects a preset 0..48", [&] {
    bench::CaseParams p;
    p.n = 49;
    suites[0].make(p);
  });
}

TEST(Fp8GemvBench, CpuPresetParity) { run_bench_cases(Device::cpu(), {48}, false); }

// ---- CUDA vs reference ---------------------------------------------------------------------------

struct GemvCase {
  std::int64_t M, N, K;
  DType xdt = DType::bf16;
  DType odt = DType::f32;
  int w_kind = 1;  // 0 host tensor scale, 1 per row, 2 block, 3 device 1-element tensor
  int x_kind = 1;  // e4m3 x: 0 host, 1 per row, 2 block
  std::int64_t ldx_pad = 0, ldw_pad = 0, ldo_pad = 0;
  std::int64_t w_byte_offset = 0;
  int splits = 0;
  bool force_general = false;
  std::string name() const {
    char b[256];
    std::snprintf(b, sizeof b, "M=%lld N=%lld K=%lld x=%s out=%s wk=%d xk=%d pads=%lld/%lld/%lld woff=%lld splits=%d%s",
                  (long long)M, (long long)N, (long long)K, dtype_name(xdt), dtype_name(odt), w_kind, x_kind, (long long)ldx_pad,
                  (long long)ldw_pad, (long long)ldo_pad, (long long)w_byte_offset, splits, force_general ? " general" : "");
    return b;
  }
};

#if CPPMEGA_WITH_CUDA
// |v| of every element (sign bit cleared), for the magnitude reference sum_k |x| |w| s.
Tensor abs_copy(const Tensor& t) {
  Tensor a = Tensor::empty_like(t.view(), t.view().dtype, Device::cpu());
  const std::int64_t n = t.numel();
  switch (dtype_size(t.view().dtype)) {
    case 1: for (std::int64_t i = 0; i < n; ++i) a.ptr<std::uint8_t>()[i] = t.ptr<std::uint8_t>()[i] & 0x7F; break;
    case 2: for (std::int64_t i = 0; i < n; ++i) a.ptr<std::uint16_t>()[i] = t.ptr<std::uint16_t>()[i] & 0x7FFF; break;
    default: for (std::int64_t i = 0; i < n; ++i) a.ptr<std::uint32_t>()[i] = t.ptr<std::uint32_t>()[i] & 0x7FFFFFFFu; break;
  }
  return a;
}

double norm2(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}

// The parity check: ||got - ref|| <= tol * ||ref|| + 1e-7 * ||absref||, with ref the f64
// reference (rounded once to f32), absref the same sum over |x| |w| (a few f32 ulps of the
// magnitudes summed: what f32 accumulation cannot avoid when the sum cancels), tol = 1e-5 for f32
// out and the contract's 1e-2 for bf16/f16 out (one output rounding). NaN never passes.
struct Parity {
  double err = 0, ref = 0, absref = 0, tol = 0;
  bool ok() const { return err <= tol * ref + 1e-7 * absref; }
};
std::ostream& operator<<(std::ostream& os, const Parity& p) {
  return os << "||got-ref|| = " << p.err << ", ||ref|| = " << p.ref << " (rel " << (p.ref > 0 ? p.err / p.ref : p.err)
            << "), ||absref|| = " << p.absref << ", tol " << p.tol;
}

// Runs one case on both backends and compares.
Parity run_case(Rng& rng, const GemvCase& c, gemv_op::GemvLaunchInfo* info = nullptr, const gemv_op::GemvTuning* tuning = nullptr) {
  const Device gpu = Device::cuda(0);
  const std::int64_t ldx = c.K + c.ldx_pad, ldw = c.K + c.ldw_pad + c.w_byte_offset, ldo = c.N + c.ldo_pad;
  Tensor xs = random_x(rng, c.xdt, c.M, ldx), ws = random_w(rng, c.N + 1, ldw);
  const std::int64_t nkb = (c.K + 127) / 128;
  const float mul = c.odt == DType::f16 ? 1.0f / 4096.0f : 1.0f;
  Tensor wsc = c.w_kind == 1   ? random_scales(rng, {c.N}, mul)
               : c.w_kind == 2 ? random_scales(rng, {(c.N + 127) / 128, nkb}, mul)
                               : random_scales(rng, {1}, mul);
  Tensor xsc = c.x_kind == 1 ? random_scales(rng, {c.M}) : c.x_kind == 2 ? random_scales(rng, {c.M, nkb}) : random_scales(rng, {1});
  Tensor xs_d = xs.to(gpu), ws_d = ws.to(gpu), wsc_d = wsc.to(gpu), xsc_d = xsc.to(gpu);
  auto wscale = [&](const Tensor& t) -> ScaleArg {
    if (c.w_kind == 0) return ScaleArg(0.625f * mul);
    return ScaleArg(t.view());
  };
  auto xscale = [&](const Tensor& t) -> std::optional<ScaleArg> {
    if (c.xdt != DType::e4m3) return std::nullopt;
    if (c.x_kind == 0) return ScaleArg(1.25f);
    return ScaleArg(t.view());
  };
  const TensorView xh = strided_view(xs, c.M, c.K, ldx), xd = strided_view(xs_d, c.M, c.K, ldx);
  const TensorView wh = strided_view(ws, c.N, c.K, ldw, c.w_byte_offset), wd = strided_view(ws_d, c.N, c.K, ldw, c.w_byte_offset);
  Tensor od_store = Tensor::empty(c.odt, {std::max<std::int64_t>(c.M, 1), ldo}, gpu);
  test::poison(od_store);
  const TensorView od = strided_view(od_store, c.M, c.N, ldo);
  Tensor ref = Tensor::empty(DType::f32, {c.M, c.N}), absref = Tensor::empty(DType::f32, {c.M, c.N});
  fp8_gemv_out(xh, wh, wscale(wsc), xscale(xsc), ref, CallOptions{"reference", nullptr});
  Tensor xa = abs_copy(xs), wa = abs_copy(ws);
  fp8_gemv_out(strided_view(xa, c.M, c.K, ldx), strided_view(wa, c.N, c.K, ldw, c.w_byte_offset), wscale(wsc), xscale(xsc), absref,
               CallOptions{"reference", nullptr});
  gemv_op::GemvTuning tu;
  if (tuning) tu = *tuning;
  tu.splits = c.splits ? c.splits : tu.splits;
  tu.force_general = c.force_general;
  gemv_op::set_gemv_tuning_for_testing(tu);
  fp8_gemv_out(xd, wd, wscale(wsc_d), xscale(xsc_d), od, cuda());
  gemv_op::set_gemv_tuning_for_testing({});
  if (info) *info = gemv_op::last_gemv_launch();
  cuda_synchronize(0);
  Parity pr;
  pr.tol = c.odt == DType::f32 ? 1e-5 : 1e-2;
  // Padding of out beyond N must be untouched (still the poison).
  if (c.ldo_pad > 0 && c.M > 0) {
    Tensor host = od_store.to(Device::cpu());
    const auto* bytes = static_cast<const std::uint8_t*>(host.data());
    const std::int64_t es = static_cast<std::int64_t>(dtype_size(c.odt));
    for (std::int64_t m = 0; m < c.M; ++m)
      for (std::int64_t b = (m * ldo + c.N) * es; b < (m + 1) * ldo * es; ++b)
        if (bytes[b] != 0xFF) {
          ADD_FAILURE() << "out padding written at row " << m;
          pr.err = INFINITY;
          return pr;
        }
  }
  const std::vector<double> got = read_out(od), want = read_out(ref), mag = read_out(absref);
  double e = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i])) e = INFINITY;
    e += (got[i] - want[i]) * (got[i] - want[i]);
  }
  pr.err = std::sqrt(e);
  pr.ref = norm2(want);
  pr.absref = norm2(mag);
  return pr;
}

TEST(Fp8GemvCuda, FixedCasesMatchReference) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  Rng rng;
  SCOPED_TRACE(rng.trace());
  std::vector<GemvCase> cases;
  // Every M class and x dtype, on an aligned shape and on tails.
  for (DType xdt : {DType::bf16, DType::f16, DType::f32, DType::e4m3})
    for (std::int64_t M : {1, 4, 8, 9, 16, 17, 32, 33, 64})
      for (auto nk : std::vector<std::pair<std::int64_t, std::int64_t>>{{256, 1024}, {300, 1000 + 8}, {129, 4096 + 16}}) {
        GemvCase c{M, nk.first, nk.second, xdt};
        c.w_kind = static_cast<int>((M + nk.first) % 4);
        c.x_kind = static_cast<int>(M % 3);
        c.odt = M % 2 ? DType::f32 : DType::bf16;
        cases.push_back(c);
      }
  // Every split count (cluster reduction included), partial last stages, every M tile size.
  for (int splits : {1, 2, 4, 8})
    for (std::int64_t M : {1, 16, 40, 64}) {
      GemvCase c{M, 520, 2048 + 128 * 3 + 16, DType::bf16, DType::f32, 2, 1};
      c.splits = splits;
      cases.push_back(c);
      GemvCase d{M, 1000, 1024 + 64, M == 40 ? DType::f32 : DType::e4m3, DType::f32, 1, 2};
      d.splits = splits;
      cases.push_back(d);
    }
  // Fewer K blocks than the requested splits: the effective split count (3, 5, 6, 7) does not
  // divide the 128-row tile, so every output row must still be written (a run once caught
  // rows 125-127 left unwritten with 5 splits).
  for (std::int64_t nkb : {3, 5, 6, 7})
    for (std::int64_t M : {1, 59}) {
      GemvCase c{M, 287, 128 * (nkb - 1) + 16, DType::e4m3, DType::f16, 3, 0};
      c.splits = 8;
      cases.push_back(c);
    }
  // Tails: N and K not multiples of 16/128, tiny shapes.
  for (auto s : std::vector<std::array<std::int64_t, 3>>{{1, 1, 16}, {1, 1, 128}, {2, 7, 48}, {3, 127, 112}, {5, 17, 1040}, {64, 5, 32}, {1, 4099, 16}, {7, 640, 8192}})
    cases.push_back({s[0], s[1], s[2], DType::bf16, DType::f32, 1, 1});
  // Strided rows: x padded, w padded (16-byte multiple: fast path), out padded.
  {
    GemvCase c{6, 200, 512, DType::bf16, DType::bf16, 2, 1, 8, 32, 40};
    cases.push_back(c);
    GemvCase d{3, 130, 384, DType::f16, DType::f32, 1, 1, 3, 16, 1};  // x rows misaligned for vectors
    cases.push_back(d);
  }
  // The general path: misaligned w, K % 16 != 0 (contiguous), M > 64, forced.
  cases.push_back({4, 300, 1000, DType::bf16, DType::f32, 1, 1, 0, 0, 0, 1});
  cases.push_back({2, 77, 333, DType::e4m3, DType::f32, 2, 2});
  cases.push_back({100, 150, 520, DType::bf16, DType::f32, 2, 1});
  cases.push_back({65, 64, 256, DType::f32, DType::bf16, 0, 1});
  {
    GemvCase c{16, 256, 1024, DType::e4m3, DType::f16, 3, 0};
    c.force_general = true;
    cases.push_back(c);
  }
  for (const GemvCase& c : cases) {
    SCOPED_TRACE(c.name());
    gemv_op::GemvLaunchInfo info;
    const Parity pr = run_case(rng, c, &info);
    const bool expect_fast = c.M <= 64 && c.K % 16 == 0 && c.w_byte_offset == 0 && !c.force_general;
    EXPECT_EQ(info.fast, expect_fast);
    EXPECT_TRUE(pr.ok()) << pr << "; fast=" << info.fast << " splits=" << info.splits << " stage=" << info.stage_blocks << "x"
                         << info.stages;
  }
}

// Every instantiated fast-path configuration, on shapes with tails, several stages and splits.
TEST(Fp8GemvCuda, EveryConfigurationMatchesReference) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  Rng rng;
  SCOPED_TRACE(rng.trace());
  for (int mt : {1, 2, 4, 8})
    for (int planes : {1, 2})
      for (auto [sb, nbuf] : gemv_op::gemv_fast_configs(mt, planes)) {
        const std::int64_t M = mt == 1 ? (planes == 1 ? 1 : 5) : mt * 8 - (mt == 8 ? 1 : 3);
        for (DType xdt : planes == 2 ? std::vector<DType>{DType::f32} : std::vector<DType>{DType::bf16, DType::e4m3, DType::f16}) {
          for (int splits : {0, 3}) {
            GemvCase c{M, 300, 128 * 11 + 48, xdt, DType::f32, 2, 2};
            c.splits = splits == 3 ? 4 : 0;
            if (xdt == DType::f16) c.ldx_pad = 3;  // misaligned x rows: the plain-load staging
            gemv_op::GemvTuning tu;
            tu.stage_blocks = sb;
            tu.stages = nbuf;
            SCOPED_TRACE(c.name() + " config " + std::to_string(sb) + "x" + std::to_string(nbuf));
            gemv_op::GemvLaunchInfo info;
            const Parity pr = run_case(rng, c, &info, &tu);
            EXPECT_TRUE(info.fast);
            EXPECT_EQ(info.stage_blocks, sb);
            EXPECT_EQ(info.stages, nbuf);
            EXPECT_TRUE(pr.ok()) << pr;
          }
        }
      }
}

TEST(Fp8GemvCuda, RandomizedShapesMatchReference) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  Rng rng;
  SCOPED_TRACE(rng.trace());
  const DType xdts[4] = {DType::bf16, DType::f16, DType::f32, DType::e4m3};
  const DType odts[3] = {DType::f32, DType::bf16, DType::f16};
  for (int i = 0; i < 120; ++i) {
    GemvCase c{rng.uniform(1, 64), rng.uniform(1, 700), 0};
    c.K = rng.uniform(0, 3) == 0 ? rng.uniform(1, 300) : 16 * rng.uniform(1, 200) + (rng.uniform(0, 3) == 0 ? rng.uniform(1, 15) : 0);
    c.xdt = xdts[rng.uniform(0, 3)];
    c.odt = odts[rng.uniform(0, 2)];
    c.w_kind = static_cast<int>(rng.uniform(0, 3));
    c.x_kind = static_cast<int>(rng.uniform(0, 2));
    if (rng.uniform(0, 4) == 0) c.ldx_pad = rng.uniform(1, 9);
    if (rng.uniform(0, 4) == 0) c.ldw_pad = 16 * rng.uniform(1, 3);
    if (rng.uniform(0, 4) == 0) c.ldo_pad = rng.uniform(1, 9);
    if (rng.uniform(0, 9) == 0) c.splits = 1 << rng.uniform(0, 3);
    SCOPED_TRACE(c.name());
    const Parity pr = run_case(rng, c);
    EXPECT_TRUE(pr.ok()) << pr;
  }
}

TEST(Fp8GemvCuda, DeterministicAndZeroK) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  Rng rng;
  const Device gpu = Device::cuda(0);
  Tensor x = random_x(rng, DType::bf16, 16, 4096).to(gpu), w = random_w(rng, 4096, 4096).to(gpu);
  Tensor ws = random_scales(rng, {4096}).to(gpu);
  Tensor y1 = fp8_gemv(x, w, ScaleArg(ws.view()), std::nullopt, DType::f32, cuda());
  Tensor y2 = fp8_gemv(x, w, ScaleArg(ws.view()), std::nullopt, DType::f32, cuda());
  EXPECT_EQ(test::count_mismatches(test::bytes_of(y1), test::bytes_of(y2)), 0u);
  // K = 0: zeros; M = 0 and N = 0: empty.
  Tensor xk = Tensor::empty(DType::bf16, {3, 0}, gpu), wk = Tensor::empty(DType::e4m3, {5, 0}, gpu);
  Tensor y = Tensor::empty(DType::bf16, {3, 5}, gpu);
  test::poison(y);
  fp8_gemv_out(xk, wk, 1.0f, std::nullopt, y, cuda());
  for (std::uint8_t b : test::bytes_of(y)) EXPECT_EQ(b, 0);
  Tensor x0 = Tensor::empty(DType::bf16, {0, 64}, gpu), w64 = random_w(rng, 8, 64).to(gpu);
  EXPECT_EQ(fp8_gemv(x0, w64, 1.0f, std::nullopt, DType::bf16, cuda()).numel(), 0);
  clear_dispatch_log();
  fp8_gemv(x, w, ScaleArg(ws.view()));
  auto log = dispatch_log();
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(log.back().backend, "cuda");
}

// ---- timing (run with --gtest_also_run_disabled_tests) ---------------------------------------------

// The bench cases on the GPU: parity of every backend, then the harness's paired timing with the
// cuBLASLt peers (the shapes at M = 1, 16, 64, per-row; block scales at M = 1).
TEST(Fp8GemvCuda, DISABLED_BenchCases) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  run_bench_cases(Device::cuda(0), {0, 2, 3, 4, 6, 7, 8, 10, 12, 14, 15, 16, 32}, true);
}

// One call per configuration, for `ncu -k regex:gemv_tc`.
TEST(Fp8GemvCuda, DISABLED_Profile) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  Rng rng;
  Tensor w = random_w(rng, 8192, 8192).to(gpu);
  Tensor wsr = random_scales(rng, {8192}).to(gpu);
  for (std::int64_t M : {1, 16, 64}) {
    Tensor x = random_x(rng, DType::bf16, M, 8192).to(gpu);
    Tensor y = Tensor::empty(DType::bf16, {M, 8192}, gpu);
    fp8_gemv_out(x, w, ScaleArg(wsr.view()), std::nullopt, y, cuda());
  }
  cuda_synchronize(0);
}

TEST(Fp8GemvCuda, DISABLED_Timing) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  Rng rng;
  const int iters = 40;
  const std::vector<std::pair<std::int64_t, std::int64_t>> shapes = {{8192, 8192}, {16384, 7168}, {7168, 2048}, {4096, 4096}};
  for (auto [N, K] : shapes) {
    const std::int64_t wbytes = N * K;
    const int copies = static_cast<int>(std::max<std::int64_t>(2, (std::int64_t(256) << 20) / wbytes + 1));
    Tensor wh = random_w(rng, N, K);
    std::vector<Tensor> w, wb;
    for (int i = 0; i < copies; ++i) w.push_back(wh.to(gpu));
    // bf16 copies of the same weight for the cuBLAS bf16 GEMV peer.
    Tensor wbh = Tensor::empty(DType::bf16, {N, K});
    for (std::int64_t i = 0; i < N * K; ++i) wbh.ptr<std::uint16_t>()[i] = num::f32_to_bf16(num::fp8_to_f32(wh.ptr<std::uint8_t>()[i], Fp8Format::e4m3));
    const int bcopies = static_cast<int>(std::max<std::int64_t>(2, (std::int64_t(256) << 20) / (2 * wbytes) + 1));
    for (int i = 0; i < bcopies; ++i) wb.push_back(wbh.to(gpu));
    Tensor wsr = random_scales(rng, {N}).to(gpu);
    Tensor wsb = random_scales(rng, {(N + 127) / 128, (K + 127) / 128}).to(gpu);
    Tensor one = random_scales(rng, {1}).to(gpu);
    for (std::int64_t M : {1, 4, 16, 32, 64}) {
      Tensor x = random_x(rng, DType::bf16, M, K).to(gpu);
      Tensor xq = random_x(rng, DType::e4m3, M, K).to(gpu);
      Tensor xsb = random_scales(rng, {M, (K + 127) / 128}).to(gpu);
      Tensor y = Tensor::empty(DType::bf16, {M, N}, gpu);
      // Rate: weight bytes the call must read (1 per element for FP8, 2 for the bf16 peer) per second.
      auto line = [&](const std::string& what, double us, double bytes_per_w = 1.0) {
        std::printf("[timing] N=%-6lld K=%-5lld M=%-3lld %-34s %8.2f us %6.3f TB/s\n", (long long)N, (long long)K, (long long)M,
                    what.c_str(), us, bytes_per_w * static_cast<double>(wbytes) / us * 1e-6);
      };
      auto run_row = [&](int i) { fp8_gemv_out(x, w[i % copies], ScaleArg(wsr.view()), std::nullopt, y, cuda()); };
      line("fp8_gemv bf16x per-row", median_us(run_row, iters));
      const auto info = gemv_op::last_gemv_launch();
      std::printf("[timing]   launch: fast=%d mt=%d splits=%d stage=%dx%d grid=%d smem=%lld ctas/sm=%d\n", info.fast, info.m_tiles,
                  info.splits, info.stage_blocks, info.stages, info.grid_x, (long long)info.smem_bytes, info.ctas_per_sm);
      line("fp8_gemv bf16x block", median_us([&](int i) { fp8_gemv_out(x, w[i % copies], ScaleArg(wsb.view()), std::nullopt, y, cuda()); }, iters));
      line("fp8_gemv e4m3x 1x128 + block",
           median_us([&](int i) { fp8_gemv_out(xq, w[i % copies], ScaleArg(wsb.view()), ScaleArg(xsb.view()), y, cuda()); }, iters));
      // Configuration and split sweeps (for choosing the defaults).
      if (M == 1 || M == 16 || M == 64 || (M == 32 && N == 8192)) {
        for (auto [sb, nbuf] : gemv_op::gemv_fast_configs(info.m_tiles, 1))
          for (int sp : {0, 1, 2, 4}) {
            if (sp != 0 && !(N == 8192 || N == 4096)) continue;
            gemv_op::GemvTuning tu;
            tu.stage_blocks = sb;
            tu.stages = nbuf;
            tu.splits = sp;
            gemv_op::set_gemv_tuning_for_testing(tu);
            const double us = median_us(run_row, iters);
            const auto li = gemv_op::last_gemv_launch();
            line("  cfg " + std::to_string(sb) + "x" + std::to_string(nbuf) + " splits=" + std::to_string(li.splits) +
                     " ctas/sm=" + std::to_string(li.ctas_per_sm),
                 us);
          }
        gemv_op::set_gemv_tuning_for_testing({});
      }
      try {
        gemv_op::CublasLtGemm bf(gemv_op::CublasLtGemm::Kind::bf16, static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), 0);
        line("cublaslt bf16 x @ W.T (bf16 bytes)",
             median_us([&](int i) { bf.run(x.data(), wb[i % bcopies].data(), y.data(), nullptr, nullptr, nullptr); }, iters), 2.0);
      } catch (const Error& e) {
        std::printf("[timing]   cublaslt bf16: %s\n", e.what());
      }
      if (M >= 16) {
        try {
          gemv_op::CublasLtGemm f8(gemv_op::CublasLtGemm::Kind::fp8, static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), 0);
          line("cublaslt fp8 (_scaled_mm)", median_us([&](int i) {
                 f8.run(xq.data(), w[i % copies].data(), y.data(), one.ptr<float>(), one.ptr<float>(), nullptr);
               }, iters));
        } catch (const Error& e) {
          std::printf("[timing]   cublaslt fp8: %s\n", e.what());
        }
      }
      // Back-to-back (no host sync between calls): the rate a decode loop sees.
      {
        cudaEvent_t a, b;
        cudaEventCreate(&a);
        cudaEventCreate(&b);
        for (int i = 0; i < 4; ++i) run_row(i);
        cudaEventRecord(a, nullptr);
        for (int i = 0; i < 20; ++i) run_row(i);
        cudaEventRecord(b, nullptr);
        cudaEventSynchronize(b);
        float ms = 0;
        cudaEventElapsedTime(&ms, a, b);
        line("fp8_gemv per-row back-to-back x20", ms * 1000.0 / 20);
        cudaEventDestroy(a);
        cudaEventDestroy(b);
      }
    }
  }
}
#endif

}  // namespace
}  // namespace cppmega
