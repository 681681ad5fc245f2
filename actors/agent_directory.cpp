#include "actors/agent_directory.hpp"
#include "actors/agent_placement.hpp"
#include "actors/atoms.hpp"
#include "actors/deadline_clock.hpp"
#include "actors/messages.hpp"
#include "actors/stable_address.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"

#include <caf/all.hpp>

#include <map>
#include <random>
#include <unordered_map>

namespace troupe::actors {

using runtime::errc;

namespace {

struct directory_state {
  std::shared_ptr<const runtime::agent_type_registry> types;
  agent_context ctx;
  std::shared_ptr<const agent_context> agent_ctx;
  std::unordered_map<runtime::agent_id, caf::actor> active;
  /// Points at the key in `active` (node-based: it stays put), not a copy:
  /// a second copy of every id would cost each active agent 64 bytes.
  std::unordered_map<caf::actor_addr, const runtime::agent_id*> by_addr;
  /// Agents active on other nodes, by the node hosting them; their entry in
  /// `active` is the local proxy (cluster only).
  std::unordered_map<runtime::agent_id, std::string> remote;
  /// Node drain: no new local activation; answered once the last is gone.
  bool draining = false;
  std::vector<caf::response_promise> drained;
  std::mt19937_64 rng{std::random_device{}()};
  runtime::gauge* active_gauge = nullptr;
  bool stopping = false; // node shutdown: quit once every agent is down
  struct pending_ask {
    caf::response_promise rp;
    std::string agent, text, caller, request_id;
    int attempts = 0;
    caf::actor_addr bound; // the activation it was last sent to
  };
  std::unordered_map<uint64_t, pending_ask> asks;
  uint64_t next_ask = 0;
  std::shared_ptr<incarnation_cell> cell; // this incarnation's stable address reads it
  static inline const char* name = "agent_directory";

