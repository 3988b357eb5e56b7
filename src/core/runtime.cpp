#include "cppmega/runtime.hpp"

#include <mutex>
#include <string>

#include "core/cuda_check.hpp"
#include "cppmega/error.hpp"

namespace cppmega {

#if CPPMEGA_WITH_CUDA

namespace detail {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  cudaGetLastError();  // clear a sticky-free error so the next call starts clean
  fail(ErrorKind::CudaError, "CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ") in ", call, " at ",
       file, ":", line);
}

DeviceGuard::DeviceGuard(int device) {
  CPPMEGA_CUDA_CHECK(cudaGetDevice(&prev_));
  if (prev_ != device) CPPMEGA_CUDA_CHECK(cudaSetDevice(device));
}
DeviceGuard::~DeviceGuard() {
  int cur = -1;
  if (cudaGetDevice(&cur) == cudaSuccess && cur != prev_ && prev_ >= 0) cudaSetDevice(prev_);
}

std::shared_ptr<void> cuda_alloc_shared(std::size_t bytes, int device) {
  DeviceGuard g(device);
  void* p = nullptr;
  CPPMEGA_CUDA_CHECK(cudaMalloc(&p, bytes));
  return std::shared_ptr<void>(p, [device](void* q) {
    int prev = 0;
    cudaGetDevice(&prev);
    cudaSetDevice(device);
    cudaFree(q);
    cudaSetDevice(prev);
  });
}

void cuda_copy_sync(void* dst, const void* src, std::size_t bytes, int device) {
  DeviceGuard g(device);
  CPPMEGA_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
}

}  // namespace detail

namespace {
struct Probe {
  int count = 0;
  std::string reason;
};
const Probe& probe() {
  static Probe p = [] {
    Probe r;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      cudaGetLastError();
      r.reason = std::string("no usable CUDA device (cudaGetDeviceCount: ") + cudaGetErrorName(e) + ")";
    } else if (n == 0) {
      r.reason = "no CUDA device present";
    } else {
      r.count = n;
    }
    return r;
  }();
  return p;
}
}  // namespace

bool built_with_cuda() { return true; }
int cuda_device_count() { return probe().count; }
std::string cuda_unavailable_reason() { return probe().reason; }

CudaDeviceInfo cuda_device_info(int index) {
  if (index < 0 || index >= cuda_device_count())
    invalid_argument("cuda_device_info: device index ", index, " out of range [0, ", cuda_device_count(), ")");
  cudaDeviceProp p{};
  CPPMEGA_CUDA_CHECK(cudaGetDeviceProperties(&p, index));
  CudaDeviceInfo i;
  i.index = index;
  i.name = p.name;
  i.cc_major = p.major;
  i.cc_minor = p.minor;
  i.sm_count = p.multiProcessorCount;
  int v = 0;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrClockRate, index) == cudaSuccess) i.sm_clock_mhz = v / 1000;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrMemoryClockRate, index) == cudaSuccess) i.mem_clock_mhz = v / 1000;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrGlobalMemoryBusWidth, index) == cudaSuccess) i.mem_bus_bits = v;
  cudaGetLastError();
  i.l2_bytes = p.l2CacheSize;
  i.global_mem_bytes = static_cast<std::int64_t>(p.totalGlobalMem);
  i.smem_per_block_optin = static_cast<std::int64_t>(p.sharedMemPerBlockOptin);
  return i;
}

static std::string version_str(int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); }

std::string cuda_runtime_version() {
  int v = 0;
  return cudaRuntimeGetVersion(&v) == cudaSuccess ? version_str(v) : "";
}
std::string cuda_driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess || v == 0) return "";
  return version_str(v);
}

void cuda_synchronize(int index) {
  detail::DeviceGuard g(index);
  CPPMEGA_CUDA_CHECK(cudaDeviceSynchronize());
}

#else  // !CPPMEGA_WITH_CUDA

namespace detail {
std::shared_ptr<void> cuda_alloc_shared(std::size_t, int) {
  unsupported("tensor: cannot allocate CUDA memory: cppmega was built without CUDA");
}
void cuda_copy_sync(void*, const void*, std::size_t, int) {
  unsupported("copy: cannot copy to or from CUDA memory: cppmega was built without CUDA");
}
}  // namespace detail

bool built_with_cuda() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_unavailable_reason() { return "cppmega was built without CUDA"; }
CudaDeviceInfo cuda_device_info(int index) {
  unsupported("cuda_device_info: cppmega was built without CUDA (device ", index, ")");
}
std::string cuda_runtime_version() { return ""; }
std::string cuda_driver_version() { return ""; }
void cuda_synchronize(int) {}

#endif

}  // namespace cppmega
