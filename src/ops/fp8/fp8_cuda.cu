// Portable CUDA kernels for the per-tensor FP8 ops. All are memory-bound streams: 16-byte
// loads and stores where the pointers allow (a scalar path otherwise), grid-stride loops
// sized to the machine, f32 arithmetic identical to the reference so results are bit-exact.
//
// amax works on bit patterns: for non-negative floats the unsigned order of the bits is the
// numeric order, and every NaN pattern sorts above Inf, so max(|x| bits) propagates NaN
// without a branch. Each block converts its maximum to f32 bits (a monotone map that keeps
// NaN a NaN) and does one atomicMax on the zero-initialised output.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>

#include "cppmega/numerics.hpp"
#include "cuda/common.cuh"
#include "ops/fp8/fp8_args.hpp"

namespace cppmega::fp8 {

namespace {

using cppmega::cuda::as_stream;

constexpr int kThreads = 512;
constexpr int kSmallPackMax = 32768;  // elements; below this, pack is one single-block launch

// ---- element traits ---------------------------------------------------------------------------
template <class T> struct Elem;
template <> struct Elem<float> {
  static constexpr int kVec = 4;  // elements per 16 bytes
  __device__ static float to_f32(float v) { return v; }
  __device__ static unsigned abs_bits(float v) { return __float_as_uint(v) & 0x7FFFFFFFu; }
  __device__ static unsigned bits_to_f32_bits(unsigned b) { return b; }
};
template <> struct Elem<__nv_bfloat16> {
  static constexpr int kVec = 8;
  __device__ static float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ static unsigned abs_bits(__nv_bfloat16 v) { return __bfloat16_as_ushort(v) & 0x7FFFu; }
  __device__ static unsigned bits_to_f32_bits(unsigned b) { return b << 16; }
};
template <> struct Elem<__half> {
  static constexpr int kVec = 8;
  __device__ static float to_f32(__half v) { return __half2float(v); }
  __device__ static unsigned abs_bits(__half v) { return __half_as_ushort(v) & 0x7FFFu; }
  __device__ static unsigned bits_to_f32_bits(unsigned b) {
    // f16 -> f32 is monotone on non-negative values and keeps NaN a NaN.
    return __float_as_uint(__half2float(__ushort_as_half(static_cast<unsigned short>(b))));
  }
};

template <class T>
union Vec16 {
  uint4 raw;
  T e[Elem<T>::kVec];
};

__device__ __forceinline__ __nv_fp8_interpretation_t interp(Fp8Format f) {
  return f == Fp8Format::e4m3 ? __NV_E4M3 : __NV_E5M2;
}

// ---- amax -------------------------------------------------------------------------------------
// Max of |x| bits over this thread's share of the whole tensor (vectorised when aligned).
template <class T, bool kVectorised>
__device__ __forceinline__ unsigned thread_abs_max_bits(const T* __restrict__ x, std::int64_t n, std::int64_t tid,
                                                        std::int64_t nthreads) {
  unsigned m = 0;
  std::int64_t tail_start = 0;
  if constexpr (kVectorised) {
    constexpr int V = Elem<T>::kVec;
    constexpr int U = 4;  // independent 16-byte loads in flight per thread
    const std::int64_t nv = n / V;
    const uint4* xv = reinterpret_cast<const uint4*>(x);
    std::int64_t i = tid;
    for (; i + (U - 1) * nthreads < nv; i += U * nthreads) {
      Vec16<T> v[U];
#pragma unroll
      for (int u = 0; u < U; ++u) v[u].raw = __ldcs(xv + i + u * nthreads);
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int k = 0; k < V; ++k) m = max(m, Elem<T>::abs_bits(v[u].e[k]));
    }
    for (; i < nv; i += nthreads) {
      Vec16<T> v;
      v.raw = __ldcs(xv + i);
#pragma unroll
      for (int k = 0; k < V; ++k) m = max(m, Elem<T>::abs_bits(v.e[k]));
    }
    tail_start = nv * V;
  }
  for (std::int64_t i = tail_start + tid; i < n; i += nthreads) m = max(m, Elem<T>::abs_bits(x[i]));
  return m;
}

template <class T, bool kVectorised>
__global__ void __launch_bounds__(kThreads) amax_kernel(const T* __restrict__ x, std::int64_t n, unsigned* out_bits) {
  __shared__ unsigned smem[kThreads / 32];
  const std::int64_t tid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t nthreads = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  unsigned m = thread_abs_max_bits<T, kVectorised>(x, n, tid, nthreads);
  m = cppmega::cuda::block_max_u32(m, smem);
  if (threadIdx.x == 0) atomicMax(out_bits, Elem<T>::bits_to_f32_bits(m));
}

template <class T>
void launch_amax(const T* x, std::int64_t n, unsigned* out_bits, int device, cudaStream_t s) {
  CPPMEGA_CUDA_CHECK(cudaMemsetAsync(out_bits, 0, sizeof(unsigned), s));
  if (n == 0) return;
  const bool vec = cppmega::cuda::aligned16(x);
  const std::int64_t items = vec ? (n + Elem<T>::kVec - 1) / Elem<T>::kVec / 4 : n;
  const unsigned blocks = cppmega::cuda::grid_for(items, kThreads, 4LL * cppmega::cuda::sm_count(device));
  if (vec)
    amax_kernel<T, true><<<blocks, kThreads, 0, s>>>(x, n, out_bits);
  else
    amax_kernel<T, false><<<blocks, kThreads, 0, s>>>(x, n, out_bits);
  CPPMEGA_CUDA_CHECK_LAUNCH("fp8_amax kernel");
}

// ---- quantize ---------------------------------------------------------------------------------
// Where the dequantisation scale comes from: a host value, a device scalar, or a device amax
// (pack: the scale is derived on the device from the amax, identically in every block).
struct ScaleSource {
  float host_inv = 1.0f;           // 1/scale taken once on the host (f32, same as the device)
  const float* scale = nullptr;    // device scale
  const unsigned* amax = nullptr;  // device amax as f32 bits (pack)
  Fp8Format format = Fp8Format::e4m3;
  bool pow2 = false;
  bool check_finite = false;
};

// Returns false when nothing may be written (pack with a non-finite amax and the check on).
__device__ __forceinline__ bool resolve_inv_scale(const ScaleSource& s, float& inv) {
  if (s.amax) {
    const float amax = __uint_as_float(*s.amax);
    if (s.check_finite && !(amax <= 3.402823466e38f)) return false;
    inv = 1.0f / num::scale_from_amax(amax, s.format, s.pow2);
  } else if (s.scale) {
    inv = 1.0f / *s.scale;
  } else {
    inv = s.host_inv;
  }
  return true;
}

template <class T, bool kVectorised>
__global__ void __launch_bounds__(kThreads)
    quantize_kernel(const T* __restrict__ x, std::int64_t n, std::uint8_t* __restrict__ q, ScaleSource src) {
  float inv;
  if (!resolve_inv_scale(src, inv)) return;
  const __nv_fp8_interpretation_t fi = interp(src.format);
  const std::int64_t tid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t nthreads = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  std::int64_t tail_start = 0;
  if constexpr (kVectorised) {
    // 16 elements per step: 16-byte output store, 1 (f32: 4) 16-byte... loads of 16 elements.
    constexpr int V = Elem<T>::kVec;
    constexpr int L = 16 / V;  // 16-byte loads per 16 outputs
    const std::int64_t nchunks = n / 16;
    const uint4* xv = reinterpret_cast<const uint4*>(x);
    uint4* qv = reinterpret_cast<uint4*>(q);
    for (std::int64_t c = tid; c < nchunks; c += nthreads) {
      Vec16<T> v[L];
#pragma unroll
      for (int l = 0; l < L; ++l) v[l].raw = __ldcs(xv + c * L + l);
      union {
        uint4 raw;
        __nv_fp8x2_storage_t p[8];
      } o;
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const int e0 = 2 * k, e1 = 2 * k + 1;
        float2 f;
        f.x = Elem<T>::to_f32(v[e0 / V].e[e0 % V]) * inv;
        f.y = Elem<T>::to_f32(v[e1 / V].e[e1 % V]) * inv;
        o.p[k] = __nv_cvt_float2_to_fp8x2(f, __NV_SATFINITE, fi);
      }
      __stcs(qv + c, o.raw);
    }
    tail_start = nchunks * 16;
  }
  for (std::int64_t i = tail_start + tid; i < n; i += nthreads)
    q[i] = __nv_cvt_float_to_fp8(Elem<T>::to_f32(x[i]) * inv, __NV_SATFINITE, fi);
}

