// Block-scaled FP8 (fp8_quantize_blocks / fp8_dequantize_blocks, mxfp8_quantize /
// mxfp8_dequantize): the reference against the contract, the CUDA backend against the reference
// (bit-exact codes and scales) over many shapes, dtypes and alignments, and every bad-input rule.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <vector>

#include "cppmega/ops/fp8_blocks.hpp"
#include "bench/cases.hpp"
#include "ops/fp8_blocks/fp8_blocks_args.hpp"
#include "core/host_values.hpp"
#include "test_util.hpp"

namespace cppmega::bench {
std::vector<CaseSuite> fp8_blocks_case_suites();  // src/ops/fp8_blocks/fp8_blocks_cases.cpp
}

#if CPPMEGA_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace cppmega {
namespace {

using test::Rng;
using test::cuda;
using test::expect_error;
using test::ref;
using test::median_us;




// Random values whose magnitude changes from row to row and block to block (so block scales
// differ), a few all-zero blocks-worth of zeros, never all zero. f16 stays in range.
Tensor random_x(Rng& rng, DType dt, const std::vector<std::int64_t>& shape) {
  Tensor t = Tensor::empty(dt, shape.data(), static_cast<int>(shape.size()));
  const std::int64_t n = t.numel();
  const std::int64_t K = shape.back();
  const float row_mag[5] = {1e-3f, 0.5f, 3.0f, 40.0f, 200.0f};
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t r = i / K, c = i % K;
    float v = rng.normal(row_mag[(r + c / 64) % 5]);
    if (i % 11 == 3) v = rng.normal(1e-5f);
    if ((r % 7 == 2) && (c / 128) % 3 == 1) v = 0.0f;  // whole zero blocks in some rows
    host::store_f32(t.view(), i, v);
  }
  host::store_f32(t.view(), n / 2, 1.0f);  // never all zero
  return t;
}


// A view of `t`'s storage starting `offset` elements in, with `shape` (contiguous).
TensorView offset_view(const Tensor& t, std::int64_t offset, const std::vector<std::int64_t>& shape) {
  TensorView v = TensorView::contiguous(static_cast<char*>(t.data()) + offset * static_cast<std::int64_t>(t.view().itemsize()),
                                        t.view().dtype, shape.data(), static_cast<int>(shape.size()), t.view().device);
  return v;
}

