// CUDA side of fp8_gemv: the host logic that picks and launches the tensor-core stream
// (fp8_gemv_tc.cuh, instantiated in fp8_gemv_tc_m*.cu), and the general kernel.
// General path (any M, any alignment): one warp per (row n, 8 rows of x), CUDA-core f32 FMA,
// block scales applied per lane per 128-block, warp-shuffle reduction.
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <tuple>

#include "cuda/common.cuh"
#include "ops/fp8_gemv/fp8_gemv_args.hpp"
#include "ops/fp8_gemv/fp8_gemv_config.hpp"
#include "ops/fp8_gemv/fp8_gemv_tc.cuh"

namespace cppmega::gemv_op {

namespace {

using cppmega::cuda::as_stream;
using namespace config;
using namespace tc;

__device__ __forceinline__ float decode_e4m3(std::uint8_t b) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(b, __NV_E4M3);
  return __half2float(*reinterpret_cast<const __half*>(&h));
}

// ---- the general kernel -----------------------------------------------------------------------
template <int XT>
__device__ __forceinline__ float x_at(const Params& p, int m, std::int64_t k) {
  const std::int64_t i = static_cast<std::int64_t>(m) * p.x_stride + k;
  if constexpr (XT == kXf32) return static_cast<const float*>(p.x)[i];
  if constexpr (XT == kXbf16) return __uint_as_float(static_cast<unsigned>(static_cast<const std::uint16_t*>(p.x)[i]) << 16);
  if constexpr (XT == kXf16) return __half2float(static_cast<const __half*>(p.x)[i]);
  if constexpr (XT == kXe4m3) return decode_e4m3(static_cast<const std::uint8_t*>(p.x)[i]);
  return 0.0f;
}

template <int XT>
__global__ void __launch_bounds__(kThreads) gemv_general_kernel(const Params p) {
  constexpr int MG = 8;
  const int lane = threadIdx.x & 31;
  const std::int64_t warp = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const std::int64_t nwarps = (static_cast<std::int64_t>(gridDim.x) * blockDim.x) >> 5;
  const int mgroups = (p.M + MG - 1) / MG;
  for (std::int64_t task = warp; task < p.N * mgroups; task += nwarps) {
    const std::int64_t n = task / mgroups;
    const int m0 = static_cast<int>(task % mgroups) * MG;
    const int mc = min(MG, p.M - m0);
    const std::uint8_t* wr = p.w + n * p.w_stride;
    float tot[MG];
#pragma unroll
    for (int i = 0; i < MG; ++i) tot[i] = 0.0f;
    for (int kb = 0; kb < p.nkb; ++kb) {
      float part[MG];
#pragma unroll
      for (int i = 0; i < MG; ++i) part[i] = 0.0f;
#pragma unroll
      for (int i = 0; i < kStepK / 32; ++i) {
        const std::int64_t k = static_cast<std::int64_t>(kb) * kStepK + i * 32 + lane;
        if (k < p.K) {
          const float wv = decode_e4m3(wr[k]);
#pragma unroll
          for (int mm = 0; mm < MG; ++mm)
            if (mm < mc) part[mm] = fmaf(x_at<XT>(p, m0 + mm, k), wv, part[mm]);
        }
      }
      const float wf = p.w_kind == kSBlock ? __ldg(p.w_ptr + (n / 128) * p.nkb + kb) : 1.0f;
#pragma unroll
      for (int mm = 0; mm < MG; ++mm)
        if (mm < mc) {
          const float xf = p.x_kind == kSBlock ? __ldg(p.x_ptr + static_cast<std::int64_t>(m0 + mm) * p.nkb + kb) : 1.0f;
          tot[mm] = fmaf(part[mm], xf * wf, tot[mm]);
        }
    }
#pragma unroll
    for (int mm = 0; mm < MG; ++mm) {
      float v = tot[mm];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
      if (lane == 0 && mm < mc) store_out(p, m0 + mm, n, v * final_x(p, m0 + mm) * final_w(p, n));
    }
  }
}

// ---- host side --------------------------------------------------------------------------------
thread_local GemvTuning g_tuning;
thread_local GemvLaunchInfo g_last;

int x_type_of(DType t) {
  switch (t) {
    case DType::f32: return kXf32;
    case DType::bf16: return kXbf16;
    case DType::f16: return kXf16;
    case DType::e4m3: return kXe4m3;
    default: invalid_argument("fp8_gemv cuda: unexpected x dtype ", dtype_name(t));
  }
}
int out_type_of(DType t) {
  switch (t) {
    case DType::f32: return kOf32;
    case DType::bf16: return kObf16;
    case DType::f16: return kOf16;
    default: invalid_argument("fp8_gemv cuda: unexpected out dtype ", dtype_name(t));
  }
}
int kind_of(ScaleKind k) {
  switch (k) {
    case ScaleKind::none: return kSNone;
    case ScaleKind::tensor: return kSTensor;
    case ScaleKind::row: return kSRow;
    case ScaleKind::block: return kSBlock;
  }
  return kSNone;
}

using Kernel = void (*)(Params);

// The instantiated configuration (planes, sb, nbuf) of an M class. Defaults from the H100 sweep
// (tests/cpp/test_fp8_gemv.cpp, Timing): stage of 4 blocks (512-byte row bursts), double
// buffered, for M <= 32; stage of 2 blocks, double buffered, for M <= 64 (the x stage is larger).
// f32 x (two f16 planes) uses the configurations that fit next to its larger raw x stage.
FastKernel fast_kernel(int mt, int planes, int sb, int nbuf) {
  if (sb <= 0 || nbuf <= 0) {
    if (planes == 1) {
      sb = mt <= 4 ? 4 : 2;
    } else {
      sb = mt == 1 ? 4 : (mt == 8 ? 1 : 2);
    }
    nbuf = 2;
  }
  FastKernel k;
  switch (mt) {
    case 1: k = fast_kernel_m1(planes, sb, nbuf); break;
    case 2: k = fast_kernel_m2(planes, sb, nbuf); break;
    case 4: k = fast_kernel_m4(planes, sb, nbuf); break;
    default: k = fast_kernel_m8(planes, sb, nbuf); break;
  }
  if (!k.fn) invalid_argument("fp8_gemv cuda: no kernel for ", mt, " M tiles, ", planes, " planes, stage ", sb, " x ", nbuf);
  return k;
}

// CTAs of `k` resident per SM with `smem` bytes (cached; the query is a host computation).
int ctas_per_sm(Kernel k, int smem, int device) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, int>, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_tuple(reinterpret_cast<const void*>(k), smem, device);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  static std::map<std::pair<const void*, int>, int> smem_set;  // the max dynamic smem each kernel allows
  int& allowed = smem_set[{reinterpret_cast<const void*>(k), device}];
  if (smem > 48 * 1024 && smem > allowed) {
    CPPMEGA_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    allowed = smem;
  }
  int n = 0;
  CPPMEGA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, kThreads, smem));
  if (n < 1) invalid_argument("fp8_gemv cuda: the kernel does not fit on an SM with ", smem, " bytes of shared memory");
  cache[key] = n;
  return n;
}

