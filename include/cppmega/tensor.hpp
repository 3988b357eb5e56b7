// Tensor views: a pointer, a dtype, a shape, strides (in elements) and a device.
// Views never own memory; `Tensor` (below) is the owning handle used by the C++
// convenience APIs. Front ends (Python, CLI) build views over their own buffers.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

namespace cppmega {

enum class DType : std::uint8_t { f32, bf16, f16, e4m3, e5m2, e8m0, i32, i64, u8 };

// Size of one element in bytes.
std::size_t dtype_size(DType t);
// Canonical lower-case name ("f32", "bf16", "e4m3", ...).
const char* dtype_name(DType t);
// Parses a canonical name or a common alias (float32, bfloat16, float8_e4m3fn, ...).
// Throws InvalidArgument naming `what` when the name is unknown.
DType parse_dtype(const std::string& name, const char* what = "dtype");
bool is_floating(DType t);  // f32, bf16, f16
bool is_fp8(DType t);       // e4m3, e5m2

enum class DeviceKind : std::uint8_t { cpu, cuda };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;
  static Device cpu() { return {DeviceKind::cpu, 0}; }
  static Device cuda(int i = 0) { return {DeviceKind::cuda, i}; }
  bool is_cuda() const { return kind == DeviceKind::cuda; }
  bool operator==(const Device& o) const { return kind == o.kind && (kind == DeviceKind::cpu || index == o.index); }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;  // "cpu", "cuda:0"
};

inline constexpr int kMaxRank = 8;

// A non-owning strided view.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  int rank = 0;
  std::array<std::int64_t, kMaxRank> shape{};
  std::array<std::int64_t, kMaxRank> strides{};  // in elements
  Device device{};

  TensorView() = default;
  // Contiguous (row-major) view.
  TensorView(void* p, DType t, std::initializer_list<std::int64_t> dims, Device d = Device::cpu());
  static TensorView contiguous(void* p, DType t, const std::int64_t* dims, int rank, Device d);

  std::int64_t numel() const;
  std::int64_t size(int dim) const { return shape[dim < 0 ? dim + rank : dim]; }
  std::int64_t stride(int dim) const { return strides[dim < 0 ? dim + rank : dim]; }
  std::size_t itemsize() const { return dtype_size(dtype); }
  bool empty() const { return numel() == 0; }
  bool is_contiguous() const;  // row-major dense (size-1 dims may have any stride)
  bool innermost_contiguous() const { return rank == 0 || shape[rank - 1] <= 1 || strides[rank - 1] == 1; }
  template <class T> T* ptr() const { return static_cast<T*>(data); }
  // "bf16[2,128,64] cuda:0" (strides appended when not contiguous).
  std::string describe() const;
  std::string shape_str() const;  // "[2,128,64]"
};

// Owning tensor: contiguous storage on the CPU (aligned) or a CUDA device.
class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(DType t, std::initializer_list<std::int64_t> dims, Device d = Device::cpu());
  static Tensor empty(DType t, const std::int64_t* dims, int rank, Device d = Device::cpu());
  static Tensor empty_like(const TensorView& v, DType t, Device d);
  const TensorView& view() const { return view_; }
  operator const TensorView&() const { return view_; }  // NOLINT: views are the currency of the API
  void* data() const { return view_.data; }
  template <class T> T* ptr() const { return view_.ptr<T>(); }
  std::int64_t numel() const { return view_.numel(); }
  // Copies to another device (contiguous). Synchronous.
  Tensor to(Device d) const;

 private:
  TensorView view_;
  std::shared_ptr<void> storage_;
};

// Synchronous copy between two contiguous tensors of equal byte size (any devices).
void copy_bytes(const TensorView& dst, const TensorView& src);

}  // namespace cppmega