template <class T>
void launch_quantize(const T* x, std::int64_t n, std::uint8_t* q, const ScaleSource& src, int device, cudaStream_t s) {
  if (n == 0) return;
  const bool vec = cppmega::cuda::aligned16(x) && cppmega::cuda::aligned16(q);
  const std::int64_t items = vec ? (n + 15) / 16 : n;
  const unsigned blocks = cppmega::cuda::grid_for(items, kThreads, 8LL * cppmega::cuda::sm_count(device));
  if (vec)
    quantize_kernel<T, true><<<blocks, kThreads, 0, s>>>(x, n, q, src);
  else
    quantize_kernel<T, false><<<blocks, kThreads, 0, s>>>(x, n, q, src);
  CPPMEGA_CUDA_CHECK_LAUNCH("fp8_quantize kernel");
}

// ---- pack -------------------------------------------------------------------------------------
// Small tensors (n <= kSmallPackMax): one single-block launch does amax, scale and cast, so the
// end-to-end cost is one launch and one stream synchronisation. The amax lives in shared memory.
// Aligned inputs keep their values in registers between the two phases (up to two 16-element
// chunks per thread); the scalar variant re-reads them.
constexpr int kSmallChunks = 2;
static_assert(kSmallPackMax == 1024 * 16 * kSmallChunks, "the register path must cover every small tensor");

