// The per-tensor FP8 ops: the reference against the contract, every CUDA backend against the
// reference (bit-exact), and every bad-input rule of docs/contracts.md sections 1-3.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>

#include "cppmega/ops/fp8.hpp"
#include "core/host_values.hpp"
#include "test_util.hpp"

namespace cppmega {
namespace {

using test::Rng;
using test::cuda;
using test::expect_error;
using test::ref;

// Random values of several magnitudes (never all zero), stored as `dtype`.
Tensor random_floats(Rng& rng, DType dtype, std::initializer_list<std::int64_t> dims, float sd = 3.0f) {
  Tensor t = Tensor::empty(dtype, dims);
  const std::int64_t n = t.numel();
  for (std::int64_t i = 0; i < n; ++i) {
    float v = rng.normal(sd) * (i % 7 == 0 ? 100.0f : 1.0f);
    if (i % 13 == 5) v = rng.normal(1e-3f);
    switch (dtype) {
      case DType::f32: t.ptr<float>()[i] = v; break;
      case DType::bf16: t.ptr<std::uint16_t>()[i] = num::f32_to_bf16(v); break;
      case DType::f16: t.ptr<std::uint16_t>()[i] = num::f32_to_f16(v); break;
      default: ADD_FAILURE() << "bad dtype";
    }
  }
  return t;
}



float scalar(const Tensor& t) { return *t.to(Device::cpu()).ptr<float>(); }



// ---- reference vs the contract -------------------------------------------------------------

TEST(Fp8Reference, AmaxIsMaxAbsAndPropagatesNaNAndInf) {
  Rng rng;
  SCOPED_TRACE(rng.trace());
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    Tensor x = random_floats(rng, dt, {3, 1001});
    float want = 0;
    for (std::int64_t i = 0; i < x.numel(); ++i) want = std::max(want, std::fabs(host::load_f32(x, i)));
    EXPECT_EQ(scalar(fp8_amax(x, ref())), want);
    host::store_f32(x, 1234, -INFINITY);
    EXPECT_EQ(scalar(fp8_amax(x, ref())), INFINITY);
    host::store_f32(x, 77, NAN);
    EXPECT_TRUE(std::isnan(scalar(fp8_amax(x, ref()))));
  }
  Tensor empty = Tensor::empty(DType::bf16, {0, 5});
  EXPECT_EQ(scalar(fp8_amax(empty, ref())), 0.0f);
}

TEST(Fp8Reference, QuantizeAndDequantizeFollowTheFormula) {
  Rng rng;
  SCOPED_TRACE(rng.trace());
  Tensor x = random_floats(rng, DType::bf16, {257, 3});
  const float scale = 0.37f;
  for (Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) {
    Tensor q = fp8_quantize(x, scale, f, ref());
    const float inv = 1.0f / scale;
    for (std::int64_t i = 0; i < x.numel(); ++i)
      ASSERT_EQ(q.ptr<std::uint8_t>()[i], num::f32_to_fp8(host::load_f32(x, i) * inv, f)) << i;
    for (DType od : {DType::f32, DType::bf16, DType::f16}) {
      Tensor y = fp8_dequantize(q, scale, od, ref());
      for (std::int64_t i = 0; i < x.numel(); ++i) {
        const float want = num::fp8_to_f32(q.ptr<std::uint8_t>()[i], f) * scale;
        const float rounded = od == DType::f32    ? want
                              : od == DType::bf16 ? num::bf16_to_f32(num::f32_to_bf16(want))
                                                  : num::f16_to_f32(num::f32_to_f16(want));
        ASSERT_EQ(host::load_f32(y, i), rounded) << i;
      }
    }
  }
}

TEST(Fp8Reference, PackDerivesScaleAndQuantizes) {
  Rng rng;
  SCOPED_TRACE(rng.trace());
  Tensor x = random_floats(rng, DType::f32, {4096});
  float amax = 0;
  for (std::int64_t i = 0; i < x.numel(); ++i) amax = std::max(amax, std::fabs(x.ptr<float>()[i]));
  for (bool pow2 : {false, true}) {
    auto [q, s] = fp8_pack(x, {Fp8Format::e4m3, pow2, true}, ref());
    const float want_scale = num::scale_from_amax(amax, Fp8Format::e4m3, pow2);
    EXPECT_EQ(*s.ptr<float>(), want_scale);
    if (!pow2) EXPECT_EQ(*s.ptr<float>(), amax / 448.0f);
    Tensor q2 = fp8_quantize(x, want_scale, Fp8Format::e4m3, ref());
    EXPECT_EQ(test::count_mismatches(test::bytes_of(q), test::bytes_of(q2)), 0u);
  }
  // All-zero input: scale 1.
  Tensor z = Tensor::empty(DType::bf16, {8});
  for (int i = 0; i < 8; ++i) z.ptr<std::uint16_t>()[i] = i % 2 ? 0x8000 : 0;  // +0 and -0
  auto [qz, sz] = fp8_pack(z, {}, ref());
  EXPECT_EQ(*sz.ptr<float>(), 1.0f);
}

void check_pack_non_finite(const CallOptions& opts, Device dev) {
  Rng rng;
  SCOPED_TRACE(rng.trace());
  for (std::int64_t n : {4096LL, 1LL << 20}) {
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      Tensor xh = random_floats(rng, DType::bf16, {n});
      host::store_f32(xh, n / 3, bad);
      Tensor x = xh.to(dev);
      Tensor q = Tensor::empty(DType::e4m3, {n}, dev);
      Tensor s = Tensor::empty(DType::f32, {}, dev);
      test::poison(q, 0x5A);
      expect_error(ErrorKind::NonFinite, "fp8_pack: x contains", [&] { fp8_pack_out(x, q, s, {}, opts); });
      for (std::uint8_t b : test::bytes_of(q)) ASSERT_EQ(b, 0x5A) << "q was written despite NonFinite";
      EXPECT_TRUE(std::isnan(scalar(s))) << "the scale of a refused pack is NaN";
      // Without the check: a NaN scale, no error.
      fp8_pack_out(x, q, s, {Fp8Format::e4m3, false, false}, opts);
      EXPECT_TRUE(std::isnan(scalar(s)));
    }
  }
}