// Fewest K splits (1, 2, 4, 8) that fill the GPU's CTA slots well: the score is the fraction of
// the last wave in use times the balance of the splits. A split keeps at least kMinBlocksPerSplit
// 128-blocks (measured: shorter splits lose more to the pipeline ramp and the cluster epilogue
// than they gain in parallelism, e.g. 4096x4096 at M = 1, 16, 64).
int choose_splits(std::int64_t tiles, int nkb, int slots) {
  int best = 1;
  double best_score = -1.0;
  for (int s = 1; s <= kMaxSplits && s <= std::max(1, nkb / kMinBlocksPerSplit); s *= 2) {
    const double ctas = static_cast<double>(tiles) * s;
    const double waves = std::ceil(ctas / slots);
    const int sps = (nkb + s - 1) / s;
    const double score = ctas / (waves * slots) * (static_cast<double>(nkb) / (static_cast<double>(s) * sps));
    if (score > best_score * 1.05) {
      best = s;
      best_score = score;
    }
  }
  return best;
}

void launch_fast(Params& p, int device, cudaStream_t s) {
  const int mt = p.M <= 8 ? 1 : p.M <= 16 ? 2 : p.M <= 32 ? 4 : 8;
  const int planes = p.x_type == kXf32 ? 2 : 1;
  const FastKernel fk = fast_kernel(mt, planes, g_tuning.stage_blocks, g_tuning.stages);
  const int smem = fk.smem(p.M, p.x_bytes);
  const std::int64_t tiles = (p.N + kBlockN - 1) / kBlockN;
  if (tiles > 2147483647LL) invalid_argument("fp8_gemv cuda: N too large (", p.N, ")");
  const int per_sm = ctas_per_sm(fk.fn, smem, device);  // also raises the dynamic shared memory limit
  int splits = g_tuning.splits;
  if (splits <= 0) splits = choose_splits(tiles, p.nkb, per_sm * cppmega::cuda::sm_count(device));
  splits = std::clamp(splits, 1, std::min(kMaxSplits, p.nkb));
  p.steps_per_split = (p.nkb + splits - 1) / splits;

  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(splits), 1);
  cfg.blockDim = dim3(kThreads, 1, 1);
  cfg.dynamicSmemBytes = static_cast<std::size_t>(smem);
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = 1;
  attr[0].val.clusterDim.y = static_cast<unsigned>(splits);
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = splits > 1 ? 1 : 0;
  CPPMEGA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, fk.fn, p));
  CPPMEGA_CUDA_CHECK_LAUNCH("fp8_gemv tensor-core kernel");
  g_last = {true, mt, planes, splits, fk.sb, fk.nbuf, static_cast<int>(tiles), smem, per_sm};
}

