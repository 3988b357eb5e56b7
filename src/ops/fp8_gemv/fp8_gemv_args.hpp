// Internal to fp8_gemv: the checked arguments each backend receives, and the backends.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cppmega/ops/fp8_gemv.hpp"

namespace cppmega::gemv_op {

// The granularity of one scale, resolved from its shape by the contract checks.
enum class ScaleKind : std::uint8_t {
  none,    // x is not FP8: no scale (1)
  tensor,  // one value: `value` (host) or *ptr (a 1-element tensor on the inputs' device)
  row,     // ptr[n] (w) or ptr[m] (x)
  block,   // ptr[(n/128) * ceil(K/128) + k/128] (w) or ptr[m * ceil(K/128) + k/128] (x)
};
const char* scale_kind_name(ScaleKind k);

struct Scale {
  ScaleKind kind = ScaleKind::none;
  float value = 1.0f;
  const float* ptr = nullptr;  // on the inputs' device
};

// AUTO's shape bucket ("x:bf16:M<=16:NK<=2^26"); the bench cases use the same function.
std::string gemv_bucket(DType x_dtype, std::int64_t M, std::int64_t N, std::int64_t K);

struct GemvArgs {
  TensorView x, w, out;  // x [M,K], w [N,K], out [M,N]; innermost dims contiguous
  Scale w_scale, x_scale;
  std::int64_t M = 0, N = 0, K = 0;
};

// reference (fp8_gemv_reference.cpp): f64 accumulation per 128-wide block, the contract literally.
void gemv_reference(const GemvArgs& a);

#if CPPMEGA_WITH_CUDA
// cuda (fp8_gemv_cuda.cu): tensor-core streaming kernel for 1 <= M <= 64 and a 16-byte aligned w,
// a general CUDA-core kernel for everything else.
void gemv_cuda(const GemvArgs& a, void* stream);

// Test and bench hooks (not part of the API): force a split count or the general kernel, and
// read back what the last call on this thread chose.
struct GemvTuning {
  int splits = 0;  // 0 = automatic; else 1, 2, 4 or 8 (at most ceil(K/128))
  bool force_general = false;
  int stage_blocks = 0, stages = 0;  // 0 = the default configuration; else one of fp8_gemv_tc_m*.cu
};
void set_gemv_tuning_for_testing(const GemvTuning& t);
struct GemvLaunchInfo {
  bool fast = false;
  int m_tiles = 0, planes = 0, splits = 0, stage_blocks = 0, stages = 0, grid_x = 0;
  std::int64_t smem_bytes = 0;
  int ctas_per_sm = 0;
};
// The fast-path configurations (stage_blocks, stages) instantiated for an M class (m_tiles 1, 2,
// 4, 8) and x planes (1; 2 for f32 x).
std::vector<std::pair<int, int>> gemv_fast_configs(int m_tiles, int planes);
GemvLaunchInfo last_gemv_launch();
#endif

}  // namespace cppmega::gemv_op
