// Element access for the CPU references: f32/bf16/f16 tensors read and written as f32
// (writes round to nearest even), by flat index into a contiguous view.
#pragma once

#include <cstdint>

#include "cppmega/error.hpp"
#include "cppmega/numerics.hpp"
#include "cppmega/tensor.hpp"

namespace cppmega::host {

inline float load_f32(const TensorView& t, std::int64_t i) {
  switch (t.dtype) {
    case DType::f32: return t.ptr<const float>()[i];
    case DType::bf16: return num::bf16_to_f32(t.ptr<const std::uint16_t>()[i]);
    case DType::f16: return num::f16_to_f32(t.ptr<const std::uint16_t>()[i]);
    default: invalid_argument("host::load_f32: not a floating dtype: ", dtype_name(t.dtype));
  }
}

inline void store_f32(const TensorView& t, std::int64_t i, float v) {
  switch (t.dtype) {
    case DType::f32: t.ptr<float>()[i] = v; break;
    case DType::bf16: t.ptr<std::uint16_t>()[i] = num::f32_to_bf16(v); break;
    case DType::f16: t.ptr<std::uint16_t>()[i] = num::f32_to_f16(v); break;
    default: invalid_argument("host::store_f32: not a floating dtype: ", dtype_name(t.dtype));
  }
}

}  // namespace cppmega::host