TEST(Fp8Reference, PackRefusesNonFinite) { check_pack_non_finite(ref(), Device::cpu()); }

TEST(Fp8Reference, EmptyTensors) {
  Tensor x = Tensor::empty(DType::bf16, {0});
  Tensor q = fp8_quantize(x, 2.0f, Fp8Format::e4m3, ref());
  EXPECT_EQ(q.numel(), 0);
  auto [q2, s2] = fp8_pack(x, {}, ref());
  EXPECT_EQ(*s2.ptr<float>(), 1.0f);
  EXPECT_EQ(fp8_dequantize(q, 1.0f, DType::f32, ref()).numel(), 0);
}

// ---- bad input -------------------------------------------------------------------------------

TEST(Fp8Errors, EveryRuleHasAClearMessage) {
  Rng rng;
  Tensor x = random_floats(rng, DType::bf16, {4, 8});
  Tensor q = Tensor::empty(DType::e4m3, {4, 8});
  Tensor s = Tensor::empty(DType::f32, {});
  Tensor i32 = Tensor::empty(DType::i32, {4, 8});
  expect_error(ErrorKind::InvalidArgument, "fp8_amax: x must be f32, bf16 or f16, got i32[4,8] cpu", [&] { fp8_amax(i32); });
  expect_error(ErrorKind::InvalidArgument, "fp8_amax: out must be f32", [&] { fp8_amax_out(x, q); });
  Tensor f32_vec = Tensor::empty(DType::f32, {2});
  expect_error(ErrorKind::InvalidArgument, "fp8_amax: out must have exactly 1 element(s), got f32[2] cpu",
               [&] { fp8_amax_out(x, f32_vec); });
  expect_error(ErrorKind::InvalidArgument, "fp8_quantize: out must be e4m3 or e5m2, got bf16", [&] { fp8_quantize_out(x, 1.0f, x); });
  Tensor q_wrong = Tensor::empty(DType::e4m3, {8, 4});
  expect_error(ErrorKind::InvalidArgument, "fp8_quantize: out must have the shape of x [4,8], got e4m3[8,4]",
               [&] { fp8_quantize_out(x, 1.0f, q_wrong); });
  expect_error(ErrorKind::InvalidArgument, "fp8_quantize: scale must be finite and > 0, got 0", [&] { fp8_quantize(x, 0.0f); });
  expect_error(ErrorKind::InvalidArgument, "fp8_quantize: scale must be finite and > 0", [&] { fp8_quantize(x, NAN); });
  expect_error(ErrorKind::InvalidArgument, "fp8_quantize: scale must be f32", [&] { fp8_quantize(x, ScaleArg(i32.view())); });
  expect_error(ErrorKind::InvalidArgument, "fp8_dequantize: q must be e4m3 or e5m2", [&] { fp8_dequantize(x, 1.0f, DType::f32); });
  expect_error(ErrorKind::InvalidArgument, "fp8_dequantize: out must be f32, bf16 or f16",
               [&] { fp8_dequantize(q, 1.0f, DType::i32); });
  expect_error(ErrorKind::InvalidArgument, "fp8_pack: q must have the format's dtype e5m2, got e4m3",
               [&] { fp8_pack_out(x, q, s, {Fp8Format::e5m2}); });
  expect_error(ErrorKind::InvalidArgument, "fp8_pack: scale must have exactly 1 element",
               [&] { fp8_pack_out(x, q, f32_vec, {}); });
  // A non-contiguous view (every other column).
  TensorView strided = x.view();
  strided.shape[1] = 4;
  strided.strides[1] = 2;
  expect_error(ErrorKind::InvalidArgument, "fp8_amax: x must be contiguous, got bf16[4,4] strides (8,2) cpu",
               [&] { fp8_amax(strided); });
  // Inputs on two devices (the check runs before anything touches memory).
  TensorView on_gpu = q.view();
  on_gpu.device = Device::cuda(0);
  expect_error(ErrorKind::InvalidArgument, "fp8_quantize: all tensors of one call must be on one device: out is on cuda:0, x on cpu",
               [&] { fp8_quantize_out(x, 1.0f, on_gpu); });
}

