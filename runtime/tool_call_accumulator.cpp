#include "runtime/tool_call_accumulator.hpp"

namespace troupe::runtime {

void tool_call_accumulator::add(const tool_call_fragment& frag) {
  auto& call = calls_[frag.index];
  if (!frag.id.empty()) call.id = frag.id;
  if (!frag.name.empty()) call.name += frag.name;
  call.arguments += frag.arguments;
}

std::vector<tool_call> tool_call_accumulator::take() {
  std::vector<tool_call> out;
  for (auto& [index, call] : calls_) {
    if (call.name.empty()) continue;
    if (call.id.empty()) call.id = "call_" + std::to_string(index);
    if (call.arguments.empty()) call.arguments = "{}";
    out.push_back(std::move(call));
  }
  calls_.clear();
  return out;
}

} // namespace troupe::runtime
