// Device code of the CUDA topk backend (one .cu includes it).
//
// Algorithm, per row (exact by construction, deterministic, bounded shared memory):
//  1. Key. Every value becomes an order-preserving unsigned key (f32: 32 bits, bf16: 16 bits,
//     used as key << 16): NaN and -inf map to 0 (never selected), -0.0 to +0.0 (floats compare
//     them equal), every other value to a key >= 0x00800000. Columns outside [start, end) are
//     never read. Comparing keys is comparing values.
//  2. Radix select. Histograms of 11, 11 and 10-bit digits (2048 bins in shared memory) narrow
//     a prefix P of the k-th largest key: after each pass we know how many keys lie above P's
//     bin and how many (`need`) must still come from the keys whose top bits equal P. Pass 0's
//     histogram is built while the row is loaded. It stops early once every key of P's bin can
//     be taken and the selection still fits the sort buffer. Nothing is buffered per candidate
//     beyond that bound, so no tie pattern can overflow anything.
//  3. Collection. Each entry becomes the 64-bit composite (key << 32) | ~column: unique, and
//     "composite descending" is exactly "value descending, lower column first", so once the
//     selected set is fixed, the order it is gathered in cannot change the result.
//     - "all" mode (the common case): every key >= P, at most the sort buffer's capacity.
//     - exact mode (ties cut at the k-th key): keys above P, then the first `need` keys equal to
//       P in column order (warp ballots + per-warp and per-CTA prefix counts, no atomics).
//  4. Sort. A bitonic sort of the composites in shared memory (min(k,T) <= 4096), the output
//     is the first k (trimmed in "all" mode), or a CUB segmented sort in global memory beyond.
//     Slots past the selected ones are -1.
// A row is spread over a thread-block cluster of up to 16 CTAs (decode: few long rows); each
// CTA caches its slice of the row as keys in shared memory, so the scores are read from memory
// once. The per-CTA histograms are summed into CTA 0's through distributed shared memory (its
// nonzero bins), CTA 0 picks the digit and writes the new state into every CTA; the selected
// entries are gathered into CTA 0's sort buffer. Rows too long for the cache are re-read from
// global memory each pass (the `kCached = false` kernels).
#pragma once

#include <cooperative_groups.h>

#include <cstdint>
#include <cub/block/block_scan.cuh>

#include "ops/topk/topk_plan.hpp"