TEST(Fp8Errors, ForcedBackendThatCannotRunIsUnsupported) {
  Rng rng;
  Tensor x = random_floats(rng, DType::bf16, {16});
  expect_error(ErrorKind::Unsupported, "fp8_amax: backend 'cuda' (argument backend=)", [&] { fp8_amax(x, cuda()); });
  expect_error(ErrorKind::InvalidArgument, "fp8_amax: unknown backend 'nope'", [&] { fp8_amax(x, {"nope", nullptr}); });
  expect_error(ErrorKind::Unsupported, "fp8_amax: backend 'cuda.sm90' (argument backend=) does not exist for this op",
               [&] { fp8_amax(x, {"cuda.sm90", nullptr}); });
}

// ---- CUDA vs reference -----------------------------------------------------------------------

// Offsets the data pointer by `offset` elements to exercise the unaligned paths.
TensorView offset_view(const Tensor& t, std::int64_t offset, std::int64_t n) {
  TensorView v = t.view();
  v.data = static_cast<char*>(v.data) + offset * static_cast<std::int64_t>(v.itemsize());
  v.rank = 1;
  v.shape[0] = n;
  v.strides[0] = 1;
  return v;
}

TEST(Fp8Cuda, MatchesReferenceBitExactOverManyShapes) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  Rng rng;
  SCOPED_TRACE(rng.trace());
  const Device gpu = Device::cuda(0);
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    for (std::int64_t n : {1LL, 7LL, 15LL, 16LL, 17LL, 255LL, 4096LL, 4099LL, 32768LL, 32769LL, 100003LL, (1LL << 22) + 5}) {
      for (std::int64_t offset : {0LL, 1LL}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " n=" + std::to_string(n) + " offset=" + std::to_string(offset));
        Tensor xh = random_floats(rng, dt, {n + offset});
        Tensor xd = xh.to(gpu);
        const TensorView x_cpu = offset_view(xh, offset, n), x_gpu = offset_view(xd, offset, n);
        // amax
        Tensor a_cpu = Tensor::empty(DType::f32, {}), a_gpu = Tensor::empty(DType::f32, {}, gpu);
        test::poison(a_gpu);
        fp8_amax_out(x_cpu, a_cpu, ref());
        fp8_amax_out(x_gpu, a_gpu, cuda());
        ASSERT_EQ(num::f32_bits(scalar(a_gpu)), num::f32_bits(*a_cpu.ptr<float>()));
        for (Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) {
          // quantize, host scale and device scale, into a possibly unaligned output
          const float scale = std::fabs(rng.normal(1.0f)) + 0.01f;
          Tensor qd_store = Tensor::empty(fp8_dtype(f), {n + offset}, gpu);
          test::poison(qd_store);
          TensorView qd = offset_view(qd_store, offset, n);
          Tensor qh = Tensor::empty(fp8_dtype(f), {n});
          fp8_quantize_out(x_cpu, scale, qh, ref());
          fp8_quantize_out(x_gpu, scale, qd, cuda());
          ASSERT_EQ(test::count_mismatches(test::bytes_of(qd), test::bytes_of(qh)), 0u) << "quantize, host scale";
          Tensor sd = Tensor::empty(DType::f32, {}, gpu);
          Tensor sh = Tensor::empty(DType::f32, {});
          *sh.ptr<float>() = scale;
          copy_bytes(sd, sh);
          test::poison(qd_store);
          fp8_quantize_out(x_gpu, ScaleArg(sd.view()), qd, cuda());
          ASSERT_EQ(test::count_mismatches(test::bytes_of(qd), test::bytes_of(qh)), 0u) << "quantize, device scale";
          // dequantize into every output dtype
          for (DType od : {DType::f32, DType::bf16, DType::f16}) {
            Tensor yh = Tensor::empty(od, {n}), yd = Tensor::empty(od, {n}, gpu);
            test::poison(yd);
            fp8_dequantize_out(qh, scale, yh, ref());
            fp8_dequantize_out(qd, scale, yd, cuda());
            ASSERT_EQ(test::count_mismatches(test::bytes_of(yd), test::bytes_of(yh)), 0u) << "dequantize to " << dtype_name(od);
          }
          // pack (both the single-block and the multi-launch paths), pow2 or not
          for (bool pow2 : {false, true}) {
            Tensor ph = Tensor::empty(fp8_dtype(f), {n}), psh = Tensor::empty(DType::f32, {});
            Tensor pd = Tensor::empty(fp8_dtype(f), {n}, gpu), psd = Tensor::empty(DType::f32, {}, gpu);
            test::poison(pd);
            test::poison(psd);
            fp8_pack_out(x_cpu, ph, psh, {f, pow2, true}, ref());
            fp8_pack_out(x_gpu, pd, psd, {f, pow2, true}, cuda());
            ASSERT_EQ(num::f32_bits(scalar(psd)), num::f32_bits(*psh.ptr<float>())) << "pack scale";
            ASSERT_EQ(test::count_mismatches(test::bytes_of(pd), test::bytes_of(ph)), 0u) << "pack q";
          }
        }
      }
    }
  }
}

