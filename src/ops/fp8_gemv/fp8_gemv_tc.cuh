// The fp8_gemv tensor-core stream (fast path: 1 <= M <= 64, w 16-byte aligned in base and row
// stride), shared by the fp8_gemv_tc_m*.cu files that instantiate its configurations (one file
// per M class so they compile in parallel) and by fp8_gemv_cuda.cu (host side, general kernel).
//
// Design (one launch; w read exactly once in long row bursts; tensor cores do the arithmetic, so
// the rate stays at the memory bound from M = 1 to M = 64):
//  - CTA = 8 warps = 128 rows of w (one (128,128) w scale block); warp = 16 rows, the M=16 side
//    of mma.m16n8k16 (w is the A operand, x^T the B operand; M is padded to 8/16/32/64).
//  - Stage = SB 128-wide blocks. Per stage the CTA copies, with cp.async into an NBUF-deep ring:
//    128 rows x SB*128 bytes of w (one warp instruction = 512 contiguous bytes of one row when
//    SB = 4: long DRAM bursts), and the stage's raw x rows (any x dtype). Stages s+1..s+NBUF-1
//    are in flight while stage s is converted and computed.
//  - Conversion (in shared memory, per stage): raw x -> f16 rows: f16 as is, e4m3 decoded
//    (exact; its (1,128) block scale becomes the factor), bf16 and f32 shifted by a power of two
//    per (row, 128-block) so the block's max lies in [2^14, 2^15) (bf16 then converts exactly;
//    f32 becomes hi + lo f16 planes, 22+ bits); the factor is the inverse shift.
//  - w rows in shared memory are XOR-swizzled by 16-byte chunk (chunk ^ 4*(row&1)) so the
//    fragment loads are bank-conflict free; f16 x rows are padded by 16 bytes for the same reason.
//  - The k order inside one MMA is free as long as A and B agree: lane (g, q) owns physical k
//    q*16 .. q*16+15 of each 64-wide half, and MMA step s uses bytes 4s..4s+3 of it for the
//    logical k pairs (2q, 2q+1) and (2q+8, 2q+9). A lane's 16 bytes of w are decoded in registers
//    (cvt.rn.f16x2.e4m3x2: exact) straight into A fragments, and its x fragment is 16 consecutive
//    f16 of one x row: two 16-byte shared-memory loads, no permutation.
//  - Each block's MMA partial (f32) is multiplied by its factor (x factor times the w block scale)
//    and added to an f32 total: block scales are applied after the dot products, and the
//    tensor-core accumulation chain never exceeds 8 MMAs.
//  - K is split over up to 8 CTAs of one thread-block cluster when the N tiles alone do not fill
//    the GPU; the partials are summed in a fixed order through distributed shared memory
//    (deterministic, no atomics, no workspace), per-tensor/per-row scales applied, out written.
#pragma once

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "ops/fp8_gemv/fp8_gemv_config.hpp"