// The amax report of one pack call, in host-mapped memory: the amax and the call's sequence
// number, written together as one aligned 8-byte store so the host never sees one without the
// other (no system-scope fence needed).
struct alignas(8) AmaxReport {
  float amax;
  unsigned seq;
};

__device__ __forceinline__ void report_amax(AmaxReport* r, unsigned seq, float amax) {
  if (!r) return;
  const unsigned long long word = (static_cast<unsigned long long>(seq) << 32) | __float_as_uint(amax);
  *reinterpret_cast<volatile unsigned long long*>(r) = word;
}

__device__ __forceinline__ float publish_amax(unsigned m, const ScaleSource& src, float* scale_out, AmaxReport* report,
                                              unsigned seq, unsigned* smem_amax) {
  if (threadIdx.x == 0) {
    *smem_amax = m;
    const float amax = __uint_as_float(m);
    *scale_out = num::scale_from_amax(amax, src.format, src.pow2);
    report_amax(report, seq, amax);
  }
  __syncthreads();
  return __uint_as_float(*smem_amax);
}

template <class T>
__global__ void __launch_bounds__(1024)
    pack_small_vec_kernel(const T* __restrict__ x, std::int64_t n, std::uint8_t* __restrict__ q, ScaleSource src,
                          float* scale_out, AmaxReport* report, unsigned seq) {
  __shared__ unsigned smem[32];
  __shared__ unsigned amax_bits;
  constexpr int V = Elem<T>::kVec, L = 16 / V;
  const std::int64_t nchunks = n / 16;
  float v[kSmallChunks][16];
  unsigned m = 0;
#pragma unroll
  for (int c = 0; c < kSmallChunks; ++c) {
    const std::int64_t chunk = threadIdx.x + c * blockDim.x;
    if (chunk < nchunks) {
#pragma unroll
      for (int l = 0; l < L; ++l) {
        Vec16<T> in;
        in.raw = reinterpret_cast<const uint4*>(x)[chunk * L + l];
#pragma unroll
        for (int k = 0; k < V; ++k) {
          v[c][l * V + k] = Elem<T>::to_f32(in.e[k]);
          m = max(m, __float_as_uint(v[c][l * V + k]) & 0x7FFFFFFFu);  // widening is monotone, keeps NaN
        }
      }
    }
  }
  const std::int64_t tail = nchunks * 16 + threadIdx.x;
  float t = 0.0f;
  if (tail < n) {
    t = Elem<T>::to_f32(x[tail]);
    m = max(m, __float_as_uint(t) & 0x7FFFFFFFu);
  }
  m = cppmega::cuda::block_max_u32(m, smem);
  const float amax = publish_amax(m, src, scale_out, report, seq, &amax_bits);
  if (src.check_finite && !(amax <= 3.402823466e38f)) return;
  const float inv = 1.0f / num::scale_from_amax(amax, src.format, src.pow2);
  const __nv_fp8_interpretation_t fi = interp(src.format);
#pragma unroll
  for (int c = 0; c < kSmallChunks; ++c) {
    const std::int64_t chunk = threadIdx.x + c * blockDim.x;
    if (chunk < nchunks) {
      union {
        uint4 raw;
        __nv_fp8x2_storage_t p[8];
      } o;
#pragma unroll
      for (int k = 0; k < 8; ++k) o.p[k] = __nv_cvt_float2_to_fp8x2(make_float2(v[c][2 * k] * inv, v[c][2 * k + 1] * inv), __NV_SATFINITE, fi);
      reinterpret_cast<uint4*>(q)[chunk] = o.raw;
    }
  }
  if (tail < n) q[tail] = __nv_cvt_float_to_fp8(t * inv, __NV_SATFINITE, fi);
}

