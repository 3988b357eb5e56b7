#include "core/checks.hpp"

namespace cppmega::check {

void dtype_in(const char* op, const char* arg, const TensorView& t, std::initializer_list<DType> allowed) {
  for (DType d : allowed)
    if (t.dtype == d) return;
  std::string names;
  std::size_t i = 0;
  for (DType d : allowed) {
    names += (i == 0 ? "" : (i + 1 == allowed.size() ? " or " : ", "));
    names += dtype_name(d);
    ++i;
  }
  invalid_argument(op, ": ", arg, " must be ", names, ", got ", t.describe());
}

void contiguous(const char* op, const char* arg, const TensorView& t) {
  if (!t.is_contiguous()) invalid_argument(op, ": ", arg, " must be contiguous, got ", t.describe());
}

void innermost_contiguous(const char* op, const char* arg, const TensorView& t) {
  if (!t.innermost_contiguous())
    invalid_argument(op, ": ", arg, " must have a contiguous innermost dimension (stride 1), got ", t.describe());
}

void rank(const char* op, const char* arg, const TensorView& t, int r, const char* dims_name) {
  if (t.rank != r) invalid_argument(op, ": ", arg, " must have rank ", r, " ", dims_name, ", got ", t.describe());
}

void same_shape(const char* op, const char* arg, const TensorView& t, const char* ref_arg, const TensorView& ref) {
  bool eq = t.rank == ref.rank;
  for (int i = 0; eq && i < t.rank; ++i) eq = t.shape[i] == ref.shape[i];
  if (!eq) invalid_argument(op, ": ", arg, " must have the shape of ", ref_arg, " ", ref.shape_str(), ", got ", t.describe());
}

void same_device(const char* op, const char* arg, const TensorView& t, const char* ref_arg, const TensorView& ref) {
  if (t.device != ref.device)
    invalid_argument(op, ": all tensors of one call must be on one device: ", arg, " is on ", t.device.str(), ", ", ref_arg,
                     " on ", ref.device.str());
}

void numel(const char* op, const char* arg, const TensorView& t, std::int64_t n) {
  if (t.numel() != n) invalid_argument(op, ": ", arg, " must have exactly ", n, " element(s), got ", t.describe());
}

void not_null(const char* op, const char* arg, const TensorView& t) {
  if (t.data == nullptr && t.numel() > 0) invalid_argument(op, ": ", arg, " has no data pointer (", t.describe(), ")");
}

}  // namespace cppmega::check
