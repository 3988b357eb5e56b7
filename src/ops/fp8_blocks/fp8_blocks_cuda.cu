// CUDA kernels for block-scaled FP8. Quantisation is one pass over x: each block's amax is
// reduced where its values already sit in registers (shuffles across the lanes of a 1x128 or
// 1x32 group, a CTA reduction for a 128x128 tile), the scale follows the shared rule of
// fp8_blocks_args.hpp and the same registers are encoded and stored. f32 arithmetic is
// identical to the reference, so codes and scales are bit-exact.
//
// Fast paths need 16-byte aligned x and q and K % 16 == 0 (then every 16-byte vector lies in
// one row and one block); anything else takes scalar kernels of the same structure.
// amax runs on bit patterns (|x| bits are ordered like |x|, NaN above Inf), as in fp8_amax.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "cuda/common.cuh"
#include "ops/fp8_blocks/fp8_blocks_args.hpp"

namespace cppmega::fp8_blocks {

namespace {

using cppmega::cuda::aligned16;
using cppmega::cuda::as_stream;

constexpr int kThreads = 256;

__host__ __device__ __forceinline__ std::int64_t min64(std::int64_t a, std::int64_t b) { return a < b ? a : b; }
constexpr int kUnroll = 4;  // independent 16-byte loads in flight per thread (row kernels)

template <class T> struct Elem;
template <> struct Elem<float> {
  __device__ static float to_f32(float v) { return v; }
  __device__ static unsigned abs_bits(float v) { return __float_as_uint(v) & 0x7FFFFFFFu; }
  __device__ static float from_abs_bits(unsigned b) { return __uint_as_float(b); }
};
template <> struct Elem<__nv_bfloat16> {
  __device__ static float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ static unsigned abs_bits(__nv_bfloat16 v) { return __bfloat16_as_ushort(v) & 0x7FFFu; }
  __device__ static float from_abs_bits(unsigned b) { return __uint_as_float(b << 16); }
};
template <> struct Elem<__half> {
  __device__ static float to_f32(__half v) { return __half2float(v); }
  __device__ static unsigned abs_bits(__half v) { return __half_as_ushort(v) & 0x7FFFu; }
  // f16 -> f32 is monotone on non-negative values and keeps NaN a NaN.
  __device__ static float from_abs_bits(unsigned b) { return __half2float(__ushort_as_half(static_cast<unsigned short>(b))); }
};

template <class T>
union Vec16 {
  static constexpr int N = 16 / sizeof(T);
  uint4 raw;
  T e[N];
};

__device__ __forceinline__ __nv_fp8_interpretation_t interp(Fp8Format f) { return f == Fp8Format::e4m3 ? __NV_E4M3 : __NV_E5M2; }

// Scale rule of one call: writes the block's scale and returns the quantisation multiplier.
struct Rule {
  bool mx;
  Fp8Format format;
  bool pow2;
  void* scales;  // f32 or e8m0
  int* flag;     // host-mapped non-finite flag (check_finite), else nullptr

