// Paired timing, ceilings dispatch, the bench-case registry and the helpers cases share.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>

#include "bench/cases.hpp"
#include "core/cuda_check.hpp"
#include "cppmega/error.hpp"
#include "cppmega/numerics.hpp"
#include "cppmega/runtime.hpp"

namespace cppmega::bench {

#if CPPMEGA_WITH_CUDA
// ceilings.cu
Ceilings measure_cuda_ceilings(Device device, void* stream);
#endif

namespace {

Stats summarize(std::vector<double> samples_us) {
  Stats s;
  s.iters = static_cast<int>(samples_us.size());
  s.samples_us = samples_us;
  std::sort(samples_us.begin(), samples_us.end());
  const std::size_t n = samples_us.size();
  s.min_us = samples_us.front();
  s.max_us = samples_us.back();
  s.median_us = n % 2 ? samples_us[n / 2] : 0.5 * (samples_us[n / 2 - 1] + samples_us[n / 2]);
  s.mean_us = std::accumulate(samples_us.begin(), samples_us.end(), 0.0) / static_cast<double>(n);
  return s;
}

// Calls body(i) for every callable, forward on even rounds and in reverse on odd ones, so no
// callable always runs first (first-in-round effects: clocks, caches, queue depth).
template <class F>
void for_each_in_round(int round, std::size_t count, F&& body) {
  for (std::size_t k = 0; k < count; ++k) body(round % 2 == 0 ? k : count - 1 - k);
}

void require_cuda_device(const char* what, const Device& device) {
  const Availability a = detail::cuda_availability(device);
  if (!a.available) unsupported(what, ": cannot use ", device.str(), ": ", a.reason);
}

#if CPPMEGA_WITH_CUDA
// Owns the events of one timing run; destroys them even when a callable throws.
class EventSet {
 public:
  cudaEvent_t make() {
    cudaEvent_t e = nullptr;
    CPPMEGA_CUDA_CHECK(cudaEventCreate(&e));
    events_.push_back(e);
    return e;
  }
  ~EventSet() {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);  // no throwing from a destructor
  }

