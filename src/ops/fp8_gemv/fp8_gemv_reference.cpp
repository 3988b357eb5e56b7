// The CPU oracle for fp8_gemv: decode both operands exactly, accumulate each 128-wide block in
// f64, multiply the block partials by their block scales and the sum by the per-tensor/per-row
// scales, round once to out's dtype.
#include <algorithm>
#include <vector>

#include "cppmega/error.hpp"
#include "cppmega/numerics.hpp"
#include "ops/fp8_gemv/fp8_gemv_args.hpp"

namespace cppmega::gemv_op {

namespace {

double x_value(const TensorView& x, std::int64_t m, std::int64_t k) {
  const std::int64_t i = m * x.strides[0] + k;
  switch (x.dtype) {
    case DType::f32: return x.ptr<const float>()[i];
    case DType::bf16: return num::bf16_to_f32(x.ptr<const std::uint16_t>()[i]);
    case DType::f16: return num::f16_to_f32(x.ptr<const std::uint16_t>()[i]);
    case DType::e4m3: return num::fp8_to_f32(x.ptr<const std::uint8_t>()[i], Fp8Format::e4m3);
    default: invalid_argument("fp8_gemv reference: unexpected x dtype ", dtype_name(x.dtype));
  }
}

// The scale of block (r, kb) for rows r of its operand (n for w, m for x), split into the
// per-block factor and the final factor.
double block_factor(const Scale& s, std::int64_t r, std::int64_t kb, std::int64_t nkb, bool is_w) {
  if (s.kind != ScaleKind::block) return 1.0;
  return s.ptr[(is_w ? r / 128 : r) * nkb + kb];
}
double final_factor(const Scale& s, std::int64_t r) {
  switch (s.kind) {
    case ScaleKind::tensor: return s.ptr ? *s.ptr : s.value;
    case ScaleKind::row: return s.ptr[r];
    default: return 1.0;
  }
}

void store(const TensorView& out, std::int64_t m, std::int64_t n, double v) {
  const std::int64_t i = m * out.strides[0] + n;
  const float f = static_cast<float>(v);
  switch (out.dtype) {
    case DType::f32: out.ptr<float>()[i] = f; break;
    case DType::bf16: out.ptr<std::uint16_t>()[i] = num::f32_to_bf16(f); break;
    case DType::f16: out.ptr<std::uint16_t>()[i] = num::f32_to_f16(f); break;
    default: invalid_argument("fp8_gemv reference: unexpected out dtype ", dtype_name(out.dtype));
  }
}

}  // namespace

void gemv_reference(const GemvArgs& a) {
  const std::int64_t M = a.M, N = a.N, K = a.K, nkb = (K + 127) / 128;
  std::vector<double> wd(static_cast<std::size_t>(K));
  // Every x row decoded once; each w row decoded once, then used for every m.
  std::vector<double> xall(static_cast<std::size_t>(M * K));
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t k = 0; k < K; ++k) xall[static_cast<std::size_t>(m * K + k)] = x_value(a.x, m, k);
  const auto* w = a.w.ptr<const std::uint8_t>();
  for (std::int64_t n = 0; n < N; ++n) {
    for (std::int64_t k = 0; k < K; ++k) wd[static_cast<std::size_t>(k)] = num::fp8_to_f32(w[n * a.w.strides[0] + k], Fp8Format::e4m3);
    for (std::int64_t m = 0; m < M; ++m) {
      const double* xr = xall.data() + m * K;
      double y = 0.0;
      for (std::int64_t kb = 0; kb < nkb; ++kb) {
        double part = 0.0;
        const std::int64_t k1 = std::min(K, (kb + 1) * 128);
        for (std::int64_t k = kb * 128; k < k1; ++k) part += xr[k] * wd[static_cast<std::size_t>(k)];
        y += part * block_factor(a.x_scale, m, kb, nkb, false) * block_factor(a.w_scale, n, kb, nkb, true);
      }
      store(a.out, m, n, y * final_factor(a.x_scale, m) * final_factor(a.w_scale, n));
    }
  }
}

}  // namespace cppmega::gemv_op
