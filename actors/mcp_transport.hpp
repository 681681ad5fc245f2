#pragma once

#include "runtime/config.hpp"

#include <functional>
#include <memory>
#include <string>

namespace troupe::actors {

class io_threads;

/// Where a transport reports. Called on I/O threads; must not block.
struct mcp_transport_events {
  /// One JSON-RPC message from the server (response, request or
  /// notification), as text.
  std::function<void(std::string message)> on_message;
  /// The connection is gone for good (process exited, session expired,
  /// server unreachable, protocol broken). Called at most once; nothing
  /// arrives after it.
  std::function<void(std::string reason)> on_closed;
  /// A line the server wrote to stderr (stdio only), for the log.
  std::function<void(std::string line)> on_stderr;
};

/// How an MCP client reaches one server: a child process speaking
/// newline-delimited JSON-RPC on stdin/stdout, or Streamable HTTP.
/// Thread-safe; owned by the client actor.
class mcp_transport {
public:
  virtual ~mcp_transport() = default;

  /// Spawns or connects. Events go to `ev` from now until `close()`.
  virtual void start(mcp_transport_events ev) = 0;

  /// Sends one JSON-RPC message. A message with an `id` always gets an
  /// answer through `on_message` (the server's, or an error the transport
  /// makes when HTTP fails for it) unless the transport closes.
  virtual void send(std::string message) = 0;

  /// The handshake is done with protocol `version`: HTTP sends it as
  /// `MCP-Protocol-Version` from now on and opens its GET stream for
  /// server-initiated messages.
  virtual void initialized(const std::string& version) = 0;

  /// Stops the process (TERM, then KILL) or ends the HTTP session. Idempotent;
  /// no event is delivered after it returns.
  virtual void close() = 0;

  /// "stdio node server.js" or "http http://host:port/mcp", for logs.
  virtual std::string describe() const = 0;
};

/// Longest single JSON-RPC message accepted from a server.
inline constexpr size_t max_mcp_message_bytes = 16 << 20;

std::shared_ptr<mcp_transport> make_mcp_stdio_transport(const runtime::mcp_server_config& cfg,
                                                        io_threads& io);
std::shared_ptr<mcp_transport> make_mcp_http_transport(const runtime::mcp_server_config& cfg,
                                                       io_threads& io);

} // namespace troupe::actors