  __device__ float apply(float amax, std::int64_t idx, bool writer) const {
    float inv;
    if (mx) {
      const std::uint8_t b = mx_scale(amax, inv);
      if (writer) static_cast<std::uint8_t*>(scales)[idx] = b;
    } else {
      const float s = block_scale(amax, format, pow2, inv);
      if (writer) static_cast<float*>(scales)[idx] = s;
    }
    if (writer && flag && !(amax <= 3.402823466e38f)) *reinterpret_cast<volatile int*>(flag) = 1;
    return inv;
  }
};

template <class T>
__device__ __forceinline__ unsigned vec_abs_max(const Vec16<T>& v) {
  unsigned m = 0;
#pragma unroll
  for (int k = 0; k < Vec16<T>::N; ++k) m = max(m, Elem<T>::abs_bits(v.e[k]));
  return m;
}

// Encodes the 16/sizeof(T) values of v times inv and stores them (8 or 4 bytes) at q.
template <class T>
__device__ __forceinline__ void encode_store(const Vec16<T>& v, float inv, __nv_fp8_interpretation_t fi, std::uint8_t* q) {
  constexpr int N = Vec16<T>::N;
  __nv_fp8x2_storage_t p[N / 2];
#pragma unroll
  for (int k = 0; k < N / 2; ++k) {
    float2 f;
    f.x = Elem<T>::to_f32(v.e[2 * k]) * inv;
    f.y = Elem<T>::to_f32(v.e[2 * k + 1]) * inv;
    p[k] = __nv_cvt_float2_to_fp8x2(f, __NV_SATFINITE, fi);
  }
  if constexpr (N == 8) {
    uint2 o;
    o.x = static_cast<unsigned>(p[0]) | (static_cast<unsigned>(p[1]) << 16);
    o.y = static_cast<unsigned>(p[2]) | (static_cast<unsigned>(p[3]) << 16);
    __stcs(reinterpret_cast<uint2*>(q), o);
  } else {
    const unsigned o = static_cast<unsigned>(p[0]) | (static_cast<unsigned>(p[1]) << 16);
    __stcs(reinterpret_cast<unsigned*>(q), o);
  }
}

// ---- row groups (1x128 and MXFP8 1x32), vectorised ------------------------------------------------
// A group of G values is held by G/V lanes (V values per 16-byte vector); the lanes of one group
// are aligned within a warp, so a shuffle of width G/V reduces the group's amax.
// kFull (K % G == 0): vector slot i holds elements [i*V, i*V+V) and belongs to group i/(G/V),
// which is also the scale index; no division. Otherwise each row is padded to whole groups of
// lanes and the slot is decoded with one division.
template <class T, int G, bool kFull>
__global__ void __launch_bounds__(kThreads) quant_rows_vec_kernel(const T* __restrict__ x, std::uint8_t* __restrict__ q,
                                                                  std::int64_t rows, std::int64_t K, std::int64_t nkb,
                                                                  Rule rule) {
  constexpr int V = Vec16<T>::N;
  constexpr int Lg = G / V;
  static_assert(Lg >= 1 && Lg <= 32 && (32 % Lg) == 0, "group must be 1..32 lanes");
  const __nv_fp8_interpretation_t fi = interp(rule.format);
  const int lane = threadIdx.x & 31;
  const std::int64_t warp = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const std::int64_t nwarps = (static_cast<std::int64_t>(gridDim.x) * blockDim.x) >> 5;
  const std::int64_t slots_per_row = kFull ? K / V : nkb * Lg;
  const std::int64_t total = rows * slots_per_row;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  for (std::int64_t base = warp * 32 * kUnroll; base < total; base += nwarps * 32 * kUnroll) {
    Vec16<T> v[kUnroll];
    std::int64_t off[kUnroll], sidx[kUnroll];
    bool act[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const std::int64_t slot = base + u * 32 + lane;
      if constexpr (kFull) {
        act[u] = slot < total;
        off[u] = slot * V;
        sidx[u] = slot / Lg;
      } else {
        const std::int64_t row = slot / slots_per_row;
        const std::int64_t j = slot - row * slots_per_row;
        const std::int64_t kb = j / Lg;
        const std::int64_t col = kb * G + (j % Lg) * V;
        act[u] = slot < total && col < K;
        off[u] = row * K + col;
        sidx[u] = row * nkb + kb;
      }
      v[u].raw = act[u] ? __ldcs(xv + off[u] / V) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      unsigned m = vec_abs_max(v[u]);
#pragma unroll
      for (int o = Lg / 2; o >= 1; o >>= 1) m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, o));
      const bool writer = base + u * 32 + lane < total && (lane % Lg) == 0;
      const float inv = rule.apply(Elem<T>::from_abs_bits(m), sidx[u], writer);
      if (act[u]) encode_store(v[u], inv, fi, q + off[u]);
    }
  }
}

