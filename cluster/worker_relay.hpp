#pragma once

#include <caf/fwd.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace troupe::cluster {

class transport;

/// Spawns the sink of one model call a peer asked of local worker
/// `worker` (frame `infer`, correlation `corr`): it hands the job to the
/// worker and relays tokens, the result or the failure back to `peer`.
/// `(peer_frame_atom, cancel)` aborts the call; `(peer_down_atom)`: the
/// peer is gone, so the call is cancelled. Exits when the call ends.
caf::actor spawn_worker_relay(caf::actor_system& sys, std::shared_ptr<transport> net,
                              caf::actor router, std::string peer, uint64_t corr,
                              std::string worker, std::string payload);

} // namespace troupe::cluster
