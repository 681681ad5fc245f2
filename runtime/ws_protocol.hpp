#pragma once

#include "runtime/errc.hpp"
#include "runtime/llm.hpp"

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace troupe::runtime {

// -- client -> server ---------------------------------------------------------

enum class client_op_kind { spawn, send, cancel, attach, detach, kill, list, ping };

/// One decoded client frame of the `/ws` protocol (docs/protocol.md).
struct client_op {
  client_op_kind kind = client_op_kind::ping;
  std::string id;    // client's request id, echoed on replies
  std::string type;  // spawn
  std::string key;   // spawn (optional)
  std::string agent; // send, attach, detach, kill: "type/key"
  std::string text;  // send
  std::string job;   // attach: an async job instead of an agent
};

/// A frame that could not be decoded; `id` is set when the frame had one.
struct protocol_error {
  errc code = errc::bad_request;
  std::string message;
  std::string id;
};

std::variant<client_op, protocol_error> decode_client_frame(std::string_view text);

// -- server -> client ---------------------------------------------------------

enum class event_kind {
  spawned,
  token,
  tool_call,
  tool_result,
  done,
  error,
  attached,
  detached,
  killed,
  agents,
  pong,
};

/// One server event. Built by its producer, encoded to JSON once by
/// `seal()`, then shared immutable by every subscriber that writes it.
struct agent_event {
  event_kind kind = event_kind::token;
  std::string agent;
  std::string id;
  std::string node;
  std::string text;                    // token
  std::string name;                    // tool_call, tool_result
  std::string arguments;               // tool_call: JSON text
  std::string result;                  // tool_result: text or JSON text
  bool is_error = false;               // tool_result
  std::string answer;                  // done
  usage tokens;                        // done
  int64_t steps = 0;                   // done
  errc code = errc::success;           // error
  std::string message;                 // error
  std::vector<std::string> agent_list; // agents
  std::string json;                    // the encoded frame, set by seal()
};

using event_ptr = std::shared_ptr<const agent_event>;

/// Encodes `ev` into `ev.json` and freezes it.
event_ptr seal(agent_event ev);

/// Two encoded `token` events of the same agent and request as one (their
/// texts joined), or nothing if they are not that. Works on the encoded
/// frames, so a connection whose writes fall behind can merge what waits
/// without decoding it.
std::optional<std::string> coalesce_tokens(std::string_view first, std::string_view second);

/// The `done` event of request `id`.
event_ptr make_done_event(std::string id, std::string agent, std::string answer,
                          const usage& tokens, int64_t steps);

/// Convenience for the common error event.
event_ptr make_error_event(std::string id, errc code, std::string message, std::string agent = {});

} // namespace troupe::runtime
