// The CUDA context as cppmega sees it: which devices exist, what they are, and whether
// this build has CUDA at all. Everything goes through the CUDA runtime (cudart, linked
// statically); the driver library is never linked, so binaries start on machines without
// a GPU and report "no device" instead.
#pragma once

#include <cstdint>
#include <string>

namespace cppmega {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  int sm_clock_mhz = 0;   // max SM clock
  int mem_clock_mhz = 0;  // max memory clock
  int mem_bus_bits = 0;
  std::int64_t l2_bytes = 0;
  std::int64_t global_mem_bytes = 0;
  std::int64_t smem_per_block_optin = 0;
};

// True when cppmega was built with its CUDA backends.
bool built_with_cuda();
// Number of usable CUDA devices; 0 when not built with CUDA, no driver, or no GPU.
int cuda_device_count();
// Why there is no usable CUDA device ("" when there is one).
std::string cuda_unavailable_reason();
CudaDeviceInfo cuda_device_info(int index);
// "13.0" style strings; "" when unknown.
std::string cuda_runtime_version();
std::string cuda_driver_version();
// Waits for all work on the device (tests and benches; ops never call it).
void cuda_synchronize(int index = 0);

}  // namespace cppmega
