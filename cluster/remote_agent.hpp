#pragma once

#include <caf/fwd.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace troupe::cluster {

class transport;

/// Spawns the local stand-in for agent `agent` active on incarnation
/// `incarnation` of peer `node`. It
/// speaks the agent protocol (send, ask, subscribe, unsub, cancel; `kill`
/// from the directory), forwards it over the transport and fans the
/// agent's events out to local requesters and subscribers. It registers
/// with `hub`, which routes the peer's replies to it. It exits when the
/// remote activation ends (`agent_down`) or the node dies, so the sessions
/// watching it look the agent up again.
caf::actor spawn_remote_agent(caf::actor_system& sys, std::shared_ptr<transport> net,
                              caf::actor hub, std::string node, uint64_t incarnation,
                              std::string agent);

} // namespace troupe::cluster
