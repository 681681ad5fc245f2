#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace troupe::runtime {

/// One complete tool call the model asked for. `arguments` is JSON text, as
/// OpenAI sends it; tools parse it themselves so a malformed one becomes a
/// tool error rather than a protocol failure.
struct tool_call {
  std::string id;
  std::string name;
  std::string arguments;
};

/// One message of a conversation in OpenAI chat form.
struct chat_message {
  std::string role; // system | user | assistant | tool
  std::string content;
  std::vector<tool_call> tool_calls; // assistant only
  std::string tool_call_id;          // tool only
  std::string name;                  // tool only
};

/// A function the model may call; `parameters_json` is a JSON Schema.
struct tool_spec {
  std::string name;
  std::string description;
  /// A JSON Schema as JSON text; must be valid JSON (it is copied into
  /// requests as is). Empty = any object.
  std::string parameters_json;
};

/// Most tokens one model call is believed to report; the decoders read a
/// larger or negative count as 0, so totals of many calls cannot overflow.
inline constexpr int64_t max_reported_tokens = int64_t{1} << 40;

struct usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t total_tokens() const { return prompt_tokens + completion_tokens; }
  usage& operator+=(const usage& other) {
    prompt_tokens += other.prompt_tokens;
    completion_tokens += other.completion_tokens;
    return *this;
  }
};

/// What an agent asks the inference layer for.
struct chat_request {
  std::string model;
  std::vector<chat_message> messages;
  std::vector<tool_spec> tools;
  double temperature = 0.7;
  int64_t max_tokens = 0; // 0 = backend default
  /// Routing hints: session affinity and accelerator preference.
  std::string affinity_key;
  std::vector<std::string> prefer;
  /// An identical request may get the same answer (the agent type's
  /// `response_cache`): the router shares and caches it. Not sent anywhere.
  bool cacheable = false;
};

/// The end of one model call: the full text, tool calls and usage.
struct chat_result {
  std::string content;
  std::vector<tool_call> tool_calls;
  usage tokens;
  std::string finish_reason;
};

/// A fragment of a streamed tool call, keyed by its index in the choice.
struct tool_call_fragment {
  int index = 0;
  std::string id;
  std::string name;
  std::string arguments;
};

/// One parsed chunk of an OpenAI streaming response.
struct chat_chunk {
  std::string content;
  std::vector<tool_call_fragment> tool_calls;
  std::string finish_reason;
  bool has_usage = false;
  usage tokens;
};

} // namespace troupe::runtime
