// Block-scaled FP8 ops: contract checks (once per call, before any backend), backend tables,
// AUTO bucket and the public C++ API.
#include <bit>
#include <cmath>
#include <sstream>

#include "core/checks.hpp"
#include "cppmega/ops/fp8_blocks.hpp"
#include "ops/fp8_blocks/fp8_blocks_args.hpp"
#include "ops/registry.hpp"

namespace cppmega {

int fp8_block_rows(Fp8BlockShape b) { return b == Fp8BlockShape::b1x128 ? 1 : 128; }
const char* fp8_block_shape_name(Fp8BlockShape b) { return b == Fp8BlockShape::b1x128 ? "1x128" : "128x128"; }
Fp8BlockShape parse_fp8_block_shape(const std::string& s) {
  if (s == "1x128" || s == "(1,128)" || s == "1,128") return Fp8BlockShape::b1x128;
  if (s == "128x128" || s == "(128,128)" || s == "128,128") return Fp8BlockShape::b128x128;
  invalid_argument("fp8 blocks: block shape must be 1x128 or 128x128, got '", s, "'");
}

namespace fp8_blocks {

// AUTO bucket: input dtype, block kind and the power of two that bounds numel.
std::string blocks_bucket(DType dtype, std::int64_t numel, const char* kind) {
  const std::uint64_t n = static_cast<std::uint64_t>(numel);
  int lg = n <= 1024 ? 10 : static_cast<int>(std::bit_width(n - 1));
  return detail::cat(dtype_name(dtype), ":", kind, ":n<=2^", lg);
}

namespace {

constexpr auto kFloat = {DType::f32, DType::bf16, DType::f16};

std::string shape_str(const std::vector<std::int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (std::size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
  os << "]";
  return os.str();
}

// Contiguity, with empty tensors always accepted (their layout is irrelevant; the core's
// is_contiguous rejects e.g. a [4,0] tensor made by Tensor::empty).
void contiguous(const char* op, const char* arg, const TensorView& t) {
  if (t.numel() > 0) check::contiguous(op, arg, t);
}

void check_min_rank(const char* op, const char* arg, const TensorView& t, int r, const char* dims) {
  if (t.rank < r) invalid_argument(op, ": ", arg, " must have rank >= ", r, " ", dims, ", got ", t.describe());
}

void check_scales(const char* op, const TensorView& scales, DType dtype, const std::vector<std::int64_t>& want,
                  const TensorView& x, const char* rule) {
  check::dtype_in(op, "scales", scales, {dtype});
  bool eq = scales.rank == static_cast<int>(want.size());
  for (int i = 0; eq && i < scales.rank; ++i) eq = scales.shape[i] == want[static_cast<std::size_t>(i)];
  if (!eq) invalid_argument(op, ": scales must have shape ", shape_str(want), " (", rule, "), got ", scales.describe());
  check::same_device(op, "scales", scales, "x", x);
  contiguous(op, "scales", scales);
  check::not_null(op, "scales", scales);
}

Geometry geometry(const TensorView& x, int block_rows, int block_cols) {
  Geometry g;
  g.cols = x.rank >= 1 ? x.size(-1) : 1;
  g.block_rows = block_rows;
  g.block_cols = block_cols;
  if (block_rows == 1) {
    g.rows = g.cols > 0 ? x.numel() / g.cols : 0;
    if (g.cols == 0) {  // rows still matter for nothing: no block exists
      g.rows = 0;
    }
  } else {
    g.rows = x.size(-2);
    const std::int64_t mk = g.rows * g.cols;
    g.batch = mk > 0 ? x.numel() / mk : 0;
  }
  return g;
}

std::string bucket(const TensorView& x, const char* kind) { return blocks_bucket(x.dtype, x.numel(), kind); }

const char* kind_of(const Geometry& g) { return g.block_cols == kMxBlock ? "mx32" : (g.block_rows == 1 ? "1x128" : "128x128"); }

#if CPPMEGA_WITH_CUDA
template <class Args>
Backend<Args> cuda_backend(void (*fn)(const Args&, void*), const char* features) {
  return {"cuda", DeviceKind::cuda, features, nullptr, [fn](const Args& a, const CallOptions& o) { fn(a, o.stream); }};
}
#endif

OpTable<QuantArgs> make_quant_table(const char* op, const char* ref_features, const char* cuda_features) {
  OpTable<QuantArgs> t(op, [](const QuantArgs& a) { return a.x.device; },
                       [](const QuantArgs& a) { return bucket(a.x, kind_of(a.geo)); });
  t.add({"reference", DeviceKind::cpu, ref_features, nullptr, [](const QuantArgs& a, const CallOptions&) { quantize_reference(a); }});
#if CPPMEGA_WITH_CUDA
  t.add(cuda_backend(&quantize_cuda, cuda_features));
#else
  (void)cuda_features;
#endif
  return t;
}

OpTable<DequantArgs> make_dequant_table(const char* op, const char* ref_features, const char* cuda_features) {
  OpTable<DequantArgs> t(op, [](const DequantArgs& a) { return a.q.device; },
                         [](const DequantArgs& a) { return bucket(a.out, kind_of(a.geo)); });
  t.add({"reference", DeviceKind::cpu, ref_features, nullptr,
         [](const DequantArgs& a, const CallOptions&) { dequantize_reference(a); }});
#if CPPMEGA_WITH_CUDA
  t.add(cuda_backend(&dequantize_cuda, cuda_features));
#else
  (void)cuda_features;
#endif
  return t;
}

const OpTable<QuantArgs>& quantize_blocks_table() {
  static const OpTable<QuantArgs> t =
      make_quant_table("fp8_quantize_blocks", "f32/bf16/f16 -> e4m3/e5m2, 1x128 or 128x128 blocks, f32 scales (pow2 optional)",
                       "f32/bf16/f16 -> e4m3/e5m2, 1x128 or 128x128; one pass, 16-byte loads (scalar path for "
                       "misaligned rows); one host sync only for the finite check");
  return t;
}
const OpTable<DequantArgs>& dequantize_blocks_table() {
  static const OpTable<DequantArgs> t = make_dequant_table(
      "fp8_dequantize_blocks", "e4m3/e5m2 -> f32/bf16/f16, 1x128 or 128x128 blocks", "e4m3/e5m2 -> f32/bf16/f16; vectorised");
  return t;
}
const OpTable<QuantArgs>& mx_quantize_table() {
  static const OpTable<QuantArgs> t = make_quant_table(
      "mxfp8_quantize", "f32/bf16/f16 -> e4m3 + e8m0 per 32 (OCP MX)",
      "f32/bf16/f16 -> e4m3 + e8m0 per 32; one pass, 16-byte loads; one host sync only for the finite check");
  return t;
}
const OpTable<DequantArgs>& mx_dequantize_table() {
  static const OpTable<DequantArgs> t =
      make_dequant_table("mxfp8_dequantize", "e4m3 + e8m0 per 32 -> f32/bf16/f16", "e4m3 + e8m0 -> f32/bf16/f16; vectorised");
  return t;
}

template <class T>
OpListing listing(const OpTable<T>& t) {
  return {t.op(), t.list()};
}

// `arg` names the blocked tensor: x when quantizing, q when dequantizing.
void check_block_input(const char* op, const char* arg, const TensorView& t, Fp8BlockShape block) {
  if (block == Fp8BlockShape::b128x128)
    check_min_rank(op, arg, t, 2, "[..., M, K] for 128x128 blocks");
  else
    check_min_rank(op, arg, t, 1, "[..., K]");
}

// The q/out rules both dequantizers share (the scales rules differ).
void check_dequantize_io(const char* op, const TensorView& q, const TensorView& out) {
  contiguous(op, "q", q);
  check::not_null(op, "q", q);
  check::dtype_in(op, "out", out, kFloat);
  check::same_shape(op, "out", out, "q", q);
  check::same_device(op, "out", out, "q", q);
  contiguous(op, "out", out);
  check::not_null(op, "out", out);
}

}  // namespace

std::vector<OpListing> listings() {
  return {listing(quantize_blocks_table()), listing(dequantize_blocks_table()), listing(mx_quantize_table()),
          listing(mx_dequantize_table())};
}

[[noreturn]] void throw_non_finite(bool mx, const std::string& where) {
  fail(ErrorKind::NonFinite, mx ? "mxfp8_quantize" : "fp8_quantize_blocks", ": x contains NaN or Inf", where,
       "; its block got a NaN scale", mx ? " (e8m0 0xFF)" : "",
       " and NaN codes (q and scales were written; pass check_finite=false to accept NaN scales without this error)");
}

}  // namespace fp8_blocks

using namespace fp8_blocks;

std::vector<std::int64_t> fp8_block_scales_shape(const TensorView& x, Fp8BlockShape block) {
  const char* op = "fp8_quantize_blocks";
  check_block_input(op, "x", x, block);
  std::vector<std::int64_t> s(x.shape.begin(), x.shape.begin() + x.rank);
  s.back() = (s.back() + kFp8BlockK - 1) / kFp8BlockK;
  if (block == Fp8BlockShape::b128x128) s[s.size() - 2] = (s[s.size() - 2] + 127) / 128;
  return s;
}

std::vector<std::int64_t> mxfp8_scales_shape(const TensorView& x) {
  check_min_rank("mxfp8_quantize", "x", x, 1, "[..., K]");
  std::vector<std::int64_t> s(x.shape.begin(), x.shape.begin() + x.rank);
  s.back() = (s.back() + kMxBlock - 1) / kMxBlock;
  return s;
}

void fp8_quantize_blocks_out(const TensorView& x, const TensorView& q, const TensorView& scales, const BlockQuantOptions& bq,
                             const CallOptions& opts) {
  const char* op = "fp8_quantize_blocks";
  check::dtype_in(op, "x", x, kFloat);
  check_block_input(op, "x", x, bq.block);
  contiguous(op, "x", x);
  check::not_null(op, "x", x);
  if (q.dtype != fp8_dtype(bq.format))
    invalid_argument(op, ": q must have the format's dtype ", fp8_format_name(bq.format), ", got ", q.describe());
  check::same_shape(op, "q", q, "x", x);
  check::same_device(op, "q", q, "x", x);
  contiguous(op, "q", q);
  check::not_null(op, "q", q);
  const char* rule = bq.block == Fp8BlockShape::b1x128 ? "x.shape[:-1] + [ceil(K/128)] for 1x128 blocks"
                                                       : "x.shape[:-2] + [ceil(M/128), ceil(K/128)] for 128x128 blocks";
  check_scales(op, scales, DType::f32, fp8_block_scales_shape(x, bq.block), x, rule);
  QuantArgs a{x, q, scales, geometry(x, fp8_block_rows(bq.block), kFp8BlockK), false, bq.format, bq.pow2_scale, bq.check_finite};
  if (a.geo.numel() == 0) {  // empty: nothing to write (scales are empty too), nothing launched
    quantize_blocks_table().select(a, opts);
    return;
  }
  quantize_blocks_table().dispatch(a, opts);
}

std::pair<Tensor, Tensor> fp8_quantize_blocks(const TensorView& x, const BlockQuantOptions& bq, const CallOptions& opts) {
  const std::vector<std::int64_t> ss = fp8_block_scales_shape(x, bq.block);
  Tensor q = Tensor::empty_like(x, fp8_dtype(bq.format), x.device);
  Tensor s = Tensor::empty(DType::f32, ss.data(), static_cast<int>(ss.size()), x.device);
  fp8_quantize_blocks_out(x, q, s, bq, opts);
  return {std::move(q), std::move(s)};
}

void fp8_dequantize_blocks_out(const TensorView& q, const TensorView& scales, const TensorView& out, Fp8BlockShape block,
                               const CallOptions& opts) {
  const char* op = "fp8_dequantize_blocks";
  check::dtype_in(op, "q", q, {DType::e4m3, DType::e5m2});
  check_block_input(op, "q", q, block);
  check_dequantize_io(op, q, out);
  const char* rule = block == Fp8BlockShape::b1x128 ? "q.shape[:-1] + [ceil(K/128)] for 1x128 blocks"
                                                    : "q.shape[:-2] + [ceil(M/128), ceil(K/128)] for 128x128 blocks";
  check_scales(op, scales, DType::f32, fp8_block_scales_shape(q, block), q, rule);
  DequantArgs a{q, scales, out, geometry(q, fp8_block_rows(block), kFp8BlockK), false,
                q.dtype == DType::e4m3 ? Fp8Format::e4m3 : Fp8Format::e5m2};
  if (a.geo.numel() == 0) {
    dequantize_blocks_table().select(a, opts);
    return;
  }
  dequantize_blocks_table().dispatch(a, opts);
}

Tensor fp8_dequantize_blocks(const TensorView& q, const TensorView& scales, DType out_dtype, Fp8BlockShape block,
                             const CallOptions& opts) {
  Tensor out = Tensor::empty_like(q, out_dtype, q.device);
  fp8_dequantize_blocks_out(q, scales, out, block, opts);
  return out;
}

namespace {
void check_mx_k(const char* op, const char* arg, const TensorView& t) {
  if (t.size(-1) % kMxBlock != 0)
    invalid_argument(op, ": the last dim K of ", arg, " must be a multiple of ", kMxBlock, " (one e8m0 scale per ", kMxBlock,
                     " values), got K=", t.size(-1), " in ", t.describe());
}
}  // namespace

void mxfp8_quantize_out(const TensorView& x, const TensorView& q, const TensorView& scales, const MxQuantOptions& mx,
                        const CallOptions& opts) {
  const char* op = "mxfp8_quantize";
  check::dtype_in(op, "x", x, kFloat);
  check_min_rank(op, "x", x, 1, "[..., K]");
  check_mx_k(op, "x", x);
  contiguous(op, "x", x);
  check::not_null(op, "x", x);
  check::dtype_in(op, "q", q, {DType::e4m3});
  check::same_shape(op, "q", q, "x", x);
  check::same_device(op, "q", q, "x", x);
  contiguous(op, "q", q);
  check::not_null(op, "q", q);
  check_scales(op, scales, DType::e8m0, mxfp8_scales_shape(x), x, "x.shape[:-1] + [K/32]");
  QuantArgs a{x, q, scales, geometry(x, 1, kMxBlock), true, Fp8Format::e4m3, false, mx.check_finite};
  if (a.geo.numel() == 0) {
    mx_quantize_table().select(a, opts);
    return;
  }
  mx_quantize_table().dispatch(a, opts);
}

std::pair<Tensor, Tensor> mxfp8_quantize(const TensorView& x, const MxQuantOptions& mx, const CallOptions& opts) {
  const std::vector<std::int64_t> ss = mxfp8_scales_shape(x);
  Tensor q = Tensor::empty_like(x, DType::e4m3, x.device);
  Tensor s = Tensor::empty(DType::e8m0, ss.data(), static_cast<int>(ss.size()), x.device);
  mxfp8_quantize_out(x, q, s, mx, opts);
  return {std::move(q), std::move(s)};
}

void mxfp8_dequantize_out(const TensorView& q, const TensorView& scales, const TensorView& out, const CallOptions& opts) {
  const char* op = "mxfp8_dequantize";
  check::dtype_in(op, "q", q, {DType::e4m3});
  check_min_rank(op, "q", q, 1, "[..., K]");
  check_mx_k(op, "q", q);
  check_dequantize_io(op, q, out);
  check_scales(op, scales, DType::e8m0, mxfp8_scales_shape(q), q, "q.shape[:-1] + [K/32]");
  DequantArgs a{q, scales, out, geometry(q, 1, kMxBlock), true, Fp8Format::e4m3};
  if (a.geo.numel() == 0) {
    mx_dequantize_table().select(a, opts);
    return;
  }
  mx_dequantize_table().dispatch(a, opts);
}

Tensor mxfp8_dequantize(const TensorView& q, const TensorView& scales, DType out_dtype, const CallOptions& opts) {
  Tensor out = Tensor::empty_like(q, out_dtype, q.device);
  mxfp8_dequantize_out(q, scales, out, opts);
  return out;
}

}  // namespace cppmega
