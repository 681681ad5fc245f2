#pragma once

#include "actors/supervision.hpp"

#include <caf/fwd.hpp>

#include <memory>
#include <string>

namespace troupe::actors {

class agent_placement;
class mcp_catalog;

/// What a node's actors need from the cluster layer, implemented by
/// `cluster/` and handed to `node_runtime` (none on a single node). Keeps
/// the dependency one way: actors/ never includes cluster/.
class cluster_hooks {
public:
  virtual ~cluster_hooks() = default;
  /// Once the router exists, before any agent: spawns the cluster's actors
  /// (remote workers register with `router`). Returns the agent placement.
  /// The cluster's actors run under a supervisor with `policy`, reporting
  /// to `status` like the node's other subtrees.
  /// `mcp`: the node's MCP catalog; the cluster adds the servers peers run
  /// and serves peers' calls of this node's servers.
  virtual std::shared_ptr<agent_placement> start(caf::actor_system& sys, caf::actor router,
                                                 restart_policy policy,
                                                 std::shared_ptr<supervision_status> status,
                                                 std::shared_ptr<mcp_catalog> mcp) = 0;
  /// The agent directory, once spawned: peers' agent requests go to it.
  virtual void attach(caf::actor directory) = 0;
  /// Node shutdown, after the agents stopped: leave the cluster.
  virtual void stop() = 0;
  /// Fault injection: crashes the cluster part `part` ("hub"); false if none.
  virtual bool crash(const std::string& part) = 0;
};

} // namespace troupe::actors
