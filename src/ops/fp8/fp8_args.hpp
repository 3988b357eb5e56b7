// Internal to the fp8 family: the checked arguments each backend receives, and the backends.
#pragma once

#include "cppmega/ops/fp8.hpp"

namespace cppmega::fp8 {

struct AmaxArgs {
  TensorView x, out;
};
struct QuantizeArgs {
  TensorView x;
  ScaleArg scale;
  TensorView out;
  Fp8Format format;
};
struct DequantizeArgs {
  TensorView q;
  ScaleArg scale;
  TensorView out;
  Fp8Format format;
};
struct PackArgs {
  TensorView x, q, scale;
  PackOptions pack;
};

// reference (fp8_reference.cpp): plain loops on CPU tensors.
void amax_reference(const AmaxArgs& a);
void quantize_reference(const QuantizeArgs& a);
void dequantize_reference(const DequantizeArgs& a);
void pack_reference(const PackArgs& a);

#if CPPMEGA_WITH_CUDA
// cuda (fp8_cuda.cu): portable CUDA C++ kernels.
void amax_cuda(const AmaxArgs& a, void* stream);
void quantize_cuda(const QuantizeArgs& a, void* stream);
void dequantize_cuda(const DequantizeArgs& a, void* stream);
void pack_cuda(const PackArgs& a, void* stream);
#endif

}  // namespace cppmega::fp8