std::int64_t numel_of(const std::vector<std::int64_t>& s) {
  std::int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

std::string shape_name(const std::vector<std::int64_t>& s) {
  std::string r = "[";
  for (std::size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

// ---- reference vs the contract --------------------------------------------------------------------

TEST(Fp8BlocksReference, RowBlocksFollowTheContract) {
  Rng rng;
  SCOPED_TRACE(rng.trace());
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    for (bool pow2 : {false, true}) {
      const std::int64_t R = 9, K = 300;  // blocks of 128, 128, 44 per row
      Tensor x = random_x(rng, dt, {R, K});
      auto [q, s] = fp8_quantize_blocks(x, {Fp8BlockShape::b1x128, Fp8Format::e4m3, pow2, true}, ref());
      ASSERT_EQ(s.view().rank, 2);
      ASSERT_EQ(s.view().shape[0], R);
      ASSERT_EQ(s.view().shape[1], 3);
      bool saw_zero_block = false;
      for (std::int64_t r = 0; r < R; ++r)
        for (std::int64_t cb = 0; cb < 3; ++cb) {
          float amax = 0;
          for (std::int64_t c = cb * 128; c < std::min(K, cb * 128 + 128); ++c) amax = std::max(amax, std::fabs(host::load_f32(x, r * K + c)));
          const float want = num::scale_from_amax(amax, Fp8Format::e4m3, pow2);
          ASSERT_EQ(s.ptr<float>()[r * 3 + cb], want) << r << "," << cb;
          if (amax == 0) {
            saw_zero_block = true;
            EXPECT_EQ(want, 1.0f);
          }
          if (!pow2 && amax > 0) EXPECT_EQ(want, amax / 448.0f);
          const float inv = 1.0f / want;
          for (std::int64_t c = cb * 128; c < std::min(K, cb * 128 + 128); ++c)
            ASSERT_EQ(q.ptr<std::uint8_t>()[r * K + c], num::f32_to_fp8(host::load_f32(x, r * K + c) * inv, Fp8Format::e4m3));
        }
      EXPECT_TRUE(saw_zero_block);
      // Dequantize: decode * scale, then a round trip within e4m3's precision.
      Tensor y = fp8_dequantize_blocks(q, s, DType::f32, Fp8BlockShape::b1x128, ref());
      for (std::int64_t i = 0; i < R * K; ++i) {
        const float sc = s.ptr<float>()[(i / K) * 3 + (i % K) / 128];
        ASSERT_EQ(y.ptr<float>()[i], num::fp8_to_f32(q.ptr<std::uint8_t>()[i], Fp8Format::e4m3) * sc);
        const float xv = host::load_f32(x, i);
        EXPECT_LE(std::fabs(y.ptr<float>()[i] - xv), std::fabs(xv) * 0.0625f + sc * 0.002f) << i;
      }
    }
  }
}

TEST(Fp8BlocksReference, TileBlocksCoverBatchesAndPartialEdges) {
  Rng rng;
  SCOPED_TRACE(rng.trace());
  const std::int64_t B = 2, M = 200, K = 260;
  Tensor x = random_x(rng, DType::f32, {B, M, K});
  auto [q, s] = fp8_quantize_blocks(x, {Fp8BlockShape::b128x128, Fp8Format::e5m2, false, true}, ref());
  ASSERT_EQ(s.view().rank, 3);
  EXPECT_EQ(s.view().shape[0], B);
  EXPECT_EQ(s.view().shape[1], 2);
  EXPECT_EQ(s.view().shape[2], 3);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t rb = 0; rb < 2; ++rb)
      for (std::int64_t cb = 0; cb < 3; ++cb) {
        float amax = 0;
        for (std::int64_t r = rb * 128; r < std::min(M, rb * 128 + 128); ++r)
          for (std::int64_t c = cb * 128; c < std::min(K, cb * 128 + 128); ++c)
            amax = std::max(amax, std::fabs(x.ptr<float>()[(b * M + r) * K + c]));
        const float sc = s.ptr<float>()[(b * 2 + rb) * 3 + cb];
        ASSERT_EQ(sc, num::scale_from_amax(amax, Fp8Format::e5m2, false));
        for (std::int64_t r = rb * 128; r < std::min(M, rb * 128 + 128); ++r)
          for (std::int64_t c = cb * 128; c < std::min(K, cb * 128 + 128); ++c) {
            const std::int64_t i = (b * M + r) * K + c;
            ASSERT_EQ(q.ptr<std::uint8_t>()[i], num::f32_to_fp8(x.ptr<float>()[i] * (1.0f / sc), Fp8Format::e5m2));
          }
      }
}

TEST(Fp8BlocksReference, MxScaleRule) {
  using fp8_blocks::mx_scale_exponent;
  EXPECT_EQ(mx_scale_exponent(0.0f), -127);                   // amax 0 -> byte 0
  EXPECT_EQ(mx_scale_exponent(1.0f), -8);                     // floor(log2 1) - 8
  EXPECT_EQ(mx_scale_exponent(1.99f), -8);
  EXPECT_EQ(mx_scale_exponent(448.0f), 0);                    // 448 = 1.75 * 2^8
  EXPECT_EQ(mx_scale_exponent(512.0f), 1);
  EXPECT_EQ(mx_scale_exponent(std::ldexp(1.0f, -120)), -127);  // clamped
  EXPECT_EQ(mx_scale_exponent(std::ldexp(1.0f, -119)), -127);
  EXPECT_EQ(mx_scale_exponent(std::ldexp(1.0f, -118)), -126);
  EXPECT_EQ(mx_scale_exponent(1e-40f), -127);                 // subnormal amax
  EXPECT_EQ(mx_scale_exponent(3.0e38f), 127 - 8);
  float inv = 0;
  EXPECT_EQ(fp8_blocks::mx_scale(INFINITY, inv), 0xFF);
  EXPECT_TRUE(std::isnan(inv));
  EXPECT_EQ(fp8_blocks::mx_scale(1.5f, inv), 127 - 8);
  EXPECT_EQ(inv, 256.0f);

  Rng rng;
  SCOPED_TRACE(rng.trace());
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    const std::int64_t R = 5, K = 160;
    Tensor x = random_x(rng, dt, {R, K});
    host::store_f32(x.view(), 40, 1.96f * 64.0f);  // block 1 of row 0: amax in [64,128) -> X = -2, 125.4*4 = 501.8 saturates
    for (std::int64_t c = 64; c < 96; ++c) host::store_f32(x.view(), K + c, 0.0f);  // row 1, block 2: all zero
    auto [q, s] = mxfp8_quantize(x, {}, ref());
    ASSERT_EQ(s.view().dtype, DType::e8m0);
    ASSERT_EQ(s.view().shape[1], K / 32);
    for (std::int64_t r = 0; r < R; ++r)
      for (std::int64_t cb = 0; cb < K / 32; ++cb) {
        float amax = 0;
        for (std::int64_t c = cb * 32; c < cb * 32 + 32; ++c) amax = std::max(amax, std::fabs(host::load_f32(x, r * K + c)));
        const int X = amax == 0 ? -127 : std::max(-127, std::ilogb(amax) - 8);
        const std::uint8_t byte = s.ptr<std::uint8_t>()[r * (K / 32) + cb];
        ASSERT_EQ(byte, X + 127) << r << "," << cb << " amax " << amax;
        for (std::int64_t c = cb * 32; c < cb * 32 + 32; ++c)
          ASSERT_EQ(q.ptr<std::uint8_t>()[r * K + c],
                    num::f32_to_fp8(host::load_f32(x, r * K + c) * std::ldexp(1.0f, -X), Fp8Format::e4m3));
      }
    EXPECT_EQ(s.ptr<std::uint8_t>()[1 * (K / 32) + 2], 0);     // the all-zero block
    EXPECT_EQ(q.ptr<std::uint8_t>()[40] & 0x7F, 0x7E);         // saturated to 448
    Tensor y = mxfp8_dequantize(q, s, DType::f32, ref());
    for (std::int64_t i = 0; i < R * K; ++i)
      ASSERT_EQ(y.ptr<float>()[i], num::fp8_to_f32(q.ptr<std::uint8_t>()[i], Fp8Format::e4m3) *
                                       num::e8m0_to_f32(s.ptr<std::uint8_t>()[(i / K) * (K / 32) + (i % K) / 32]));
  }
}

