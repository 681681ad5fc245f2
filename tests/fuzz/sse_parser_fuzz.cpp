// The SSE parser and what the OpenAI backend does with each event: a
// model server's streaming response body, as bytes from the socket.
#include "runtime/openai_codec.hpp"
#include "runtime/sse_parser.hpp"
#include "runtime/tool_call_accumulator.hpp"
#include "tests/fuzz/fuzz_check.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

using namespace troupe::runtime;

namespace {

struct parsed {
  std::vector<sse_event> events;
  bool overflowed = false;
};

/// Feeds `body` in pieces of `piece` bytes (0 = at once).
parsed parse(std::string_view body, size_t piece, size_t max_line) {
  parsed out;
  sse_parser p{[&](sse_event&& ev) { out.events.push_back(std::move(ev)); }, max_line};
  if (piece == 0) {
    p.feed(body);
  } else {
    for (size_t i = 0; i < body.size(); i += piece)
      if (!p.feed(body.substr(i, piece))) break;
  }
  out.overflowed = p.overflowed();
  return out;
}

bool same(const parsed& a, const parsed& b) {
  if (a.overflowed != b.overflowed || a.events.size() != b.events.size()) return false;
  for (size_t i = 0; i < a.events.size(); ++i)
    if (a.events[i].event != b.events[i].event || a.events[i].data != b.events[i].data ||
        a.events[i].id != b.events[i].id)
      return false;
  return true;
}

/// The OpenAI backend's `on_event`: chunks until `[DONE]` or an error.
void consume(const std::vector<sse_event>& events) {
  tool_call_accumulator calls;
  usage tokens;
  std::string content;
  for (auto& ev : events) {
    if (ev.data == "[DONE]") break;
    std::string err;
    auto chunk = decode_chat_chunk(ev.data, err);
    if (!chunk) {
      FUZZ_CHECK(!err.empty());
      return;
    }
    if (chunk->has_usage) tokens = chunk->tokens;
    for (auto& f : chunk->tool_calls)
      calls.add(f);
    content += chunk->content;
  }
  for (auto& c : calls.take())
    FUZZ_CHECK(!c.name.empty() && !c.id.empty() && !c.arguments.empty());
  // The turn reports usage totals to the client (done event, REST, MCP).
  usage_to_json(tokens);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body{reinterpret_cast<const char*>(data), size};
  // Bytes arrive split anywhere: every split gives the same events. The
  // piece size comes from the input so the fuzzer explores it too.
  size_t piece = size == 0 ? 1 : 1 + data[size - 1] % 13;
  auto whole = parse(body, 0, 4 * 1024 * 1024);
  FUZZ_CHECK(!whole.overflowed);
  FUZZ_CHECK(same(whole, parse(body, piece, 4 * 1024 * 1024)));
  // A small line limit: the same cut-off whatever the split.
  FUZZ_CHECK(same(parse(body, 0, 64), parse(body, piece, 64)));
  consume(whole.events);
  return 0;
}
