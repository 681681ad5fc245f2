#pragma once

#include "runtime/errc.hpp"
#include "runtime/ids.hpp"

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <variant>

namespace troupe::actors {

/// Where agents live when the node is part of a cluster (implemented by
/// `cluster/`; absent on a single node). Called by the agent directory on
/// its own thread; a call may block briefly on the membership store.
class agent_placement {
public:
  /// This node holds the agent's claim: activate it here.
  struct here {};
  /// The agent lives on `node`; `proxy` stands for it locally and behaves
  /// as an agent activation does (send, ask, subscribe, cancel, kill). It
  /// exits when the remote activation ends or its node dies.
  struct remote {
    caf::actor proxy;
    std::string node;
  };
  using decision = std::variant<here, remote, runtime::failure>;

  virtual ~agent_placement() = default;

  /// Places `id`: the live node holding its claim, else the winner of
  /// weighted rendezvous hashing over live agent nodes, which claims it
  /// atomically. `here_only`: claim it for this node or fail (a peer asked
  /// this node to host it).
  virtual decision place(caf::actor_system& sys, const runtime::agent_id& id, bool here_only) = 0;

  /// The local activation of `id` ended: give up its claim.
  virtual void released(const runtime::agent_id& id) = 0;
};

} // namespace troupe::actors
