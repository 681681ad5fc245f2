// MCP's JSON-RPC decoding on the server side: one POST body to the
// gateway's `/mcp` (`mcp_endpoint::handle`, then `mcp_server::dispatch`, the
// same dispatch `troupe mcp` uses on stdio), over a stub runtime whose
// turns end at once (mcp_stub_runtime.cpp).
#include "actors/io_threads.hpp"
#include "actors/node_runtime.hpp"
#include "nodes/mcp_endpoint.hpp"
#include "runtime/log.hpp"
#include "tests/fuzz/fuzz_check.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

using namespace troupe;
using nlohmann::json;

namespace {

/// Records how a request was answered.
class recording_exchange : public gateway::http_exchange {
public:
  void reply(gateway::http_response res) override {
    ++replies;
    last = std::move(res);
  }
  void start_stream(int status, std::string content_type) override {
    FUZZ_CHECK(!streaming && replies == 0);
    streaming = true;
    last.status = status;
    last.content_type = std::move(content_type);
  }
  void write_chunk(std::shared_ptr<const std::string> data) override {
    FUZZ_CHECK(streaming && !ended);
    chunks.push_back(*data);
  }
  void end_stream() override {
    FUZZ_CHECK(streaming && !ended);
    ended = true;
  }
  bool is_upgrade() const override { return false; }
  void upgrade(std::shared_ptr<gateway::ws_handler>) override { FUZZ_CHECK(false); }
  bool client_gone() const override { return false; }

  int replies = 0;
  bool streaming = false;
  bool ended = false;
  gateway::http_response last;
  std::vector<std::string> chunks;
};

gateway::http_request post(std::string body, const std::string& session) {
  gateway::http_request req;
  req.method = "POST";
  req.target = req.path = "/mcp";
  req.headers["accept"] = "application/json, text/event-stream";
  req.headers["content-type"] = "application/json";
  req.headers["mcp-protocol-version"] = "2025-06-18";
  if (!session.empty()) req.headers["mcp-session-id"] = session;
  req.body = std::move(body);
  return req;
}

/// A JSON-RPC response as a client reads it.
void check_response(const std::string& text) {
  auto j = json::parse(text, nullptr, false);
  FUZZ_CHECK(j.is_object() && j.value("jsonrpc", json{}) == "2.0");
  FUZZ_CHECK(j.contains("id") && (j.contains("result") != j.contains("error")));
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  runtime::log::set_level(runtime::log::level::error);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static actors::io_threads io{0};
  static actors::node_runtime rt{runtime::node_config{}, nullptr, nullptr, io};
  // A fresh endpoint and session per input, so an input alone reproduces.
  gateway::mcp_endpoint endpoint{rt};
  auto init = std::make_shared<recording_exchange>();
  endpoint.handle(post(R"({"jsonrpc":"2.0","id":0,"method":"initialize","params":{}})", ""), init);
  FUZZ_CHECK(init->replies == 1 && init->last.status == 200);
  std::string session;
  for (auto& [name, value] : init->last.headers)
    if (name == "Mcp-Session-Id") session = value;
  FUZZ_CHECK(!session.empty());

  auto ex = std::make_shared<recording_exchange>();
  endpoint.handle(post(std::string{reinterpret_cast<const char*>(data), size}, session), ex);
  // Answered exactly once: one reply, or one stream that ended with the
  // response (the stub's turns end at once).
  if (ex->streaming) {
    FUZZ_CHECK(ex->replies == 0 && ex->ended && !ex->chunks.empty());
    for (auto& chunk : ex->chunks) {
      FUZZ_CHECK(chunk.rfind("event: message\ndata: ", 0) == 0);
      auto data_line = chunk.substr(21, chunk.find('\n', 21) - 21);
      FUZZ_CHECK(json::parse(data_line, nullptr, false).is_object());
    }
    check_response(ex->chunks.back().substr(21, ex->chunks.back().find('\n', 21) - 21));
    return 0;
  }
  FUZZ_CHECK(ex->replies == 1);
  if (!ex->last.body.empty()) check_response(ex->last.body);
  return 0;
}