// ---- row groups, scalar (any alignment, any K): one warp per group ---------------------------------
template <class T>
__global__ void __launch_bounds__(kThreads) quant_rows_scalar_kernel(const T* __restrict__ x, std::uint8_t* __restrict__ q,
                                                                     std::int64_t rows, std::int64_t K, std::int64_t nkb,
                                                                     int G, Rule rule) {
  const __nv_fp8_interpretation_t fi = interp(rule.format);
  const int lane = threadIdx.x & 31;
  const std::int64_t warp = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const std::int64_t nwarps = (static_cast<std::int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (std::int64_t gi = warp; gi < rows * nkb; gi += nwarps) {
    const std::int64_t row = gi / nkb, kb = gi - row * nkb;
    const std::int64_t c0 = row * K + kb * G, c1 = row * K + min64(K, (kb + 1) * G);
    unsigned m = 0;
    for (std::int64_t i = c0 + lane; i < c1; i += 32) m = max(m, Elem<T>::abs_bits(x[i]));
    m = cppmega::cuda::warp_max_u32(m);
    const float inv = rule.apply(Elem<T>::from_abs_bits(m), gi, lane == 0);
    for (std::int64_t i = c0 + lane; i < c1; i += 32) q[i] = __nv_cvt_float_to_fp8(Elem<T>::to_f32(x[i]) * inv, __NV_SATFINITE, fi);
  }
}

// ---- 128x128 tiles: one CTA per tile --------------------------------------------------------------
// Vectorised: thread t holds column vector t % (128/V) of rows t / (128/V) + i * (256*V/128).
template <class T>
__global__ void __launch_bounds__(kThreads) quant_tiles_vec_kernel(const T* __restrict__ x, std::uint8_t* __restrict__ q,
                                                                   std::int64_t batch, std::int64_t M, std::int64_t K,
                                                                   std::int64_t nrb, std::int64_t nkb, Rule rule) {
  constexpr int V = Vec16<T>::N;
  constexpr int Lc = 128 / V;         // threads across one tile row
  constexpr int RS = kThreads / Lc;   // rows per pass
  constexpr int NI = 128 / RS;        // passes
  __shared__ unsigned red[kThreads / 32];
  const __nv_fp8_interpretation_t fi = interp(rule.format);
  const int c = threadIdx.x % Lc, r0 = threadIdx.x / Lc;
  for (std::int64_t blk = blockIdx.x; blk < batch * nrb * nkb; blk += gridDim.x) {
    const std::int64_t cb = blk % nkb, t = blk / nkb, rb = t % nrb, b = t / nrb;
    const std::int64_t col = cb * 128 + c * V;
    Vec16<T> v[NI];
    std::int64_t off[NI];
    bool ok[NI];
    unsigned m = 0;
#pragma unroll
    for (int i = 0; i < NI; ++i) {
      const std::int64_t row = rb * 128 + r0 + i * RS;
      ok[i] = col < K && row < M;
      off[i] = (b * M + row) * K + col;
      v[i].raw = ok[i] ? __ldcs(reinterpret_cast<const uint4*>(x + off[i])) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int i = 0; i < NI; ++i) m = max(m, vec_abs_max(v[i]));
    m = cppmega::cuda::block_max_u32(m, red);
    const float inv = rule.apply(Elem<T>::from_abs_bits(m), blk, threadIdx.x == 0);
#pragma unroll
    for (int i = 0; i < NI; ++i)
      if (ok[i]) encode_store(v[i], inv, fi, q + off[i]);
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) quant_tiles_scalar_kernel(const T* __restrict__ x, std::uint8_t* __restrict__ q,
                                                                      std::int64_t batch, std::int64_t M, std::int64_t K,
                                                                      std::int64_t nrb, std::int64_t nkb, Rule rule) {
  __shared__ unsigned red[kThreads / 32];
  const __nv_fp8_interpretation_t fi = interp(rule.format);
  for (std::int64_t blk = blockIdx.x; blk < batch * nrb * nkb; blk += gridDim.x) {
    const std::int64_t cb = blk % nkb, t = blk / nkb, rb = t % nrb, b = t / nrb;
    const std::int64_t rows = min64(128, M - rb * 128);
    const std::int64_t cols = min64(128, K - cb * 128);
    const std::int64_t base = (b * M + rb * 128) * K + cb * 128;
    unsigned m = 0;
    for (std::int64_t i = threadIdx.x; i < rows * cols; i += kThreads) m = max(m, Elem<T>::abs_bits(x[base + (i / cols) * K + i % cols]));
    m = cppmega::cuda::block_max_u32(m, red);
    const float inv = rule.apply(Elem<T>::from_abs_bits(m), blk, threadIdx.x == 0);
    for (std::int64_t i = threadIdx.x; i < rows * cols; i += kThreads) {
      const std::int64_t e = base + (i / cols) * K + i % cols;
      q[e] = __nv_cvt_float_to_fp8(Elem<T>::to_f32(x[e]) * inv, __NV_SATFINITE, fi);
    }
  }
}

// ---- dequantize -----------------------------------------------------------------------------------
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

struct DequantGeo {
  std::int64_t rows, K, M, nrb, nkb;  // rows = all rows of q; M = rows per batch (128x128)
  int block_rows, block_cols;
  bool mx;
  Fp8Format format;
};

// Scale index of element (row, col) of q viewed as [rows, K].
__device__ __forceinline__ std::int64_t scale_index(const DequantGeo& g, std::int64_t row, std::int64_t col) {
  if (g.block_rows == 1) return row * g.nkb + col / g.block_cols;
  const std::int64_t b = row / g.M, r = row - b * g.M;
  return (b * g.nrb + r / 128) * g.nkb + col / 128;
}

__device__ __forceinline__ float scale_at(const DequantGeo& g, const void* scales, std::int64_t idx) {
  return g.mx ? num::e8m0_to_f32(static_cast<const std::uint8_t*>(scales)[idx]) : static_cast<const float*>(scales)[idx];
}

__device__ __forceinline__ float decode1(std::uint8_t b, __nv_fp8_interpretation_t fi) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(b, fi);  // exact
  return __half2float(*reinterpret_cast<const __half*>(&h));
}

// kVec: 16 codes per thread (K % 16 == 0, q and out 16-byte aligned): one scale per vector.
template <class O, bool kVec>
__global__ void __launch_bounds__(kThreads) dequant_kernel(const std::uint8_t* __restrict__ q, const void* __restrict__ scales,
                                                           O* __restrict__ out, DequantGeo g) {
  const __nv_fp8_interpretation_t fi = interp(g.format);
  const std::int64_t tid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t nthreads = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t n = g.rows * g.K;
  if constexpr (kVec) {
    for (std::int64_t c = tid; c < n / 16; c += nthreads) {
      const std::int64_t e = c * 16, row = e / g.K, col = e - row * g.K;
      const float s = scale_at(g, scales, scale_index(g, row, col));
      union {
        uint4 raw;
        __nv_fp8x2_storage_t p[8];
      } in;
      in.raw = __ldcs(reinterpret_cast<const uint4*>(q) + c);
      alignas(16) O buf[16];
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(in.p[k], fi);
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h));
        buf[2 * k] = Out<O>::from_f32(f.x * s);
        buf[2 * k + 1] = Out<O>::from_f32(f.y * s);
      }
      uint4* dst = reinterpret_cast<uint4*>(out + e);
#pragma unroll
      for (int k = 0; k < static_cast<int>(sizeof(O)); ++k) __stcs(dst + k, reinterpret_cast<const uint4*>(buf)[k]);
    }
  } else {
    for (std::int64_t e = tid; e < n; e += nthreads) {
      const std::int64_t row = e / g.K, col = e - row * g.K;
      out[e] = Out<O>::from_f32(decode1(q[e], fi) * scale_at(g, scales, scale_index(g, row, col)));
    }
  }
}

