// The `/ws` protocol codec: one client text frame, as a WebSocket session
// receives it (docs/protocol.md), then the replies built from it.
#include "runtime/ws_protocol.hpp"
#include "tests/fuzz/fuzz_check.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

using namespace troupe::runtime;
using nlohmann::json;

namespace {

/// What a client reads from an encoded event: it must always be a JSON object.
json read_event(const event_ptr& ev) {
  auto j = json::parse(ev->json, nullptr, false);
  FUZZ_CHECK(j.is_object());
  return j;
}

void check_op(const client_op& op) {
  switch (op.kind) {
  case client_op_kind::spawn:
    FUZZ_CHECK(!op.type.empty());
    FUZZ_CHECK(op.key.find('/') == std::string::npos);
    break;
  case client_op_kind::cancel:
    FUZZ_CHECK(!op.id.empty());
    break;
  case client_op_kind::attach:
    FUZZ_CHECK(!op.agent.empty() || !op.job.empty());
    break;
  default:
    break;
  }
}

/// Two token events of one request merge into one whose text is what the
/// client would have read from both (invalid UTF-8 already replaced).
void check_coalesce(std::string_view a, std::string_view b, const std::string& id) {
  auto token = [&](std::string_view text) {
    agent_event ev;
    ev.kind = event_kind::token;
    ev.agent = "chat/k1";
    ev.id = id;
    ev.text = std::string{text};
    return seal(std::move(ev));
  };
  auto first = token(a);
  auto second = token(b);
  auto merged = coalesce_tokens(first->json, second->json);
  FUZZ_CHECK(merged.has_value());
  auto j = json::parse(*merged, nullptr, false);
  FUZZ_CHECK(j.is_object());
  auto fa = read_event(first);
  auto fb = read_event(second);
  FUZZ_CHECK(j["ev"] == "token" && j["id"] == fa["id"] && j["agent"] == fa["agent"]);
  FUZZ_CHECK(j["text"].get<std::string>() ==
             fa["text"].get<std::string>() + fb["text"].get<std::string>());
  // Frames of other kinds never merge.
  agent_event other;
  other.kind = event_kind::pong;
  other.agent = "chat/k1";
  other.id = id;
  auto pong = seal(std::move(other));
  FUZZ_CHECK(!coalesce_tokens(first->json, pong->json));
  FUZZ_CHECK(!coalesce_tokens(pong->json, first->json));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text{reinterpret_cast<const char*>(data), size};
  auto decoded = decode_client_frame(text);
  std::string id;
  if (auto* op = std::get_if<client_op>(&decoded)) {
    check_op(*op);
    id = op->id;
    read_event(make_done_event(op->id, op->agent, op->text, {}, 1));
  } else {
    auto& err = std::get<protocol_error>(decoded);
    FUZZ_CHECK(!err.message.empty());
    id = err.id;
    auto j = read_event(make_error_event(err.id, err.code, err.message));
    FUZZ_CHECK(j["ev"] == "error" && j["code"] == "bad_request");
  }
  // The frame's bytes as token texts, and as encoded frames a slow
  // connection's queue might hold.
  auto half = text.substr(0, text.size() / 2);
  auto rest = text.substr(text.size() / 2);
  check_coalesce(half, rest, id);
  coalesce_tokens(half, rest);
  coalesce_tokens(text, text);
  return 0;
}
