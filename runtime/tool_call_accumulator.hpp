#pragma once

#include "runtime/llm.hpp"

#include <map>
#include <vector>

namespace troupe::runtime {

/// Joins streamed tool-call fragments into whole calls. OpenAI sends the id
/// and name in the first fragment of each index and the arguments in pieces.
class tool_call_accumulator {
public:
  void add(const tool_call_fragment& frag);

  bool empty() const { return calls_.empty(); }

  /// The calls in index order. Calls without a name are dropped; a missing
  /// id is synthesised so the tool result can still refer to the call.
  std::vector<tool_call> take();

private:
  std::map<int, tool_call> calls_;
};

} // namespace troupe::runtime