// NaN/Inf blocks: NonFinite with check_finite; without it NaN scales (0xFF for MX) and NaN codes in
// that block only. With the check the outputs are written as without it.
void check_non_finite(const CallOptions& opts, Device dev) {
  Rng rng;
  SCOPED_TRACE(rng.trace());
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    for (int variant = 0; variant < 3; ++variant) {
      const std::vector<std::int64_t> shape = {300, 256};
      Tensor xh = random_x(rng, DType::bf16, shape);
      const std::int64_t bad_i = 130 * 256 + 200;  // row 130, column block 1
      host::store_f32(xh.view(), bad_i, bad);
      Tensor x = xh.to(dev);
      SCOPED_TRACE("variant " + std::to_string(variant) + " bad " + std::to_string(bad));
      if (variant < 2) {
        const Fp8BlockShape blk = variant == 0 ? Fp8BlockShape::b1x128 : Fp8BlockShape::b128x128;
        auto ss = fp8_block_scales_shape(x, blk);
        Tensor q = Tensor::empty(DType::e4m3, shape.data(), 2, dev);
        Tensor s = Tensor::empty(DType::f32, ss.data(), static_cast<int>(ss.size()), dev);
        expect_error(ErrorKind::NonFinite, "fp8_quantize_blocks: x contains NaN or Inf",
                     [&] { fp8_quantize_blocks_out(x, q, s, {blk, Fp8Format::e4m3, false, true}, opts); });
        const auto q_checked = test::bytes_of(q), s_checked = test::bytes_of(s);
        test::poison(q, 0x11);
        test::poison(s, 0x11);
        fp8_quantize_blocks_out(x, q, s, {blk, Fp8Format::e4m3, false, false}, opts);
        EXPECT_EQ(test::count_mismatches(test::bytes_of(q), q_checked), 0u);
        EXPECT_EQ(test::count_mismatches(test::bytes_of(s), s_checked), 0u);
        Tensor sh = s.to(Device::cpu()), qh = q.to(Device::cpu());
        const std::int64_t bad_block = variant == 0 ? 130 * 2 + 1 : 1 * 2 + 1;
        for (std::int64_t b = 0; b < sh.numel(); ++b) EXPECT_EQ(std::isnan(sh.ptr<float>()[b]), b == bad_block) << b;
        EXPECT_EQ(qh.ptr<std::uint8_t>()[bad_i], 0x7F);
        EXPECT_EQ(qh.ptr<std::uint8_t>()[130 * 256 + 129], 0x7F);  // the whole block is NaN
      } else {
        auto ss = mxfp8_scales_shape(x);
        Tensor q = Tensor::empty(DType::e4m3, shape.data(), 2, dev);
        Tensor s = Tensor::empty(DType::e8m0, ss.data(), 2, dev);
        expect_error(ErrorKind::NonFinite, "mxfp8_quantize: x contains NaN or Inf", [&] { mxfp8_quantize_out(x, q, s, {true}, opts); });
        mxfp8_quantize_out(x, q, s, {false}, opts);
        Tensor sh = s.to(Device::cpu());
        for (std::int64_t b = 0; b < sh.numel(); ++b) EXPECT_EQ(sh.ptr<std::uint8_t>()[b] == 0xFF, b == 130 * 8 + 6) << b;
      }
    }
  }
}