// The hardware conversion equals the CPU codec on every bf16 and f16 value (scale 1).
TEST(Fp8Cuda, HardwareCodecEqualsCpuCodecOnEvery16BitValue) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::bf16, DType::f16}) {
    Tensor xh = Tensor::empty(dt, {65536});
    for (std::uint32_t b = 0; b < 65536; ++b) xh.ptr<std::uint16_t>()[b] = static_cast<std::uint16_t>(b);
    Tensor xd = xh.to(Device::cuda(0));
    for (Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) {
      Tensor qd = fp8_quantize(xd, 1.0f, f, cuda());
      std::vector<std::uint8_t> got = test::bytes_of(qd);
      for (std::uint32_t b = 0; b < 65536; ++b) {
        const float x = dt == DType::bf16 ? num::bf16_to_f32(static_cast<std::uint16_t>(b)) : num::f16_to_f32(static_cast<std::uint16_t>(b));
        ASSERT_EQ(got[b], num::f32_to_fp8(x, f)) << dtype_name(dt) << " bits " << b << " format " << int(f);
      }
      // and every FP8 byte decodes on the GPU as on the CPU
      Tensor codes = Tensor::empty(fp8_dtype(f), {256});
      for (int b = 0; b < 256; ++b) codes.ptr<std::uint8_t>()[b] = static_cast<std::uint8_t>(b);
      Tensor yd = fp8_dequantize(codes.to(Device::cuda(0)), 1.0f, DType::f32, cuda());
      Tensor yh = fp8_dequantize(codes, 1.0f, DType::f32, ref());
      std::vector<std::uint8_t> a = test::bytes_of(yd), b = test::bytes_of(yh);
      for (int i = 0; i < 256; ++i) {
        const float va = reinterpret_cast<float*>(a.data())[i], vb = reinterpret_cast<float*>(b.data())[i];
        if (std::isnan(vb)) EXPECT_TRUE(std::isnan(va)) << i;
        else EXPECT_EQ(num::f32_bits(va), num::f32_bits(vb)) << i;
      }
    }
  }
}

TEST(Fp8Cuda, PackRefusesNonFiniteAndLeavesQUntouched) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  check_pack_non_finite(cuda(), Device::cuda(0));
}

TEST(Fp8Cuda, EmptyTensorsAndAutoSelection) {
  CPPMEGA_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  Tensor x = Tensor::empty(DType::bf16, {0}, gpu);
  EXPECT_EQ(scalar(fp8_amax(x, cuda())), 0.0f);
  auto [q, s] = fp8_pack(x, {}, cuda());
  EXPECT_EQ(scalar(s), 1.0f);
  clear_dispatch_log();
  Rng rng;
  Tensor xd = random_floats(rng, DType::bf16, {1000}).to(gpu);
  fp8_amax(xd);  // AUTO on a CUDA input picks a CUDA backend, never the reference
  auto log = dispatch_log();
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(log.back().op, "fp8_amax");
  EXPECT_EQ(log.back().backend, "cuda");
  // the reference refuses CUDA tensors instead of copying silently
  expect_error(ErrorKind::Unsupported, "runs on CPU tensors, inputs are on cuda:0", [&] { fp8_amax(xd, ref()); });
}

}  // namespace
}  // namespace cppmega
