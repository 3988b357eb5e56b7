#include "cppmega/tensor.hpp"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "cppmega/error.hpp"
#include "core/cuda_check.hpp"

namespace cppmega {

std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: case DType::i32: return 4;
    case DType::bf16: case DType::f16: return 2;
    case DType::e4m3: case DType::e5m2: case DType::e8m0: case DType::u8: return 1;
    case DType::i64: return 8;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::e4m3: return "e4m3";
    case DType::e5m2: return "e5m2";
    case DType::e8m0: return "e8m0";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
  }
  return "?";
}

DType parse_dtype(const std::string& s, const char* what) {
  if (s == "f32" || s == "float32" || s == "float") return DType::f32;
  if (s == "bf16" || s == "bfloat16") return DType::bf16;
  if (s == "f16" || s == "float16" || s == "half") return DType::f16;
  if (s == "e4m3" || s == "float8_e4m3fn" || s == "e4m3fn") return DType::e4m3;
  if (s == "e5m2" || s == "float8_e5m2") return DType::e5m2;
  if (s == "e8m0" || s == "float8_e8m0fnu") return DType::e8m0;
  if (s == "i32" || s == "int32") return DType::i32;
  if (s == "i64" || s == "int64") return DType::i64;
  if (s == "u8" || s == "uint8") return DType::u8;
  invalid_argument(what, ": unknown dtype '", s, "' (expected one of f32, bf16, f16, e4m3, e5m2, e8m0, i32, i64, u8)");
}

bool is_floating(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; }
bool is_fp8(DType t) { return t == DType::e4m3 || t == DType::e5m2; }

std::string Device::str() const { return kind == DeviceKind::cpu ? "cpu" : "cuda:" + std::to_string(index); }

TensorView::TensorView(void* p, DType t, std::initializer_list<std::int64_t> dims, Device d) {
  *this = contiguous(p, t, dims.begin(), static_cast<int>(dims.size()), d);
}

TensorView TensorView::contiguous(void* p, DType t, const std::int64_t* dims, int r, Device d) {
  if (r < 0 || r > kMaxRank) invalid_argument("tensor: rank must be in [0, ", kMaxRank, "], got ", r);
  TensorView v;
  v.data = p;
  v.dtype = t;
  v.rank = r;
  v.device = d;
  std::int64_t st = 1;
  for (int i = r - 1; i >= 0; --i) {
    if (dims[i] < 0) invalid_argument("tensor: dimension ", i, " is negative (", dims[i], ")");
    v.shape[i] = dims[i];
    v.strides[i] = st;
    st *= dims[i] > 0 ? dims[i] : 1;
  }
  return v;
}

std::int64_t TensorView::numel() const {
  std::int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= shape[i];
  return n;
}

bool TensorView::is_contiguous() const {
  if (numel() == 0) return true;  // nothing to address, any strides describe it
  std::int64_t st = 1;
  for (int i = rank - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != st) return false;
    st *= shape[i];
  }
  return true;
}

std::string TensorView::shape_str() const {
  std::ostringstream os;
  os << '[';
  for (int i = 0; i < rank; ++i) os << (i ? "," : "") << shape[i];
  os << ']';
  return os.str();
}

std::string TensorView::describe() const {
  std::ostringstream os;
  os << dtype_name(dtype) << shape_str();
  if (!is_contiguous()) {
    os << " strides (";
    for (int i = 0; i < rank; ++i) os << (i ? "," : "") << strides[i];
    os << ')';
  }
  os << ' ' << device.str();
  return os.str();
}

Tensor Tensor::empty(DType t, std::initializer_list<std::int64_t> dims, Device d) {
  return empty(t, dims.begin(), static_cast<int>(dims.size()), d);
}

Tensor Tensor::empty(DType t, const std::int64_t* dims, int rank, Device d) {
  Tensor out;
  out.view_ = TensorView::contiguous(nullptr, t, dims, rank, d);
  const std::size_t bytes = static_cast<std::size_t>(out.view_.numel()) * dtype_size(t);
  const std::size_t alloc = bytes ? bytes : 1;
  if (d.kind == DeviceKind::cpu) {
    void* p = std::aligned_alloc(64, (alloc + 63) / 64 * 64);
    if (!p) fail(ErrorKind::InvalidArgument, "tensor: cannot allocate ", bytes, " bytes on the CPU");
    out.storage_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  } else {
    out.storage_ = detail::cuda_alloc_shared(alloc, d.index);
  }
  out.view_.data = out.storage_.get();
  return out;
}

Tensor Tensor::empty_like(const TensorView& v, DType t, Device d) { return empty(t, v.shape.data(), v.rank, d); }

Tensor Tensor::to(Device d) const {
  Tensor out = empty(view_.dtype, view_.shape.data(), view_.rank, d);
  copy_bytes(out.view(), view_);
  return out;
}

void copy_bytes(const TensorView& dst, const TensorView& src) {
  const std::size_t n = static_cast<std::size_t>(src.numel()) * src.itemsize();
  if (static_cast<std::size_t>(dst.numel()) * dst.itemsize() != n)
    invalid_argument("copy_bytes: byte sizes differ: ", dst.describe(), " vs ", src.describe());
  if (!dst.is_contiguous() || !src.is_contiguous())
    invalid_argument("copy_bytes: both tensors must be contiguous: ", dst.describe(), " <- ", src.describe());
  if (n == 0) return;
  if (dst.device.kind == DeviceKind::cpu && src.device.kind == DeviceKind::cpu) {
    std::memcpy(dst.data, src.data, n);
    return;
  }
  detail::cuda_copy_sync(dst.data, src.data, n, dst.device.is_cuda() ? dst.device.index : src.device.index);
}

}  // namespace cppmega
