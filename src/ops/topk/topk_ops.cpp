// topk: contract checks (once per call, before any backend runs), the backend table, the AUTO
// shape bucket and the public C++ API.
#include <bit>
#include <limits>
#include <map>
#include <mutex>
#include <string>

#include "core/checks.hpp"
#include "cppmega/ops/topk.hpp"
#include "cppmega/runtime.hpp"
#include "ops/registry.hpp"
#include "ops/topk/topk_args.hpp"

namespace cppmega {
namespace topk_op {
namespace {

constexpr const char* kOp = "topk";

// log2 bucket of a size: "2^a" with a = ceil(log2(max(n, 1))).
std::string pow2_bucket(std::int64_t n) {
  const auto u = static_cast<std::uint64_t>(n < 1 ? 1 : n);
  return "2^" + std::to_string(u <= 1 ? 0 : static_cast<int>(std::bit_width(u - 1)));
}

}  // namespace

// AUTO's shape bucket: dtype and the powers of two bounding R, T and k
// ("f32:R<=2^6:T<=2^17:k<=2^11"). bench cases (topk_cases.cpp) must produce the same key.
std::string bucket(DType dtype, std::int64_t rows, std::int64_t T, std::int64_t k) {
  return std::string(dtype_name(dtype)) + ":R<=" + pow2_bucket(rows) + ":T<=" + pow2_bucket(T) + ":k<=" + pow2_bucket(k);
}

namespace {

#if CPPMEGA_WITH_CUDA
// The kernels use thread-block clusters and are built for sm_90a: Hopper or newer only.
std::optional<std::string> cuda_supports(const TopkArgs& a) {
  static std::mutex mu;
  static std::map<int, int> cc;  // device -> compute capability major
  int major;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cc.find(a.scores.device.index);
    if (it == cc.end()) it = cc.emplace(a.scores.device.index, cuda_device_info(a.scores.device.index).cc_major).first;
    major = it->second;
  }
  if (major < 9) return "needs compute capability 9.0 or newer (thread-block clusters), device has " + std::to_string(major) + ".x";
  return std::nullopt;
}
#endif

const OpTable<TopkArgs>& table() {
  static const OpTable<TopkArgs> t = [] {
    OpTable<TopkArgs> t(kOp, [](const TopkArgs& a) { return a.scores.device; },
                        [](const TopkArgs& a) { return bucket(a.scores.dtype, a.rows, a.T, a.k); });
    t.add({"reference", DeviceKind::cpu, "f32/bf16, any R, T, k; stable sort per row", nullptr,
           [](const TopkArgs& a, const CallOptions&) { topk_reference(a); }});
#if CPPMEGA_WITH_CUDA
    t.add({"cuda", DeviceKind::cuda,
           "f32/bf16, any R, T, k (T < 2^31); exact radix select (11/11/10-bit digits) on an order-preserving key, "
           "one thread-block cluster (1-16 CTAs) per row with the row cached in shared memory as keys; bitonic sort "
           "of unique (key, column) composites in shared memory for min(k,T) <= 4096 (merged across the cluster by "
           "rank), CUB segmented sort beyond",
           &cuda_supports, [](const TopkArgs& a, const CallOptions& o) { topk_cuda(a, o.stream); }});
#endif
    return t;
  }();
  return t;
}

// starts/ends: i32 or i64, contiguous, shaped like the rows ([R] or [B,S]), on the scores' device.
void check_range_arg(const char* arg, const TensorView& t, const TensorView& scores) {
  const int rows_rank = scores.rank - 1;
  bool ok = t.rank == rows_rank;
  for (int i = 0; ok && i < rows_rank; ++i) ok = t.shape[i] == scores.shape[i];
  if (!ok) {
    std::string want = rows_rank == 1 ? "[R]=[" + std::to_string(scores.shape[0]) + "]"
                                      : "[B,S]=[" + std::to_string(scores.shape[0]) + "," + std::to_string(scores.shape[1]) + "]";
    invalid_argument(kOp, ": ", arg, " must have shape ", want, " (the rows of scores ", scores.shape_str(), "), got ",
                     t.describe());
  }
  check::dtype_in(kOp, arg, t, {DType::i32, DType::i64});
  check::contiguous(kOp, arg, t);
  check::same_device(kOp, arg, t, "scores", scores);
  check::not_null(kOp, arg, t);
}

}  // namespace

std::vector<OpListing> listings() { return {{table().op(), table().list()}}; }

}  // namespace topk_op

