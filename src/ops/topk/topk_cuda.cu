// CUDA backend of topk: planning (topk_plan.hpp), kernel choice, launch, and the global-memory
// sort path for min(k, T) > 4096. The device code and the algorithm are in topk_kernels.cuh.
#include <cub/device/device_segmented_sort.cuh>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <tuple>

#include "cuda/common.cuh"
#include "ops/topk/topk_args.hpp"
#include "ops/topk/topk_kernels.cuh"
#include "ops/topk/topk_plan.hpp"

namespace cppmega::topk_op {

namespace {

using cppmega::cuda::as_stream;
using dev::Params;
using KernelFn = void (*)(Params);

template <class Tr>
KernelFn pick_kernel(const Plan& pl) {
  if (!pl.cluster_kernel)
    return pl.smem_sort ? &dev::topk_kernel<Tr, kSmallThreads, false, true, true>
                        : &dev::topk_kernel<Tr, kSmallThreads, false, true, false>;
  if (pl.cached)
    return pl.smem_sort ? &dev::topk_kernel<Tr, kClusterThreads, true, true, true>
                        : &dev::topk_kernel<Tr, kClusterThreads, true, true, false>;
  return pl.smem_sort ? &dev::topk_kernel<Tr, kClusterThreads, true, false, true>
                      : &dev::topk_kernel<Tr, kClusterThreads, true, false, false>;
}

struct DeviceFacts {
  int sm_count = 0;
  int smem_optin = 0;
};

DeviceFacts device_facts(int device) {
  static std::mutex mu;
  static std::map<int, DeviceFacts> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(device);
  if (it != cache.end()) return it->second;
  DeviceFacts f;
  CPPMEGA_CUDA_CHECK(cudaDeviceGetAttribute(&f.sm_count, cudaDevAttrMultiProcessorCount, device));
  CPPMEGA_CUDA_CHECK(cudaDeviceGetAttribute(&f.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  cache[device] = f;
  return f;
}

// Sets a kernel's attributes once per device: the whole opt-in shared memory, and (cluster
// kernels) cluster sizes up to 16.
void prepare_kernel(KernelFn fn, bool cluster, int device, int smem_optin) {
  static std::mutex mu;
  static std::map<std::pair<KernelFn, int>, bool> done;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_pair(fn, device);
  if (done.count(key)) return;
  cudaFuncAttributes attr{};
  CPPMEGA_CUDA_CHECK(cudaFuncGetAttributes(&attr, fn));
  CPPMEGA_CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          smem_optin - static_cast<int>(attr.sharedSizeBytes)));
  if (cluster) CPPMEGA_CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  done[key] = true;
}

// Whether a cluster of `c` CTAs with `smem` bytes each can be resident (cached per device).
bool cluster_fits(KernelFn fn, int c, std::size_t smem, int device, cudaStream_t s) {
  static std::mutex mu;
  static std::map<std::tuple<KernelFn, int, std::size_t, int>, bool> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_tuple(fn, c, smem, device);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  cudaLaunchConfig_t cfg{};
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(c);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.gridDim = dim3(static_cast<unsigned>(c));
  cfg.blockDim = dim3(kClusterThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int n = 0;
  const cudaError_t e = cudaOccupancyMaxActiveClusters(&n, fn, &cfg);
  if (e != cudaSuccess) (void)cudaGetLastError();  // not fatal: try a smaller cluster
  const bool ok = e == cudaSuccess && n > 0;
  cache[key] = ok;
  return ok;
}

// Stream-ordered scratch, released on the stream however the call ends.
struct StreamBuffers {
  cudaStream_t s;
  std::vector<void*> ptrs;
  explicit StreamBuffers(cudaStream_t st) : s(st) {}
  template <class T>
  T* get(std::size_t bytes) {
    void* p = nullptr;
    CPPMEGA_CUDA_CHECK(cudaMallocAsync(&p, bytes < 16 ? 16 : bytes, s));
    ptrs.push_back(p);
    return static_cast<T*>(p);
  }
  ~StreamBuffers() {
    for (void* p : ptrs) (void)cudaFreeAsync(p, s);
  }
};

template <class Tr>
void run_typed(const TopkArgs& a, cudaStream_t s, int device) {
  const DeviceFacts f = device_facts(device);
  const int key_bytes = static_cast<int>(sizeof(typename Tr::Key));
  // Static shared memory of the kernels is < 1 KB; keep 2 KB of the opt-in for it.
  const std::size_t smem_limit = static_cast<std::size_t>(f.smem_optin) - 2048;
  Plan pl;
  KernelFn fn = nullptr;
  for (int max_cluster = kMaxCluster;; max_cluster /= 2) {
    pl = make_plan(a.rows, a.T, a.k, key_bytes, f.sm_count, smem_limit, max_cluster);
    fn = pick_kernel<Tr>(pl);
    prepare_kernel(fn, pl.cluster_kernel, device, f.smem_optin);
    if (!pl.cluster_kernel || cluster_fits(fn, pl.cluster, pl.smem_bytes, device, s)) break;
    if (max_cluster == 1)
      unsupported("topk: cuda: no thread-block cluster of this kernel fits on device ", device, " (smem ", pl.smem_bytes,
                  " bytes per CTA)");
  }

  Params p;
  p.scores = a.scores.data;
  p.stride_b = a.stride_b;
  p.stride_s = a.stride_s;
  p.S = a.S;
  p.rows = a.rows;
  p.T = static_cast<dev::u32>(a.T);
  p.k = static_cast<dev::u32>(a.k);
  if (a.starts) {
    p.starts = a.starts->data;
    p.starts64 = a.starts->dtype == DType::i64;
  }
  if (a.ends) {
    p.ends = a.ends->data;
    p.ends64 = a.ends->dtype == DType::i64;
  }
  p.out = a.out.ptr<int>();
  p.sort_cap = pl.sort_cap;

  StreamBuffers bufs(s);
  const std::int64_t kk = std::min(a.k, a.T);
  if (!pl.smem_sort) {
    p.ws_stride = kk;
    p.ws = bufs.get<dev::u64>(static_cast<std::size_t>(a.rows * kk) * sizeof(dev::u64));
    p.ws_begin = bufs.get<std::int64_t>(static_cast<std::size_t>(a.rows) * sizeof(std::int64_t));
    p.ws_end = bufs.get<std::int64_t>(static_cast<std::size_t>(a.rows) * sizeof(std::int64_t));
  }

  // Debugging aid: CPPMEGA_TOPK_TRACE=1 prints the plan and block 0's phase times (synchronises).
  static const bool trace = std::getenv("CPPMEGA_TOPK_TRACE") != nullptr;
  if (trace) {
    p.trace = bufs.get<unsigned long long>(8 * sizeof(unsigned long long));
    CPPMEGA_CUDA_CHECK(cudaMemsetAsync(p.trace, 0, 8 * sizeof(unsigned long long), s));
  }

  // One cluster per row (grid-stride over rows if the grid would exceed the launch limit).
  const std::int64_t max_clusters = (std::int64_t{1} << 31) / pl.cluster - 1;
  const std::int64_t clusters = std::min(a.rows, max_clusters);
  const dim3 grid(static_cast<unsigned>(clusters * pl.cluster));
  const dim3 block(static_cast<unsigned>(pl.threads()));
  if (pl.cluster_kernel) {
    cudaLaunchConfig_t cfg{};
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = static_cast<unsigned>(pl.cluster);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = pl.smem_bytes;
    cfg.stream = s;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    CPPMEGA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, fn, p));
  } else {
    fn<<<grid, block, pl.smem_bytes, s>>>(p);
  }
  CPPMEGA_CUDA_CHECK_LAUNCH("topk kernel");
  if (trace) {
    unsigned long long t[8];
    CPPMEGA_CUDA_CHECK(cudaMemcpyAsync(t, p.trace, sizeof t, cudaMemcpyDeviceToHost, s));
    CPPMEGA_CUDA_CHECK(cudaStreamSynchronize(s));
    std::fprintf(stderr,
                 "[topk trace] rows=%lld T=%lld k=%lld cluster=%d cached=%d smem_sort=%d sort_cap=%d smem=%zu | block 0 (ns from "
                 "start): loaded %lld, pass0 %lld, pass1 %lld, pass2 %lld, collected %lld, written %lld\n",
                 static_cast<long long>(a.rows), static_cast<long long>(a.T), static_cast<long long>(a.k), pl.cluster,
                 pl.cached ? 1 : 0, pl.smem_sort ? 1 : 0, pl.sort_cap, pl.smem_bytes,
                 t[1] ? static_cast<long long>(t[1] - t[0]) : -1LL, t[2] ? static_cast<long long>(t[2] - t[0]) : -1LL,
                 t[3] ? static_cast<long long>(t[3] - t[0]) : -1LL, t[4] ? static_cast<long long>(t[4] - t[0]) : -1LL,
                 t[5] ? static_cast<long long>(t[5] - t[0]) : -1LL, t[6] ? static_cast<long long>(t[6] - t[0]) : -1LL);
  }