 private:
  std::vector<cudaEvent_t> events_;
};

std::vector<std::vector<double>> time_cuda(const std::vector<Callable>& fns, Device device, void* stream, int warmup,
                                           int iters) {
  require_cuda_device("time_paired", device);
  detail::DeviceGuard guard(device.index);
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const std::size_t n = fns.size();
  // All events up front, so creating them never lands between a start and a stop.
  EventSet pool;
  std::vector<std::vector<cudaEvent_t>> start(n), stop(n);
  for (std::size_t i = 0; i < n; ++i)
    for (int r = 0; r < iters; ++r) {
      start[i].push_back(pool.make());
      stop[i].push_back(pool.make());
    }
  int round = 0;
  for (; round < warmup; ++round) for_each_in_round(round, n, [&](std::size_t i) { fns[i].fn(); });
  CPPMEGA_CUDA_CHECK(cudaStreamSynchronize(s));  // warm-up work must not overlap the first sample
  for (int r = 0; r < iters; ++r, ++round)
    for_each_in_round(round, n, [&](std::size_t i) {
      CPPMEGA_CUDA_CHECK(cudaEventRecord(start[i][r], s));
      fns[i].fn();
      CPPMEGA_CUDA_CHECK(cudaEventRecord(stop[i][r], s));
    });
  CPPMEGA_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<std::vector<double>> samples(n);
  for (std::size_t i = 0; i < n; ++i)
    for (int r = 0; r < iters; ++r) {
      float ms = 0;
      CPPMEGA_CUDA_CHECK(cudaEventElapsedTime(&ms, start[i][r], stop[i][r]));
      samples[i].push_back(static_cast<double>(ms) * 1e3);
    }
  return samples;
}
#endif

std::vector<std::vector<double>> time_cpu(const std::vector<Callable>& fns, int warmup, int iters) {
  using clock = std::chrono::steady_clock;
  const std::size_t n = fns.size();
  std::vector<std::vector<double>> samples(n);
  int round = 0;
  for (; round < warmup; ++round) for_each_in_round(round, n, [&](std::size_t i) { fns[i].fn(); });
  for (int r = 0; r < iters; ++r, ++round)
    for_each_in_round(round, n, [&](std::size_t i) {
      const auto t0 = clock::now();
      fns[i].fn();
      const auto t1 = clock::now();
      samples[i].push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    });
  return samples;
}

Ceilings measure_cpu_ceilings() {
  // 64 MiB per buffer: past any last-level cache, small enough to stay well under a second.
  constexpr std::size_t kBytes = std::size_t(64) << 20;
  constexpr int kWarmup = 2, kIters = 10;
  std::vector<unsigned char> src(kBytes), dst(kBytes);
  for (std::size_t i = 0; i < kBytes; ++i) src[i] = static_cast<unsigned char>(mix64(i));
  volatile unsigned char sink = 0;  // keeps the copies observable
  std::vector<double> us;
  for (int r = 0; r < kWarmup + kIters; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    std::memcpy(dst.data(), src.data(), kBytes);
    const auto t1 = std::chrono::steady_clock::now();
    sink = sink ^ dst[static_cast<std::size_t>(r) * 4099 % kBytes];
    if (r >= kWarmup) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  Ceilings c;
  c.copy_tbps = 2.0 * static_cast<double>(kBytes) / (summarize(us).median_us * 1e-6) / 1e12;
  c.copy_method = "std::memcpy 64 MiB host-to-host, read+write bytes, median of 10";
  c.bf16_matmul_tflops = 0;
  c.matmul_method = "none on the CPU";
  return c;
}

}  // namespace

std::vector<Stats> time_paired(const std::vector<Callable>& fns, Device device, void* stream, int warmup, int iters) {
  if (fns.empty()) invalid_argument("time_paired: no callables given");
  if (warmup < 0 || iters < 1) invalid_argument("time_paired: need warmup >= 0 and iters >= 1, got ", warmup, " and ", iters);
  for (auto& f : fns)
    if (!f.fn) invalid_argument("time_paired: callable '", f.label, "' is empty");
  std::vector<std::vector<double>> samples;
  if (device.is_cuda()) {
#if CPPMEGA_WITH_CUDA
    samples = time_cuda(fns, device, stream, warmup, iters);
#else
    unsupported("time_paired: cannot time on ", device.str(), ": cppmega was built without CUDA");
#endif
  } else {
    (void)stream;  // host callables need no stream
    samples = time_cpu(fns, warmup, iters);
  }
  std::vector<Stats> out;
  for (auto& s : samples) out.push_back(summarize(std::move(s)));
  return out;
}

Ceilings measure_ceilings(Device device, void* stream) {
  if (!device.is_cuda()) return measure_cpu_ceilings();
  require_cuda_device("measure_ceilings", device);
#if CPPMEGA_WITH_CUDA
  return measure_cuda_ceilings(device, stream);
#else
  (void)stream;
  unsupported("measure_ceilings: cppmega was built without CUDA");
#endif
}

// ---- Case registry ------------------------------------------------------------------------------

const std::vector<CaseSuite>& case_suites() {
  static const std::vector<CaseSuite> all = [] {
    std::vector<CaseSuite> v;
    for (auto* family : {&fp8_case_suites, &fp8_blocks_case_suites, &fp8_gemv_case_suites, &topk_case_suites})
      for (auto& s : family()) v.push_back(s);
    return v;
  }();
  return all;
}

const CaseSuite* find_case_suite(const std::string& op) {
  for (auto& s : case_suites())
    if (s.op == op) return &s;
  return nullptr;
}

std::vector<std::string> runnable_backends(const std::string& op, const Device& device) {
  std::vector<std::string> out;
  for (auto& listing : list_ops()) {
    if (listing.op != op) continue;
    for (auto& b : listing.backends) {
      if (b.device != device.kind) continue;
      if (b.device == DeviceKind::cuda && !detail::cuda_availability(device).available) continue;
      out.push_back(b.name);
    }
  }
  return out;
}

Result bench_case(Case& c, const std::vector<std::string>& backends, int warmup, int iters) {
  Result r;
  r.op = c.op;
  r.name = c.name;
  r.bucket = c.bucket;
  r.dtype = c.dtype;
  r.shape = c.shape;
  r.bytes = c.bytes;
  r.flops = c.flops;
  r.extra_json = c.extra_json;
  // Parity first: a wrong backend is recorded as such even if its timing is excellent.
  c.compute_reference();
  std::vector<Callable> fns;
  for (auto& b : backends) {
    const std::string label = "cppmega:" + b;
    const CallOptions opts{b, c.stream};
    r.parity[label] = c.check(opts);
    fns.push_back({label, [&c, opts] { c.run(opts); }});
  }
  for (auto& p : c.peers()) fns.push_back(std::move(p));
  if (fns.empty()) return r;
  const std::vector<Stats> stats = time_paired(fns, c.device, c.stream, warmup, iters);
  for (std::size_t i = 0; i < fns.size(); ++i) r.timings[fns[i].label] = stats[i];
  return r;
}

// ---- Helpers for cases ----------------------------------------------------------------------------

std::uint64_t mix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

Tensor random_floats(DType dtype, std::int64_t n, std::uint64_t seed) {
  if (!is_floating(dtype)) invalid_argument("random_floats: dtype must be f32, bf16 or f16, got ", dtype_name(dtype));
  Tensor t = Tensor::empty(dtype, {n});
  static constexpr float kMagnitude[4] = {1.0f / 64, 0.25f, 1.0f, 8.0f};
  const std::uint64_t base = mix64(seed ^ 0x6A09E667F3BCC908ull);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint64_t h = mix64(base + static_cast<std::uint64_t>(i));
    // Sum of four 16-bit uniforms, centred and scaled to unit variance: cheap and close to normal.
    const double sum = double(h & 0xFFFF) + double((h >> 16) & 0xFFFF) + double((h >> 32) & 0xFFFF) + double(h >> 48);
    const double unit = (sum / 65536.0 - 2.0) * 1.7320508075688772;
    const float v = static_cast<float>(unit) * kMagnitude[mix64(h) & 3];
    switch (dtype) {
      case DType::f32: t.ptr<float>()[i] = v; break;
      case DType::bf16: t.ptr<std::uint16_t>()[i] = num::f32_to_bf16(v); break;
      default: t.ptr<std::uint16_t>()[i] = num::f32_to_f16(v); break;
    }
  }
  return t;
}

