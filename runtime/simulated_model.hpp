#pragma once

#include "runtime/llm.hpp"

#include <string>
#include <vector>

namespace troupe::runtime {

/// What the simulated model answers to a request: either text, streamed as
/// `tokens`, or tool calls. Deterministic: the same request gives the same
/// plan, so tests can assert exact output.
struct simulated_plan {
  std::vector<std::string> tokens;
  std::vector<tool_call> tool_calls;
  usage tokens_used;
  std::string finish_reason; // stop | tool_calls
};

/// The simulator's rules, applied to the last message:
///  - a tool result -> an answer quoting it ("The result is 42.");
///  - "use TOOL {json}" with TOOL offered -> a call to it with those arguments;
///  - "what did I say first" -> quotes the conversation's first user message;
///  - "count to N" -> the numbers 1..N, one token each;
///  - "ask TYPE/KEY: TEXT" with the `agent` tool -> a call to that agent;
///  - "what time ..." with the `clock` tool -> a clock call;
///  - arithmetic such as "2+3*4" with the `calculator` tool -> a calculator call;
///  - anything else -> "You said: TEXT".
/// Tools are only called when the request offers them.
simulated_plan plan_simulated_response(const chat_request& req);

/// Splits text into word-sized tokens, each keeping its leading space.
std::vector<std::string> split_tokens(const std::string& text);

} // namespace troupe::runtime
