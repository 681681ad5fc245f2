#include "nodes/mcp_stdio.hpp"
#include "nodes/mcp_server.hpp"
#include "runtime/log.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <mutex>
#include <poll.h>
#include <string>
#include <unistd.h>

namespace troupe::gateway {

using nlohmann::json;

struct mcp_stdio::impl {
  explicit impl(actors::node_runtime& rt) : server(rt) {}

  mcp_server server;
  std::mutex out_mutex;
  std::atomic<bool> stopping{false};

  void write(const json& msg) {
    auto line = msg.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    std::lock_guard<std::mutex> guard{out_mutex};
    if (stopping) return;
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
  }
};

namespace {

void handle(const std::shared_ptr<mcp_stdio::impl>& im, const std::string& line) {
  if (line.find_first_not_of(" \t\r") == std::string::npos) return;
  auto msg = json::parse(line, nullptr, false);
  if (msg.is_discarded()) return im->write(mcp_server::error(nullptr, -32700, "line is not JSON"));
  if (!msg.is_object() || msg.value("jsonrpc", json{}) != "2.0")
    return im->write(mcp_server::error(nullptr, -32600, "not a JSON-RPC 2.0 message"));
  if (!msg.contains("method") || !msg["method"].is_string() || !msg.contains("id"))
    return; // notifications and responses need no answer
  // The reply may come after we are gone: it holds the state, not us.
  im->server.dispatch(
      msg, [im](json reply) { im->write(reply); }, [im](json note) { im->write(note); });
}

} // namespace

mcp_stdio::mcp_stdio(actors::node_runtime& rt, std::function<void()> on_eof)
    : impl_(std::make_shared<impl>(rt)) {
  reader_ = std::thread([im = impl_, on_eof = std::move(on_eof)] {
    std::string buf;
    char chunk[65536];
    while (!im->stopping) {
      // Poll with a timeout, so the destructor can stop us without a byte.
      pollfd pfd{0, POLLIN, 0};
      if (::poll(&pfd, 1, 200) <= 0) continue;
      auto n = ::read(0, chunk, sizeof chunk);
      if (n <= 0) break; // EOF: the host is gone
      buf.append(chunk, static_cast<size_t>(n));
      for (auto nl = buf.find('\n'); nl != std::string::npos; nl = buf.find('\n')) {
        handle(im, buf.substr(0, nl));
        buf.erase(0, nl + 1);
      }
      if (buf.size() > (64u << 20)) { // no newline in 64 MiB: not a client we can serve
        im->write(mcp_server::error(nullptr, -32600, "message too large"));
        break;
      }
    }
    if (!im->stopping) {
      runtime::log::info("mcp", "stdin_closed");
      on_eof();
    }
  });
}

mcp_stdio::~mcp_stdio() {
  {
    std::lock_guard<std::mutex> guard{impl_->out_mutex};
    impl_->stopping = true;
  }
  if (reader_.joinable()) reader_.join();
}

} // namespace troupe::gateway
