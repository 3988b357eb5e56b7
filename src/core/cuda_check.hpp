// Internal CUDA plumbing usable from plain C++ translation units. Every CUDA call goes
// through CPPMEGA_CUDA_CHECK, which turns a failure into Error(CudaError) with the call,
// the CUDA error string and the place.
#pragma once

#include <cstddef>
#include <memory>

#include "cppmega/error.hpp"

#if CPPMEGA_WITH_CUDA
#include <cuda_runtime_api.h>

#define CPPMEGA_CUDA_CHECK(call)                                                                        \
  do {                                                                                                  \
    cudaError_t cppmega_err_ = (call);                                                                  \
    if (cppmega_err_ != cudaSuccess) ::cppmega::detail::throw_cuda_error(cppmega_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: launch-configuration errors surface here.
#define CPPMEGA_CUDA_CHECK_LAUNCH(what) CPPMEGA_CUDA_CHECK(cudaPeekAtLastError())

namespace cppmega::detail {
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);

// Makes `device` current for the scope and restores the previous device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};
}  // namespace cppmega::detail
#endif

namespace cppmega::detail {
std::shared_ptr<void> cuda_alloc_shared(std::size_t bytes, int device);
void cuda_copy_sync(void* dst, const void* src, std::size_t bytes, int device);
}  // namespace cppmega::detail
