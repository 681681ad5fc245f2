#pragma once

#include <caf/fwd.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "actors/worker_status.hpp"

namespace troupe::actors {
class mcp_catalog;
}

namespace troupe::cluster {

class transport;

/// Called every heartbeat with this node's local workers, active agents and
/// the versions of its MCP servers' tool lists.
using publish_fn = std::function<void(std::vector<actors::worker_status>, int64_t agents,
                                      std::map<std::string, uint64_t> mcp)>;

/// Spawns the node's cluster hub. It routes every frame from a peer to the
/// actor it is for (spawning relays for new requests), keeps one proxy per
/// remote worker registered with `router` and fed with the load each node
/// publishes, and when a peer dies tells every proxy and relay of that node
/// (`peer_down_atom`), so watchers get their down messages.
///
/// Protocol: `(peer_frame_atom, peer_frame)` from the transport,
/// `(view_atom, view_ptr)` from membership, `(peer_down_atom, node)`,
/// `(register_atom, node, agent)` from a new agent proxy,
/// `(register_atom, directory)` once the directory exists. `mcp`: the
/// node's MCP catalog; the hub adds the servers peers run (one proxy per
/// peer and server) and serves peers' calls of its own servers.
/// `backlog`: frames handed to the hub and not yet routed; the hub counts
/// each one down (the transport's credit). `directory`: the agent directory
/// when it already exists (a restarted hub). Every proxy and relay watches
/// the hub (`watch_atom`) and ends with it; a restarted hub builds them anew
/// from the next membership view.
caf::actor spawn_hub(caf::actor_system& sys, std::string self_node, std::shared_ptr<transport> net,
                     caf::actor router, publish_fn publish, std::chrono::milliseconds heartbeat,
                     std::shared_ptr<std::atomic<int64_t>> backlog, caf::actor directory,
                     std::shared_ptr<actors::mcp_catalog> mcp);

} // namespace troupe::cluster
