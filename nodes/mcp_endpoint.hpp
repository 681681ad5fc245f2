#pragma once

#include "nodes/http_server.hpp"
#include "runtime/key_quotas.hpp"
#include "runtime/principal.hpp"

#include <memory>

namespace troupe::actors {
class node_runtime;
}

namespace troupe::gateway {

/// The gateway's `/mcp` endpoint: MCP over Streamable HTTP (protocol
/// 2025-06-18; 2025-03-26 and 2025-11-25 accepted), offering every agent
/// type as a tool. `tools/call` with `{message, key?}` runs one turn of that
/// agent and returns its answer as text content; a failed turn is
/// `isError: true`; an unknown tool or bad arguments a JSON-RPC error.
///
/// Sessions: `initialize` creates one (`Mcp-Session-Id`); later requests
/// must carry it (400 without, 404 for an unknown one); `DELETE` ends it.
/// A request with an `Origin` that is not this host or a loopback address is
/// refused with 403 (DNS rebinding); an unsupported `MCP-Protocol-Version`
/// with 400. Notifications and responses are accepted with 202. Replies are
/// `application/json`, except a `tools/call` with a `progressToken`, which
/// streams progress as SSE; this endpoint opens no server-initiated stream
/// (`GET` is 405). Thread-safe: handlers run on the gateway's I/O threads.
class mcp_endpoint {
public:
  explicit mcp_endpoint(actors::node_runtime& rt);
  ~mcp_endpoint();

  /// Serves one request for `who`: agent tools run as its turns. With
  /// `quotas` (API keys), a `tools/call` holds one of the key's turn slots
  /// until it is answered; without a free one it gets HTTP 429 and a
  /// JSON-RPC error (-32000) naming `limits.per_key.max_turns`.
  void handle(const http_request& req, std::shared_ptr<http_exchange> ex,
              const runtime::principal& who = {},
              const std::shared_ptr<runtime::key_quotas>& quotas = nullptr);

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace troupe::gateway
