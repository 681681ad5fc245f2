#pragma once

#include "actors/agent_placement.hpp"
#include "cluster/membership.hpp"

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace troupe::runtime {
class redis_client;
}

namespace troupe::cluster {

/// The node that weighted rendezvous hashing picks for `agent` among
/// `candidates` (id, weight); "" when there are none. Stable: a node
/// joining or leaving moves only the agents it wins or held.
std::string rendezvous(const std::string& agent,
                       const std::vector<std::pair<std::string, double>>& candidates);

/// Agent placement over the membership view and claims in Redis
/// (`troupe:claim:{agent}` = "node:incarnation"): one activation of an
/// agent in the cluster. A claim held by a node that is not live (dead,
/// fenced, restarted) is taken over with a compare-and-set.
class placement final : public actors::agent_placement {
public:
  /// `is_live(node, incarnation)`: member of the view and not declared dead.
  /// `make_proxy(node, incarnation, agent)`: spawns the local proxy of a
  /// remote agent.
  /// `draining()`: this node takes no new agents.
  placement(std::string redis_url, std::string self_node, uint64_t incarnation,
            bool self_hosts_agents, std::function<bool()> draining,
            std::function<std::shared_ptr<const cluster_view>()> view,
            std::function<bool(const std::string&, uint64_t)> is_live,
            std::function<caf::actor(const std::string& node, uint64_t incarnation,
                                     const std::string& agent)>
                make_proxy);
  ~placement() override;

  decision place(caf::actor_system& sys, const runtime::agent_id& id, bool here_only) override;
  void released(const runtime::agent_id& id) override;

private:
  std::string self_node_;
  std::string self_claim_; // "node:incarnation"
  bool hosts_agents_;
  std::function<bool()> draining_;
  std::function<std::shared_ptr<const cluster_view>()> view_;
  std::function<bool(const std::string&, uint64_t)> is_live_;
  std::function<caf::actor(const std::string&, uint64_t, const std::string&)> make_proxy_;
  std::mutex mutex_;
  std::unique_ptr<runtime::redis_client> redis_;
};

} // namespace troupe::cluster