TEST(Fp8BlocksReference, NonFiniteBlocks) { check_non_finite(ref(), Device::cpu()); }

TEST(Fp8BlocksReference, EmptyTensors) {
  for (auto shape : std::vector<std::vector<std::int64_t>>{{0, 128}, {4, 0}, {0}, {2, 0, 64}}) {
    Tensor x = Tensor::empty(DType::bf16, shape.data(), static_cast<int>(shape.size()));
    auto [q, s] = fp8_quantize_blocks(x, {}, ref());
    EXPECT_EQ(q.numel(), 0);
    EXPECT_EQ(s.numel(), 0);
    EXPECT_EQ(fp8_dequantize_blocks(q, s, DType::f32, Fp8BlockShape::b1x128, ref()).numel(), 0);
    auto [mq, ms] = mxfp8_quantize(x, {}, ref());
    EXPECT_EQ(ms.numel(), 0);
    if (shape.size() >= 2) {
      auto [tq, ts] = fp8_quantize_blocks(x, {Fp8BlockShape::b128x128}, ref());
      EXPECT_EQ(ts.numel(), 0);
    }
  }
}

// ---- bad input -----------------------------------------------------------------------------------

TEST(Fp8BlocksErrors, EveryRuleHasAClearMessage) {
  Rng rng;
  Tensor x = random_x(rng, DType::bf16, {4, 200});
  Tensor q = Tensor::empty(DType::e4m3, {4, 200});
  Tensor s = Tensor::empty(DType::f32, {4, 2});
  Tensor s_bad = Tensor::empty(DType::f32, {4, 1});
  Tensor s_i32 = Tensor::empty(DType::i32, {4, 2});
  Tensor x1 = random_x(rng, DType::bf16, {200});
  expect_error(ErrorKind::InvalidArgument, "fp8_quantize_blocks: scales must have shape [4,2] (x.shape[:-1] + [ceil(K/128)]",
               [&] { fp8_quantize_blocks_out(x, q, s_bad); });
  expect_error(ErrorKind::InvalidArgument, "fp8_quantize_blocks: scales must be f32, got i32[4,2]",
               [&] { fp8_quantize_blocks_out(x, q, s_i32); });
  expect_error(ErrorKind::InvalidArgument, "fp8_quantize_blocks: scales must have shape [1,2] (x.shape[:-2] + [ceil(M/128), ceil(K/128)]",
               [&] { fp8_quantize_blocks_out(x, q, s, {Fp8BlockShape::b128x128}); });
  expect_error(ErrorKind::InvalidArgument, "fp8_quantize_blocks: x must have rank >= 2 [..., M, K] for 128x128 blocks, got bf16[200]",
               [&] { fp8_quantize_blocks(x1, {Fp8BlockShape::b128x128}); });
  expect_error(ErrorKind::InvalidArgument, "fp8_quantize_blocks: q must have the format's dtype e5m2, got e4m3",
               [&] { fp8_quantize_blocks_out(x, q, s, {Fp8BlockShape::b1x128, Fp8Format::e5m2}); });
  expect_error(ErrorKind::InvalidArgument, "fp8_quantize_blocks: x must be f32, bf16 or f16, got e4m3", [&] { fp8_quantize_blocks(q); });
  Tensor q_wrong = Tensor::empty(DType::e4m3, {4, 100});
  expect_error(ErrorKind::InvalidArgument, "fp8_quantize_blocks: q must have the shape of x [4,200]",
               [&] { fp8_quantize_blocks_out(x, q_wrong, s); });
  expect_error(ErrorKind::InvalidArgument, "fp8_dequantize_blocks: scales must have shape [4,2]",
               [&] { fp8_dequantize_blocks(q, s_bad, DType::f32); });
  expect_error(ErrorKind::InvalidArgument, "fp8_dequantize_blocks: out must be f32, bf16 or f16",
               [&] { fp8_dequantize_blocks(q, s, DType::i32); });
  expect_error(ErrorKind::InvalidArgument, "fp8_dequantize_blocks: q must be e4m3 or e5m2, got bf16", [&] { fp8_dequantize_blocks(x, s, DType::f32); });
  // MXFP8: K % 32, scale dtype and shape.
  Tensor x_odd = random_x(rng, DType::bf16, {4, 48});
  expect_error(ErrorKind::InvalidArgument,
               "mxfp8_quantize: the last dim K of x must be a multiple of 32 (one e8m0 scale per 32 values), got K=48",
               [&] { mxfp8_quantize(x_odd); });
  Tensor xm = random_x(rng, DType::f32, {4, 64});
  Tensor qm = Tensor::empty(DType::e4m3, {4, 64});
  Tensor sm_f32 = Tensor::empty(DType::f32, {4, 2});
  Tensor sm_bad = Tensor::empty(DType::e8m0, {4, 3});
  Tensor sm = Tensor::empty(DType::e8m0, {4, 2});
  expect_error(ErrorKind::InvalidArgument, "mxfp8_quantize: scales must be e8m0, got f32[4,2]", [&] { mxfp8_quantize_out(xm, qm, sm_f32); });
  expect_error(ErrorKind::InvalidArgument, "mxfp8_quantize: scales must have shape [4,2] (x.shape[:-1] + [K/32]), got e8m0[4,3]",
               [&] { mxfp8_quantize_out(xm, qm, sm_bad); });
  Tensor q_e5 = Tensor::empty(DType::e5m2, {4, 64});
  expect_error(ErrorKind::InvalidArgument, "mxfp8_quantize: q must be e4m3, got e5m2", [&] { mxfp8_quantize_out(xm, q_e5, sm); });
  Tensor q_odd = Tensor::empty(DType::e4m3, {4, 40});
  Tensor s_odd = Tensor::empty(DType::e8m0, {4, 2});
  expect_error(ErrorKind::InvalidArgument, "mxfp8_dequantize: the last dim K of q must be a multiple of 32",
               [&] { mxfp8_dequantize(q_odd, s_odd, DType::f32); });
  expect_error(ErrorKind::InvalidArgument, "mxfp8_dequantize: scales must be e8m0", [&] { mxfp8_dequantize(qm, sm_f32, DType::f32); });
  // Non-contiguous x.
  TensorView strided = x.view();
  strided.shape[1] = 100;
  strided.strides[1] = 2;
  expect_error(ErrorKind::InvalidArgument, "fp8_quantize_blocks: x must be contiguous", [&] { fp8_quantize_blocks(strided); });
  expect_error(ErrorKind::InvalidArgument, "fp8 blocks: block shape must be 1x128 or 128x128, got '1x64'",
               [] { parse_fp8_block_shape("1x64"); });
  EXPECT_EQ(parse_fp8_block_shape("128x128"), Fp8BlockShape::b128x128);
}

