// Bench cases of topk: the shapes. CaseParams::n selects a preset (the case registry
// has one size parameter; topk's shape is rows x T, k and the ranges):
//   0: 64 x 131072, k=2048 (DSA prefill-chunk / V3.2 long context)
//   1: 1 x 131072, k=2048 (decode)
//   2: [8, 4096, 4096], k=256, causal ranges [0, s+1) (NAM56R prefill, 32768 rows)
//   3: 4096 x 65536, k=512 (bandwidth)
//   4: 8 x 16384, k=256 (small; the CPU default)
// The output is checked index for index (order and -1 padding included) against the reference
// run on CPU copies of the same inputs. The torch peer (torch.topk) is added by the Python bench.
#include <cstring>
#include <string>
#include <vector>

#include "bench/cases.hpp"
#include "cppmega/error.hpp"
#include "cppmega/ops/topk.hpp"
#include "ops/topk/topk_args.hpp"

namespace cppmega::topk_op {

namespace {

using bench::Case;
using bench::CaseParams;
using bench::CaseSuite;

struct Preset {
  const char* name;
  std::int64_t B, S, T, k;  // rows = B * S
  bool causal;
};

constexpr Preset kPresets[] = {
    {"64x131072 k=2048", 1, 64, 131072, 2048, false},
    {"1x131072 k=2048", 1, 1, 131072, 2048, false},
    {"8x4096x4096 k=256 causal", 8, 4096, 4096, 256, true},
    {"4096x65536 k=512", 1, 4096, 65536, 512, false},
    {"8x16384 k=256", 1, 8, 16384, 256, false},
};
constexpr std::int64_t kNumPresets = static_cast<std::int64_t>(sizeof(kPresets) / sizeof(kPresets[0]));

Tensor to_device(const Tensor& t, const Device& d) { return d.is_cuda() ? t.to(d) : t; }

class TopkCase final : public Case {
 public:
  TopkCase(const CaseParams& p, const Preset& pr) : pr_(pr) {
    device = p.device;
    stream = p.stream;
    const std::int64_t rows = pr.B * pr.S;
    Tensor flat = bench::random_floats(p.dtype, rows * pr.T, p.seed);
    scores_host_ = Tensor::empty(p.dtype, {pr.B, pr.S, pr.T});
    std::memcpy(scores_host_.data(), flat.data(), static_cast<std::size_t>(rows * pr.T) * dtype_size(p.dtype));
    scores_ = to_device(scores_host_, device);
    double valid = static_cast<double>(rows) * static_cast<double>(pr.T);
    if (pr.causal) {
      ends_host_ = Tensor::empty(DType::i32, {pr.B, pr.S});
      valid = 0;
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t e = r % pr.S + 1 + (pr.T - pr.S);  // bottom-right aligned causal window
        ends_host_.ptr<std::int32_t>()[r] = static_cast<std::int32_t>(e);
        valid += static_cast<double>(e);
      }
      ends_ = to_device(ends_host_, device);
    }
    out_ = Tensor::empty(DType::i32, {pr.B, pr.S, pr.k}, device);
    ref_ = Tensor::empty(DType::i32, {pr.B, pr.S, pr.k});
    op = "topk";
    dtype = dtype_name(p.dtype);
    name = std::string(dtype) + " " + pr.name;
    bucket = topk_op::bucket(p.dtype, rows, pr.T, pr.k);
    shape = {pr.B, pr.S, pr.T, pr.k};
    // Selectable scores read once, indices written once.
    bytes = valid * static_cast<double>(dtype_size(p.dtype)) + static_cast<double>(rows * pr.k) * 4.0;
    extra_json = std::string("{\"rows\":") + std::to_string(rows) + ",\"T\":" + std::to_string(pr.T) +
                 ",\"k\":" + std::to_string(pr.k) + ",\"ranges\":\"" + (pr.causal ? "causal [0,s+1)" : "full") + "\"}";
  }

  void run(const CallOptions& opts) override { topk_out(scores_, pr_.k, std::nullopt, ends_view(ends_), out_, opts); }

  void compute_reference() override {
    if (have_reference_) return;
    topk_out(scores_host_, pr_.k, std::nullopt, ends_view(ends_host_), ref_, CallOptions{"reference", nullptr});
    have_reference_ = true;
  }

  bench::Parity check(const CallOptions& opts) override {
    compute_reference();
    // Poison with 0x5A, not 0xFF: all-ones bytes are -1, the padding value itself.
    std::vector<unsigned char> junk(static_cast<std::size_t>(out_.numel()) * 4, 0x5A);
    copy_bytes(out_.view(), TensorView::contiguous(junk.data(), DType::i32, out_.view().shape.data(), 3, Device::cpu()));
    run(opts);
    bench::sync_stream(device, stream);
    const Tensor got = device.is_cuda() ? out_.to(Device::cpu()) : out_;
    std::int64_t diff = 0;
    for (std::int64_t i = 0; i < got.numel(); ++i) diff += got.ptr<std::int32_t>()[i] != ref_.ptr<std::int32_t>()[i];
    return {diff == 0, "mismatched_indices", static_cast<double>(diff), 0.0};
  }

 private:
  static std::optional<TensorView> ends_view(const Tensor& t) {
    if (!t.data()) return std::nullopt;
    return t.view();
  }
  Preset pr_;
  Tensor scores_host_, scores_, ends_host_, ends_, out_, ref_;
  bool have_reference_ = false;
};

std::unique_ptr<Case> make_topk(const CaseParams& p) {
  if (p.n < 0 || p.n >= kNumPresets)
    invalid_argument("topk bench case: n selects a preset shape 0..", kNumPresets - 1,
                     " (0: 64x131072 k=2048, 1: 1x131072 k=2048, 2: 8x4096x4096 k=256 causal, 3: 4096x65536 k=512, "
                     "4: 8x16384 k=256), got ",
                     p.n);
  if (p.dtype != DType::f32 && p.dtype != DType::bf16)
    invalid_argument("topk bench case: dtype must be f32 or bf16, got ", dtype_name(p.dtype));
  return std::make_unique<TopkCase>(p, kPresets[p.n]);
}

// The four shapes on a GPU; the small preset on the CPU (the reference sorts rows).
std::vector<std::int64_t> default_presets(const Device& d) {
  if (d.is_cuda()) return {0, 1, 2, 3};
  return {4};
}

}  // namespace
}  // namespace cppmega::topk_op

namespace cppmega::bench {

std::vector<CaseSuite> topk_case_suites() { return {{"topk", &topk_op::default_presets, &topk_op::make_topk}}; }

}  // namespace cppmega::bench
