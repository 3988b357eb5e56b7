// fp8_gemv: contract checks (once per call, before any backend), scale-granularity resolution,
// the backend table, the AUTO bucket and the public C++ API.
#include <bit>
#include <cmath>

#include "core/checks.hpp"
#include "cppmega/ops/fp8_gemv.hpp"
#include "ops/fp8_gemv/fp8_gemv_args.hpp"
#include "ops/registry.hpp"

namespace cppmega {

namespace gemv_op {

const char* scale_kind_name(ScaleKind k) {
  switch (k) {
    case ScaleKind::none: return "none";
    case ScaleKind::tensor: return "tensor";
    case ScaleKind::row: return "row";
    case ScaleKind::block: return "block";
  }
  return "?";
}

// AUTO bucket: x dtype, an M class and the power of two that bounds the weight's element count.
std::string gemv_bucket(DType x_dtype, std::int64_t M, std::int64_t N, std::int64_t K) {
  const char* mb = M <= 1 ? "M<=1" : M <= 4 ? "M<=4" : M <= 16 ? "M<=16" : M <= 64 ? "M<=64" : "M>64";
  const std::uint64_t nk = static_cast<std::uint64_t>(N) * static_cast<std::uint64_t>(K);
  const int lg = nk <= 1024 ? 10 : static_cast<int>(std::bit_width(nk - 1));
  return detail::cat("x:", dtype_name(x_dtype), ":", mb, ":NK<=2^", lg);
}

namespace {

constexpr const char* kOp = "fp8_gemv";

std::int64_t ceil128(std::int64_t v) { return (v + 127) / 128; }

std::string bucket(const GemvArgs& a) { return gemv_bucket(a.x.dtype, a.M, a.N, a.K); }

const OpTable<GemvArgs>& table() {
  static const OpTable<GemvArgs> t = [] {
    OpTable<GemvArgs> t(kOp, [](const GemvArgs& a) { return a.x.device; }, [](const GemvArgs& a) { return bucket(a); });
    t.add({"reference", DeviceKind::cpu, "w e4m3; x f32/bf16/f16/e4m3; per-tensor/row/block scales; any M, N, K; f64 accumulation",
           nullptr, [](const GemvArgs& a, const CallOptions&) { gemv_reference(a); }});
#if CPPMEGA_WITH_CUDA
    t.add({"cuda", DeviceKind::cuda,
           "w e4m3; x f32/bf16/f16/e4m3; per-tensor/row/block scales; 1<=M<=64 with 16-byte aligned w: tensor-core "
           "stream (one pass over w, 16-byte loads, K split over a thread-block cluster); otherwise a general kernel",
           nullptr, [](const GemvArgs& a, const CallOptions& o) { gemv_cuda(a, o.stream); }});
#endif
    return t;
  }();
  return t;
}

std::string shape2(std::int64_t a, std::int64_t b) { return detail::cat("[", a, ",", b, "]"); }

// Resolves a scale argument's granularity from its shape (see fp8_gemv.hpp).
Scale resolve_scale(const char* arg, const ScaleArg& s, const TensorView& x, std::int64_t rows, const char* rows_name,
                    std::int64_t block_rows_dim, const char* block_rule) {
  Scale r;
  if (!s.tensor) {
    if (!(std::isfinite(s.value) && s.value > 0.0f)) invalid_argument(kOp, ": ", arg, " must be finite and > 0, got ", s.value);
    r.kind = ScaleKind::tensor;
    r.value = s.value;
    return r;
  }
  const TensorView& t = *s.tensor;
  check::dtype_in(kOp, arg, t, {DType::f32});
  check::same_device(kOp, arg, t, "x", x);
  if (t.numel() > 0) check::contiguous(kOp, arg, t);  // empty: layout irrelevant
  const std::int64_t K = x.size(1);
  const std::int64_t kb = ceil128(K);
  const std::string row_shape = detail::cat("[", rows, "]");
  const std::string blk_shape = shape2(block_rows_dim, kb);
  if (t.rank == 2 && t.shape[0] == block_rows_dim && t.shape[1] == kb) {
    r.kind = ScaleKind::block;
  } else if (t.rank == 1 && t.shape[0] == rows) {
    r.kind = ScaleKind::row;
  } else if (t.rank <= 1 && t.numel() == 1) {
    r.kind = ScaleKind::tensor;
  } else {
    invalid_argument(kOp, ": ", arg, " must be f32 with one element (per tensor), shape ", rows_name, "=", row_shape,
                     " (per row) or ", block_rule, "=", blk_shape, " (per block), got ", t.describe());
  }
  check::not_null(kOp, arg, t);
  r.ptr = t.ptr<const float>();
  return r;
}

}  // namespace

std::vector<OpListing> listings() { return {{table().op(), table().list()}}; }

}  // namespace gemv_op

using namespace gemv_op;

void fp8_gemv_out(const TensorView& x, const TensorView& w, const ScaleArg& w_scale, const std::optional<ScaleArg>& x_scale,
                  const TensorView& out, const CallOptions& opts) {
  const char* op = kOp;
  check::dtype_in(op, "x", x, {DType::f32, DType::bf16, DType::f16, DType::e4m3});
  check::rank(op, "x", x, 2, "[M,K]");
  check::innermost_contiguous(op, "x", x);
  check::not_null(op, "x", x);
  check::dtype_in(op, "w", w, {DType::e4m3});
  check::rank(op, "w", w, 2, "[N,K]");
  check::innermost_contiguous(op, "w", w);
  check::same_device(op, "w", w, "x", x);
  check::not_null(op, "w", w);
  if (w.shape[1] != x.shape[1])
    invalid_argument(op, ": x [M,K] and w [N,K] must have the same K, got x ", x.describe(), " and w ", w.describe());
  if (x.strides[0] < 0 || w.strides[0] < 0)
    invalid_argument(op, ": row strides must be >= 0, got x ", x.describe(), " and w ", w.describe());
  const std::int64_t M = x.shape[0], N = w.shape[0], K = x.shape[1];
  check::dtype_in(op, "out", out, {DType::f32, DType::bf16, DType::f16});
  if (out.rank != 2 || out.shape[0] != M || out.shape[1] != N)
    invalid_argument(op, ": out must have shape [M,N]=", shape2(M, N), ", got ", out.describe());
  check::innermost_contiguous(op, "out", out);
  if (M > 1 && out.strides[0] < N) invalid_argument(op, ": rows of out must not overlap (row stride >= N), got ", out.describe());
  check::same_device(op, "out", out, "x", x);
  check::not_null(op, "out", out);

  GemvArgs a{x, w, out, {}, {}, M, N, K};
  a.w_scale = resolve_scale("w_scale", w_scale, x, N, "[N]", ceil128(N), "[ceil(N/128),ceil(K/128)]");
  if (x.dtype == DType::e4m3) {
    if (!x_scale)
      invalid_argument(op, ": x is e4m3 (", x.describe(),
                       ") and needs x_scale (one value, f32 [M] per row or f32 [M,ceil(K/128)] per block); none was given");
    a.x_scale = resolve_scale("x_scale", *x_scale, x, M, "[M]", M, "[M,ceil(K/128)]");
  } else if (x_scale) {
    invalid_argument(op, ": x_scale is only for e4m3 x; x is ", x.describe());
  }
  if (M == 0 || N == 0) {  // empty out: nothing to compute, nothing launched
    table().select(a, opts);
    return;
  }
  table().dispatch(a, opts);
}

Tensor fp8_gemv(const TensorView& x, const TensorView& w, const ScaleArg& w_scale, const std::optional<ScaleArg>& x_scale,
                DType out_dtype, const CallOptions& opts) {
  const std::int64_t M = x.rank == 2 ? x.shape[0] : 0, N = w.rank == 2 ? w.shape[0] : 0;
  Tensor out = Tensor::empty(out_dtype, {M, N}, x.device);
  fp8_gemv_out(x, w, w_scale, x_scale, out, opts);
  return out;
}

}  // namespace cppmega