// ---- bench cases ---------------------------------------------------------------------------------

void run_bench_cases(const Device& dev, bool time_them) {
  const auto suites = bench::fp8_blocks_case_suites();
  ASSERT_EQ(suites.size(), 4u);
  for (const auto& suite : suites) {
    for (std::int64_t n : suite.default_sizes(dev)) {
      bench::CaseParams p;
      p.device = dev;
      p.n = time_them ? n : (n > 0 ? 8192 * 3 : -8192 * 3);
      p.dtype = DType::bf16;
      p.seed = 99;
      auto c = suite.make(p);
      SCOPED_TRACE(suite.op + " " + c->name);
      EXPECT_EQ(c->op, suite.op);
      const std::vector<std::string> backends = bench::runnable_backends(suite.op, dev);
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
        std::printf("[bench] %-24s %-28s %-14s %9.2f us %6.3f TB/s\n", suite.op.c_str(), r.name.c_str(), label.c_str(),
                    st.median_us, r.bytes / st.median_us * 1e-6);
      for (auto& [label, pr] : r.parity) EXPECT_TRUE(pr.ok) << label << ": " << pr.metric << " " << pr.value;
    }
  }
}

TEST(Fp8BlocksBench, CpuCasesParity) { run_bench_cases(Device::cpu(), false); }