namespace cppmega::gemv_op::tc {

enum XType : int { kXf32 = 0, kXbf16 = 1, kXf16 = 2, kXe4m3 = 3 };
enum OType : int { kOf32 = 0, kObf16 = 1, kOf16 = 2 };
enum SKind : int { kSNone = 0, kSTensor = 1, kSRow = 2, kSBlock = 3 };

struct Params {
  const void* x;
  std::int64_t x_stride;  // elements
  const std::uint8_t* w;
  std::int64_t w_stride;  // bytes
  void* out;
  std::int64_t out_stride;  // elements
  std::int64_t N, K;
  int M, nkb;
  int x_type, out_type;
  int x_bytes;      // bytes per x element
  bool x_async;     // x rows are 16-byte aligned (base and stride): cp.async; else plain loads
  int w_kind, x_kind;
  float w_value, x_value;
  const float* w_ptr;
  const float* x_ptr;
  int steps_per_split;  // 128-wide blocks per K split
};

// A fast-path configuration, as the host sees it.
using KernelFn = void (*)(Params);
struct FastKernel {
  KernelFn fn = nullptr;
  int mt = 0, planes = 0, sb = 0, nbuf = 0, min_ctas = 1;
  // Dynamic shared memory for a call with M rows of x of `x_bytes` bytes each element.
  int smem(int M, int x_bytes) const {
    const int mp = mt * 8;
    return nbuf * (config::kBlockN * sb * config::kStepK + M * sb * config::kStepK * x_bytes) +
           planes * mp * (sb * config::kStepK * 2 + 16) + sb * mp * 4;
  }
};

// Defined in fp8_gemv_tc_m{1,2,4,8}.cu: the instantiated configuration of that M class, or
// fn == nullptr when (planes, sb, nbuf) is not one of them.
FastKernel fast_kernel_m1(int planes, int sb, int nbuf);
FastKernel fast_kernel_m2(int planes, int sb, int nbuf);
FastKernel fast_kernel_m4(int planes, int sb, int nbuf);
FastKernel fast_kernel_m8(int planes, int sb, int nbuf);

#if defined(__CUDACC__)
namespace {

namespace cg = cooperative_groups;
using namespace config;

__host__ __device__ __forceinline__ std::int64_t min64(std::int64_t a, std::int64_t b) { return a < b ? a : b; }

// Four e4m3 (one 32-bit word, byte 0 first) -> two f16x2 (bytes 0,1 and bytes 2,3). Exact.
__device__ __forceinline__ void cvt4(std::uint32_t w, std::uint32_t& lo, std::uint32_t& hi) {
  asm("{\n\t.reg .b16 l, h;\n\tmov.b32 {l, h}, %2;\n\tcvt.rn.f16x2.e4m3x2 %0, l;\n\tcvt.rn.f16x2.e4m3x2 %1, h;\n\t}"
      : "=r"(lo), "=r"(hi)
      : "r"(w));
}

__device__ __forceinline__ void mma16816(float (&c)[4], std::uint32_t a0, std::uint32_t a1, std::uint32_t a2, std::uint32_t a3,
                                         std::uint32_t b0, std::uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float final_x(const Params& p, int m) {
  if (p.x_kind == kSTensor) return p.x_ptr ? __ldg(p.x_ptr) : p.x_value;
  if (p.x_kind == kSRow) return __ldg(p.x_ptr + m);
  return 1.0f;
}
__device__ __forceinline__ float final_w(const Params& p, std::int64_t n) {
  if (p.w_kind == kSTensor) return p.w_ptr ? __ldg(p.w_ptr) : p.w_value;
  if (p.w_kind == kSRow) return __ldg(p.w_ptr + n);
  return 1.0f;
}

__device__ __forceinline__ void store_out(const Params& p, int m, std::int64_t n, float v) {
  const std::int64_t i = static_cast<std::int64_t>(m) * p.out_stride + n;
  if (p.out_type == kOf32)
    static_cast<float*>(p.out)[i] = v;
  else if (p.out_type == kObf16)
    static_cast<__nv_bfloat16*>(p.out)[i] = __float2bfloat16_rn(v);
  else
    static_cast<__half*>(p.out)[i] = __float2half_rn(v);
}

__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src, int src_bytes) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Power-of-two shift s for a block whose |max| has f32 bits m_bits: the block's max lands in
// [2^14, 2^15) (f16 holds it, and bf16 values convert exactly); 0 for zero or non-finite blocks.
__device__ __forceinline__ int block_shift(unsigned m_bits) {
  const int E = static_cast<int>(m_bits >> 23);
  return (E >= 255 || m_bits == 0) ? 0 : min(141 - E, 126);
}

// Converts 8 raw x values (lane hl of the half-warp that owns one (row m, block kb)) to f16:
// hi (and lo, the f32 remainder) and the block's factor. Shuffles across the half-warp: every
// lane of the warp must call it.
__device__ __forceinline__ void convert8(const Params& p, uint4 a, uint4 b, int m, int kb, bool row_ok, uint4& hi, uint4& lo,
                                         float& factor) {
  hi = a;
  lo = make_uint4(0, 0, 0, 0);
  factor = 1.0f;
  if (p.x_type == kXbf16) {
    const std::uint32_t w[4] = {a.x, a.y, a.z, a.w};
    unsigned m_bits = 0;
#pragma unroll
    for (int e = 0; e < 4; ++e) m_bits = max(m_bits, max((w[e] & 0x7FFFu) << 16, w[e] & 0x7FFF0000u));
#pragma unroll
    for (int o = 8; o >= 1; o >>= 1) m_bits = max(m_bits, __shfl_xor_sync(0xFFFFFFFFu, m_bits, o));
    const int s = block_shift(m_bits);
    const float up = __uint_as_float(static_cast<unsigned>(s + 127) << 23);
    factor = __uint_as_float(static_cast<unsigned>(127 - s) << 23);
    std::uint32_t r[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const __half2 h2 = __floats2half2_rn(__uint_as_float(w[e] << 16) * up, __uint_as_float(w[e] & 0xFFFF0000u) * up);
      r[e] = *reinterpret_cast<const std::uint32_t*>(&h2);
    }
    hi = make_uint4(r[0], r[1], r[2], r[3]);
  } else if (p.x_type == kXe4m3) {
    cvt4(a.x, hi.x, hi.y);
    cvt4(a.y, hi.z, hi.w);
    if (p.x_kind == kSBlock && row_ok) factor = __ldg(p.x_ptr + static_cast<std::int64_t>(m) * p.nkb + kb);
  } else if (p.x_type == kXf32) {
    const std::uint32_t w[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    unsigned m_bits = 0;
#pragma unroll
    for (int e = 0; e < 8; ++e) m_bits = max(m_bits, w[e] & 0x7FFFFFFFu);
#pragma unroll
    for (int o = 8; o >= 1; o >>= 1) m_bits = max(m_bits, __shfl_xor_sync(0xFFFFFFFFu, m_bits, o));
    const int s = block_shift(m_bits);
    const float up = __uint_as_float(static_cast<unsigned>(s + 127) << 23);
    factor = __uint_as_float(static_cast<unsigned>(127 - s) << 23);
    std::uint32_t rh[4], rl[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float u = __uint_as_float(w[2 * e]) * up, v = __uint_as_float(w[2 * e + 1]) * up;
      const __half2 h2 = __floats2half2_rn(u, v);
      const float2 back = __half22float2(h2);
      const __half2 l2 = __floats2half2_rn(u - back.x, v - back.y);  // exact residuals, rounded to f16
      rh[e] = *reinterpret_cast<const std::uint32_t*>(&h2);
      rl[e] = *reinterpret_cast<const std::uint32_t*>(&l2);
    }
    hi = make_uint4(rh[0], rh[1], rh[2], rh[3]);
    lo = make_uint4(rl[0], rl[1], rl[2], rl[3]);
  }
}

template <int MT, int PLANES, int SB, int NBUF>
struct Layout {
  static constexpr int MP = MT * 8;
  static constexpr int WROW = SB * kStepK;             // bytes of one w row per stage
  static constexpr int WBUF = kBlockN * WROW;          // one w stage
  static constexpr int XROW = SB * kStepK * 2 + 16;    // one converted f16 x row (+16: conflict-free)
  static constexpr int XS = PLANES * MP * XROW;        // converted x (single buffer)
  static constexpr int XF = SB * MP * 4;               // factors of the converted stage
  // Largest raw x stage (M = MP rows of 2-byte x, or 4-byte x for PLANES == 2).
  static constexpr int RAW_MAX = MP * SB * kStepK * (PLANES == 2 ? 4 : 2);
  static constexpr int SMEM_MAX = NBUF * (WBUF + RAW_MAX) + XS + XF;
  static constexpr int MIN_CTAS = SMEM_MAX <= 110 * 1024 ? 2 : 1;
  static_assert(SMEM_MAX <= 232448, "configuration exceeds the shared memory of an SM");
  static_assert(kBlockN * MP * 4 <= NBUF * WBUF, "the epilogue's partial tile aliases the w ring");
};

template <int MT, int PLANES, int SB, int NBUF>
__global__ void __launch_bounds__(kThreads, (Layout<MT, PLANES, SB, NBUF>::MIN_CTAS)) gemv_tc_kernel(const Params p) {
  using L = Layout<MT, PLANES, SB, NBUF>;
  constexpr int MP = L::MP;
  extern __shared__ __align__(128) unsigned char smem[];
  const int raw_row = SB * kStepK * p.x_bytes;  // bytes of one raw x row per stage
  const int raw_buf = p.M * raw_row;
  unsigned char* wsm = smem;                          // [NBUF][128 rows][WROW], swizzled
  unsigned char* rsm = smem + NBUF * L::WBUF;         // [NBUF][M][raw_row]
  unsigned char* xsm = rsm + NBUF * raw_buf;          // [PLANES][MP][XROW]
  float* fsm = reinterpret_cast<float*>(xsm + L::XS);  // [SB][MP]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, kq = lane & 3;
  const int nsplit = static_cast<int>(gridDim.y);
  const int step0 = static_cast<int>(blockIdx.y) * p.steps_per_split;
  const int nsteps = max(0, min(p.nkb, step0 + p.steps_per_split) - step0);
  const int nstages = (nsteps + SB - 1) / SB;
  const std::int64_t n_tile = static_cast<std::int64_t>(blockIdx.x) * kBlockN;
  const std::int64_t k_end = min64(p.K, static_cast<std::int64_t>(step0 + nsteps) * kStepK);

  // Converted x rows M..MP-1 and their factors stay zero for the whole kernel.
  if (p.M < MP) {
    const int per_row = L::XROW / 16, rows = MP - p.M;
    for (int i = tid; i < PLANES * rows * per_row; i += kThreads) {
      const int c = i % per_row, r = (i / per_row) % rows, pl = i / (per_row * rows);
      *reinterpret_cast<uint4*>(xsm + (pl * MP + p.M + r) * L::XROW + c * 16) = make_uint4(0, 0, 0, 0);
    }
    for (int i = tid; i < SB * rows; i += kThreads) fsm[(i / rows) * MP + p.M + i % rows] = 0.0f;
  }

  // w stage s -> ring slot s % NBUF: 128 rows x SB*128 bytes. Bytes past the split's end, past K,
  // and rows past N are zero-filled without being read.
  auto issue_w = [&](int s) {
    constexpr int CPR = L::WROW / 16;  // 16-byte chunks per row
    unsigned char* wb = wsm + (s % NBUF) * L::WBUF;
    const std::int64_t k0 = static_cast<std::int64_t>(step0 + s * SB) * kStepK;
#pragma unroll
    for (int i = 0; i < kBlockN * CPR / kThreads; ++i) {
      const int id = i * kThreads + tid;
      const int row = id / CPR, c = id % CPR;
      const std::int64_t n = n_tile + row, kp = k0 + c * 16;
      int bytes = 0;
      if (n < p.N) {
        const std::int64_t rem = k_end - kp;
        bytes = rem >= 16 ? 16 : (rem > 0 ? static_cast<int>(rem) : 0);
      }
      const std::uint8_t* src = bytes > 0 ? p.w + n * p.w_stride + kp : p.w;
      cp_async16(wb + row * L::WROW + ((c ^ ((row & 1) << 2)) * 16), src, bytes);
    }
  };
  // Raw x rows < M of stage s -> ring slot s % NBUF (zero past K and past the split's end).
  auto issue_x = [&](int s) {
    unsigned char* rb = rsm + (s % NBUF) * raw_buf;
    const std::int64_t k0 = static_cast<std::int64_t>(step0 + s * SB) * kStepK;
    const int xb = p.x_bytes;
    if (p.x_async) {
      const int cpr = raw_row / 16;
      for (int id = tid; id < p.M * cpr; id += kThreads) {
        const int m = id / cpr, c = id - m * cpr;
        const std::int64_t kp = k0 + c * (16 / xb);
        const std::int64_t rem = (k_end - kp) * xb;
        const int bytes = rem >= 16 ? 16 : (rem > 0 ? static_cast<int>(rem) : 0);
        const unsigned char* src = static_cast<const unsigned char*>(p.x) + (static_cast<std::int64_t>(m) * p.x_stride + kp) * xb;
        cp_async16(rb + m * raw_row + c * 16, bytes > 0 ? src : static_cast<const unsigned char*>(p.x), bytes);
      }
    } else {  // misaligned x rows: plain loads (visible after the next barrier)
      const int epr = SB * kStepK;
      for (int id = tid; id < p.M * epr; id += kThreads) {
        const int m = id / epr, e = id - m * epr;
        const std::int64_t k = k0 + e;
        const unsigned char* src = static_cast<const unsigned char*>(p.x) + (static_cast<std::int64_t>(m) * p.x_stride + k) * xb;
        unsigned char* dst = rb + m * raw_row + e * xb;
        const bool in = k < k_end;
        if (xb == 1) *dst = in ? *src : 0;
        else if (xb == 2) *reinterpret_cast<std::uint16_t*>(dst) = in ? *reinterpret_cast<const std::uint16_t*>(src) : 0;
        else *reinterpret_cast<std::uint32_t*>(dst) = in ? *reinterpret_cast<const std::uint32_t*>(src) : 0;
      }
    }
  };
  // Raw x of stage s -> converted f16 rows and factors. A half-warp per (row, block).
  auto convert = [&](int s) {
    const unsigned char* rb = rsm + (s % NBUF) * raw_buf;
    const int nb = min(SB, nsteps - s * SB);
    const int hl = tid & 15, hw = tid >> 4;
    const int ntasks = p.M * nb;
    for (int r0 = 0; r0 < ntasks; r0 += kThreads / 16) {  // trip count uniform over the CTA
      const int task = r0 + hw;
      const bool valid = task < ntasks;
      const int m = valid ? task / nb : 0, j = valid ? task - m * nb : 0;
      uint4 a = make_uint4(0, 0, 0, 0), b = make_uint4(0, 0, 0, 0);
      if (valid) {
        const unsigned char* src = rb + m * raw_row + (j * kStepK + hl * 8) * p.x_bytes;
        if (p.x_bytes == 1) {
          const uint2 v = *reinterpret_cast<const uint2*>(src);
          a.x = v.x;
          a.y = v.y;
        } else {
          a = *reinterpret_cast<const uint4*>(src);
          if (p.x_bytes == 4) b = *reinterpret_cast<const uint4*>(src + 16);
        }
      }
      uint4 hi, lo;
      float factor;
      convert8(p, a, b, m, step0 + s * SB + j, valid, hi, lo, factor);
      if (valid) {
        unsigned char* dst = xsm + m * L::XROW + (j * kStepK + hl * 8) * 2;
        *reinterpret_cast<uint4*>(dst) = hi;
        if constexpr (PLANES == 2) *reinterpret_cast<uint4*>(dst + MP * L::XROW) = lo;
        if (hl == 0) fsm[j * MP + m] = factor;
      }
    }
  };

  float acc[MT][4], tot[MT][4];
#pragma unroll
  for (int t = 0; t < MT; ++t)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[t][i] = tot[t][i] = 0.0f;

  // One 128-wide block j of stage s: w rows warp*16 + g and + 8, decode, MMAs, flush.
  auto compute = [&](int st, int j, int slot) {
    const unsigned char* wb = wsm + slot * L::WBUF;
    const float* f = fsm + j * MP;
    const int rl = warp * kRowsPerWarp + g, sw = (g & 1) << 2;
    const float wf = p.w_kind == kSBlock ? __ldg(p.w_ptr + static_cast<std::int64_t>(blockIdx.x) * p.nkb + step0 + st) : 1.0f;
#pragma unroll
    for (int kh = 0; kh < 2; ++kh) {
      const int chunk = (j * 8 + kh * 4 + kq) ^ sw;
      const uint4 lo4 = *reinterpret_cast<const uint4*>(wb + rl * L::WROW + chunk * 16);
      const uint4 hi4 = *reinterpret_cast<const uint4*>(wb + (rl + 8) * L::WROW + chunk * 16);
      const std::uint32_t lw[4] = {lo4.x, lo4.y, lo4.z, lo4.w};
      const std::uint32_t hw[4] = {hi4.x, hi4.y, hi4.z, hi4.w};
      std::uint32_t a[4][4];
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        cvt4(lw[s], a[s][0], a[s][2]);  // row g:   k pairs (4s, 4s+1) and (4s+2, 4s+3)
        cvt4(hw[s], a[s][1], a[s][3]);  // row g+8
      }
#pragma unroll
      for (int t = 0; t < MT; ++t) {
#pragma unroll
        for (int pl = 0; pl < PLANES; ++pl) {
          const unsigned char* src = xsm + (pl * MP + t * 8 + g) * L::XROW + (j * kStepK + kh * 64 + kq * 16) * 2;
          const uint4 b0 = *reinterpret_cast<const uint4*>(src);
          const uint4 b1 = *reinterpret_cast<const uint4*>(src + 16);
          const std::uint32_t b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
          for (int s = 0; s < 4; ++s) mma16816(acc[t], a[s][0], a[s][1], a[s][2], a[s][3], b[2 * s], b[2 * s + 1]);
        }
      }
    }
#pragma unroll
    for (int t = 0; t < MT; ++t) {
      const float2 fx = *reinterpret_cast<const float2*>(f + t * 8 + kq * 2);
      const float f0 = fx.x * wf, f1 = fx.y * wf;
      tot[t][0] = fmaf(acc[t][0], f0, tot[t][0]);
      tot[t][1] = fmaf(acc[t][1], f1, tot[t][1]);
      tot[t][2] = fmaf(acc[t][2], f0, tot[t][2]);
      tot[t][3] = fmaf(acc[t][3], f1, tot[t][3]);
      acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
    }
  };

  // Pipeline: stages 0..NBUF-2 in flight before the loop; each iteration refills the slot freed
  // by the previous stage, waits for stage s (this thread's copies), then a barrier makes every
  // thread's copies visible.
#pragma unroll
  for (int i = 0; i < NBUF - 1; ++i) {
    if (i < nstages) {
      issue_w(i);
      issue_x(i);
    }
    cp_async_commit();
  }
  for (int s = 0; s < nstages; ++s) {
    __syncthreads();  // every warp is done with stage s-1 (its ring slot and the converted x)
    if (s + NBUF - 1 < nstages) {
      issue_w(s + NBUF - 1);
      issue_x(s + NBUF - 1);
    }
    cp_async_commit();
    cp_async_wait<NBUF - 1>();
    __syncthreads();  // stage s is in shared memory
    convert(s);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < SB; ++j) {
      const int st = s * SB + j;
      if (st < nsteps) compute(st, j, s % NBUF);
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  // Epilogue: partial tile [128 rows][MP] in shared memory (over the w ring), summed over the
  // cluster's K splits in rank order.
  float* P = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int t = 0; t < MT; ++t) {
    const int m0 = t * 8 + kq * 2, rl = warp * kRowsPerWarp + g;
    *reinterpret_cast<float2*>(P + rl * MP + m0) = make_float2(tot[t][0], tot[t][1]);
    *reinterpret_cast<float2*>(P + (rl + 8) * MP + m0) = make_float2(tot[t][2], tot[t][3]);
  }
  cg::cluster_group cluster = cg::this_cluster();
  if (nsplit > 1)
    cluster.sync();
  else
    __syncthreads();
  // Each rank sums and stores its share of the tile's rows; the shares round up so that a split
  // count that does not divide the tile (e.g. 5, when only 5 K blocks exist) still covers it.
  const int rows_per = (kBlockN + nsplit - 1) / nsplit;
  const int rank = nsplit > 1 ? static_cast<int>(cluster.block_rank()) : 0;
  for (int i = tid; i < rows_per * p.M; i += kThreads) {
    const int rr = rank * rows_per + i % rows_per, m = i / rows_per;
    const std::int64_t n = n_tile + rr;
    if (rr < kBlockN && n < p.N) {
      float sum = 0.0f;
      for (int q = 0; q < nsplit; ++q) {
        const float* Pq = nsplit > 1 ? cluster.map_shared_rank(P, q) : P;
        sum += Pq[rr * MP + m];
      }
      store_out(p, m, n, sum * final_x(p, m) * final_w(p, n));
    }
  }
  if (nsplit > 1) cluster.sync();  // peers may still read this CTA's partials
}

template <int MT, int PLANES, int SB, int NBUF>
FastKernel make_fast_kernel() {
  using L = Layout<MT, PLANES, SB, NBUF>;
  FastKernel k;
  k.fn = &gemv_tc_kernel<MT, PLANES, SB, NBUF>;
  k.mt = MT;
  k.planes = PLANES;
  k.sb = SB;
  k.nbuf = NBUF;
  k.min_ctas = L::MIN_CTAS;
  return k;
}

}  // namespace
#endif  // __CUDACC__

}  // namespace cppmega::gemv_op::tc