template <class T>
__global__ void __launch_bounds__(1024)
    pack_small_scalar_kernel(const T* __restrict__ x, std::int64_t n, std::uint8_t* __restrict__ q, ScaleSource src,
                             float* scale_out, AmaxReport* report, unsigned seq) {
  __shared__ unsigned smem[32];
  __shared__ unsigned amax_bits;
  unsigned m = thread_abs_max_bits<T, false>(x, n, threadIdx.x, blockDim.x);
  m = cppmega::cuda::block_max_u32(m, smem);
  const float amax = publish_amax(Elem<T>::bits_to_f32_bits(m), src, scale_out, report, seq, &amax_bits);
  if (src.check_finite && !(amax <= 3.402823466e38f)) return;
  const float inv = 1.0f / num::scale_from_amax(amax, src.format, src.pow2);
  const __nv_fp8_interpretation_t fi = interp(src.format);
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x)
    q[i] = __nv_cvt_float_to_fp8(Elem<T>::to_f32(x[i]) * inv, __NV_SATFINITE, fi);
}

// Large tensors: the amax is reduced into the scale output itself (as f32 bits), the quantize
// kernel derives the scale from it in every block, and this one-thread kernel, ordered after
// the quantize kernel on the stream, turns the amax into the scale.
__global__ void pack_finalize_kernel(float* scale_out, Fp8Format format, bool pow2, AmaxReport* report, unsigned seq) {
  const float amax = *scale_out;
  *scale_out = num::scale_from_amax(amax, format, pow2);
  report_amax(report, seq, amax);
}

// ---- dequantize -------------------------------------------------------------------------------
template <class O> struct Out;
template <> struct Out<float> {
  __device__ static float from_f32(float v) { return v; }
};
template <> struct Out<__nv_bfloat16> {
  __device__ static __nv_bfloat16 from_f32(float v) { return __float2bfloat16_rn(v); }
};
template <> struct Out<__half> {
  __device__ static __half from_f32(float v) { return __float2half_rn(v); }
};

__device__ __forceinline__ float2 decode2(__nv_fp8x2_storage_t b, __nv_fp8_interpretation_t fi) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(b, fi);  // exact: every fp8 value is an f16 value
  return __half22float2(*reinterpret_cast<const __half2*>(&h));
}