// ---- CUDA vs reference -----------------------------------------------------------------------------

struct Shape {
  std::vector<std::int64_t> dims;
};

TEST(Fp8BlocksCuda, QuantizeMatchesReferenceBitExact) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  Rng rng;
  SCOPED_TRACE(rng.trace());
  const Device gpu = Device::cuda(0);
  const std::vector<std::vector<std::int64_t>> shapes = {
      {1, 1}, {1, 128}, {3, 130}, {5, 1000}, {2, 4096}, {129, 257}, {7, 16}, {33, 8208}, {300, 384}, {2, 130, 272}, {700},
      {1, 2, 3, 256}, {257, 64}, {64, 1040}};
  int cases = 0;
  for (const auto& shape : shapes) {
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      for (std::int64_t offset : {0LL, 1LL}) {
        const std::int64_t n = numel_of(shape);
        Tensor xh_store = random_x(rng, dt, {n + offset});
        Tensor xd_store = xh_store.to(gpu);
        const TensorView xh = offset_view(xh_store, offset, shape), xd = offset_view(xd_store, offset, shape);
        for (Fp8BlockShape blk : {Fp8BlockShape::b1x128, Fp8BlockShape::b128x128}) {
          if (blk == Fp8BlockShape::b128x128 && shape.size() < 2) continue;
          for (Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) {
            const bool pow2 = rng.uniform(0, 1) == 1;
            SCOPED_TRACE(std::string(dtype_name(dt)) + " " + shape_name(shape) + " offset " + std::to_string(offset) + " " +
                         fp8_block_shape_name(blk) + " " + fp8_format_name(f) + (pow2 ? " pow2" : ""));
            const BlockQuantOptions o{blk, f, pow2, true};
            auto [qh, sh] = fp8_quantize_blocks(xh, o, ref());
            const auto ss = fp8_block_scales_shape(xd, blk);
            Tensor qd_store = Tensor::empty(fp8_dtype(f), {n + offset}, gpu);
            Tensor sd = Tensor::empty(DType::f32, ss.data(), static_cast<int>(ss.size()), gpu);
            test::poison(qd_store);
            test::poison(sd);
            const TensorView qd = offset_view(qd_store, offset, shape);
            fp8_quantize_blocks_out(xd, qd, sd, o, cuda());
            ASSERT_EQ(test::count_mismatches(test::bytes_of(sd), test::bytes_of(sh)), 0u) << "scales";
            ASSERT_EQ(test::count_mismatches(test::bytes_of(qd), test::bytes_of(qh)), 0u) << "q";
            for (DType od : {DType::f32, DType::bf16, DType::f16}) {
              Tensor yh = fp8_dequantize_blocks(qh, sh, od, blk, ref());
              Tensor yd_store = Tensor::empty(od, {n + offset}, gpu);
              test::poison(yd_store);
              const TensorView yd = offset_view(yd_store, offset, shape);
              fp8_dequantize_blocks_out(qd, sd, yd, blk, cuda());
              ASSERT_EQ(test::count_mismatches(test::bytes_of(yd), test::bytes_of(yh)), 0u) << "dequantize to " << dtype_name(od);
            }
            ++cases;
          }
        }
        // MXFP8 where K % 32 == 0
        if (shape.back() % 32 == 0) {
          SCOPED_TRACE(std::string("mxfp8 ") + dtype_name(dt) + " " + shape_name(shape) + " offset " + std::to_string(offset));
          auto [qh, sh] = mxfp8_quantize(xh, {true}, ref());
          const auto ss = mxfp8_scales_shape(xd);
          Tensor qd_store = Tensor::empty(DType::e4m3, {n + offset}, gpu);
          Tensor sd = Tensor::empty(DType::e8m0, ss.data(), static_cast<int>(ss.size()), gpu);
          test::poison(qd_store);
          test::poison(sd, 0x5A);
          const TensorView qd = offset_view(qd_store, offset, shape);
          mxfp8_quantize_out(xd, qd, sd, {true}, cuda());
          ASSERT_EQ(test::count_mismatches(test::bytes_of(sd), test::bytes_of(sh)), 0u) << "e8m0 scales";
          ASSERT_EQ(test::count_mismatches(test::bytes_of(qd), test::bytes_of(qh)), 0u) << "q";
          for (DType od : {DType::f32, DType::bf16}) {
            Tensor yh = mxfp8_dequantize(qh, sh, od, ref());
            Tensor yd = Tensor::empty(od, shape.data(), static_cast<int>(shape.size()), gpu);
            test::poison(yd);
            mxfp8_dequantize_out(qd, sd, yd, cuda());
            ASSERT_EQ(test::count_mismatches(test::bytes_of(yd), test::bytes_of(yh)), 0u) << "mx dequantize to " << dtype_name(od);
          }
          ++cases;
        }
      }
    }
  }
  EXPECT_GT(cases, 200);
}

