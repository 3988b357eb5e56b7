// Contract checks shared by every op. Each throws InvalidArgument with a message naming
// the op, the argument, the rule and what was given.
#pragma once

#include <initializer_list>
#include <string>

#include "cppmega/error.hpp"
#include "cppmega/tensor.hpp"

namespace cppmega::check {

void dtype_in(const char* op, const char* arg, const TensorView& t, std::initializer_list<DType> allowed);
void contiguous(const char* op, const char* arg, const TensorView& t);
void innermost_contiguous(const char* op, const char* arg, const TensorView& t);
void rank(const char* op, const char* arg, const TensorView& t, int r, const char* dims_name);
void same_shape(const char* op, const char* arg, const TensorView& t, const char* ref_arg, const TensorView& ref);
void same_device(const char* op, const char* arg, const TensorView& t, const char* ref_arg, const TensorView& ref);
void numel(const char* op, const char* arg, const TensorView& t, std::int64_t n);
void not_null(const char* op, const char* arg, const TensorView& t);

}  // namespace cppmega::check