Tensor random_bytes(DType dtype, std::int64_t n, std::uint64_t seed, const std::vector<std::uint8_t>& excluded) {
  if (dtype_size(dtype) != 1) invalid_argument("random_bytes: dtype must be 1 byte wide, got ", dtype_name(dtype));
  if (excluded.size() >= 256) invalid_argument("random_bytes: every byte value is excluded");
  Tensor t = Tensor::empty(dtype, {n});
  auto* p = t.ptr<std::uint8_t>();
  const std::uint64_t base = mix64(seed ^ 0xBB67AE8584CAA73Bull);
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint64_t h = mix64(base + static_cast<std::uint64_t>(i));
    auto b = static_cast<std::uint8_t>(h);
    while (std::find(excluded.begin(), excluded.end(), b) != excluded.end()) b = static_cast<std::uint8_t>(h = mix64(h));
    p[i] = b;
  }
  return t;
}

void poison(const TensorView& t, void* stream) {
  if (!t.is_contiguous()) invalid_argument("poison: tensor must be contiguous, got ", t.describe());
  const std::size_t bytes = static_cast<std::size_t>(t.numel()) * t.itemsize();
  if (bytes == 0) return;
  if (!t.device.is_cuda()) {
    std::memset(t.data, 0xFF, bytes);
    return;
  }
#if CPPMEGA_WITH_CUDA
  detail::DeviceGuard guard(t.device.index);
  CPPMEGA_CUDA_CHECK(cudaMemsetAsync(t.data, 0xFF, bytes, static_cast<cudaStream_t>(stream)));
#else
  (void)stream;
  unsupported("poison: cppmega was built without CUDA");
#endif
}

void sync_stream(const Device& device, void* stream) {
  if (!device.is_cuda()) return;
#if CPPMEGA_WITH_CUDA
  detail::DeviceGuard guard(device.index);
  CPPMEGA_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
#else
  (void)stream;
#endif
}

std::int64_t mismatched_bytes(const TensorView& a, const TensorView& b) {
  const std::size_t na = static_cast<std::size_t>(a.numel()) * a.itemsize();
  const std::size_t nb = static_cast<std::size_t>(b.numel()) * b.itemsize();
  if (na != nb || a.device.is_cuda() || b.device.is_cuda() || !a.is_contiguous() || !b.is_contiguous())
    invalid_argument("mismatched_bytes: need two contiguous CPU tensors of equal byte size, got ", a.describe(), " and ",
                     b.describe());
  const auto* pa = static_cast<const std::uint8_t*>(a.data);
  const auto* pb = static_cast<const std::uint8_t*>(b.data);
  std::int64_t diff = 0;
  for (std::size_t i = 0; i < na; ++i) diff += pa[i] != pb[i];
  return diff;
}

}  // namespace cppmega::bench
