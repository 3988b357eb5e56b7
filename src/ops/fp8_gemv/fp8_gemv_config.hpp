// Tile parameters of the fp8_gemv CUDA kernels (see fp8_gemv_tc.cuh for the design).
#pragma once

namespace cppmega::gemv_op::config {

inline constexpr int kWarps = 8;                 // warps per CTA
inline constexpr int kThreads = kWarps * 32;     // 256
inline constexpr int kRowsPerWarp = 16;          // one m16 MMA tile of w rows per warp
inline constexpr int kBlockN = kWarps * kRowsPerWarp;  // 128 rows per CTA = one (128,128) w scale block
inline constexpr int kStepK = 128;               // k per block = one scale block
inline constexpr int kMaxM = 64;                 // fast path: M <= 64, padded to 8, 16, 32 or 64
inline constexpr int kMaxSplits = 8;             // K splits per N tile (one thread-block cluster)
inline constexpr int kMinBlocksPerSplit = 16;     // automatic K splits keep >= 2048 k per CTA

// The pipeline configurations (stage blocks SB x ring depth NBUF) are template parameters of the
// kernel in fp8_gemv_tc.cuh, instantiated per M class in fp8_gemv_tc_m*.cu; the defaults are
// chosen in fp8_gemv_cuda.cu (fast_kernel).

}  // namespace cppmega::gemv_op::config