// Each step turns the FP8 bytes of one 16-byte output store into that store: 8 bytes in for
// bf16/f16 out, 4 bytes in for f32 out. Stores are the larger stream here, so they are the
// ones kept 16 bytes wide and fully coalesced across the warp.
template <class O> struct DequantStep;
template <> struct DequantStep<float> {
  static constexpr int kElems = 4;
  using In = unsigned;
  __device__ static uint4 convert(In in, float scale, __nv_fp8_interpretation_t fi) {
    const float2 a = decode2(static_cast<__nv_fp8x2_storage_t>(in), fi);
    const float2 b = decode2(static_cast<__nv_fp8x2_storage_t>(in >> 16), fi);
    return make_uint4(__float_as_uint(a.x * scale), __float_as_uint(a.y * scale), __float_as_uint(b.x * scale),
                      __float_as_uint(b.y * scale));
  }
};
template <class O>
__device__ __forceinline__ unsigned pack_pair(float2 v);
template <> __device__ __forceinline__ unsigned pack_pair<__nv_bfloat16>(float2 v) {
  const __nv_bfloat162 p = __float22bfloat162_rn(v);
  return *reinterpret_cast<const unsigned*>(&p);
}
template <> __device__ __forceinline__ unsigned pack_pair<__half>(float2 v) {
  const __half2 p = __float22half2_rn(v);
  return *reinterpret_cast<const unsigned*>(&p);
}
template <class O> struct DequantStep {  // bf16, f16
  static constexpr int kElems = 8;
  using In = uint2;
  __device__ static uint4 convert(In in, float scale, __nv_fp8_interpretation_t fi) {
    unsigned w[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const unsigned word = k < 2 ? in.x : in.y;
      float2 f = decode2(static_cast<__nv_fp8x2_storage_t>(word >> (16 * (k % 2))), fi);
      f.x *= scale;
      f.y *= scale;
      w[k] = pack_pair<O>(f);
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
  }
};

template <class O, bool kVectorised>
__global__ void __launch_bounds__(kThreads) dequantize_kernel(const std::uint8_t* __restrict__ q, std::int64_t n,
                                                               O* __restrict__ out, float host_scale,
                                                               const float* dev_scale, Fp8Format format) {
  const float scale = dev_scale ? *dev_scale : host_scale;
  const __nv_fp8_interpretation_t fi = interp(format);
  const std::int64_t tid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t nthreads = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  std::int64_t tail_start = 0;
  if constexpr (kVectorised) {
    using Step = DequantStep<O>;
    using In = typename Step::In;
    constexpr int U = 4;  // independent loads in flight per thread
    const std::int64_t nsteps = n / Step::kElems;
    const In* qv = reinterpret_cast<const In*>(q);
    uint4* ov = reinterpret_cast<uint4*>(out);
    for (std::int64_t c0 = tid; c0 < nsteps; c0 += U * nthreads) {
      In in[U];
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (c0 + u * nthreads < nsteps) in[u] = __ldcs(qv + c0 + u * nthreads);
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (c0 + u * nthreads < nsteps) __stcs(ov + c0 + u * nthreads, Step::convert(in[u], scale, fi));
    }
    tail_start = nsteps * Step::kElems;
  }
  for (std::int64_t i = tail_start + tid; i < n; i += nthreads) {
    const __half_raw h = __nv_cvt_fp8_to_halfraw(q[i], fi);
    out[i] = Out<O>::from_f32(__half2float(*reinterpret_cast<const __half*>(&h)) * scale);
  }
}

template <class O>
void launch_dequantize(const DequantizeArgs& a, int device, cudaStream_t s) {
  const std::int64_t n = a.q.numel();
  if (n == 0) return;
  const auto* q = a.q.ptr<const std::uint8_t>();
  O* out = a.out.ptr<O>();
  const float* dev_scale = a.scale.tensor ? a.scale.tensor->ptr<const float>() : nullptr;
  const bool vec = cppmega::cuda::aligned16(q) && cppmega::cuda::aligned16(out);
  const std::int64_t items = vec ? (n + 4 * DequantStep<O>::kElems - 1) / (4 * DequantStep<O>::kElems) : n;
  const unsigned blocks = cppmega::cuda::grid_for(items, kThreads, 4LL * cppmega::cuda::sm_count(device));
  if (vec)
    dequantize_kernel<O, true><<<blocks, kThreads, 0, s>>>(q, n, out, a.scale.value, dev_scale, a.format);
  else
    dequantize_kernel<O, false><<<blocks, kThreads, 0, s>>>(q, n, out, a.scale.value, dev_scale, a.format);
  CPPMEGA_CUDA_CHECK_LAUNCH("fp8_dequantize kernel");
}

// Runs f with the element type of t (f32, bf16, f16) as a template argument.
template <class F>
void with_float_type(DType t, F&& f) {
  switch (t) {
    case DType::f32: f(float{}); break;
    case DType::bf16: f(__nv_bfloat16{}); break;
    case DType::f16: f(__half{}); break;
    default: invalid_argument("fp8 cuda: unexpected dtype ", dtype_name(t));
  }
}

// One host-mapped AmaxReport per host thread. The finite check of pack polls it instead of
// synchronising the stream: the host learns the amax as soon as the reduction is done (the cast
// may still be running), which is the whole latency of a small pack.
struct MappedReport {
  AmaxReport* host = nullptr;
  AmaxReport* device = nullptr;
  unsigned next_seq = 1;
};
MappedReport& mapped_report() {
  thread_local MappedReport r;
  if (!r.host) {
    CPPMEGA_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&r.host), sizeof(AmaxReport),
                                     cudaHostAllocMapped | cudaHostAllocPortable));
    CPPMEGA_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&r.device), r.host, 0));
    r.host->seq = 0;
  }
  return r;
}

// Waits until the kernel has reported `seq`; never hangs: if the stream completes (or fails)
// without the report, that is an error.
float wait_for_amax(const MappedReport& r, unsigned seq, cudaStream_t s) {
  const volatile unsigned long long* word = reinterpret_cast<const volatile unsigned long long*>(r.host);
  for (std::uint64_t spins = 0;; ++spins) {
    const unsigned long long w = *word;
    if (static_cast<unsigned>(w >> 32) == seq) return num::bits_f32(static_cast<std::uint32_t>(w));
    if ((spins & 65535) == 65535) {  // rarely (about every 100 us): is the stream still going?
      const cudaError_t e = cudaStreamQuery(s);
      if (e == cudaSuccess) {
        const unsigned long long w2 = *word;
        if (static_cast<unsigned>(w2 >> 32) == seq) return num::bits_f32(static_cast<std::uint32_t>(w2));
        fail(ErrorKind::CudaError, "fp8_pack: the stream finished without the kernel reporting its amax");
      }
      if (e != cudaErrorNotReady) CPPMEGA_CUDA_CHECK(e);
    }
  }
}

}  // namespace