namespace cppmega::topk_op::dev {

namespace cg = cooperative_groups;
using u32 = std::uint32_t;
using u64 = unsigned long long;

constexpr u32 kFull = 0xFFFFFFFFu;

struct Params {
  const void* scores = nullptr;
  std::int64_t stride_b = 0, stride_s = 0, S = 1;  // row r starts at (r / S) * stride_b + (r % S) * stride_s
  std::int64_t rows = 0;
  u32 T = 0;
  u32 k = 1;
  const void* starts = nullptr;
  const void* ends = nullptr;
  bool starts64 = false, ends64 = false;
  int* out = nullptr;               // [rows, k]
  int sort_cap = 0;                 // entries of the shared sort buffer (smem sort)
  u64* ws = nullptr;                // global sort: [rows, ws_stride] composites
  std::int64_t ws_stride = 0;
  std::int64_t* ws_begin = nullptr;  // global sort: per-row segment [begin, end) of ws
  std::int64_t* ws_end = nullptr;
  unsigned long long* trace = nullptr;  // debugging (CPPMEGA_TOPK_TRACE): phase timestamps of block 0
};

// ---- order-preserving keys -------------------------------------------------------------------
__device__ __forceinline__ u32 f32_key(u32 b) {
  if ((b & 0x7FFFFFFFu) > 0x7F800000u || b == 0xFF800000u) return 0;  // NaN, -inf
  if (b == 0x80000000u) b = 0;                                         // -0.0 -> +0.0
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ u32 bf16_key(u32 b) {  // b: 16 bits
  if ((b & 0x7FFFu) > 0x7F80u || b == 0xFF80u) return 0;
  if (b == 0x8000u) b = 0;
  return (b & 0x8000u) ? (~b & 0xFFFFu) : (b | 0x8000u);
}

struct F32 {
  using Raw = u32;  // the value's bits
  using Key = u32;
  static constexpr int kShift = 0;           // key32 = key << kShift
  static constexpr bool kLow16Zero = false;  // the low 16 bits of key32 are always 0
  __device__ static Key make(Raw r) { return f32_key(r); }
  __device__ static uint4 make4(uint4 v) { return make_uint4(f32_key(v.x), f32_key(v.y), f32_key(v.z), f32_key(v.w)); }
  // Counts the keys of one stored 32-bit word in the top-11-bit histogram.
  __device__ static void count_word(u32* hist, u32 w) {
    if (w) atomicAdd(&hist[w >> 21], 1u);
  }
};
struct BF16 {
  using Raw = std::uint16_t;
  using Key = std::uint16_t;
  static constexpr int kShift = 16;
  static constexpr bool kLow16Zero = true;
  __device__ static Key make(Raw r) { return static_cast<Key>(bf16_key(r)); }
  __device__ static u32 pair(u32 w) { return bf16_key(w & 0xFFFFu) | (bf16_key(w >> 16) << 16); }
  __device__ static uint4 make4(uint4 v) { return make_uint4(pair(v.x), pair(v.y), pair(v.z), pair(v.w)); }
  __device__ static void count_word(u32* hist, u32 w) {  // two 16-bit keys; digit = key16 >> 5
    const u32 lo = w & 0xFFFFu, hi = w >> 16;
    if (lo) atomicAdd(&hist[lo >> 5], 1u);
    if (hi) atomicAdd(&hist[hi >> 5], 1u);
  }
};

// A CTA's slice of a row: columns [col0, col0 + n), keys from the shared cache or from memory.
template <class Tr, bool kCached>
struct Slice {
  const typename Tr::Raw* g;  // column col0 in memory
  const typename Tr::Key* c;  // column col0 in the cache
  u32 n;
  __device__ __forceinline__ u32 key(u32 i) const {
    if constexpr (kCached)
      return static_cast<u32>(c[i]) << Tr::kShift;
    else
      return static_cast<u32>(Tr::make(__ldg(g + i))) << Tr::kShift;
  }
};

// Loads n values from g into cache[mis ...] as keys; `mis` is g's element phase within 16 bytes,
// so the bulk moves as 16-byte vectors (2 in flight per thread) and only the ragged ends are
// scalar. With `hist`, also counts every valid key's top 11 bits (radix pass 0, fused).
template <class Tr, int kThreads>
__device__ __forceinline__ void load_keys(typename Tr::Key* cache, const typename Tr::Raw* g, u32 n, u32 mis, u32* hist) {
  constexpr u32 V = 16 / sizeof(typename Tr::Raw);
  typename Tr::Key* c = cache + mis;
  const u32 i0 = min(n, mis == 0 ? 0u : V - mis);
  const u32 nv = (n - i0) / V;
  const u32 tail = i0 + nv * V;
  const u32 tid = threadIdx.x;
  auto scalar = [&](u32 i) {
    const typename Tr::Key key = Tr::make(__ldg(g + i));
    c[i] = key;
    const u32 k32 = static_cast<u32>(key) << Tr::kShift;
    if (hist && k32) atomicAdd(&hist[k32 >> 21], 1u);
  };
  if (tid < i0) scalar(tid);
  for (u32 i = tail + tid; i < n; i += kThreads) scalar(i);
  const uint4* gv = reinterpret_cast<const uint4*>(g + i0);
  uint4* cv = reinterpret_cast<uint4*>(c + i0);
  constexpr u32 U = 2;
  for (u32 v = tid; v < nv; v += kThreads * U) {
    uint4 x[U];
#pragma unroll
    for (u32 u = 0; u < U; ++u)
      if (v + u * kThreads < nv) x[u] = __ldg(gv + v + u * kThreads);
#pragma unroll
    for (u32 u = 0; u < U; ++u)
      if (v + u * kThreads < nv) {
        const uint4 k = Tr::make4(x[u]);
        cv[v + u * kThreads] = k;
        if (hist) {
          Tr::count_word(hist, k.x);
          Tr::count_word(hist, k.y);
          Tr::count_word(hist, k.z);
          Tr::count_word(hist, k.w);
        }
      }
  }
}

// The radix state of a row. Selected: keys with (key >> shift) > prefix (`above` of them), and
// of the keys with (key >> shift) == prefix the first `need` in column order; `all` says that is
// every one of them (so their order does not matter).
struct RowState {
  u32 prefix, shift, need, above, done, all;
};

// ---- digit selection ----------------------------------------------------------------------
// The state after a pass that found bin d (absolute digit) holding `count` keys with `run` keys
// of this pass's candidates above it. The row is done when every bit is resolved, or when all
// keys of the bin can be taken and the selection still fits the sort buffer (`cap` entries; the
// sort then trims it to k).
__device__ __forceinline__ RowState next_state(const RowState& cur, int width, u32 s_new, bool low16zero, u32 cap, u32 d,
                                               u32 run, u32 count) {
  const u32 left = cur.need - run, above = cur.above + run;
  const bool exact = s_new == 0 || (low16zero && s_new <= 16);
  const bool all = count == left || above + count <= cap;
  return RowState{(cur.prefix << width) | d, s_new, all ? count : left, above, (exact || all) ? 1u : 0u, all ? 1u : 0u};
}

// Finds the digit d of the k-th largest key from the histogram H (2048 bins, zeroed here): the
// largest d with (#keys in bins >= d) >= need. Every thread holds 4 or 8 bins in registers, a
// block scan gives the counts above them; the one thread whose bins hold the k-th key writes
// the new state. In pass 0, when there are no more than `need` valid keys at all, every valid
// key is selected.
template <int kThreads>
__device__ __forceinline__ void select_digit(u32* H, int pass, int width, const RowState cur, u32 s_new, bool low16zero,
                                             u32 cap, RowState& st, typename cub::BlockScan<u32, kThreads>::TempStorage& tmp) {
  constexpr int kPer = kBins / kThreads;  // 4 or 8 bins per thread, descending
  static_assert(kPer % 4 == 0, "bins per thread must be a multiple of 4");
  const int tid = threadIdx.x;
  const int base = kBins - (tid + 1) * kPer;  // this thread's bins: [base, base + kPer)
  u32 c[kPer];
  u32 sum = 0;
#pragma unroll
  for (int q = 0; q < kPer / 4; ++q) {
    uint4* p4 = reinterpret_cast<uint4*>(H + base) + q;
    const uint4 v = *p4;
    *p4 = make_uint4(0, 0, 0, 0);
    // c[j] = count of bin (base + kPer - 1 - j): descending order
    c[kPer - 1 - 4 * q] = v.x;
    c[kPer - 2 - 4 * q] = v.y;
    c[kPer - 3 - 4 * q] = v.z;
    c[kPer - 4 - 4 * q] = v.w;
  }
#pragma unroll
  for (int j = 0; j < kPer; ++j) sum += c[j];
  u32 excl, total;
  cub::BlockScan<u32, kThreads>(tmp).ExclusiveSum(sum, excl, total);
  const u32 need = cur.need;
  if (pass == 0 && total <= need) {  // every valid key is selected
    if (tid == 0) st = RowState{0, 0, 0, 0, 1, 1};
    return;
  }
  u32 run = excl;
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    if (run < need && run + c[j] >= need)
      st = next_state(cur, width, s_new, low16zero, cap, static_cast<u32>(base + kPer - 1 - j), run, c[j]);
    run += c[j];
  }
}

// ---- sorting --------------------------------------------------------------------------------
// Sorts buf[0, np) descending; np is a power of two >= 32. Strides >= 32 go through shared
// memory (one barrier each); smaller ones run inside a warp on registers with shuffles.
template <int kThreads>
__device__ __forceinline__ void bitonic_sort_desc(u64* buf, u32 np) {
  constexpr u32 kWarps = kThreads / 32;
  const u32 tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (u32 size = 32; size <= np; size <<= 1) {
    for (u32 stride = size / 2; stride >= 32; stride >>= 1) {
      for (u32 i = tid; i < np / 2; i += kThreads) {
        const u32 lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
        const bool desc = (lo & size) == 0;
        const u64 a = buf[lo], b = buf[hi];
        if ((a < b) == desc) {
          buf[lo] = b;
          buf[hi] = a;
        }
      }
      __syncthreads();
    }
    for (u32 grp = warp; grp < np / 32; grp += kWarps) {
      const u32 i = grp * 32 + lane;
      u64 v = buf[i];
      for (u32 sz = size == 32 ? 2 : size; sz <= size; sz <<= 1) {
        const bool desc = (i & sz) == 0;
        for (u32 stride = min(sz / 2, 16u); stride > 0; stride >>= 1) {
          const u64 o = __shfl_xor_sync(kFull, v, stride);
          const bool lower = (lane & stride) == 0;
          v = (lower == desc) ? max(v, o) : min(v, o);
        }
      }
      buf[i] = v;
    }
    __syncthreads();
  }
}

// Sorts buf[0, n) descending: pads it with zeros (they sort last) to a power of two >= 32, which
// must fit the buffer. Entries at [n, limit) are kept out of the padding. Every thread calls it.
template <int kThreads>
__device__ __forceinline__ void sort_prefix(u64* buf, u32 n, u32 limit) {
  if (n <= 1) return;
  const u32 np = max(32u, 1u << (32 - __clz(n - 1)));
  for (u32 i = max(limit, n) + threadIdx.x; i < np; i += kThreads) buf[i] = 0;
  __syncthreads();
  bitonic_sort_desc<kThreads>(buf, np);
}

// Sorts buf[0, sort_n) descending (entries [sort_n, out_n) are already in place and below them)
// and writes out[row, j] = the column of buf[j] for j < min(k, out_n), -1 after. One CTA.
template <int kThreads>
__device__ __forceinline__ void sort_and_write(const Params& p, std::int64_t row, u64* buf, u32 sort_n, u32 out_n) {
  const u32 tid = threadIdx.x;
  sort_prefix<kThreads>(buf, sort_n, out_n);
  const u32 n = min(out_n, p.k);
  int* o = p.out + row * static_cast<std::int64_t>(p.k);
  for (u32 j = tid; j < p.k; j += kThreads) o[j] = j < n ? static_cast<int>(~static_cast<u32>(buf[j])) : -1;
  __syncthreads();  // buf is refilled by the next row
}

__device__ __forceinline__ std::int64_t load_index(const void* p, bool is64, std::int64_t r) {
  return is64 ? static_cast<const long long*>(p)[r] : static_cast<const int*>(p)[r];
}

__device__ __forceinline__ u32 clamp_col(std::int64_t v, u32 T) {
  return static_cast<u32>(v < 0 ? 0 : (v > static_cast<std::int64_t>(T) ? static_cast<std::int64_t>(T) : v));
}

__device__ __forceinline__ void trace_mark(const Params& p, int slot) {
  if (p.trace && blockIdx.x == 0 && threadIdx.x == 0) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    p.trace[slot] = t;
  }
}

