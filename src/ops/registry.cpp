#include "ops/registry.hpp"

namespace cppmega {

std::vector<OpListing> list_ops() {
  std::vector<OpListing> out;
  for (auto& l : fp8::listings()) out.push_back(std::move(l));
  for (auto& l : topk_op::listings()) out.push_back(std::move(l));
  for (auto& l : fp8_blocks::listings()) out.push_back(std::move(l));
  for (auto& l : gemv_op::listings()) out.push_back(std::move(l));
  return out;
}

}  // namespace cppmega
