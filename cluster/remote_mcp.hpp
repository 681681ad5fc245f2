#pragma once

#include <caf/fwd.hpp>

#include <memory>
#include <string>

namespace troupe::cluster {

class transport;

/// Spawns the local stand-in for MCP server `server` on peer `node`. It
/// speaks the MCP client protocol (`(tool_atom, tool, arguments, key)` ->
/// `tool_outcome`, `(cancel_atom, key)`) over the transport, so agents call
/// a peer's tools as they call their own node's. `(peer_down_atom)`: the
/// node is gone; open calls end as tool errors and the proxy exits.
caf::actor spawn_remote_mcp(caf::actor_system& sys, std::shared_ptr<transport> net,
                            std::string node, std::string server);

} // namespace troupe::cluster
