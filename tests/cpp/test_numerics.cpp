// The CPU codecs against two oracles: a brute-force nearest-value search over every FP8 code
// (independent of the encoder's bit tricks, runs everywhere) and, where the CUDA toolkit is
// present, CUDA's own host-side conversions. The GPU side (hardware cvt) is compared with the
// CPU codec in test_fp8_ops.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "cppmega/numerics.hpp"
#include "test_util.hpp"

#if CPPMEGA_WITH_CUDA
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#endif

namespace cppmega {
namespace {

using num::Fp8Format;

// Brute force: the nearest finite FP8 value, ties to the even code, saturating; NaN -> 0x7F.
std::uint8_t oracle_encode(float x, Fp8Format f) {
  if (std::isnan(x)) return 0x7F;
  const std::uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const double a = std::fabs(static_cast<double>(x));
  const std::uint8_t max_code = f == Fp8Format::e4m3 ? 0x7E : 0x7B;
  if (a >= num::fp8_max(f)) return sign | max_code;
  std::uint8_t best = 0;
  double best_err = std::numeric_limits<double>::infinity();
  for (int c = 0; c <= max_code; ++c) {
    const double v = num::fp8_to_f32(static_cast<std::uint8_t>(c), f);
    const double err = std::fabs(v - a);
    if (err < best_err || (err == best_err && (c & 1) == 0)) {
      best = static_cast<std::uint8_t>(c);
      best_err = err;
    }
  }
  return sign | best;
}

std::vector<float> boundary_values() {
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, 448.0f, 464.0f, 464.0001f, 479.99f, 480.0f, 512.0f,
                          57344.0f, 61439.0f, 61440.0f, 65536.0f, 1e30f, -1e30f,
                          std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min(),
                          std::numeric_limits<float>::max(), std::ldexp(1.0f, -9), std::ldexp(1.0f, -10),
                          std::ldexp(3.0f, -11), std::ldexp(1.0f, -16), std::ldexp(1.0f, -17),
                          std::ldexp(3.0f, -18), std::ldexp(1.0f, -6), std::ldexp(15.0f, -10)};
  // Every FP8 value and every midpoint between neighbours (the rounding boundaries), both signs.
  for (Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) {
    const int max_code = f == Fp8Format::e4m3 ? 0x7E : 0x7B;
    for (int c = 0; c <= max_code; ++c) {
      const float a = num::fp8_to_f32(static_cast<std::uint8_t>(c), f);
      v.push_back(a);
      v.push_back(-a);
      if (c < max_code) {
        const float b = num::fp8_to_f32(static_cast<std::uint8_t>(c + 1), f);
        const float mid = (a + b) / 2;  // exact in f32
        for (float m : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
          v.push_back(m);
          v.push_back(-m);
        }
      }
    }
  }
  return v;
}

TEST(Numerics, Fp8DecodeMatchesFormatDefinition) {
  for (Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) {
    const bool e4 = f == Fp8Format::e4m3;
    for (int b = 0; b < 256; ++b) {
      const int man_bits = e4 ? 3 : 2, bias = e4 ? 7 : 15;
      const int e = (b & 0x7F) >> man_bits, m = b & ((1 << man_bits) - 1);
      const double sign = (b & 0x80) ? -1.0 : 1.0;
      const float got = num::fp8_to_f32(static_cast<std::uint8_t>(b), f);
      const int emax = e4 ? 15 : 31;
      if (e4 && e == emax && m == 7) {
        EXPECT_TRUE(std::isnan(got)) << b;
        continue;
      }
      if (!e4 && e == emax) {
        if (m == 0) EXPECT_EQ(got, sign * std::numeric_limits<float>::infinity()) << b;
        else EXPECT_TRUE(std::isnan(got)) << b;
        continue;
      }
      const double want = e == 0 ? sign * m * std::ldexp(1.0, 1 - bias - man_bits)
                                 : sign * (1.0 + m / double(1 << man_bits)) * std::ldexp(1.0, e - bias);
      EXPECT_EQ(static_cast<double>(got), want) << "format " << int(f) << " byte " << b;
      EXPECT_EQ(std::signbit(got), (b & 0x80) != 0) << b;
    }
  }
  EXPECT_EQ(num::fp8_to_f32(0x7E, Fp8Format::e4m3), 448.0f);
  EXPECT_EQ(num::fp8_to_f32(0x7B, Fp8Format::e5m2), 57344.0f);
}

TEST(Numerics, Fp8EncodeEveryBf16AndF16Value) {
  for (Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) {
    for (std::uint32_t b = 0; b < 65536; ++b) {
      for (float x : {num::bf16_to_f32(static_cast<std::uint16_t>(b)), num::f16_to_f32(static_cast<std::uint16_t>(b))}) {
        const std::uint8_t got = num::f32_to_fp8(x, f);
        ASSERT_EQ(got, oracle_encode(x, f)) << "format " << int(f) << " x=" << x << " bits " << b;
#if CPPMEGA_WITH_CUDA
        ASSERT_EQ(got, __nv_cvt_float_to_fp8(x, __NV_SATFINITE, f == Fp8Format::e4m3 ? __NV_E4M3 : __NV_E5M2))
            << "vs CUDA host conversion, x=" << x;
#endif
      }
    }
  }
}

TEST(Numerics, Fp8EncodeBoundariesAndRandomF32) {
  test::Rng rng;
  SCOPED_TRACE(rng.trace());
  std::vector<float> xs = boundary_values();
  for (int i = 0; i < 400000; ++i) {
    // Random bit patterns cover every exponent; scaled normals cover the FP8 range densely.
    xs.push_back(num::bits_f32(static_cast<std::uint32_t>(rng.bits())));
    xs.push_back(rng.normal(64.0f));
    xs.push_back(rng.normal(0.01f));
  }
  for (Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) {
    for (float x : xs) {
      const std::uint8_t got = num::f32_to_fp8(x, f);
      ASSERT_EQ(got, oracle_encode(x, f)) << "format " << int(f) << " x=" << x << " bits " << num::f32_bits(x);
#if CPPMEGA_WITH_CUDA
      ASSERT_EQ(got, __nv_cvt_float_to_fp8(x, __NV_SATFINITE, f == Fp8Format::e4m3 ? __NV_E4M3 : __NV_E5M2))
          << "vs CUDA host conversion, x=" << x;
#endif
    }
  }
}

TEST(Numerics, Fp8RoundTripIsIdentityOnEveryFiniteCode) {
  for (Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) {
    for (int b = 0; b < 256; ++b) {
      const float v = num::fp8_to_f32(static_cast<std::uint8_t>(b), f);
      if (!std::isfinite(v)) continue;
      EXPECT_EQ(num::f32_to_fp8(v, f), b) << "format " << int(f);
    }
  }
}

TEST(Numerics, Bf16AndF16Conversions) {
  // Every 16-bit pattern survives decode + encode (NaN becomes the canonical 0x7FFF).
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const auto h = static_cast<std::uint16_t>(b);
    const float fb = num::bf16_to_f32(h), fh = num::f16_to_f32(h);
    EXPECT_EQ(num::f32_to_bf16(fb), std::isnan(fb) ? 0x7FFF : h);
    EXPECT_EQ(num::f32_to_f16(fh), std::isnan(fh) ? 0x7FFF : h);
#if CPPMEGA_WITH_CUDA
    __half_raw hr;
    hr.x = h;
    const float cuda_fh = __half2float(__half(hr));
    if (!std::isnan(fh)) EXPECT_EQ(num::f32_bits(fh), num::f32_bits(cuda_fh)) << b;
#endif
  }
  test::Rng rng;
  SCOPED_TRACE(rng.trace());
  for (int i = 0; i < 1000000; ++i) {
    const float x = i % 2 ? num::bits_f32(static_cast<std::uint32_t>(rng.bits())) : rng.normal(1e-5f);
    if (std::isnan(x)) continue;
    // Round to nearest even, checked by brute force against the two neighbours.
    const std::uint16_t b = num::f32_to_bf16(x);
    const double err = std::fabs(double(num::bf16_to_f32(b)) - double(x));
    for (int d : {-1, 1}) {
      const std::uint16_t nb = static_cast<std::uint16_t>(b + d);
      const float nv = num::bf16_to_f32(nb);
      if (std::isnan(nv) || std::isinf(nv) || std::isinf(x) || std::isinf(num::bf16_to_f32(b))) continue;
      const double nerr = std::fabs(double(nv) - double(x));
      ASSERT_TRUE(err < nerr || (err == nerr && (b & 1) == 0)) << "bf16 rounding of " << x;
    }
#if CPPMEGA_WITH_CUDA
    ASSERT_EQ(num::f32_to_f16(x), __half_raw(__float2half_rn(x)).x) << "f16 of " << x;
    ASSERT_EQ(num::f32_to_bf16(x), __nv_bfloat16_raw(__float2bfloat16_rn(x)).x) << "bf16 of " << x;
#endif
  }
}