// kCluster: the row is split over the CTAs of a cluster (a power of two 1..16, 512 threads);
// otherwise one CTA (256 threads) per row. kCached: slices live in shared memory as keys.
// kSmemSort: the selected entries are sorted in shared memory, else written to p.ws.
template <class Tr, int kThreads, bool kCluster, bool kCached, bool kSmemSort>
__global__ void __launch_bounds__(kThreads, kThreads == 256 ? 6 : 3) topk_kernel(const Params p) {
  using Key = typename Tr::Key;
  using Raw = typename Tr::Raw;
  using BlockScan = cub::BlockScan<u32, kThreads>;
  constexpr int kWarps = kThreads / 32;

  extern __shared__ __align__(16) unsigned char smem[];
  u32* hist = reinterpret_cast<u32*>(smem);
  u32* ghist = hist + (kCluster ? kBins : 0);  // the cluster's histogram (CTA 0's copy is used)
  u64* sortbuf = reinterpret_cast<u64*>(smem + (kCluster ? 2 : 1) * kBins * sizeof(u32));
  Key* cache = reinterpret_cast<Key*>(reinterpret_cast<unsigned char*>(sortbuf) +
                                      (kSmemSort ? static_cast<std::size_t>(p.sort_cap) * sizeof(u64) : 0));

  __shared__ RowState st;
  __shared__ u32 wcnt[2][kWarps];        // per warp: entries above / equal to the prefix
  __shared__ u32 ccnt[2 * kMaxCluster];  // per CTA of the cluster
  __shared__ u32 offs[3];                // this CTA's first "above" slot, first "equal" rank, row total above
  __shared__ u32 staged;                 // entries this CTA staged (collect-all)
  __shared__ typename BlockScan::TempStorage scan_tmp;

  const u32 tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const u32 lt = (1u << lane) - 1u;
  u32 C = 1, crank = 0;
  if constexpr (kCluster) {
    C = cg::this_cluster().num_blocks();
    crank = cg::this_cluster().block_rank();
  }
  for (u32 i = tid; i < (kCluster ? 2u : 1u) * kBins; i += kThreads) hist[i] = 0;
  // The first row's load_keys adds into any bin right away (cached kernels): every bin must be
  // zero before any thread counts.
  __syncthreads();
  trace_mark(p, 0);

  for (std::int64_t row = blockIdx.x / C; row < p.rows; row += gridDim.x / C) {
    // ---- this CTA's slice of the row ----
    const std::int64_t bi = row / p.S, si = row - bi * p.S;
    const Raw* rowp = static_cast<const Raw*>(p.scores) + bi * p.stride_b + si * p.stride_s;
    const u32 lo = p.starts ? clamp_col(load_index(p.starts, p.starts64, row), p.T) : 0u;
    u32 hi = p.ends ? clamp_col(load_index(p.ends, p.ends64, row), p.T) : p.T;
    if (hi < lo) hi = lo;
    const u32 len = hi - lo;
    const bool radix = len > p.k;  // else every valid key is selected
    const u32 per = static_cast<u32>((static_cast<std::uint64_t>(len) + C - 1) / C);
    const u32 my_lo = static_cast<u32>(min(static_cast<std::uint64_t>(hi), lo + static_cast<std::uint64_t>(crank) * per));
    const u32 my_hi = static_cast<u32>(min(static_cast<std::uint64_t>(hi), static_cast<std::uint64_t>(my_lo) + per));
    const u32 n = my_hi - my_lo;
    const Raw* g = rowp + my_lo;
    u32 mis = 0;
    if (tid == 0) staged = 0;
    if constexpr (kCached) {
      mis = static_cast<u32>((reinterpret_cast<std::uintptr_t>(g) & 15u) / sizeof(Raw));
      load_keys<Tr, kThreads>(cache, g, n, mis, radix ? hist : nullptr);  // with radix pass 0's histogram
    }
    const Slice<Tr, kCached> sl{g, cache + mis, n};
    // Every CTA of the cluster runs (distributed shared memory may be touched), the histograms
    // are complete (pass 0, cached) or zero, the previous row's buffers have been read.
    if constexpr (kCluster)
      cg::this_cluster().sync();
    else
      __syncthreads();
    trace_mark(p, 1);

    // ---- radix select ----
    RowState cur{0, 0, 0, 0, 1, 1};  // not radix: "key >> 0 > 0", every valid key
    if (radix) {
      cur = RowState{0, 32, p.k, 0, 0, 0};
      for (int pass = 0; pass < 3; ++pass) {
        const int width = pass < 2 ? 11 : 10;
        const u32 s_new = cur.shift - width;  // 21, 10, 0
        const u32 mask = (1u << width) - 1;
        if (pass > 0 || !kCached) {  // (cached: pass 0's histogram was built during the load)
          for (u32 i = tid; i < n; i += kThreads) {
            const u32 key = sl.key(i);
            const bool match = pass == 0 ? key != 0 : (key >> cur.shift) == cur.prefix;
            if (match) atomicAdd(&hist[(key >> s_new) & mask], 1u);
          }
        }
        __syncthreads();
        u32* H = hist;
        if constexpr (kCluster) {
          // Sum the histograms into CTA 0's (nonzero bins only), CTA 0 finds the digit and
          // writes the new state into every CTA.
          auto cl = cg::this_cluster();
          u32* g0 = cl.map_shared_rank(ghist, 0);
          for (u32 b = tid; b < kBins; b += kThreads) {
            const u32 v = hist[b];
            if (v) {
              atomicAdd(g0 + b, v);
              hist[b] = 0;
            }
          }
          cl.sync();
          H = ghist;
        }
        if (crank == 0)
          select_digit<kThreads>(H, pass, width, cur, s_new, Tr::kLow16Zero, static_cast<u32>(p.sort_cap), st, scan_tmp);
        if constexpr (kCluster) {
          auto cl = cg::this_cluster();
          if (crank == 0) {
            __syncthreads();
            if (tid > 0 && tid < C) *cl.map_shared_rank(&st, tid) = st;
          }
          cl.sync();
        } else {
          __syncthreads();
        }
        cur = st;
        trace_mark(p, 2 + pass);
        if (cur.done) break;
      }
    }
    const u32 prefix = cur.prefix, shift = cur.shift, need = cur.need;

    if (kSmemSort && cur.all) {
      // ---- collect all keys with (key >> shift) >= prefix: their count fits the sort buffer,
      // and the unique composites make the result independent of the order they come in.
      for (u32 base = warp * 32; base < n; base += kThreads) {
        const u32 i = base + lane;
        const u32 key = i < n ? sl.key(i) : 0u;
        const bool sel = key != 0 && (key >> shift) >= prefix;
        const u32 m = __ballot_sync(kFull, sel);
        if (m) {
          u32 at = 0;
          if (lane == 0) at = atomicAdd(&staged, __popc(m));
          at = __shfl_sync(kFull, at, 0);
          if (sel) sortbuf[at + __popc(m & lt)] = (static_cast<u64>(key) << 32) | static_cast<u64>(~(my_lo + i));
        }
      }
      __syncthreads();
      trace_mark(p, 5);
      if constexpr (kCluster) {
        auto cl = cg::this_cluster();
        // CTA c's entries go after those of CTAs 0..c-1 in CTA 0's buffer; CTA 0 sorts them.
        const u32 mine = staged;
        if (tid == 0) cl.map_shared_rank(ccnt, 0)[crank] = mine;
        cl.sync();
        if (tid == 0) {
          u32 at = 0, total = 0;
          const u32* c0 = cl.map_shared_rank(ccnt, 0);
          for (u32 c = 0; c < C; ++c) {
            const u32 v = c0[c];
            at += c < crank ? v : 0u;
            total += v;
          }
          offs[0] = at;
          offs[2] = total;
        }
        __syncthreads();
        if (crank != 0) {
          u64* dst = cl.map_shared_rank(sortbuf, 0) + offs[0];
          for (u32 i = tid; i < mine; i += kThreads) dst[i] = sortbuf[i];
        }
        const u32 total = offs[2];
        cl.sync();
        if (crank == 0) sort_and_write<kThreads>(p, row, sortbuf, total, total);
      } else {
        sort_and_write<kThreads>(p, row, sortbuf, staged, staged);
      }
      trace_mark(p, 6);
      continue;
    }

    // ---- exact collection in column order: all keys above the prefix, and the first `need`
    // keys equal to it (warp ballots + per-warp and per-CTA prefix counts).
    const u32 seg = static_cast<u32>((static_cast<std::uint64_t>(n) + kWarps * 32 - 1) / (kWarps * 32) * 32);
    const u32 wlo = static_cast<u32>(min(static_cast<std::uint64_t>(n), static_cast<std::uint64_t>(warp) * seg));
    const u32 whi = static_cast<u32>(min(static_cast<std::uint64_t>(n), static_cast<std::uint64_t>(wlo) + seg));
    {
      u32 ng = 0, ne = 0;
      for (u32 base = wlo; base < whi; base += 32) {
        const u32 i = base + lane;
        const u32 key = i < whi ? sl.key(i) : 0u;
        const u32 m = key >> shift;
        ng += __popc(__ballot_sync(kFull, m > prefix));
        ne += __popc(__ballot_sync(kFull, key != 0 && m == prefix));
      }
      if (lane == 0) {
        wcnt[0][warp] = ng;
        wcnt[1][warp] = ne;
      }
    }
    __syncthreads();
    if (tid == 0) {
      u32 tg = 0, te = 0;
      for (int w = 0; w < kWarps; ++w) {
        tg += wcnt[0][w];
        te += wcnt[1][w];
      }
      if constexpr (kCluster) {
        u32* c0 = cg::this_cluster().map_shared_rank(ccnt, 0);
        c0[2 * crank] = tg;
        c0[2 * crank + 1] = te;
      } else {
        offs[0] = 0;
        offs[1] = 0;
        offs[2] = tg;
      }
    }
    if constexpr (kCluster) {
      cg::this_cluster().sync();
      if (tid == 0) {
        const u32* c0 = cg::this_cluster().map_shared_rank(ccnt, 0);
        u32 gb = 0, eb = 0, G = 0;
        for (u32 c = 0; c < C; ++c) {
          const u32 gc = c0[2 * c], ec = c0[2 * c + 1];
          if (c < crank) {
            gb += gc;
            eb += ec;
          }
          G += gc;
        }
        offs[0] = gb;
        offs[1] = eb;
        offs[2] = G;
      }
    }
    __syncthreads();
    const u32 G = offs[2];          // entries above the prefix in the whole row
    const u32 out_n = G + need;     // = min(k, valid entries)
    // Keys equal to the final key (every bit resolved) land in column order after all larger
    // ones, so then only [0, G) needs sorting.
    const u32 sort_n = (shift == 0 || (Tr::kLow16Zero && shift <= 16)) ? G : out_n;
    u32 go = offs[0], eo = offs[1];
    for (u32 w = 0; w < warp; ++w) {
      go += wcnt[0][w];
      eo += wcnt[1][w];
    }
    u64* dst;
    if constexpr (kSmemSort) {
      if constexpr (kCluster)
        dst = cg::this_cluster().map_shared_rank(sortbuf, 0);
      else
        dst = sortbuf;
    } else {
      dst = p.ws + row * p.ws_stride;
    }
    for (u32 base = wlo; base < whi; base += 32) {
      const u32 i = base + lane;
      const u32 key = i < whi ? sl.key(i) : 0u;
      const u32 m = key >> shift;
      const bool gt = m > prefix, eq = key != 0 && m == prefix;
      const u32 mg = __ballot_sync(kFull, gt), me = __ballot_sync(kFull, eq);
      const u64 comp = (static_cast<u64>(key) << 32) | static_cast<u64>(~(my_lo + i));
      if (gt) dst[go + __popc(mg & lt)] = comp;
      if (eq) {
        const u32 r = eo + __popc(me & lt);
        if (r < need) dst[G + r] = comp;
      }
      go += __popc(mg);
      eo += __popc(me);
    }
    if constexpr (kCluster)
      cg::this_cluster().sync();
    else
      __syncthreads();
    trace_mark(p, 5);
    // ---- order and write (CTA 0 of the row) ----
    if constexpr (kSmemSort) {
      if (crank == 0) sort_and_write<kThreads>(p, row, sortbuf, sort_n, out_n);
    } else if (crank == 0 && tid == 0) {
      p.ws_begin[row] = row * p.ws_stride;
      p.ws_end[row] = row * p.ws_stride + out_n;
    }
    trace_mark(p, 6);
  }
}

// Global sort path, after the segmented sort: indices of the sorted composites, then -1.
__global__ void __launch_bounds__(256) finalize_kernel(const u64* sorted, const std::int64_t* begin, const std::int64_t* end,
                                                       std::int64_t rows, u32 k, int* out) {
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const std::int64_t b = begin[row], cnt = end[row] - b;
    int* o = out + row * static_cast<std::int64_t>(k);
    for (u32 j = threadIdx.x; j < k; j += blockDim.x) o[j] = j < cnt ? static_cast<int>(~static_cast<u32>(sorted[b + j])) : -1;
  }
}

}  // namespace cppmega::topk_op::dev
