// The cluster's wire codecs: one ZeroMQ frame from a peer, read as the
// transport reads it (envelope, then payload), as a bare envelope and as a
// payload, and the payload helpers the receivers use.
#include "cluster/wire.hpp"
#include "tests/fuzz/fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

using namespace troupe;
using namespace troupe::cluster;
using nlohmann::json;

namespace {

bool operator==(const envelope& a, const envelope& b) {
  return a.version == b.version && a.type == b.type && a.source == b.source &&
         a.incarnation == b.incarnation && a.target == b.target && a.corr == b.corr;
}

void check_envelope(std::string_view bytes) {
  auto decoded = decode_envelope(bytes);
  auto* env = std::get_if<envelope>(&decoded);
  if (!env) return;
  FUZZ_CHECK(env->version == protocol_version && !env->source.empty());
  FUZZ_CHECK(std::string_view{to_string(env->type)} != "unknown");
  // Re-encoded, it decodes to the same envelope (the encoder writes the
  // smallest forms, so the bytes may differ from a peer's).
  auto again = decode_envelope(encode_envelope(*env));
  auto* env2 = std::get_if<envelope>(&again);
  FUZZ_CHECK(env2 && *env2 == *env);
}

void check_payload(std::string_view bytes);

void check_frame(std::string_view bytes) {
  auto decoded = decode_frame(bytes);
  auto* f = std::get_if<frame_view>(&decoded);
  if (!f) return;
  // The payload is what follows the envelope, within the frame.
  FUZZ_CHECK(f->payload.data() >= bytes.data() &&
             f->payload.data() + f->payload.size() == bytes.data() + bytes.size());
  auto reencoded = encode_envelope(f->env) + std::string{f->payload};
  auto again = decode_frame(reencoded); // views into `reencoded`
  auto* f2 = std::get_if<frame_view>(&again);
  FUZZ_CHECK(f2 && f2->env == f->env && f2->payload == f->payload);
  check_payload(f->payload);
}

void check_payload(std::string_view bytes) {
  auto body = decode_payload(bytes);
  if (!body) return;
  FUZZ_CHECK(body->is_object());
  // Every reader tolerates any shape: fields as the receivers pick them.
  auto field = [&](const char* key) {
    auto it = body->find(key);
    return it == body->end() ? json::object() : *it;
  };
  auto req = chat_request_from(field("request"));
  chat_request_from(*body);
  auto res = chat_result_from(field("result"));
  chat_result_from(*body);
  res.tokens.total_tokens(); // what the turn reports, summed over its steps
  failure_from(field("failure"));
  failure_from(*body);
  event_from(*body, "chat/k1");
  // What was read survives the trip to the next node.
  auto req2 = chat_request_from(decode_payload(encode_payload(to_json(req))).value());
  FUZZ_CHECK(req2.model == req.model && req2.messages.size() == req.messages.size() &&
             req2.tools.size() == req.tools.size() && req2.prefer == req.prefer);
  auto res2 = chat_result_from(decode_payload(encode_payload(to_json(res))).value());
  FUZZ_CHECK(res2.content == res.content && res2.tool_calls.size() == res.tool_calls.size() &&
             res2.tokens.prompt_tokens == res.tokens.prompt_tokens);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes{reinterpret_cast<const char*>(data), size};
  check_frame(bytes);
  check_envelope(bytes);
  check_payload(bytes);
  return 0;
}
