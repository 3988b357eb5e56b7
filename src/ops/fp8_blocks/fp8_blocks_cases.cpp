// Bench cases of block-scaled FP8 (fp8_quantize_blocks, fp8_dequantize_blocks, mxfp8_quantize,
// mxfp8_dequantize). CaseParams::n is the element count of a [n/8192, 8192] tensor ([1, n] when
// n < 8192 or not a multiple of 8192; fp8_quantize_blocks with 128x128 blocks needs a multiple of
// 8192). For fp8_quantize_blocks the sign of n picks the block shape: n > 0 (1,128), n < 0
// (128,128) over |n| elements. The quantizers run with check_finite = false (no host sync; the
// checked form adds one stream synchronisation per call). Every output is checked bit for bit
// against the reference run on CPU copies of the same inputs. No C++ peer: the Python bench adds
// the torch expressions.
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench/cases.hpp"
#include "cppmega/error.hpp"
#include "cppmega/ops/fp8_blocks.hpp"
#include "ops/fp8_blocks/fp8_blocks_args.hpp"

namespace cppmega::fp8_blocks {

namespace {

using bench::Case;
using bench::CaseParams;
using bench::views;
using bench::CaseSuite;

constexpr std::int64_t kCols = 8192;

std::vector<std::int64_t> shape_for(std::int64_t n) {
  if (n >= kCols && n % kCols == 0) return {n / kCols, kCols};
  return {1, n};
}

Tensor with_shape(const Tensor& flat, const std::vector<std::int64_t>& shape) {
  Tensor t = Tensor::empty(flat.view().dtype, shape.data(), static_cast<int>(shape.size()));
  std::memcpy(t.data(), flat.data(), static_cast<std::size_t>(flat.numel()) * flat.view().itemsize());
  return t;
}

// One op on host inputs with one or more outputs; `invoke` calls the public API.
class BlocksCase final : public Case {
 public:
  using Invoke = std::function<void(const std::vector<TensorView>& in, const std::vector<TensorView>& outs, const CallOptions&)>;

  BlocksCase(const CaseParams& p, std::vector<Tensor> inputs_host, std::vector<std::pair<DType, std::vector<std::int64_t>>> outputs,
             Invoke invoke)
      : inputs_host_(std::move(inputs_host)), invoke_(std::move(invoke)) {
    device = p.device;
    stream = p.stream;
    for (auto& t : inputs_host_) inputs_.push_back(device.is_cuda() ? t.to(device) : t);
    for (auto& [t, s] : outputs) {
      outputs_.push_back(Tensor::empty(t, s.data(), static_cast<int>(s.size()), device));
      reference_.push_back(Tensor::empty(t, s.data(), static_cast<int>(s.size()), Device::cpu()));
    }
  }

  void run(const CallOptions& opts) override { invoke_(views(inputs_), views(outputs_), opts); }

  void compute_reference() override {
    if (have_reference_) return;
    invoke_(views(inputs_host_), views(reference_), CallOptions{"reference", nullptr});
    have_reference_ = true;
  }

  bench::Parity check(const CallOptions& opts) override {
    compute_reference();
    for (auto& o : outputs_) bench::poison(o.view(), stream);
    run(opts);
    bench::sync_stream(device, stream);
    std::int64_t diff = 0;
    for (std::size_t i = 0; i < outputs_.size(); ++i) {
      const Tensor got = device.is_cuda() ? outputs_[i].to(Device::cpu()) : outputs_[i];
      diff += bench::mismatched_bytes(got.view(), reference_[i].view());
    }
    return {diff == 0, "mismatched_bytes", static_cast<double>(diff), 0.0};
  }

