#include "actors/agent_directory.hpp"
#include "actors/atoms.hpp"
#include "actors/messages.hpp"
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
  std::unordered_map<runtime::agent_id, caf::actor> active;
  std::unordered_map<caf::actor_addr, runtime::agent_id> by_addr;
  std::mt19937_64 rng{std::random_device{}()};
  runtime::gauge* active_gauge = nullptr;
  bool stopping = false; // node shutdown: quit once every agent is down
  static inline const char* name = "agent_directory";
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
  auto ctx = st.ctx;
  ctx.directory = caf::actor_cast<caf::actor>(self);
  auto hdl =
      spawn_agent(self->system(), id, type, std::move(history), std::move(resume), std::move(ctx));
  self->monitor(hdl);
  st.active[id] = hdl;
  st.by_addr[hdl.address()] = id;
  st.active_gauge->set(static_cast<int64_t>(st.active.size()));
  return hdl;
}

/// The activation of `text` (type/key), activating it from the store.
caf::expected<caf::actor> resolve(directory_actor* self, const std::string& text) {
  auto& st = self->state;
  auto id = runtime::agent_id::parse(text);
  if (!id) return make_error(errc::bad_request, "agent must be type/key, got '" + text + "'");
  if (auto it = st.active.find(*id); it != st.active.end()) return it->second;
  if (!st.types->find(id->type))
    return make_error(errc::unknown_agent, "no agent '" + text + "' (unknown type)");
  auto rec = st.ctx.store->load(*id);
  if (!rec) return make_error(errc::unknown_agent, "no agent '" + text + "'");
  return activate(self, *id, std::move(rec->history));
}

/// Asks `hdl`; an activation that passivated or crashed before answering
/// bounces the request, and the next activation gets it (up to 3 times).
void ask_with_retry(directory_actor* self, caf::response_promise rp, caf::actor hdl,
                    std::string agent, std::string text, std::string caller, std::string request_id,
                    int attempt) {
  auto timeout = self->state.ctx.limits.turn_timeout + std::chrono::seconds(5);
  self->request(hdl, timeout, ask_atom::value, text, caller, request_id)
      .then([=](turn_result& r) mutable { rp.deliver(std::move(r)); },
            [=](caf::error& err) mutable {
              if (err == caf::sec::request_receiver_down && attempt < 3) {
                if (auto next = resolve(self, agent))
                  return ask_with_retry(self, rp, *next, agent, text, caller, request_id,
                                        attempt + 1);
              }
              rp.deliver(std::move(err));
            });
}

caf::behavior directory_impl(directory_actor* self,
                             std::shared_ptr<const runtime::agent_type_registry> types,
                             agent_context ctx) {
  auto& st = self->state;
  st.types = std::move(types);
  st.ctx = std::move(ctx);
  st.active_gauge = &runtime::metrics_registry::global().get_gauge(
      "troupe_active_agents", "Agent activations in memory on this node");
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    auto it = st.by_addr.find(dm.source);
    if (it == st.by_addr.end()) return;
    if (dm.reason && dm.reason != caf::exit_reason::user_shutdown &&
        dm.reason != caf::exit_reason::kill)
      runtime::log::warn("agent", "agent_crashed",
                         {{"agent", it->second.str()}, {"reason", to_failure(dm.reason).message}});
    st.active.erase(it->second);
    st.by_addr.erase(it);
    st.active_gauge->set(static_cast<int64_t>(st.active.size()));
    if (st.stopping && st.active.empty()) self->quit();
  });
  // Turns a crash cut are still marked running: their agents come back now
  // and finish them, without waiting for a client to ask.
  std::map<runtime::agent_id, std::vector<runtime::request_entry>> cut;
  for (auto& [id, entry] : st.ctx.store->open_turns())
    if (st.types->find(id.type)) cut[id].push_back(std::move(entry));
  for (auto& [id, entries] : cut) {
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
      [=](spawn_atom, std::string& type, std::string& key) -> caf::result<std::string> {
        auto& st = self->state;
        if (!st.types->find(type))
          return make_error(errc::unknown_type, "unknown agent type '" + type + "'");
        if (key.empty()) key = fresh_key(self);
        runtime::agent_id id{type, key};
        if (!st.active.contains(id)) {
          if (st.ctx.store->create(id)) {
            activate(self, id, {});
            runtime::log::info("agent", "spawned", {{"agent", id.str()}});
          } else if (auto rec = st.ctx.store->load(id)) {
            activate(self, id, std::move(rec->history));
          }
        }
        return id.str();
      },
      [=](lookup_atom, std::string& agent) -> caf::result<caf::actor> {
        auto r = resolve(self, agent);
        if (!r) return r.error();
        return *r;
      },
      [=](ask_atom, std::string& agent, std::string& text, std::string& caller,
          std::string& request_id) -> caf::result<turn_result> {
        auto r = resolve(self, agent);
        if (!r) return r.error();
        auto rp = self->make_response_promise();
        ask_with_retry(self, rp, *r, agent, text, caller, request_id, 0);
        return caf::delegated<turn_result>{};
      },
      [=](passivate_atom) {
        // Only the current activation may leave; from now on lookups make a
        // new one from the store.
        auto& st = self->state;
        auto it = st.by_addr.find(caf::actor_cast<caf::actor_addr>(self->current_sender()));
        if (it == st.by_addr.end()) return false;
        st.active.erase(it->second);
        st.by_addr.erase(it);
        st.active_gauge->set(static_cast<int64_t>(st.active.size()));
        return true;
      },
      [=](kill_atom, std::string& agent) -> caf::result<bool> {
        auto& st = self->state;
        auto id = runtime::agent_id::parse(agent);
        if (!id)
          return make_error(errc::bad_request, "agent must be type/key, got '" + agent + "'");
        bool existed = st.ctx.store->erase(*id);
        if (auto it = st.active.find(*id); it != st.active.end()) {
          self->send_exit(it->second, caf::exit_reason::user_shutdown);
          st.by_addr.erase(it->second.address());
          st.active.erase(it);
          st.active_gauge->set(static_cast<int64_t>(st.active.size()));
          existed = true;
        }
        if (!existed) return make_error(errc::unknown_agent, "no agent '" + agent + "'");
        runtime::log::info("agent", "killed", {{"agent", agent}});
        return true;
      },
      [=](shutdown_atom) {
        if (self->state.stopping)
          self->quit(); // agents that did not stop in time are left to the system's end
      },
      [=](list_atom) {
        std::vector<std::string> out;
        for (auto& id : self->state.ctx.store->list())
          out.push_back(id.str());
        return out;
      },
  };
}

} // namespace

caf::actor spawn_agent_directory(caf::actor_system& sys,
                                 std::shared_ptr<const runtime::agent_type_registry> types,
                                 agent_context ctx) {
  return sys.spawn(directory_impl, std::move(types), std::move(ctx));
}

} // namespace troupe::actors
