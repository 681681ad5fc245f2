#include "actors/supervision.hpp"
#include "actors/atoms.hpp"
#include "actors/messages.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"

#include <caf/all.hpp>

#include <deque>

namespace troupe::actors {

void supervision_status::restarted(const std::string& subtree, const std::string& name,
                                   const std::string& why) {
  std::lock_guard<std::mutex> guard{mutex_};
  auto& c = children_[name];
  c.subtree = subtree;
  ++c.restarts;
  c.last_failure = why;
}

void supervision_status::escalated(const std::string& subtree, const std::string& name,
                                   const std::string& why) {
  std::lock_guard<std::mutex> guard{mutex_};
  auto& c = children_[name];
  c.subtree = subtree;
  c.escalated = true;
  c.last_failure = why;
}

std::map<std::string, supervision_status::child> supervision_status::snapshot() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return children_;
}

bool supervision_status::any_escalated() const {
  std::lock_guard<std::mutex> guard{mutex_};
  for (auto& [name, c] : children_)
    if (c.escalated) return true;
  return false;
}

namespace {

struct supervised {
  child_spec spec;
  caf::actor hdl;
  std::deque<std::chrono::steady_clock::time_point> restarts;
};

struct supervisor_state {
  std::string subtree;
  std::vector<supervised> children;
  restart_policy policy;
  std::shared_ptr<supervision_status> status;
  bool stopping = false;
  static inline const char* name = "supervisor";
};

using supervisor_actor = caf::stateful_actor<supervisor_state>;

void start_child(supervisor_actor* self, supervised& c) {
  c.hdl = c.spec.start(self->system());
  self->monitor(c.hdl);
}

caf::behavior supervisor_impl(supervisor_actor* self, std::string subtree,
                              std::vector<child_spec> specs, restart_policy policy,
                              std::shared_ptr<supervision_status> status) {
  auto& st = self->state;
  st.subtree = std::move(subtree);
  st.policy = policy;
  st.status = std::move(status);
  for (auto& spec : specs) {
    st.children.push_back({std::move(spec), nullptr, {}});
    start_child(self, st.children.back());
  }
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    for (auto& c : st.children) {
      if (!c.hdl || c.hdl.address() != dm.source) continue;
      c.hdl = nullptr;
      if (st.stopping || !dm.reason || dm.reason == caf::exit_reason::user_shutdown)
        return; // stopped on purpose
      auto why = to_failure(dm.reason).message;
      auto now = std::chrono::steady_clock::now();
      while (!c.restarts.empty() && now - c.restarts.front() > st.policy.within)
        c.restarts.pop_front();
      if (st.policy.max_restarts >= 0 &&
          static_cast<int>(c.restarts.size()) >= st.policy.max_restarts) {
        // Past the intensity: restarting again would only spin. Stop the
        // subtree and tell the node.
        runtime::log::error("supervisor", "escalating",
                            {{"subtree", st.subtree}, {"child", c.spec.name}, {"reason", why}});
        st.status->escalated(st.subtree, c.spec.name, why);
        st.stopping = true;
        for (auto& other : st.children)
          if (other.hdl) self->send_exit(other.hdl, caf::exit_reason::user_shutdown);
        self->quit(dm.reason);
        return;
      }
      c.restarts.push_back(now);
      runtime::log::warn("supervisor", "restarting",
                         {{"subtree", st.subtree}, {"child", c.spec.name}, {"reason", why}});
      runtime::metrics_registry::global()
          .get_counter("troupe_supervisor_restarts_total", "Children restarted by supervisors",
                       "child=\"" + c.spec.name + "\"")
          .inc();
      st.status->restarted(st.subtree, c.spec.name, why);
      if (st.policy.backoff.count() > 0) {
        auto delay = st.policy.backoff;
        for (size_t i = 1; i < c.restarts.size() && delay < st.policy.max_backoff; ++i)
          delay *= 2;
        delay = std::min(delay, st.policy.max_backoff);
        self->delayed_send(self, delay, tick_atom::value,
                           static_cast<uint64_t>(&c - st.children.data()));
        return;
      }
      start_child(self, c);
      return;
    }
  });
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& st = self->state;
    st.stopping = true;
    for (auto& c : st.children)
      if (c.hdl) self->send_exit(c.hdl, msg.reason);
    self->quit(msg.reason);
  });
  return {
      [](tick_atom) {}, // never sent: all other work happens in the down and exit handlers
      [self](tick_atom, uint64_t index) { // a restart after its backoff
        auto& st = self->state;
        if (st.stopping || index >= st.children.size() || st.children[index].hdl) return;
        start_child(self, st.children[index]);
      },
  };
}

} // namespace

caf::actor spawn_supervisor(caf::actor_system& sys, std::string subtree,
                            std::vector<child_spec> children, restart_policy policy,
                            std::shared_ptr<supervision_status> status) {
  return sys.spawn(supervisor_impl, std::move(subtree), std::move(children), policy,
                   std::move(status));
}

} // namespace troupe::actors