template <class F>
void with_float_type(DType t, F&& f) {
  switch (t) {
    case DType::f32: f(float{}); break;
    case DType::bf16: f(__nv_bfloat16{}); break;
    case DType::f16: f(__half{}); break;
    default: invalid_argument("fp8 blocks cuda: unexpected dtype ", dtype_name(t));
  }
}

// A host-mapped int per host thread for the non-finite flag: one stream synchronisation and no
// copy launch per checked call.
int* mapped_flag(int** device_alias) {
  thread_local int* host = nullptr;
  thread_local int* dev = nullptr;
  if (!host) {
    CPPMEGA_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&host), 64, cudaHostAllocMapped | cudaHostAllocPortable));
    CPPMEGA_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&dev), host, 0));
  }
  *device_alias = dev;
  return host;
}

unsigned grid_for(std::int64_t items_per_thread_total, int device, int ctas_per_sm) {
  return cppmega::cuda::grid_for(items_per_thread_total, kThreads,
                                 static_cast<std::int64_t>(ctas_per_sm) * cppmega::cuda::sm_count(device));
}

template <class T>
void launch_quant(const QuantArgs& a, const Rule& rule, cudaStream_t s) {
  const Geometry& g = a.geo;
  const T* x = a.x.ptr<const T>();
  auto* q = a.q.ptr<std::uint8_t>();
  const int dev = a.x.device.index;
  const bool vec = aligned16(x) && aligned16(q) && g.cols % 16 == 0;
  const std::int64_t nkb = g.col_blocks();
  constexpr int V = 16 / sizeof(T);
  if (g.block_rows == 1) {
    if (vec) {
      const bool full = g.cols % g.block_cols == 0;
      const std::int64_t slots = full ? g.rows * (g.cols / V) : g.rows * nkb * (g.block_cols / V);
      const unsigned blocks = grid_for((slots + kUnroll - 1) / kUnroll, dev, 8);
      if (g.block_cols == kMxBlock) {  // MXFP8: K % 32 == 0 always
        quant_rows_vec_kernel<T, kMxBlock, true><<<blocks, kThreads, 0, s>>>(x, q, g.rows, g.cols, nkb, rule);
      } else if (full) {
        quant_rows_vec_kernel<T, kFp8BlockK, true><<<blocks, kThreads, 0, s>>>(x, q, g.rows, g.cols, nkb, rule);
      } else {
        quant_rows_vec_kernel<T, kFp8BlockK, false><<<blocks, kThreads, 0, s>>>(x, q, g.rows, g.cols, nkb, rule);
      }
      CPPMEGA_CUDA_CHECK_LAUNCH("fp8 block quantize (rows) kernel");
    } else {
      const unsigned blocks = grid_for(g.rows * nkb * 32, dev, 8);
      quant_rows_scalar_kernel<T><<<blocks, kThreads, 0, s>>>(x, q, g.rows, g.cols, nkb, g.block_cols, rule);
      CPPMEGA_CUDA_CHECK_LAUNCH("fp8 block quantize (rows, scalar) kernel");
    }
  } else {
    const std::int64_t nrb = g.row_blocks(), nblk = g.num_blocks();
    const unsigned blocks = static_cast<unsigned>(min64(nblk, 8LL * cppmega::cuda::sm_count(dev)));
    if (vec)
      quant_tiles_vec_kernel<T><<<blocks, kThreads, 0, s>>>(x, q, g.batch, g.rows, g.cols, nrb, nkb, rule);
    else
      quant_tiles_scalar_kernel<T><<<blocks, kThreads, 0, s>>>(x, q, g.batch, g.rows, g.cols, nrb, nkb, rule);
    CPPMEGA_CUDA_CHECK_LAUNCH("fp8 block quantize (128x128) kernel");
  }
}

}  // namespace