// Random bytes (every pattern, NaN included) against the reference: codecs and scale rules on
// the whole input space, including subnormal blocks and huge values.
TEST(Fp8BlocksCuda, RandomBitPatterns) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  Rng rng;
  SCOPED_TRACE(rng.trace());
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    const std::vector<std::int64_t> shape = {256, 512};
    Tensor xh = Tensor::empty(dt, shape.data(), 2);
    auto* bytes = static_cast<std::uint8_t*>(xh.data());
    const std::int64_t nb = xh.numel() * static_cast<std::int64_t>(dtype_size(dt));
    for (std::int64_t i = 0; i < nb; ++i) bytes[i] = static_cast<std::uint8_t>(rng.bits());
    // Scale each row's exponent range down in half of the rows so finite blocks exist too.
    for (std::int64_t i = 0; i < xh.numel(); ++i)
      if ((i / 512) % 2 == 0) host::store_f32(xh.view(), i, std::ldexp(rng.normal(1.0f), static_cast<int>(rng.uniform(-140, 120)) / (dt == DType::f32 ? 1 : 10)));
    Tensor xd = xh.to(Device::cuda(0));
    for (Fp8BlockShape blk : {Fp8BlockShape::b1x128, Fp8BlockShape::b128x128}) {
      auto [qh, sh] = fp8_quantize_blocks(xh, {blk, Fp8Format::e4m3, false, false}, ref());
      auto [qd, sd] = fp8_quantize_blocks(xd, {blk, Fp8Format::e4m3, false, false}, cuda());
      EXPECT_EQ(test::count_mismatches(test::bytes_of(sd), test::bytes_of(sh)), 0u) << dtype_name(dt);
      EXPECT_EQ(test::count_mismatches(test::bytes_of(qd), test::bytes_of(qh)), 0u) << dtype_name(dt);
    }
    auto [qh, sh] = mxfp8_quantize(xh, {false}, ref());
    auto [qd, sd] = mxfp8_quantize(xd, {false}, cuda());
    EXPECT_EQ(test::count_mismatches(test::bytes_of(sd), test::bytes_of(sh)), 0u) << dtype_name(dt);
    EXPECT_EQ(test::count_mismatches(test::bytes_of(qd), test::bytes_of(qh)), 0u) << dtype_name(dt);
  }
}

TEST(Fp8BlocksCuda, NonFiniteBlocks) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  check_non_finite(cuda(), Device::cuda(0));
}

TEST(Fp8BlocksCuda, EmptyTensorsAndAutoSelection) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  Tensor x0 = Tensor::empty(DType::bf16, {0, 256}, gpu);
  auto [q0, s0] = fp8_quantize_blocks(x0, {}, cuda());
  EXPECT_EQ(s0.numel(), 0);
  Rng rng;
  Tensor x = random_x(rng, DType::bf16, {4, 256}).to(gpu);
  clear_dispatch_log();
  fp8_quantize_blocks(x);
  mxfp8_quantize(x);
  auto log = dispatch_log();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].op, "fp8_quantize_blocks");
  EXPECT_EQ(log[0].backend, "cuda");
  EXPECT_EQ(log[1].op, "mxfp8_quantize");
  EXPECT_EQ(log[1].backend, "cuda");
}

