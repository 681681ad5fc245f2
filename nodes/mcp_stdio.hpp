#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <thread>

namespace troupe::actors {
class node_runtime;
}

namespace troupe::gateway {

/// `troupe mcp`: MCP over stdio for desktop hosts. Reads newline-delimited
/// JSON-RPC from stdin on its own thread, answers on stdout (one message
/// per line; logs stay on stderr) with the same methods as `/mcp`. When
/// stdin closes it calls `on_eof` (the node then stops). Destroying it stops
/// the reader.
class mcp_stdio {
public:
  mcp_stdio(actors::node_runtime& rt, std::function<void()> on_eof);
  ~mcp_stdio();
  mcp_stdio(const mcp_stdio&) = delete;
  mcp_stdio& operator=(const mcp_stdio&) = delete;

  struct impl;

private:
  std::shared_ptr<impl> impl_; // shared with replies still in flight
  std::thread reader_;
};

} // namespace troupe::gateway