  /// Its local activations end with it (crash or shutdown): each hears the
  /// down message a monitor on the directory would have sent it. Agents do
  /// not monitor the directory: CAF 0.17 keeps a monitor on the monitored
  /// actor until that one dies, so the directory would carry one per
  /// activation it ever made.
  ~directory_state() {
    if (!agent_ctx) return;
    // First off the stable address: an activation that hears of this end
    // goes down, and its sessions' lookups must wait for the next
    // incarnation, not reach this one (the address's own down message
    // comes later, after this runs).
    if (cell) cell->clear_if(agent_ctx->directory.address());
    caf::down_msg gone{agent_ctx->directory.address(),
                       make_error(runtime::errc::internal, "agent directory stopped")};
    for (auto& [id, hdl] : active)
      if (!remote.count(id)) caf::anon_send(hdl, gone);
  }
};

using directory_actor = caf::stateful_actor<directory_state>;

std::string fresh_key(directory_actor* self) {
  static const char digits[] = "0123456789abcdef";
  std::string key;
  auto v = self->state.rng();
  for (int i = 0; i < 12; ++i, v >>= 4)
    key.push_back(digits[v & 15]);
  return key;
}

caf::actor activate(directory_actor* self, const runtime::agent_id& id,
                    std::vector<runtime::chat_message> history,
                    std::vector<runtime::request_entry> resume = {}) {
  auto& st = self->state;
  auto type = st.types->find(id.type);
  if (!st.agent_ctx) { // one context for all its agents, naming this incarnation
    auto ctx = std::make_shared<agent_context>(st.ctx);
    ctx->directory = caf::actor_cast<caf::actor>(self);
    st.agent_ctx = std::move(ctx);
  }
  auto hdl =
      spawn_agent(self->system(), id, type, std::move(history), std::move(resume), st.agent_ctx);
  self->monitor(hdl);
  auto entry = st.active.insert_or_assign(id, hdl).first;
  st.by_addr[hdl.address()] = &entry->first;
  st.active_gauge->set(static_cast<int64_t>(st.active.size() - st.remote.size()));
  return hdl;
}

/// The directory outlives a failing store: a store error becomes an
/// `internal` error for this one request, never a dead directory.
caf::error store_unavailable(const runtime::store_error& e) {
  return make_error(errc::internal, std::string{"state store unavailable: "} + e.what());
}

/// Forgets activation `id` (local or proxy); a local one gives up its claim.
void forget(directory_actor* self, const runtime::agent_id& id, const caf::actor_addr& addr) {
  auto& st = self->state;
  st.active.erase(id);
  st.by_addr.erase(addr);
  if (st.remote.erase(id) == 0 && st.ctx.placement) st.ctx.placement->released(id);
  st.active_gauge->set(static_cast<int64_t>(st.active.size() - st.remote.size()));
  if (st.draining && st.active.size() == st.remote.size()) {
    for (auto& rp : st.drained)
      rp.deliver(true);
    st.drained.clear();
  }
}

/// The node hosting the activation of `id`.
std::string node_of(directory_actor* self, const runtime::agent_id& id) {
  auto it = self->state.remote.find(id);
  return it == self->state.remote.end() ? self->state.ctx.node : it->second;
}

/// The activation of `id`, activating it from the store. In a cluster it
/// may be a proxy for an activation on another node; `here_only` (a peer
/// asks this node to host the agent) never gives a proxy. `loaded` is the
/// agent's record when the caller has just read it (no second read).
caf::expected<caf::actor> resolve_id(directory_actor* self, const runtime::agent_id& id,
                                     bool here_only = false,
                                     std::optional<runtime::agent_record> loaded = {}) {
  auto& st = self->state;
  if (auto it = st.active.find(id); it != st.active.end()) {
    if (here_only && st.remote.contains(id))
      return make_error(errc::unknown_agent, "agent '" + id.str() + "' is active on node " +
                                                 st.remote[id] + ", not here");
    return it->second;
  }
  if (!st.types->find(id.type))
    return make_error(errc::unknown_agent, "no agent '" + id.str() + "' (unknown type)");
  try {
    if (st.ctx.placement) {
      // What another node's activation wrote counts from the claim on: read
      // after it, not before.
      loaded.reset();
      if (!st.ctx.store->exists(id))
        return make_error(errc::unknown_agent, "no agent '" + id.str() + "'");
      auto where = st.ctx.placement->place(self->system(), id, here_only);
      if (auto* f = std::get_if<runtime::failure>(&where)) return make_error(f->code, f->message);
      if (auto* r = std::get_if<agent_placement::remote>(&where)) {
        self->monitor(r->proxy);
        self->send(r->proxy, register_atom::value, caf::actor_cast<caf::actor>(self));
        auto entry = st.active.insert_or_assign(id, r->proxy).first;
        st.by_addr[r->proxy.address()] = &entry->first;
        st.remote[id] = r->node;
        return r->proxy;
      }
    }
    if (st.draining) return make_error(errc::unknown_agent, "node " + st.ctx.node + " is draining");
    auto rec = loaded ? std::move(loaded) : st.ctx.store->load(id);
    if (!rec) {
      if (st.ctx.placement) st.ctx.placement->released(id);
      return make_error(errc::unknown_agent, "no agent '" + id.str() + "'");
    }
    return activate(self, id, std::move(rec->history));
  } catch (const runtime::store_error& e) {
    return store_unavailable(e);
  }
}

/// The activation of `text` (type/key); see `resolve_id`.
caf::expected<caf::actor> resolve(directory_actor* self, const std::string& text,
                                  bool here_only = false) {
  auto id = runtime::agent_id::parse(text);
  if (!id) return make_error(errc::bad_request, "agent must be type/key, got '" + text + "'");
  return resolve_id(self, *id, here_only);
}

/// Sends pending ask `n` to the agent's current activation. An activation
/// that passivates, or dies holding the ask (a crash never answers), hands
/// it to the next one: the ask's request id makes that safe, since the new
/// activation joins or resumes the same turn.
void attempt_ask(directory_actor* self, uint64_t n) {
  auto& st = self->state;
  auto it = st.asks.find(n);
  if (it == st.asks.end()) return;
  auto& ask = it->second;
  auto hdl = ++ask.attempts > 4 ? caf::expected<caf::actor>{make_error(
                                      errc::internal, "agent " + ask.agent + " stopped repeatedly")}
                                : resolve(self, ask.agent);
  if (!hdl) {
    ask.rp.deliver(hdl.error());
    st.asks.erase(it);
    return;
  }
  ask.bound = hdl->address();
  auto timeout = st.ctx.limits.turn_timeout + std::chrono::seconds(5);
  request_with_deadline(self, timeout, *hdl, ask_atom::value, ask.text, ask.caller, ask.request_id)
      .then(
          [=](turn_result& r) {
            auto it = self->state.asks.find(n);
            if (it == self->state.asks.end()) return;
            it->second.rp.deliver(std::move(r));
            self->state.asks.erase(it);
          },
          [=](caf::error& err) {
            auto it = self->state.asks.find(n);
            if (it == self->state.asks.end()) return;
            if (err == caf::sec::request_receiver_down)
              return attempt_ask(self, n); // passivating: the next activation takes it
            it->second.rp.deliver(std::move(err));
            self->state.asks.erase(it);
          });
}

/// `unknown_agent`, worded as for an agent that does not exist, when a
/// principal restricted to `scope` may not see `agent`; nothing otherwise.
std::optional<caf::error> hidden_from(directory_actor* self, const std::string& agent,
                                      const std::string& scope) {
  if (scope.empty()) return std::nullopt;
  auto id = runtime::agent_id::parse(agent);
  if (!id) return make_error(errc::bad_request, "agent must be type/key, got '" + agent + "'");
  try {
    if (self->state.ctx.store->owner_of(*id) == scope) return std::nullopt;
  } catch (const runtime::store_error& e) {
    return store_unavailable(e);
  }
  return make_error(errc::unknown_agent, "no agent '" + agent + "'");
}

/// Creates agent type/key (a fresh key if empty) owned by `owner` unless it
/// exists, and activates it. With a `scope`, an existing agent of another
/// owner is refused; a new one needs the owner under `max_agents`.
caf::result<std::string, std::string> spawn(directory_actor* self, const std::string& type,
                                            std::string key, const std::string& owner,
                                            const std::string& scope) {
  auto& st = self->state;
  if (!st.types->find(type))
    return make_error(errc::unknown_type, "unknown agent type '" + type + "'");
  if (key.empty()) key = fresh_key(self);
  runtime::agent_id id{type, key};
  // On a single node an inactive agent is read once: its owner for the
  // checks, its history for the activation (one query, one Redis round
  // trip). In a cluster it may be active elsewhere: only its owner is read.
  bool active = st.active.contains(id);
  std::optional<runtime::agent_record> rec;
  try {
    std::optional<std::string> existing;
    if (active || st.ctx.placement)
      existing = st.ctx.store->owner_of(id);
    else if ((rec = st.ctx.store->load(id)))
      existing = rec->owner;
    if (existing && !scope.empty() && *existing != scope)
      // Its name is taken; that much a client learns, nothing of its content.
      return make_error(errc::unknown_agent,
                        "agent '" + id.str() + "' belongs to another API key: pick another key");
    if (!existing) {
      if (!owner.empty() && !scope.empty() &&
          st.ctx.store->count_owned(owner) >= st.ctx.limits.per_key.max_agents)
        return make_error(errc::limit_exceeded,
                          "API key '" + owner + "' has " +
                              std::to_string(st.ctx.limits.per_key.max_agents) +
                              " agents (limits.per_key.max_agents): kill some first");
      if (st.ctx.store->create(id, owner)) {
        runtime::log::info("agent", "spawned", {{"agent", id.str()}, {"owner", owner}});
        rec = runtime::agent_record{id, {}, owner};
      } else {
        rec.reset(); // created meanwhile by another node: read it when activating
      }
    }
  } catch (const runtime::store_error& e) {
    return store_unavailable(e);
  }
  if (!active)
    if (auto r = resolve_id(self, id, false, std::move(rec)); !r) return r.error();
  return {id.str(), node_of(self, id)};
}

/// Kills agent `agent`: its record and its activation, wherever it is.
caf::result<bool> kill(directory_actor* self, const std::string& agent) {
  auto& st = self->state;
  auto id = runtime::agent_id::parse(agent);
  if (!id) return make_error(errc::bad_request, "agent must be type/key, got '" + agent + "'");
  bool existed = false;
  try {
    existed = st.ctx.store->erase(*id);
  } catch (const runtime::store_error& e) {
    return store_unavailable(e);
  }
  if (auto it = st.active.find(*id); it != st.active.end()) {
    auto hdl = it->second;
    if (st.remote.contains(*id))
      self->send(hdl, kill_atom::value); // the proxy kills the remote activation
    else
      self->send_exit(hdl, caf::exit_reason::user_shutdown);
    forget(self, *id, hdl.address());
    existed = true;
  }
  if (!existed) return make_error(errc::unknown_agent, "no agent '" + agent + "'");
  runtime::log::info("agent", "killed", {{"agent", agent}});
  return true;
}

/// A job and, while it runs, its agent's activation (to subscribe to).
caf::result<job_view> find_job(directory_actor* self, const std::string& job_id) {
  auto& st = self->state;
  std::optional<runtime::job_record> job;
  try {
    job = st.ctx.store->find_job(job_id);
    if (job && job->state != runtime::job_state::done && job->state != runtime::job_state::failed)
      st.ctx.store->create(job->agent); // a queued job's agent may not exist yet
  } catch (const runtime::store_error& e) {
    return store_unavailable(e);
  }
  if (!job) return make_error(errc::bad_request, "no job '" + job_id + "'");
  job_view view{*job, nullptr};
  if (job->state != runtime::job_state::done && job->state != runtime::job_state::failed) {
    auto hdl = resolve(self, job->agent.str());
    if (!hdl) return hdl.error();
    view.agent = *hdl;
  }
  return view;
}

caf::behavior directory_impl(directory_actor* self,
                             std::shared_ptr<const runtime::agent_type_registry> types,
                             agent_context ctx, std::shared_ptr<incarnation_cell> cell) {
  auto& st = self->state;
  st.types = std::move(types);
  st.ctx = std::move(ctx);
  st.cell = std::move(cell);
  st.active_gauge = &runtime::metrics_registry::global().get_gauge(
      "troupe_active_agents", "Agent activations in memory on this node");
  // A crash ends this incarnation; its supervisor starts a new one. The
  // asks it holds would never be answered: fail them now, so their callers
  // retry instead of waiting out their timeouts. Its agents stop with it
  // (they watch it) and come back, cut turns included, in the next one.
  self->set_exception_handler([](caf::scheduled_actor* ptr, std::exception_ptr& eptr) {
    auto* self = static_cast<directory_actor*>(ptr);
    auto err = exception_to_error(eptr);
    for (auto& [n, ask] : self->state.asks)
      ask.rp.deliver(make_error(errc::internal, "agent directory restarted; retry"));
    self->state.asks.clear();
    for (auto& rp : self->state.drained)
      rp.deliver(false);
    return err;
  });
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (auto it = st.by_addr.find(dm.source); it != st.by_addr.end()) {
      auto id = *it->second; // a copy: forget() erases what it points at
      if (dm.reason && dm.reason != caf::exit_reason::user_shutdown &&
          dm.reason != caf::exit_reason::kill && !st.remote.contains(id))
        runtime::log::warn("agent", "agent_crashed",
                           {{"agent", id.str()}, {"reason", to_failure(dm.reason).message}});
      forget(self, id, dm.source);
    }
    // Asks the gone activation held go to the next one: a crashed actor
    // never answers them.
    std::vector<uint64_t> orphaned;
    for (auto& [n, ask] : st.asks)
      if (ask.bound == dm.source) orphaned.push_back(n);
    for (auto n : orphaned) {
      if (st.stopping) {
        st.asks[n].rp.deliver(make_error(errc::cancelled, "node shutting down"));
        st.asks.erase(n);
      } else {
        attempt_ask(self, n);
      }
    }
    if (st.stopping && st.active.empty()) self->quit();
  });
  // Turns a crash cut are still marked running: their agents come back now
  // and finish them, without waiting for a client to ask.
  std::map<runtime::agent_id, std::vector<runtime::request_entry>> cut;
  for (auto& [id, entry] : st.ctx.store->open_turns())
    if (st.types->find(id.type)) cut[id].push_back(std::move(entry));
  for (auto& [id, entries] : cut) {
    // In a cluster another node may own it (and resume it when asked).
    if (st.ctx.placement && !std::holds_alternative<agent_placement::here>(
                                st.ctx.placement->place(self->system(), id, true)))
      continue;
    auto rec = st.ctx.store->load(id);
    runtime::log::info("agent", "reactivating",
                       {{"agent", id.str()}, {"open_turns", std::to_string(entries.size())}});
    activate(self, id, rec ? std::move(rec->history) : std::vector<runtime::chat_message>{},
             std::move(entries));
  }
  self->set_exit_handler([self](caf::exit_msg& msg) {
    // Node shutdown: every agent tells its waiting clients and stops; open
    // turns stay open in the store and resume at the next start.
    // The directory lives until they are down, so the node can stop the
    // workers only after no agent can mistake that for a failed call.
    auto& st = self->state;
    if (st.stopping) return;
    st.stopping = true;
    if (st.active.empty()) return self->quit(msg.reason);
    for (auto& [id, hdl] : st.active)
      self->send(hdl, shutdown_atom::value);
    self->delayed_send(self, std::chrono::seconds(3), shutdown_atom::value);
  });
  return {
      [=](spawn_atom, std::string& type, std::string& key)
          -> caf::result<std::string, std::string> { return spawn(self, type, key, {}, {}); },
      // A principal's spawn: `owner` is recorded with a new agent; with a
      // `scope`, an agent of another owner is not handed out.
      [=](spawn_atom, std::string& type, std::string& key, std::string& owner, std::string& scope)
          -> caf::result<std::string, std::string> { return spawn(self, type, key, owner, scope); },
      [=](lookup_atom, std::string& agent) -> caf::result<caf::actor> {
        auto r = resolve(self, agent);
        if (!r) return r.error();
        return *r;
      },
      [=](lookup_atom, std::string& agent, std::string& scope) -> caf::result<caf::actor> {
        if (auto hidden = hidden_from(self, agent, scope)) return *hidden;
        auto r = resolve(self, agent);
        if (!r) return r.error();
        return *r;
      },
      [=](lookup_atom, std::string& agent, bool here_only) -> caf::result<caf::actor> {
        auto r = resolve(self, agent, here_only);
        if (!r) return r.error();
        return *r;
      },
      [=](ask_atom, std::string& agent, std::string& text, std::string& caller,
          std::string& request_id) -> caf::result<turn_result> {
        auto r = resolve(self, agent);
        if (!r) return r.error();
        auto& st = self->state;
        // Every ask gets a request id, so a retry after a crash resumes the
        // cut turn instead of running the message twice.
        if (request_id.empty()) request_id = "ask-" + fresh_key(self) + fresh_key(self);
        auto n = ++st.next_ask;
        st.asks[n] = {self->make_response_promise(), agent, text, caller, request_id, 0, {}};
        attempt_ask(self, n);
        return caf::delegated<turn_result>{};
      },
      [=](passivate_atom) {
        // Only the current activation may leave; from now on lookups make a
        // new one from the store.
        auto& st = self->state;
        auto addr = caf::actor_cast<caf::actor_addr>(self->current_sender());
        auto it = st.by_addr.find(addr);
        if (it == st.by_addr.end()) return false;
        forget(self, runtime::agent_id{*it->second}, addr);
        return true;
      },
      [=](kill_atom, std::string& agent, std::string& scope) -> caf::result<bool> {
        if (auto hidden = hidden_from(self, agent, scope)) return *hidden;
        return kill(self, agent);
      },
      [=](kill_atom, std::string& agent) -> caf::result<bool> { return kill(self, agent); },
      [=](list_atom, std::string& scope) -> caf::result<std::vector<std::string>> {
        std::vector<std::string> out;
        try {
          auto ids = scope.empty() ? self->state.ctx.store->list()
                                   : self->state.ctx.store->list_owned(scope);
          for (auto& id : ids)
            out.push_back(id.str());
        } catch (const runtime::store_error& e) {
          return store_unavailable(e);
        }
        std::sort(out.begin(), out.end());
        return out;
      },
      [=](job_atom, std::string& job_id, std::string& scope) -> caf::result<job_view> {
        auto& st = self->state;
        try {
          auto job = st.ctx.store->find_job(job_id);
          // Another key's job reads exactly like one that does not exist.
          if (!job || hidden_from(self, job->agent.str(), scope))
            return make_error(errc::bad_request, "no job '" + job_id + "'");
        } catch (const runtime::store_error& e) {
          return store_unavailable(e);
        }
        return find_job(self, job_id);
      },
      [=](crash_atom) {
        if (fault_injection_enabled())
          throw std::runtime_error("injected crash of the agent directory");
      },
      [=](drain_atom) -> caf::result<bool> {
        // Every local agent finishes its turns and passivates; peers place
        // them elsewhere from then on. Answers once none is left.
        auto& st = self->state;
        st.draining = true;
        if (st.active.size() == st.remote.size()) return true;
        for (auto& [id, hdl] : st.active)
          if (!st.remote.contains(id)) self->send(hdl, drain_atom::value);
        st.drained.push_back(self->make_response_promise());
        return caf::delegated<bool>{};
      },
      [=](shutdown_atom) {
        if (self->state.stopping)
          self->quit(); // agents that did not stop in time are left to the system's end
      },
      [=](job_atom, std::string& job_id) -> caf::result<job_view> {
        return find_job(self, job_id);
      },
      [=](list_atom) -> caf::result<std::vector<std::string>> {
        std::vector<std::string> out;
        try {
          for (auto& id : self->state.ctx.store->list())
            out.push_back(id.str());
        } catch (const runtime::store_error& e) {
          return store_unavailable(e);
        }
        return out;
      },
  };
}

} // namespace

caf::actor spawn_agent_directory(caf::actor_system& sys,
                                 std::shared_ptr<const runtime::agent_type_registry> types,
                                 agent_context ctx, std::shared_ptr<incarnation_cell> cell) {
  return sys.spawn(directory_impl, std::move(types), std::move(ctx), std::move(cell));
}

} // namespace troupe::actors
