#pragma once

#include "actors/worker_status.hpp"

#include <caf/fwd.hpp>

#include <memory>

namespace troupe::cluster {

class transport;

/// Spawns the local stand-in for worker `status.info` on peer
/// `status.info.node`. It registers with `router` as worker
/// "node/id" and speaks the worker protocol (`infer_job` in, tokens and the
/// result to the job's sink, `cancel` from the sink) over the transport.
/// `(load_atom, worker_status)` from the hub updates the load it reports.
/// `(peer_down_atom)`: the node is gone; every open call fails with
/// `backend_unavailable` (a call without a token yet is retried elsewhere
/// by its agent) and the proxy exits, so monitors fire.
caf::actor spawn_remote_worker(caf::actor_system& sys, std::shared_ptr<transport> net,
                               caf::actor router, actors::worker_status status);

} // namespace troupe::cluster