using namespace topk_op;

void topk_out(const TensorView& scores, std::int64_t k, const std::optional<TensorView>& starts,
              const std::optional<TensorView>& ends, const TensorView& out, const CallOptions& opts) {
  if (k < 1) invalid_argument(kOp, ": k must be >= 1, got ", k);
  if (k > std::numeric_limits<std::int32_t>::max())
    invalid_argument(kOp, ": k must be <= 2^31-1 (indices are i32), got ", k);
  if (scores.rank != 2 && scores.rank != 3)
    invalid_argument(kOp, ": scores must have rank 2 [R,T] or rank 3 [B,S,T], got ", scores.describe());
  check::dtype_in(kOp, "scores", scores, {DType::f32, DType::bf16});
  check::innermost_contiguous(kOp, "scores", scores);
  check::not_null(kOp, "scores", scores);
  const std::int64_t T = scores.size(-1);
  if (T > std::numeric_limits<std::int32_t>::max())
    invalid_argument(kOp, ": scores rows must have at most 2^31-1 columns (indices are i32), got ", scores.describe());
  if (starts) check_range_arg("starts", *starts, scores);
  if (ends) check_range_arg("ends", *ends, scores);

  TopkArgs a;
  a.scores = scores;
  a.k = k;
  a.starts = starts;
  a.ends = ends;
  a.out = out;
  a.T = T;
  if (scores.rank == 2) {
    a.rows = scores.shape[0];
    a.S = a.rows;
    a.stride_b = 0;
    a.stride_s = scores.strides[0];
  } else {
    a.rows = scores.shape[0] * scores.shape[1];
    a.S = scores.shape[1];
    a.stride_b = scores.strides[0];
    a.stride_s = scores.strides[1];
  }

  bool shape_ok = out.rank == scores.rank && out.shape[out.rank - 1] == k;
  for (int i = 0; shape_ok && i < scores.rank - 1; ++i) shape_ok = out.shape[i] == scores.shape[i];
  if (out.dtype != DType::i32 || !shape_ok) {
    std::string want = scores.rank == 2 ? "[R,k]=[" + std::to_string(scores.shape[0]) + "," + std::to_string(k) + "]"
                                        : "[B,S,k]=[" + std::to_string(scores.shape[0]) + "," +
                                              std::to_string(scores.shape[1]) + "," + std::to_string(k) + "]";
    invalid_argument(kOp, ": out must be i32 with shape ", want, ", got ", out.describe());
  }
  check::contiguous(kOp, "out", out);
  check::same_device(kOp, "out", out, "scores", scores);
  check::not_null(kOp, "out", out);
  table().dispatch(a, opts);
}

Tensor topk(const TensorView& scores, std::int64_t k, const std::optional<TensorView>& starts,
            const std::optional<TensorView>& ends, const CallOptions& opts) {
  if (k < 1) invalid_argument(kOp, ": k must be >= 1, got ", k);
  if (k > std::numeric_limits<std::int32_t>::max())
    invalid_argument(kOp, ": k must be <= 2^31-1 (indices are i32), got ", k);
  if (scores.rank != 2 && scores.rank != 3)
    invalid_argument(kOp, ": scores must have rank 2 [R,T] or rank 3 [B,S,T], got ", scores.describe());
  std::int64_t dims[3] = {scores.shape[0], scores.rank == 3 ? scores.shape[1] : k, k};
  Tensor out = Tensor::empty(DType::i32, dims, scores.rank, scores.device);
  topk_out(scores, k, starts, ends, out, opts);
  return out;
}

}  // namespace cppmega
