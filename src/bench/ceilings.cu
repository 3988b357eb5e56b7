// The CUDA ceilings every bench rate is compared against, measured in the same run:
// device-to-device copy bandwidth and cuBLASLt bf16 GEMM throughput.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "cppmega/bench.hpp"
#include "cppmega/numerics.hpp"
#include "core/cuda_check.hpp"

#define CPPMEGA_CUBLAS_CHECK(call)                                                                          \
  do {                                                                                                      \
    cublasStatus_t cppmega_st_ = (call);                                                                    \
    if (cppmega_st_ != CUBLAS_STATUS_SUCCESS)                                                               \
      ::cppmega::fail(::cppmega::ErrorKind::CudaError, "cuBLASLt error ", cublasLtGetStatusName(cppmega_st_), \
                      " in ", #call, " at ", __FILE__, ":", __LINE__);                                      \
  } while (0)

namespace cppmega::bench {

namespace {

struct CudaFree {
  void operator()(void* p) const { cudaFree(p); }  // destructor path: never throws
};
using DeviceBuffer = std::unique_ptr<void, CudaFree>;

DeviceBuffer device_alloc(std::size_t bytes) {
  void* p = nullptr;
  CPPMEGA_CUDA_CHECK(cudaMalloc(&p, bytes));
  return DeviceBuffer(p);
}

// Uniform bf16 values in [-1, 1) from a counter hash: the GEMM must not run on zeros (the
// tensor cores' power, hence clocks, depends on the data).
__global__ void fill_uniform_bf16(std::uint16_t* p, std::size_t n, std::uint64_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    std::uint64_t x = seed + i * 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    const float u = static_cast<float>(x >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    p[i] = num::f32_to_bf16(2.0f * u - 1.0f);
  }
}

double median_us_of(const std::function<void()>& fn, Device device, void* stream, int warmup, int iters) {
  return time_paired({{"ceiling", fn}}, device, stream, warmup, iters).front().median_us;
}

void measure_copy(Ceilings& c, Device device, void* stream) {
  constexpr int kWarmup = 3, kIters = 20;
  std::size_t free_bytes = 0, total_bytes = 0;
  CPPMEGA_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  // 1 GiB per side, far past L2; less when memory is short (a framework may hold most of it).
  std::size_t bytes = std::min<std::size_t>(std::size_t(1) << 30, free_bytes / 4);
  bytes &= ~std::size_t(4095);
  if (bytes == 0) fail(ErrorKind::CudaError, "measure_ceilings: not enough free device memory for the copy test");
  DeviceBuffer src = device_alloc(bytes), dst = device_alloc(bytes);
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  CPPMEGA_CUDA_CHECK(cudaMemsetAsync(src.get(), 0x5A, bytes, s));
  const double us = median_us_of(
      [&] { CPPMEGA_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, s)); }, device,
      stream, kWarmup, kIters);
  c.copy_tbps = 2.0 * static_cast<double>(bytes) / (us * 1e-6) / 1e12;
  c.copy_method = "cudaMemcpyAsync device-to-device " + std::to_string(bytes >> 20) +
                  " MiB, read+write bytes, median of " + std::to_string(kIters);
}

void measure_matmul(Ceilings& c, Device device, void* stream) {
  constexpr int kWarmup = 3, kIters = 10;
  constexpr std::uint64_t kDim = 8192;  // M = N = K
  constexpr std::size_t kWorkspace = std::size_t(32) << 20;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const std::size_t elems = kDim * kDim;
  DeviceBuffer a = device_alloc(elems * 2), b = device_alloc(elems * 2), d = device_alloc(elems * 2);
  DeviceBuffer workspace = device_alloc(kWorkspace);
  fill_uniform_bf16<<<1024, 256, 0, s>>>(static_cast<std::uint16_t*>(a.get()), elems, 1);
  CPPMEGA_CUDA_CHECK_LAUNCH("fill_uniform_bf16");
  fill_uniform_bf16<<<1024, 256, 0, s>>>(static_cast<std::uint16_t*>(b.get()), elems, 2);
  CPPMEGA_CUDA_CHECK_LAUNCH("fill_uniform_bf16");

  cublasLtHandle_t handle = nullptr;
  CPPMEGA_CUBLAS_CHECK(cublasLtCreate(&handle));
  std::unique_ptr<cublasLtContext, decltype(&cublasLtDestroy)> handle_guard(handle, &cublasLtDestroy);
  cublasLtMatmulDesc_t desc = nullptr;
  CPPMEGA_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  std::unique_ptr<cublasLtMatmulDescOpaque_t, decltype(&cublasLtMatmulDescDestroy)> desc_guard(desc,
                                                                                             &cublasLtMatmulDescDestroy);
  // TN (A transposed): the layout cuBLAS's fastest Hopper kernels take for row-major A.
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  CPPMEGA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  CPPMEGA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  using LayoutGuard = std::unique_ptr<cublasLtMatrixLayoutOpaque_t, decltype(&cublasLtMatrixLayoutDestroy)>;
  CPPMEGA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, kDim, kDim, kDim));
  LayoutGuard la_guard(la, &cublasLtMatrixLayoutDestroy);
  CPPMEGA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, kDim, kDim, kDim));
  LayoutGuard lb_guard(lb, &cublasLtMatrixLayoutDestroy);
  CPPMEGA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, kDim, kDim, kDim));
  LayoutGuard ld_guard(ld, &cublasLtMatrixLayoutDestroy);
  cublasLtMatmulPreference_t pref = nullptr;
  CPPMEGA_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, decltype(&cublasLtMatmulPreferenceDestroy)> pref_guard(
      pref, &cublasLtMatmulPreferenceDestroy);
  const std::uint64_t ws = kWorkspace;
  CPPMEGA_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(handle, desc, la, lb, ld, ld, pref, 1, &heuristic, &found);
  if (hs == CUBLAS_STATUS_NOT_SUPPORTED || (hs == CUBLAS_STATUS_SUCCESS && found == 0)) {
    c.bf16_matmul_tflops = 0;
    c.matmul_method = "cublasLt offers no bf16 GEMM algorithm on this device";
    return;
  }
  CPPMEGA_CUBLAS_CHECK(hs);
  const float alpha = 1.0f, beta = 0.0f;
  const double us = median_us_of(
      [&] {
        CPPMEGA_CUBLAS_CHECK(cublasLtMatmul(handle, desc, &alpha, a.get(), la, b.get(), lb, &beta, d.get(), ld, d.get(),
                                            ld, &heuristic.algo, workspace.get(), kWorkspace, s));
      },
      device, stream, kWarmup, kIters);
  c.bf16_matmul_tflops = 2.0 * double(kDim) * double(kDim) * double(kDim) / (us * 1e-6) / 1e12;
  c.matmul_method = "cublasLt bf16 GEMM 8192^3 TN, f32 accumulate, bf16 out, uniform random data, median of " +
                    std::to_string(kIters);
}

}  // namespace

Ceilings measure_cuda_ceilings(Device device, void* stream) {
  detail::DeviceGuard guard(device.index);
  Ceilings c;
  measure_copy(c, device, stream);
  measure_matmul(c, device, stream);
  // Buffers are freed when each measurement returns; cudaFree synchronises, so nothing
  // from the ceilings is still running when the cases start.
  return c;
}

}  // namespace cppmega::bench
