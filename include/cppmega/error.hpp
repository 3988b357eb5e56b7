// The one exception hierarchy of cppmega (docs/contracts.md section 1).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace cppmega {

enum class ErrorKind {
  InvalidArgument,  // the caller broke the contract
  Unsupported,      // this backend cannot run this call here; only this lets AUTO try the next one
  NonFinite,        // NaN or Inf where the op forbids it
  CudaError,        // a CUDA API or launch failure
};

const char* error_kind_name(ErrorKind k);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string message) : std::runtime_error(std::move(message)), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

namespace detail {
template <class... Args>
std::string cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

// fail(ErrorKind::InvalidArgument, "fp8_quantize: out must have dtype e4m3, got ", ...)
template <class... Args>
[[noreturn]] void fail(ErrorKind kind, Args&&... args) {
  throw Error(kind, detail::cat(std::forward<Args>(args)...));
}

template <class... Args>
[[noreturn]] void invalid_argument(Args&&... args) {
  fail(ErrorKind::InvalidArgument, std::forward<Args>(args)...);
}

template <class... Args>
[[noreturn]] void unsupported(Args&&... args) {
  fail(ErrorKind::Unsupported, std::forward<Args>(args)...);
}

}  // namespace cppmega
