// Bit-level number formats shared by host and device code: bf16, f16, OCP FP8 (E4M3FN,
// E5M2) and E8M0. The FP8 encoders are bit-exact with CUDA's `__NV_SATFINITE` conversions
// (round to nearest even, subnormals kept, overflow and Inf saturate, NaN stays NaN);
// tests/cpp/test_numerics.cpp checks that on every bf16/f16 value and a large f32 sample.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define CPPMEGA_HD __host__ __device__ __forceinline__
#else
#define CPPMEGA_HD inline
#endif

namespace cppmega::num {

CPPMEGA_HD std::uint32_t f32_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
CPPMEGA_HD float bits_f32(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- bf16 / f16 -------------------------------------------------------------------------------
CPPMEGA_HD float bf16_to_f32(std::uint16_t b) { return bits_f32(std::uint32_t(b) << 16); }

// Round to nearest even; NaN becomes the canonical 0x7FFF (as CUDA's cvt.rn.bf16.f32).
CPPMEGA_HD std::uint16_t f32_to_bf16(float f) {
  std::uint32_t u = f32_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

CPPMEGA_HD float f16_to_f32(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1Fu;
  const std::uint32_t man = h & 0x3FFu;
  if (exp == 0x1F) return bits_f32(sign | 0x7F800000u | (man << 13));  // Inf / NaN
  if (exp == 0) {
    // Zero or subnormal: man * 2^-24, exact in f32.
    const float mag = static_cast<float>(man) * 5.9604644775390625e-08f;
    return bits_f32(sign | f32_bits(mag));
  }
  return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

// Round to nearest even, overflow to Inf, subnormals kept; NaN becomes 0x7FFF (as CUDA).
CPPMEGA_HD std::uint16_t f32_to_f16(float f) {
  const std::uint32_t u = f32_bits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return 0x7FFF;
  if (a >= 0x477FF000u) return sign | 0x7C00u;  // >= 65520 rounds to Inf
  if (a < 0x38800000u) {                        // below 2^-14: f16 subnormal or zero
    // Shift the full significand so that one f16 subnormal ulp (2^-24) is the unit, then RNE.
    const std::uint32_t exp = a >> 23;
    if (exp < 102) return sign;  // below 2^-25: rounds to zero (2^-25 exactly ties to even 0)
    const std::uint32_t mant = (a & 0x7FFFFFu) | 0x800000u;
    const std::uint32_t shift = 126 - exp;  // 14..24
    const std::uint32_t q = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1);
    const std::uint32_t half = 1u << (shift - 1);
    const std::uint32_t r = q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
    return static_cast<std::uint16_t>(sign | r);
  }
  std::uint32_t v = a - (112u << 23);
  v += 0xFFFu + ((v >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | (v >> 13));
}

// ---- FP8 --------------------------------------------------------------------------------------
enum class Fp8Format : std::uint8_t { e4m3, e5m2 };

// Largest finite magnitude.
CPPMEGA_HD float fp8_max(Fp8Format f) { return f == Fp8Format::e4m3 ? 448.0f : 57344.0f; }

CPPMEGA_HD std::uint8_t f32_to_fp8(float x, Fp8Format fmt) {
  const bool e4 = fmt == Fp8Format::e4m3;
  const int man_bits = e4 ? 3 : 2;
  const int bias = e4 ? 7 : 15;
  const std::uint32_t max_code = e4 ? 0x7Eu : 0x7Bu;  // 448 = 0.1111.110, 57344 = 0.11110.11
  const std::uint32_t u = f32_bits(x);
  const std::uint32_t sign = (u >> 24) & 0x80u;
  const std::uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return 0x7F;  // NaN: canonical positive NaN in both formats (as CUDA)
  const float af = bits_f32(a);
  const std::uint32_t min_normal_exp = static_cast<std::uint32_t>(127 + 1 - bias);
  std::uint32_t code;
  if ((a >> 23) < min_normal_exp) {
    // Subnormal range: scale so one fp8 subnormal ulp is 1, round to nearest even.
    // The product is exact (multiply by a power of two); q may reach the smallest normal.
    const float scaled = af * bits_f32(static_cast<std::uint32_t>(127 + bias - 1 + man_bits) << 23);
    std::uint32_t q = static_cast<std::uint32_t>(scaled);  // truncation; scaled < 2^(man_bits+1)
    const float rem = scaled - static_cast<float>(q);
    if (rem > 0.5f || (rem == 0.5f && (q & 1u))) ++q;
    code = q;
  } else {
    const int shift = 23 - man_bits;
    std::uint32_t v = a + ((1u << (shift - 1)) - 1u) + ((a >> shift) & 1u);
    v >>= shift;
    code = v - (static_cast<std::uint32_t>(127 - bias) << man_bits);
  }
  if (code > max_code) code = max_code;  // saturate finite overflow and Inf
  return static_cast<std::uint8_t>(sign | code);
}

CPPMEGA_HD float fp8_to_f32(std::uint8_t b, Fp8Format fmt) {
  const std::uint32_t sign = std::uint32_t(b & 0x80u) << 24;
  if (fmt == Fp8Format::e4m3) {
    const std::uint32_t e = (b >> 3) & 0xFu, m = b & 7u;
    if (e == 15 && m == 7) return bits_f32(0x7FC00000u | sign);
    if (e == 0) return bits_f32(sign | f32_bits(static_cast<float>(m) * 0.001953125f));  // m * 2^-9
    return bits_f32(sign | ((e + 120u) << 23) | (m << 20));
  }
  const std::uint32_t e = (b >> 2) & 0x1Fu, m = b & 3u;
  if (e == 31) return bits_f32(sign | (m ? 0x7FC00000u : 0x7F800000u));
  if (e == 0) return bits_f32(sign | f32_bits(static_cast<float>(m) * 1.52587890625e-05f));  // m * 2^-16
  return bits_f32(sign | ((e + 112u) << 23) | (m << 21));
}

// ---- E8M0 (OCP MX scale byte): 2^(b-127), 0xFF is NaN ------------------------------------------
CPPMEGA_HD float e8m0_to_f32(std::uint8_t b) {
  if (b == 0xFF) return bits_f32(0x7FC00000u);
  if (b == 0) return bits_f32(0x00400000u);  // 2^-127 is an f32 subnormal
  return bits_f32(std::uint32_t(b) << 23);
}

// ---- Per-tensor scaling rules shared by every backend (docs/contracts.md section 3) -----------
// Dequantisation scale from an amax: amax / fmax (1 when amax == 0), clamped below at the
// smallest normal f32 so that its reciprocal stays finite; pow2 rounds up to a power of two.
// A non-finite amax gives NaN.
CPPMEGA_HD float scale_from_amax(float amax, Fp8Format fmt, bool pow2) {
  if (!(amax <= 3.402823466e38f)) return bits_f32(0x7FC00000u);  // NaN or Inf
  if (amax == 0.0f) return 1.0f;
  float s = amax / fp8_max(fmt);
  if (s < 1.17549435e-38f) s = 1.17549435e-38f;
  if (pow2) {
    const std::uint32_t b = f32_bits(s);
    if (b & 0x7FFFFFu) s = bits_f32((b & 0x7F800000u) + 0x800000u);  // next power of two up
  }
  return s;
}

}  // namespace cppmega::num
