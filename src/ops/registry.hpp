// Every op family's listing, for `cppmega ops` and `cppmega.ops()`.
#pragma once

#include <vector>

#include "cppmega/dispatch.hpp"

namespace cppmega {
namespace fp8 {
std::vector<OpListing> listings();
}
}  // namespace cppmega