  if (!pl.smem_sort) {
    dev::u64* sorted = bufs.get<dev::u64>(static_cast<std::size_t>(a.rows * kk) * sizeof(dev::u64));
    std::size_t temp_bytes = 0;
    CPPMEGA_CUDA_CHECK(cub::DeviceSegmentedSort::SortKeysDescending(nullptr, temp_bytes, p.ws, sorted, a.rows * kk, a.rows,
                                                                    p.ws_begin, p.ws_end, s));
    void* temp = bufs.get<unsigned char>(temp_bytes);
    CPPMEGA_CUDA_CHECK(cub::DeviceSegmentedSort::SortKeysDescending(temp, temp_bytes, p.ws, sorted, a.rows * kk, a.rows,
                                                                    p.ws_begin, p.ws_end, s));
    const unsigned fin_grid = static_cast<unsigned>(std::min<std::int64_t>(a.rows, 65535));
    dev::finalize_kernel<<<fin_grid, 256, 0, s>>>(sorted, p.ws_begin, p.ws_end, a.rows, p.k, p.out);
    CPPMEGA_CUDA_CHECK_LAUNCH("topk finalize kernel");
  }
}

}  // namespace

void topk_cuda(const TopkArgs& a, void* stream) {
  detail::DeviceGuard g(a.scores.device.index);
  const cudaStream_t s = as_stream(stream);
  if (a.rows == 0) return;  // nothing to write, nothing launched
  if (a.T == 0) {           // no column at all: every slot is padding (-1 is all one bits)
    CPPMEGA_CUDA_CHECK(cudaMemsetAsync(a.out.data, 0xFF, static_cast<std::size_t>(a.rows * a.k) * sizeof(int), s));
    return;
  }
  if (a.scores.dtype == DType::f32)
    run_typed<dev::F32>(a, s, a.scores.device.index);
  else
    run_typed<dev::BF16>(a, s, a.scores.device.index);
}

}  // namespace cppmega::topk_op