// ---- timing (run with --gtest_also_run_disabled_tests) ---------------------------------------------
#if CPPMEGA_WITH_CUDA
#endif

TEST(Fp8BlocksCuda, DISABLED_BenchCases) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  run_bench_cases(Device::cuda(0), true);
}

TEST(Fp8BlocksCuda, DISABLED_Timing) {
  CPPMEGA_SKIP_WITHOUT_GPU();
#if CPPMEGA_WITH_CUDA
  const Device gpu = Device::cuda(0);
  const std::int64_t R = 8192, K = 8192;  // 64M elements
  Rng rng;
  Tensor xh = Tensor::empty(DType::bf16, {R, K});
  for (std::int64_t i = 0; i < R * K; ++i) xh.ptr<std::uint16_t>()[i] = num::f32_to_bf16(rng.normal(1.0f) * ((i / 1000) % 7 + 1));
  Tensor x = xh.to(gpu);
  Tensor q = Tensor::empty(DType::e4m3, {R, K}, gpu);
  Tensor s1 = Tensor::empty(DType::f32, {R, K / 128}, gpu);
  Tensor s2 = Tensor::empty(DType::f32, {R / 128, K / 128}, gpu);
  Tensor sm = Tensor::empty(DType::e8m0, {R, K / 32}, gpu);
  Tensor y = Tensor::empty(DType::bf16, {R, K}, gpu);
  const double n = static_cast<double>(R * K);
  auto report = [&](const char* what, double us, double bytes) {
    std::printf("[timing] %-44s %9.1f us  %6.3f TB/s\n", what, us, bytes / us * 1e-6);
  };
  const int it = 30;
  report("fp8_quantize_blocks 1x128 bf16 64M", median_us([&](int) { fp8_quantize_blocks_out(x, q, s1, {Fp8BlockShape::b1x128, Fp8Format::e4m3, false, false}, cuda()); }, it),
         n * 3 + n / 128 * 4);
  report("fp8_quantize_blocks 1x128 bf16 64M checked", median_us([&](int) { fp8_quantize_blocks_out(x, q, s1, {}, cuda()); }, it),
         n * 3 + n / 128 * 4);
  report("fp8_quantize_blocks 1x128 pow2 64M", median_us([&](int) { fp8_quantize_blocks_out(x, q, s1, {Fp8BlockShape::b1x128, Fp8Format::e4m3, true, false}, cuda()); }, it),
         n * 3 + n / 128 * 4);
  report("fp8_quantize_blocks 128x128 bf16 64M", median_us([&](int) { fp8_quantize_blocks_out(x, q, s2, {Fp8BlockShape::b128x128, Fp8Format::e4m3, false, false}, cuda()); }, it),
         n * 3);
  report("mxfp8_quantize bf16 64M", median_us([&](int) { mxfp8_quantize_out(x, q, sm, {false}, cuda()); }, it), n * 3 + n / 32);
  report("mxfp8_quantize bf16 64M checked", median_us([&](int) { mxfp8_quantize_out(x, q, sm, {true}, cuda()); }, it), n * 3 + n / 32);
  report("fp8_dequantize_blocks 1x128 -> bf16 64M", median_us([&](int) { fp8_dequantize_blocks_out(q, s1, y, Fp8BlockShape::b1x128, cuda()); }, it),
         n * 3 + n / 128 * 4);
  report("mxfp8_dequantize -> bf16 64M", median_us([&](int) { mxfp8_dequantize_out(q, sm, y, cuda()); }, it), n * 3 + n / 32);
  // Rows of K = 7168 + 64 (not a multiple of 128: the padded-slot kernel).
  Tensor xo = xh.to(gpu);
  TensorView xv = offset_view(xo, 0, {R * K / 7232, 7232});
  Tensor qo = Tensor::empty(DType::e4m3, {R * K / 7232, 7232}, gpu);
  Tensor so = Tensor::empty(DType::f32, {R * K / 7232, 57}, gpu);
  report("fp8_quantize_blocks 1x128 K=7232 (partial)", median_us([&](int) { fp8_quantize_blocks_out(xv, qo, so, {Fp8BlockShape::b1x128, Fp8Format::e4m3, false, false}, cuda()); }, it),
         static_cast<double>(xv.numel()) * 3);
#endif
}

}  // namespace
}  // namespace cppmega
