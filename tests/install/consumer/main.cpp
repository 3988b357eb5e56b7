// A C++ user of the installed package: quantize on the CPU reference and check one value.
#include <cppmega/cppmega.hpp>

#include <cstdio>

int main() {
  cppmega::Tensor x = cppmega::Tensor::empty(cppmega::DType::f32, {3});
  x.ptr<float>()[0] = 1.0f;
  x.ptr<float>()[1] = -448.0f;
  x.ptr<float>()[2] = 3.0f;
  auto [q, scale] = cppmega::fp8_pack(x, {}, {"reference", nullptr});
  const float s = *scale.ptr<float>();
  const unsigned char q1 = q.ptr<unsigned char>()[1];
  std::printf("scale=%g q[1]=0x%02x cuda_devices=%d\n", s, q1, cppmega::cuda_device_count());
  return (s == 1.0f && q1 == 0xFE) ? 0 : 1;
}