void quantize_cuda(const QuantArgs& a, void* stream) {
  detail::DeviceGuard guard(a.x.device.index);
  const cudaStream_t s = as_stream(stream);
  Rule rule{a.mx, a.format, a.pow2, a.scales.data, nullptr};
  int* host_flag = nullptr;
  if (a.check_finite) {
    host_flag = mapped_flag(&rule.flag);
    *reinterpret_cast<volatile int*>(host_flag) = 0;
  }
  with_float_type(a.x.dtype, [&](auto tag) { launch_quant<decltype(tag)>(a, rule, s); });
  if (a.check_finite) {
    CPPMEGA_CUDA_CHECK(cudaStreamSynchronize(s));
    if (*reinterpret_cast<volatile int*>(host_flag)) throw_non_finite(a.mx, "");
  }
}

void dequantize_cuda(const DequantArgs& a, void* stream) {
  detail::DeviceGuard guard(a.q.device.index);
  const cudaStream_t s = as_stream(stream);
  const Geometry& g = a.geo;
  DequantGeo dg{g.batch * g.rows, g.cols, g.rows, g.row_blocks(), g.col_blocks(), g.block_rows, g.block_cols, a.mx, a.format};
  const auto* q = a.q.ptr<const std::uint8_t>();
  const int dev = a.q.device.index;
  const bool vec = aligned16(q) && aligned16(a.out.data) && g.cols % 16 == 0;
  const std::int64_t n = g.numel();
  const unsigned blocks = grid_for(vec ? n / 16 : n, dev, 8);
  with_float_type(a.out.dtype, [&](auto tag) {
    using O = decltype(tag);
    if (vec)
      dequant_kernel<O, true><<<blocks, kThreads, 0, s>>>(q, a.scales.data, a.out.ptr<O>(), dg);
    else
      dequant_kernel<O, false><<<blocks, kThreads, 0, s>>>(q, a.scales.data, a.out.ptr<O>(), dg);
    CPPMEGA_CUDA_CHECK_LAUNCH("fp8 block dequantize kernel");
  });
}

}  // namespace cppmega::fp8_blocks
