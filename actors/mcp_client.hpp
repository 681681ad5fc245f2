#pragma once

#include "runtime/config.hpp"

#include <caf/fwd.hpp>

#include <memory>

namespace troupe::actors {

class io_threads;
class mcp_catalog;

/// Spawns the client of one configured MCP server (stdio or Streamable
/// HTTP). It starts the server or connects, runs `initialize` (protocol
/// 2025-06-18; 2025-11-25 and 2025-03-26 answers are accepted), lists the
/// tools page by page into `catalog` (again on `tools/list_changed`) and
/// pings the server every `ping_interval`.
///
/// Protocol:
///  - `(tool_atom, tool, arguments_json, call_key)` -> `tool_outcome`: a
///    `tools/call` of the server's tool `tool`. Always answered, within
///    `call_timeout`: the server's result (text content joined; `isError`
///    kept) or a tool error the model can read. Calls arriving before the
///    server is ready wait for it (bounded).
///  - `(cancel_atom, call_key)`: the caller's turn ended; the server gets
///    `notifications/cancelled` and the call is answered `cancelled`.
///
/// A server that exits, breaks the protocol, misses a ping or cannot be
/// started makes the client fail every open call with a tool error and stop
/// with an error; its supervisor starts it again, with backoff.
caf::actor spawn_mcp_client(caf::actor_system& sys, runtime::mcp_server_config cfg,
                            std::shared_ptr<mcp_catalog> catalog, io_threads& io);

} // namespace troupe::actors
