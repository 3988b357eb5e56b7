#include "cppmega/error.hpp"

namespace cppmega {
const char* error_kind_name(ErrorKind k) {
  switch (k) {
    case ErrorKind::InvalidArgument: return "InvalidArgument";
    case ErrorKind::Unsupported: return "Unsupported";
    case ErrorKind::NonFinite: return "NonFinite";
    case ErrorKind::CudaError: return "CudaError";
  }
  return "?";
}
}  // namespace cppmega
