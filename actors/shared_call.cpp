#include "actors/shared_call.hpp"
#include "actors/atoms.hpp"
#include "actors/messages.hpp"
#include "actors/monitor.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <optional>

namespace troupe::actors {

namespace {

struct waiting {
  caf::actor sink;
  uint64_t job;
};

struct shared_call_state {
  caf::actor router;
  std::string key;
  uint64_t job = 0; // the id the worker knows this call by
  std::vector<waiting> agents;
  std::vector<std::string> tokens;
  caf::actor worker;
  /// The answer, once done: an agent whose join crossed it gets it replayed
  /// until the router, having cached it, ends this actor.
  std::optional<runtime::chat_result> result;
  bool abandoned = false; // every agent cancelled before the worker was known
  static inline const char* name = "shared_call";
};

using shared_call_actor = caf::stateful_actor<shared_call_state>;

/// No answer will come: every agent but the leader (which hears it from the
/// router) gets a failure before any token, and retries on its own.
void fail_joiners(shared_call_actor* self, const runtime::failure& f) {
  auto& st = self->state;
  for (size_t i = 1; i < st.agents.size(); ++i)
    self->send(st.agents[i].sink, fail_atom::value, st.agents[i].job, f, false, std::string{});
}

/// Nobody waits any more: the call stops, the router forgets it.
void abandon(shared_call_actor* self) {
  auto& st = self->state;
  self->send(st.router, forget_atom::value, st.key);
  if (!st.worker) {
    st.abandoned = true; // cancelled when the worker is named
    return;
  }
  self->send(st.worker, cancel_atom::value, st.job);
  self->quit();
}

caf::behavior shared_call_impl(shared_call_actor* self, caf::actor router, std::string key,
                               uint64_t job) {
  auto& st = self->state;
  st.router = std::move(router);
  st.key = std::move(key);
  st.job = job;
  // A router that dies before a worker took the call never says how it
  // went: the waiting agents retry (the leader's own request fails).
  monitor_while_alive(self, st.router);
  self->set_down_handler([self](caf::down_msg&) {
    if (self->state.worker) return; // the worker still ends the call
    fail_joiners(self, {runtime::errc::overloaded, "inference router restarted"});
    self->quit();
  });
  return {
      [=](join_atom, caf::actor& sink, uint64_t job) {
        auto& st = self->state;
        for (auto& t : st.tokens)
          self->send(sink, token_atom::value, job, t);
        if (st.result)
          self->send(sink, done_atom::value, job, *st.result);
        else
          st.agents.push_back({std::move(sink), job});
      },
      [=](worker_atom, caf::actor& worker) {
        auto& st = self->state;
        st.worker = std::move(worker);
        if (st.abandoned) {
          self->send(st.worker, cancel_atom::value, st.job);
          self->quit();
        }
      },
      [=](token_atom, uint64_t, std::string& text) {
        auto& st = self->state;
        for (auto& a : st.agents)
          self->send(a.sink, token_atom::value, a.job, text);
        st.tokens.push_back(std::move(text));
      },
      [=](done_atom, uint64_t, runtime::chat_result& r) {
        auto& st = self->state;
        for (auto& a : st.agents)
          self->send(a.sink, done_atom::value, a.job, r);
        st.agents.clear();
        // The router caches it, forgets this call and then ends it: joins it
        // sent meanwhile still get the answer here.
        self->send(st.router, done_atom::value, st.key, st.tokens, r);
        st.result = std::move(r);
      },
      [=](fail_atom, uint64_t, runtime::failure& f, bool started, std::string& worker) {
        auto& st = self->state;
        for (auto& a : st.agents)
          self->send(a.sink, fail_atom::value, a.job, f, started, worker);
        self->send(st.router, forget_atom::value, st.key);
        self->quit();
      },
      [=](fail_atom, runtime::failure& f) {
        // No worker took it.
        fail_joiners(self, f);
        self->send(self->state.router, forget_atom::value, self->state.key);
        self->quit();
      },
      [=](cancel_atom, uint64_t job) {
        auto& st = self->state;
        auto sender = caf::actor_cast<caf::actor>(self->current_sender());
        std::erase_if(st.agents,
                      [&](const waiting& a) { return a.job == job && a.sink == sender; });
        if (st.agents.empty() && !st.abandoned) abandon(self);
      },
  };
}

} // namespace

caf::actor spawn_shared_call(caf::actor_system& sys, caf::actor router, std::string key,
                             uint64_t job) {
  return sys.spawn(shared_call_impl, std::move(router), std::move(key), job);
}

} // namespace troupe::actors
