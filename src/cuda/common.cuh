// Device helpers shared by the CUDA kernels: launch checks, device facts, vector access,
// warp/block reductions.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda_check.hpp"

namespace cppmega::cuda {

// Streaming multiprocessors of the current device (cached per device).
int sm_count(int device);

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

inline unsigned grid_for(std::int64_t work_items, int threads, std::int64_t max_blocks) {
  std::int64_t b = (work_items + threads - 1) / threads;
  if (b > max_blocks) b = max_blocks;
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

__device__ __forceinline__ unsigned warp_max_u32(unsigned v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
  return v;
}

// Max over the block of an unsigned value; the result is valid in every thread.
// `smem` must hold blockDim.x / 32 entries.
__device__ __forceinline__ unsigned block_max_u32(unsigned v, unsigned* smem) {
  v = warp_max_u32(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  const int nwarps = (blockDim.x + 31) >> 5;
  v = lane < nwarps ? smem[lane] : 0u;
  v = warp_max_u32(v);
  __syncthreads();  // smem may be reused by the caller
  return v;
}

}  // namespace cppmega::cuda
