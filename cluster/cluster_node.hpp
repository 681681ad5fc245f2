#pragma once

#include "actors/cluster_hooks.hpp"
#include "runtime/config.hpp"

#include <nlohmann/json_fwd.hpp>

#include <functional>
#include <memory>

namespace troupe::cluster {

/// Everything that makes a node a cluster member: the membership table,
/// the ZeroMQ transport, the hub actor and agent placement. The node's main
/// creates it from the config (before the actors, so a bad cluster config
/// stops the node at once) and hands it to `node_runtime` as its hooks.
class cluster_node final : public actors::cluster_hooks {
public:
  /// Registers in the membership table and binds the transport. Redis
  /// unreachable -> `runtime::redis_error`; bind failure -> `std::runtime_error`.
  explicit cluster_node(const runtime::node_config& cfg);
  ~cluster_node() override;

  std::shared_ptr<actors::agent_placement> start(caf::actor_system& sys, caf::actor router,
                                                 actors::restart_policy policy,
                                                 std::shared_ptr<actors::supervision_status> status,
                                                 std::shared_ptr<actors::mcp_catalog> mcp) override;
  void attach(caf::actor directory) override;
  void stop() override;
  bool crash(const std::string& part) override;

  /// `GET /api/cluster`: this node and every live member with its roles,
  /// workers and their load as of the last heartbeat. Any thread.
  nlohmann::json describe() const;

  /// Called once (membership thread) when `troupe ctl drain` asks this node
  /// to drain. Set before `start`.
  void on_drain(std::function<void()> f);
  /// Publishes that this node drains: peers stop placing work on it and
  /// local placement sends new agents elsewhere.
  void set_draining();
  /// `POST /api/cluster/nodes/{id}/drain`: asks member `node` to drain.
  /// False when it is not a member; `runtime::redis_error` when Redis is
  /// unreachable. Blocks on one Redis round trip.
  bool request_drain(const std::string& node) const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace troupe::cluster
