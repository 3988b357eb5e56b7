// How the CUDA backend of topk splits a call: CTAs per row, shared-memory budget, sort path.
// Host-only and free of CUDA headers, so the CPU tests can check that every plan fits.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace cppmega::topk_op {

inline constexpr int kBins = 2048;             // 11-bit radix digits (passes of 11, 11 and 10 bits)
inline constexpr int kMaxCluster = 16;         // H100 allows 16 CTAs per cluster (non-portable size)
inline constexpr int kSmallThreads = 256;      // one CTA per row
inline constexpr int kClusterThreads = 512;    // CTAs of a multi-CTA row
inline constexpr std::int64_t kSmemSortMax = 4096;         // min(k,T) sorted in shared memory up to this
inline constexpr std::int64_t kTargetChunkBytes = 32 << 10;  // a CTA's slice of a row, as keys
inline constexpr std::int64_t kMinChunkBytes = 8 << 10;      // few rows: split further, down to this

struct Plan {
  int cluster = 1;              // CTAs per row (a thread-block cluster when > 1)
  bool cluster_kernel = false;  // the multi-CTA kernel (512 threads) rather than the one-CTA kernel (256)
  bool cached = true;           // each CTA keeps its slice of the row in shared memory, as keys
  bool smem_sort = true;        // selected entries sorted in shared memory, else a CUB segmented sort
  std::int64_t chunk_cap = 0;   // most columns one CTA covers
  int sort_cap = 0;             // entries of the shared sort buffer (a power of two >= 32), 0 without
  std::size_t smem_bytes = 0;   // dynamic shared memory per CTA
  int threads() const { return cluster_kernel ? kClusterThreads : kSmallThreads; }
};

inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

inline std::size_t plan_smem(bool cluster_kernel, bool cached, std::int64_t chunk_cap, int sort_cap, int key_bytes) {
  std::size_t b = std::size_t(kBins) * 4 * (cluster_kernel ? 2 : 1) + std::size_t(sort_cap) * 8;
  // The cache starts at the row slice's 16-byte phase: up to 16/key_bytes extra slots.
  if (cached) b += static_cast<std::size_t>(chunk_cap + 16 / key_bytes) * key_bytes;
  return b;
}

// rows, T >= 1, k >= 1. key_bytes: 4 (f32) or 2 (bf16). smem_limit: dynamic shared memory a CTA
// may use. max_cluster: the largest cluster the device runs (16 on H100, else 8).
inline Plan make_plan(std::int64_t rows, std::int64_t T, std::int64_t k, int key_bytes, int sm_count,
                      std::size_t smem_limit, int max_cluster) {
  Plan p;
  const std::int64_t kk = std::min(k, T);  // most entries a row can select
  p.smem_sort = kk <= kSmemSortMax;
  p.sort_cap = p.smem_sort ? static_cast<int>(std::max<std::uint64_t>(32, std::bit_ceil(static_cast<std::uint64_t>(kk)))) : 0;
  const std::int64_t row_bytes = T * key_bytes;
  int c = 1;
  while (c < max_cluster && ceil_div(row_bytes, c) > kTargetChunkBytes) c *= 2;
  // Few rows (decode): spread each row over more SMs, for bandwidth and latency.
  while (c < max_cluster && rows * c * 2 <= sm_count && ceil_div(row_bytes, c) > kMinChunkBytes) c *= 2;
  p.cluster = c;
  p.chunk_cap = ceil_div(T, c);
  p.cluster_kernel = c > 1;
  p.cached = plan_smem(p.cluster_kernel, true, p.chunk_cap, p.sort_cap, key_bytes) <= smem_limit;
  if (!p.cached) p.cluster_kernel = true;  // the one-CTA kernel always caches; the cluster kernel also streams
  p.smem_bytes = plan_smem(p.cluster_kernel, p.cached, p.chunk_cap, p.sort_cap, key_bytes);
  return p;
}

}  // namespace cppmega::topk_op
