// Every op family's listing, for `cppmega ops` and `cppmega.ops()`.
#pragma once

#include <vector>

#include "cppmega/dispatch.hpp"

namespace cppmega {
namespace fp8 {
std::vector<OpListing> listings();
}
namespace topk_op {
std::vector<OpListing> listings();
}
namespace fp8_blocks {
std::vector<OpListing> listings();
}
namespace gemv_op {
std::vector<OpListing> listings();
}
}  // namespace cppmega