void launch_general(const Params& p, int device, cudaStream_t s) {
  const std::int64_t tasks = p.N * ((p.M + 7) / 8);
  const unsigned blocks = cppmega::cuda::grid_for(tasks * 32, kThreads, 8LL * cppmega::cuda::sm_count(device));
  switch (p.x_type) {
    case kXf32: gemv_general_kernel<kXf32><<<blocks, kThreads, 0, s>>>(p); break;
    case kXbf16: gemv_general_kernel<kXbf16><<<blocks, kThreads, 0, s>>>(p); break;
    case kXf16: gemv_general_kernel<kXf16><<<blocks, kThreads, 0, s>>>(p); break;
    default: gemv_general_kernel<kXe4m3><<<blocks, kThreads, 0, s>>>(p); break;
  }
  CPPMEGA_CUDA_CHECK_LAUNCH("fp8_gemv general kernel");
  g_last = {false, 0, 0, 0, 0, 0, static_cast<int>(blocks), 0, 0};
}

}  // namespace

void set_gemv_tuning_for_testing(const GemvTuning& t) { g_tuning = t; }
std::vector<std::pair<int, int>> gemv_fast_configs(int m_tiles, int planes) {
  std::vector<std::pair<int, int>> out;
  for (int sb : {1, 2, 4})
    for (int nbuf : {2, 3}) {
      FastKernel k;
      switch (m_tiles) {
        case 1: k = fast_kernel_m1(planes, sb, nbuf); break;
        case 2: k = fast_kernel_m2(planes, sb, nbuf); break;
        case 4: k = fast_kernel_m4(planes, sb, nbuf); break;
        default: k = fast_kernel_m8(planes, sb, nbuf); break;
      }
      if (k.fn) out.emplace_back(sb, nbuf);
    }
  return out;
}
GemvLaunchInfo last_gemv_launch() { return g_last; }

void gemv_cuda(const GemvArgs& a, void* stream) {
  detail::DeviceGuard guard(a.x.device.index);
  const cudaStream_t s = as_stream(stream);
  const int device = a.x.device.index;
  if (a.M == 0 || a.N == 0) return;
  if (a.K == 0) {  // y = the empty sum
    const std::size_t es = a.out.itemsize();
    CPPMEGA_CUDA_CHECK(cudaMemset2DAsync(a.out.data, static_cast<std::size_t>(a.M > 1 ? a.out.strides[0] : a.N) * es, 0,
                                         static_cast<std::size_t>(a.N) * es, static_cast<std::size_t>(a.M), s));
    return;
  }
  if (a.N > (std::int64_t(1) << 40) || a.K > (std::int64_t(1) << 31) - 256 || a.M > (std::int64_t(1) << 30))
    unsupported("fp8_gemv cuda: shape out of range (M=", a.M, ", N=", a.N, ", K=", a.K, ")");
  Params p{};
  p.x = a.x.data;
  p.x_stride = a.x.strides[0];
  p.w = a.w.ptr<const std::uint8_t>();
  p.w_stride = a.w.strides[0];
  p.out = a.out.data;
  p.out_stride = a.out.strides[0];
  p.N = a.N;
  p.K = a.K;
  p.M = static_cast<int>(a.M);
  p.nkb = static_cast<int>((a.K + kStepK - 1) / kStepK);
  p.x_type = x_type_of(a.x.dtype);
  p.out_type = out_type_of(a.out.dtype);
  p.x_bytes = static_cast<int>(a.x.itemsize());
  p.x_async = cppmega::cuda::aligned16(a.x.data) &&
              (a.M <= 1 || (static_cast<std::size_t>(a.x.strides[0]) * static_cast<std::size_t>(p.x_bytes)) % 16 == 0);
  p.w_kind = kind_of(a.w_scale.kind);
  p.w_value = a.w_scale.value;
  p.w_ptr = a.w_scale.ptr;
  p.x_kind = kind_of(a.x_scale.kind);
  p.x_value = a.x_scale.value;
  p.x_ptr = a.x_scale.ptr;
  const bool w_aligned = cppmega::cuda::aligned16(a.w.data) && (a.N <= 1 || a.w.strides[0] % 16 == 0);
  if (a.M <= kMaxM && w_aligned && !g_tuning.force_general)
    launch_fast(p, device, s);
  else
    launch_general(p, device, s);
}

}  // namespace cppmega::gemv_op
