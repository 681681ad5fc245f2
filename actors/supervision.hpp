#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

namespace troupe::actors {

/// What `/health` shows of the supervision tree. Thread-safe: supervisors
/// write, the gateway reads.
class supervision_status {
public:
  struct child {
    std::string subtree;
    uint64_t restarts = 0;
    std::string last_failure;
    bool escalated = false;
  };

  void restarted(const std::string& subtree, const std::string& name, const std::string& why);
  void escalated(const std::string& subtree, const std::string& name, const std::string& why);
  std::map<std::string, child> snapshot() const;
  bool any_escalated() const;

private:
  mutable std::mutex mutex_;
  std::map<std::string, child> children_;
};

/// How to (re)start one child.
struct child_spec {
  std::string name;
  std::function<caf::actor(caf::actor_system&)> start;
};

/// Erlang's restart intensity: more than `max_restarts` within `within`
/// and the supervisor gives up and escalates (never when negative: for
/// children whose failure is outside the node, such as an MCP server).
/// With `backoff` set, the n-th restart within `within` waits
/// `backoff * 2^(n-1)`, at most `max_backoff`.
struct restart_policy {
  int max_restarts = 5;
  std::chrono::milliseconds within{10000};
  std::chrono::milliseconds backoff{0};
  std::chrono::milliseconds max_backoff{30000};
};

/// Spawns a one-for-one supervisor over `children`: a child that stops with
/// an error is started again from its spec; past the restart intensity the
/// supervisor stops the subtree, records the escalation in `status` and
/// exits with the child's error, so whoever monitors it (the node) knows.
/// A child that stops normally is not restarted. An exit message stops the
/// children, then the supervisor.
caf::actor spawn_supervisor(caf::actor_system& sys, std::string subtree,
                            std::vector<child_spec> children, restart_policy policy,
                            std::shared_ptr<supervision_status> status);

} // namespace troupe::actors