void amax_cuda(const AmaxArgs& a, void* stream) {
  detail::DeviceGuard g(a.x.device.index);
  with_float_type(a.x.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch_amax(a.x.ptr<const T>(), a.x.numel(), a.out.ptr<unsigned>(), a.x.device.index, as_stream(stream));
  });
}

void quantize_cuda(const QuantizeArgs& a, void* stream) {
  detail::DeviceGuard g(a.x.device.index);
  ScaleSource src;
  src.format = a.format;
  if (a.scale.tensor)
    src.scale = a.scale.tensor->ptr<const float>();
  else
    src.host_inv = 1.0f / a.scale.value;
  with_float_type(a.x.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch_quantize(a.x.ptr<const T>(), a.x.numel(), a.out.ptr<std::uint8_t>(), src, a.x.device.index,
                    as_stream(stream));
  });
}

void dequantize_cuda(const DequantizeArgs& a, void* stream) {
  detail::DeviceGuard g(a.q.device.index);
  with_float_type(a.out.dtype, [&](auto tag) {
    using O = decltype(tag);
    launch_dequantize<O>(a, a.q.device.index, as_stream(stream));
  });
}

void pack_cuda(const PackArgs& a, void* stream) {
  detail::DeviceGuard g(a.x.device.index);
  const cudaStream_t s = as_stream(stream);
  const std::int64_t n = a.x.numel();
  float* scale_out = a.scale.ptr<float>();
  if (n == 0) {
    static const float one = 1.0f;
    CPPMEGA_CUDA_CHECK(cudaMemcpyAsync(scale_out, &one, sizeof(float), cudaMemcpyHostToDevice, s));
    return;
  }
  ScaleSource src;
  src.format = a.pack.format;
  src.pow2 = a.pack.pow2_scale;
  src.check_finite = a.pack.check_finite;
  MappedReport* report = a.pack.check_finite ? &mapped_report() : nullptr;
  AmaxReport* report_dev = report ? report->device : nullptr;
  const unsigned seq = report ? report->next_seq++ : 0;
  if (report && report->next_seq == 0) report->next_seq = 1;  // 0 is "never written"

  with_float_type(a.x.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* x = a.x.ptr<const T>();
    auto* q = a.q.ptr<std::uint8_t>();
    if (n <= kSmallPackMax) {
      // Just enough warps for the register path: one thread per 16 elements, up to 1024.
      const int threads = static_cast<int>(std::min<std::int64_t>(1024, std::max<std::int64_t>(32, (n / 16 + 31) / 32 * 32)));
      if (cppmega::cuda::aligned16(x) && cppmega::cuda::aligned16(q))
        pack_small_vec_kernel<T><<<1, threads, 0, s>>>(x, n, q, src, scale_out, report_dev, seq);
      else
        pack_small_scalar_kernel<T><<<1, 1024, 0, s>>>(x, n, q, src, scale_out, report_dev, seq);
      CPPMEGA_CUDA_CHECK_LAUNCH("fp8_pack small kernel");
    } else {
      unsigned* amax_bits = reinterpret_cast<unsigned*>(scale_out);
      launch_amax(x, n, amax_bits, a.x.device.index, s);
      src.amax = amax_bits;
      launch_quantize(x, n, q, src, a.x.device.index, s);
      pack_finalize_kernel<<<1, 1, 0, s>>>(scale_out, src.format, src.pow2, report_dev, seq);
      CPPMEGA_CUDA_CHECK_LAUNCH("fp8_pack finalize kernel");
    }
  });
  if (report) {
    const float amax = wait_for_amax(*report, seq, s);
    if (!(amax <= 3.402823466e38f))
      fail(ErrorKind::NonFinite, "fp8_pack: x contains ", amax != amax ? "NaN" : "Inf", " (amax = ", amax,
           "); refusing to derive a scale (pass check_finite=false to get a NaN scale instead); q was not written");
  }
}

}  // namespace cppmega::fp8
