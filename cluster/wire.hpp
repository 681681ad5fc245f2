#pragma once

#include "runtime/errc.hpp"
#include "runtime/llm.hpp"
#include "runtime/ws_protocol.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

/// The node-to-node wire schema, the one place it is defined (versioned).
///
/// A ZeroMQ message between nodes is one frame on the DEALER side: the
/// envelope, then the payload, back to back (the ROUTER adds the routing id
/// in front; version 1 sent them as two frames, which cost ZeroMQ a second
/// message each). Both are MessagePack (nlohmann); the envelope is
/// self-delimiting, the payload is the rest. The envelope is an array
///   [version, type, source node, source incarnation, target, correlation]
/// and the payload a map whose fields depend on `type` (below). A node
/// drops, counts and logs (once per peer) any frame with another version, a
/// malformed envelope, or a source that is not a live member.
namespace troupe::cluster {

inline constexpr uint64_t protocol_version = 2;

enum class msg_type : uint8_t {
  // liveness (handled by the transport's I/O thread, payload empty)
  ping = 1,
  pong = 2,
  bye = 3, // the sender leaves the cluster on purpose
  // inference: target = worker id on the receiving node, corr = call id
  infer = 10,     // {request, job}
  infer_ok = 11,  // {worker}
  infer_err = 12, // {failure}
  token = 13,     // {text}
  done = 14,      // {result}
  fail = 15,      // {failure, started, worker}
  cancel = 16,    // {}
  // agents: target = agent id "type/key"
  agent_send = 20,   // {id, text}
  agent_sub = 21,    // {}
  agent_unsub = 22,  // {}
  agent_cancel = 23, // {id}
  agent_ask = 24,    // {text, caller, request_id}, corr = ask id
  agent_answer = 25, // {agent, answer, usage, steps} or {failure}, corr = ask id
  agent_event = 26,  // {kind, id, json}
  agent_down = 27,   // {failure}: the activation is gone; look it up again
  agent_kill = 28,   // {}
  agent_open = 29,   // {}: activate it on the receiver (sent when a proxy starts)
  // MCP tool servers: target = the server's name on the receiving node
  mcp_list = 30,   // {}: send me this server's tools
  mcp_tools = 31,  // {version, timeout_ms, tools: [{name, exposed, description, schema}]}
  mcp_call = 32,   // {tool, arguments, key}, corr = call id
  mcp_result = 33, // {result, is_error}, corr = call id
  mcp_cancel = 34, // {key}: the caller's turn ended
};

const char* to_string(msg_type t);

struct envelope {
  uint64_t version = protocol_version;
  msg_type type = msg_type::ping;
  std::string source;
  uint64_t incarnation = 0;
  std::string target;
  uint64_t corr = 0;
};

std::string encode_envelope(const envelope& env);

/// Why a frame was dropped, for the metric label and the log line.
enum class decode_error { malformed, version };

/// The envelope, or why it cannot be used.
std::variant<envelope, decode_error> decode_envelope(std::string_view bytes);

/// A frame as it travels: the envelope, then the payload's bytes.
struct frame_view {
  envelope env;
  std::string_view payload; // into the decoded bytes
};

/// A frame's envelope and payload, or why it cannot be used.
std::variant<frame_view, decode_error> decode_frame(std::string_view bytes);

std::string encode_payload(const nlohmann::json& payload);
/// Nothing when the bytes are not a MessagePack map.
std::optional<nlohmann::json> decode_payload(std::string_view bytes);

// -- payload helpers ----------------------------------------------------------

nlohmann::json to_json(const runtime::chat_request& req);
runtime::chat_request chat_request_from(const nlohmann::json& j);
nlohmann::json to_json(const runtime::chat_result& r);
runtime::chat_result chat_result_from(const nlohmann::json& j);
nlohmann::json to_json(const runtime::failure& f);
runtime::failure failure_from(const nlohmann::json& j);
/// Events cross nodes already encoded: the receiver forwards `json` as is.
nlohmann::json to_json(const runtime::agent_event& ev);
runtime::event_ptr event_from(const nlohmann::json& j, const std::string& agent);

} // namespace troupe::cluster
