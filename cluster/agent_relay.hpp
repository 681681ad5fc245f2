#pragma once

#include <caf/fwd.hpp>

#include <memory>
#include <string>

namespace troupe::cluster {

class transport;

/// Spawns the stand-in, on the node hosting agent `agent`, for the proxy of
/// peer `peer`: it activates the agent here through `directory` (claiming
/// it for this node), then turns the peer's frames into agent messages (it
/// is the requester and, while the peer has subscribers, a subscriber) and
/// the agent's events and answers into frames. When the activation ends it
/// tells the peer (`agent_down`) and exits; `(peer_down_atom)` ends it too.
caf::actor spawn_agent_relay(caf::actor_system& sys, std::shared_ptr<transport> net,
                             caf::actor directory, std::string peer, std::string agent);

} // namespace troupe::cluster
