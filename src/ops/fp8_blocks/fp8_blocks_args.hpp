// Internal to the block-scaled FP8 family: the checked arguments each backend receives, the
// per-block scale rules shared (bit for bit) by the reference and the CUDA kernels, and the
// backends.
#pragma once

#include <cstdint>
#include <string>

#include "cppmega/numerics.hpp"
#include "cppmega/ops/fp8_blocks.hpp"

namespace cppmega::fp8_blocks {

// Where the blocks lie. Scale index of block (b, rb, cb) = (b * row_blocks() + rb) * col_blocks() + cb,
// which is the row-major order of the scales tensor.
struct Geometry {
  std::int64_t batch = 1;  // 128x128: product of the dims before M; otherwise 1
  std::int64_t rows = 0;   // 128x128: M; otherwise every row of x (numel / K)
  std::int64_t cols = 0;   // K
  int block_rows = 1;      // 1 or 128
  int block_cols = 128;    // 128, or 32 for MXFP8
  std::int64_t row_blocks() const { return (rows + block_rows - 1) / block_rows; }
  std::int64_t col_blocks() const { return (cols + block_cols - 1) / block_cols; }
  std::int64_t num_blocks() const { return batch * row_blocks() * col_blocks(); }
  std::int64_t numel() const { return batch * rows * cols; }
};

// AUTO's shape bucket ("bf16:1x128:n<=2^26"; kind "1x128", "128x128" or "mx32"); the bench
// cases use the same function.
std::string blocks_bucket(DType dtype, std::int64_t numel, const char* kind);

// mx = false: f32 scales (fp8_quantize_blocks); mx = true: e8m0 scales, e4m3 data (mxfp8_quantize).
struct QuantArgs {
  TensorView x, q, scales;
  Geometry geo;
  bool mx = false;
  Fp8Format format = Fp8Format::e4m3;
  bool pow2 = false;
  bool check_finite = true;
};
struct DequantArgs {
  TensorView q, scales, out;
  Geometry geo;
  bool mx = false;
  Fp8Format format = Fp8Format::e4m3;
};

// ---- scale rules (host and device) -------------------------------------------------------------
// MXFP8 scale exponent of a finite amax >= 0: floor(log2(amax)) - 8 clamped to [-127, 127].
// amax = 0 and amax < 2^-127 (f32 exponent field 0) give -127. For finite f32 the upper clamp
// never triggers (the largest is 127 - 8 = 119).
CPPMEGA_HD int mx_scale_exponent(float amax) {
  const int e = static_cast<int>((num::f32_bits(amax) >> 23) & 0xFFu);
  const int x = e == 0 ? -127 : e - 127 - 8;
  return x < -127 ? -127 : (x > 127 ? 127 : x);
}

// The e8m0 byte and the quantisation multiplier 2^-X (exact, a normal f32) of a block amax;
// a non-finite amax gives 0xFF and NaN.
CPPMEGA_HD std::uint8_t mx_scale(float amax, float& inv) {
  if (!(amax <= 3.402823466e38f)) {
    inv = num::bits_f32(0x7FC00000u);
    return 0xFF;
  }
  const int x = mx_scale_exponent(amax);
  inv = num::bits_f32(static_cast<std::uint32_t>(127 - x) << 23);  // -X in [-119, 127]: biased in [8, 254]
  return static_cast<std::uint8_t>(x + 127);
}

// f32 block scale exactly as fp8_pack (NaN for a non-finite amax) and its f32 reciprocal.
CPPMEGA_HD float block_scale(float amax, Fp8Format fmt, bool pow2, float& inv) {
  const float s = num::scale_from_amax(amax, fmt, pow2);
  inv = 1.0f / s;
  return s;
}

// reference (fp8_blocks_reference.cpp)
void quantize_reference(const QuantArgs& a);
void dequantize_reference(const DequantArgs& a);

#if CPPMEGA_WITH_CUDA
// cuda (fp8_blocks_cuda.cu)
void quantize_cuda(const QuantArgs& a, void* stream);
void dequantize_cuda(const DequantArgs& a, void* stream);
#endif

// The NonFinite message shared by both backends ("<op>: x contains NaN or Inf ...").
[[noreturn]] void throw_non_finite(bool mx, const std::string& where);

}  // namespace cppmega::fp8_blocks
