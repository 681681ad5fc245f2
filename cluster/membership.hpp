#pragma once

#include "actors/worker_status.hpp"
#include "cluster/curve_keys.hpp"
#include "runtime/config.hpp"

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace troupe::runtime {
class redis_client;
}

namespace troupe::cluster {

/// One node as the membership table shows it.
struct member {
  std::string id;
  std::string endpoint;
  uint64_t incarnation = 0;
  std::vector<std::string> roles;
  double weight = 1;
  bool draining = false;
  std::string gateway; // host:port when it has the gateway role
  int64_t active_agents = 0;
  /// Its local workers with the load they had at its last heartbeat.
  std::vector<actors::worker_status> workers;
  /// Its ready MCP servers with the version of their tool lists: peers ask
  /// for a list (`mcp_list`) when its version changes.
  std::map<std::string, uint64_t> mcp;
  /// Its CurveZMQ public key (Z85), when the cluster runs Curve.
  std::string curve_key;

  bool has_role(const std::string& r) const;
};

/// The live members, sorted by id, this node included.
struct cluster_view {
  std::vector<member> members;
  const member* find(const std::string& id) const;
};

nlohmann::json to_json(const member& m);
member member_from(const nlohmann::json& j);

/// The membership table in Redis (`cluster.redis`), kept as Orleans keeps
/// its own: every node writes itself with a TTL each heartbeat, with the
/// load of its workers, and reads everyone else. Runs on its own thread so
/// a slow Redis never stalls actors or the ZeroMQ I/O thread.
///
/// Keys: `troupe:members` (set of "id:incarnation"), `troupe:node:{id}:{inc}`
/// (JSON, TTL), `troupe:fenced:{id}:{inc}` (declared dead; TTL 1 h),
/// `troupe:drain:{id}` (drain requested).
class membership {
public:
  struct callbacks {
    /// A new view, after every successful heartbeat.
    std::function<void(std::shared_ptr<const cluster_view>)> on_view;
    /// Incarnations this node declared dead since the last heartbeat.
    std::function<std::vector<std::string>()> take_fenced;
    /// The cluster declared this incarnation dead: it must not go on.
    std::function<void()> on_fenced;
    /// `troupe ctl drain` asked this node to drain.
    std::function<void()> on_drain;
  };

  /// Connects and registers this node. Redis unreachable -> `redis_error`.
  /// With Curve on (`curve.enabled()`), this node publishes its public key
  /// and the view leaves out every member whose key is not allowed: anyone
  /// can write to the table, only holders of an allowed key are members.
  membership(const runtime::node_config& cfg, uint64_t incarnation, curve_keys curve = {});
  ~membership();
  membership(const membership&) = delete;
  membership& operator=(const membership&) = delete;

  /// Joins: writes this node (with what was published so far), reads the
  /// view, then starts the heartbeat thread, which retries if Redis is gone.
  void start(callbacks cb);
  /// Any thread: what the next heartbeat publishes about this node.
  void publish(std::vector<actors::worker_status> workers, int64_t active_agents, bool draining,
               std::map<std::string, uint64_t> mcp = {});
  /// Any thread: this node drains; in the view at once, in the table at the
  /// next heartbeat.
  void publish_draining();
  /// The last view read (never empty: this node is in it).
  std::shared_ptr<const cluster_view> view() const;
  /// Leaves the table (on purpose) and stops the thread.
  void leave();

  uint64_t incarnation() const { return self_.incarnation; }
  const std::string& node() const { return self_.id; }

private:
  void run();
  void beat();
  void read_view();
  std::string self_key() const;

  runtime::node_config cfg_;
  curve_keys curve_;
  std::set<std::string> refused_; // members left out for their key, logged once
  std::unique_ptr<runtime::redis_client> redis_;
  callbacks cb_;
  mutable std::mutex mutex_;
  member self_;
  std::shared_ptr<const cluster_view> view_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool redis_ok_ = true;
  std::thread thread_;
};

} // namespace troupe::cluster