TEST(Numerics, E8m0) {
  EXPECT_EQ(num::e8m0_to_f32(127), 1.0f);
  EXPECT_EQ(num::e8m0_to_f32(128), 2.0f);
  EXPECT_EQ(num::e8m0_to_f32(0), std::ldexp(1.0f, -127));
  EXPECT_EQ(num::e8m0_to_f32(254), std::ldexp(1.0f, 127));
  EXPECT_TRUE(std::isnan(num::e8m0_to_f32(255)));
}

TEST(Numerics, ScaleFromAmax) {
  EXPECT_EQ(num::scale_from_amax(448.0f, Fp8Format::e4m3, false), 1.0f);
  EXPECT_EQ(num::scale_from_amax(0.0f, Fp8Format::e4m3, false), 1.0f);
  EXPECT_EQ(num::scale_from_amax(57344.0f * 3, Fp8Format::e5m2, false), 3.0f);
  EXPECT_EQ(num::scale_from_amax(448.0f * 3, Fp8Format::e4m3, true), 4.0f);   // rounded up to 2^2
  EXPECT_EQ(num::scale_from_amax(448.0f * 4, Fp8Format::e4m3, true), 4.0f);   // already a power of two
  EXPECT_EQ(num::scale_from_amax(1e-44f, Fp8Format::e4m3, false), std::numeric_limits<float>::min());
  EXPECT_TRUE(std::isnan(num::scale_from_amax(std::numeric_limits<float>::infinity(), Fp8Format::e4m3, false)));
  EXPECT_TRUE(std::isnan(num::scale_from_amax(std::nanf(""), Fp8Format::e4m3, true)));
  // pow2 scales never let x/scale overflow.
  test::Rng rng;
  SCOPED_TRACE(rng.trace());
  for (int i = 0; i < 10000; ++i) {
    const float amax = std::fabs(rng.normal(1000.0f)) + 1e-3f;
    const float s = num::scale_from_amax(amax, Fp8Format::e4m3, true);
    EXPECT_LE(amax * (1.0f / s), 448.0f);
    EXPECT_EQ(num::f32_bits(s) & 0x7FFFFFu, 0u);
  }
}

}  // namespace
}  // namespace cppmega