 private:
  std::vector<Tensor> inputs_host_, inputs_, outputs_, reference_;
  Invoke invoke_;
  bool have_reference_ = false;
};

void describe(Case& c, const char* op, DType dtype, const std::vector<std::int64_t>& shape, const char* kind, double bytes,
              const std::string& extra) {
  const std::int64_t n = shape[0] * shape[1];
  c.op = op;
  c.dtype = dtype_name(dtype);
  c.name = detail::cat(c.dtype, " [", shape[0], ",", shape[1], "] ", kind);
  c.bucket = blocks_bucket(dtype, n, kind);
  c.shape = shape;
  c.bytes = bytes;
  c.extra_json = extra;
}

void check_float(const char* op, const CaseParams& p) {
  if (!is_floating(p.dtype)) invalid_argument(op, " bench case: dtype must be f32, bf16 or f16, got ", dtype_name(p.dtype));
}

double es(DType t) { return static_cast<double>(dtype_size(t)); }

std::unique_ptr<Case> make_quantize_blocks(const CaseParams& p) {
  const char* op = "fp8_quantize_blocks";
  check_float(op, p);
  const bool tiles = p.n < 0;
  const std::int64_t n = std::llabs(p.n);
  if (n < 1) invalid_argument(op, " bench case: |n| must be >= 1, got ", p.n);
  const auto shape = shape_for(n);
  if (tiles && shape[0] == 1 && n != kCols)
    invalid_argument(op, " bench case: 128x128 blocks (n < 0) need |n| a multiple of ", kCols, ", got ", p.n);
  const Fp8BlockShape blk = tiles ? Fp8BlockShape::b128x128 : Fp8BlockShape::b1x128;
  Tensor x = with_shape(bench::random_floats(p.dtype, n, p.seed), shape);
  const auto ss = fp8_block_scales_shape(x, blk);
  auto c = std::make_unique<BlocksCase>(
      p, std::vector<Tensor>{x}, std::vector<std::pair<DType, std::vector<std::int64_t>>>{{DType::e4m3, shape}, {DType::f32, ss}},
      [blk](const std::vector<TensorView>& in, const std::vector<TensorView>& o, const CallOptions& opts) {
        fp8_quantize_blocks_out(in[0], o[0], o[1], {blk, Fp8Format::e4m3, false, false}, opts);
      });
  const double nscales = static_cast<double>(ss[0] * ss[1]);
  describe(*c, op, p.dtype, shape, fp8_block_shape_name(blk), static_cast<double>(n) * (es(p.dtype) + 1.0) + nscales * 4.0,
           detail::cat("{\"block\":\"", fp8_block_shape_name(blk), "\",\"format\":\"e4m3\",\"pow2_scale\":false,\"check_finite\":false}"));
  return c;
}

std::unique_ptr<Case> make_dequantize_blocks(const CaseParams& p) {
  const char* op = "fp8_dequantize_blocks";
  check_float(op, p);
  if (p.n < 1) invalid_argument(op, " bench case: n must be >= 1, got ", p.n);
  const auto shape = shape_for(p.n);
  Tensor q = with_shape(bench::random_bytes(DType::e4m3, p.n, p.seed, {0x7F, 0xFF}), shape);
  const auto ss = fp8_block_scales_shape(q, Fp8BlockShape::b1x128);
  Tensor s = Tensor::empty(DType::f32, ss.data(), 2);
  for (std::int64_t i = 0; i < s.numel(); ++i) s.ptr<float>()[i] = 0.001f * static_cast<float>(1 + bench::mix64(p.seed + i) % 997);
  auto c = std::make_unique<BlocksCase>(
      p, std::vector<Tensor>{q, s}, std::vector<std::pair<DType, std::vector<std::int64_t>>>{{p.dtype, shape}},
      [](const std::vector<TensorView>& in, const std::vector<TensorView>& o, const CallOptions& opts) {
        fp8_dequantize_blocks_out(in[0], in[1], o[0], Fp8BlockShape::b1x128, opts);
      });
  describe(*c, op, p.dtype, shape, "1x128", static_cast<double>(p.n) * (1.0 + es(p.dtype)) + static_cast<double>(s.numel()) * 4.0,
           "{\"block\":\"1x128\",\"format\":\"e4m3\"}");
  return c;
}

std::vector<std::int64_t> mx_shape(const char* op, std::int64_t n) {
  if (n < kMxBlock || n % kMxBlock != 0) invalid_argument(op, " bench case: n must be a positive multiple of 32, got ", n);
  return shape_for(n);
}

std::unique_ptr<Case> make_mx_quantize(const CaseParams& p) {
  const char* op = "mxfp8_quantize";
  check_float(op, p);
  const auto shape = mx_shape(op, p.n);
  Tensor x = with_shape(bench::random_floats(p.dtype, p.n, p.seed), shape);
  const auto ss = mxfp8_scales_shape(x);
  auto c = std::make_unique<BlocksCase>(
      p, std::vector<Tensor>{x}, std::vector<std::pair<DType, std::vector<std::int64_t>>>{{DType::e4m3, shape}, {DType::e8m0, ss}},
      [](const std::vector<TensorView>& in, const std::vector<TensorView>& o, const CallOptions& opts) {
        mxfp8_quantize_out(in[0], o[0], o[1], {false}, opts);
      });
  describe(*c, op, p.dtype, shape, "mx32", static_cast<double>(p.n) * (es(p.dtype) + 1.0 + 1.0 / kMxBlock),
           "{\"block\":32,\"check_finite\":false}");
  return c;
}

std::unique_ptr<Case> make_mx_dequantize(const CaseParams& p) {
  const char* op = "mxfp8_dequantize";
  check_float(op, p);
  const auto shape = mx_shape(op, p.n);
  Tensor q = with_shape(bench::random_bytes(DType::e4m3, p.n, p.seed, {0x7F, 0xFF}), shape);
  const auto ss = mxfp8_scales_shape(q);
  Tensor s = Tensor::empty(DType::e8m0, ss.data(), 2);
  for (std::int64_t i = 0; i < s.numel(); ++i) s.ptr<std::uint8_t>()[i] = static_cast<std::uint8_t>(110 + bench::mix64(p.seed + i) % 30);
  auto c = std::make_unique<BlocksCase>(
      p, std::vector<Tensor>{q, s}, std::vector<std::pair<DType, std::vector<std::int64_t>>>{{p.dtype, shape}},
      [](const std::vector<TensorView>& in, const std::vector<TensorView>& o, const CallOptions& opts) {
        mxfp8_dequantize_out(in[0], in[1], o[0], opts);
      });
  describe(*c, op, p.dtype, shape, "mx32", static_cast<double>(p.n) * (1.0 + es(p.dtype) + 1.0 / kMxBlock), "{\"block\":32}");
  return c;
}

// 64M elements on a GPU ([8192, 8192]: the size), 1M on the CPU.
std::vector<std::int64_t> large_size(const Device& d) { return {d.is_cuda() ? std::int64_t(1) << 26 : std::int64_t(1) << 20}; }
// fp8_quantize_blocks: (1,128) and (128,128).
std::vector<std::int64_t> quant_sizes(const Device& d) {
  const std::int64_t n = large_size(d).front();
  return {n, -n};
}

}  // namespace
}  // namespace cppmega::fp8_blocks

namespace cppmega::bench {

std::vector<CaseSuite> fp8_blocks_case_suites() {
  return {{"fp8_quantize_blocks", &fp8_blocks::quant_sizes, &fp8_blocks::make_quantize_blocks},
          {"fp8_dequantize_blocks", &fp8_blocks::large_size, &fp8_blocks::make_dequantize_blocks},
          {"mxfp8_quantize", &fp8_blocks::large_size, &fp8_blocks::make_mx_quantize},
          {"mxfp8_dequantize", &fp8_blocks::large_size, &fp8_blocks::make_mx_dequantize}};
}

}  // namespace cppmega::bench
