// fp8_gemv tensor-core configurations for M padded to 64 (see fp8_gemv_tc.cuh). One file
// per M class so the instantiations compile in parallel.
#include "ops/fp8_gemv/fp8_gemv_tc.cuh"

namespace cppmega::gemv_op::tc {

FastKernel fast_kernel_m8(int planes, int sb, int nbuf) {
  if (planes == 1 && sb == 2 && nbuf == 2) return make_fast_kernel<8, 1, 2, 2>();
  if (planes == 1 && sb == 2 && nbuf == 3) return make_fast_kernel<8, 1, 2, 3>();
  if (planes == 2 && sb == 1 && nbuf == 2) return make_fast_kernel<8, 2, 1, 2>();
  return {};
}

}  // namespace cppmega::gemv_op::tc
