#include "cluster/remote_agent.hpp"
#include "actors/atoms.hpp"
#include "actors/messages.hpp"
#include "actors/monitor.hpp"
#include "cluster/atoms.hpp"
#include "cluster/transport.hpp"

#include <caf/all.hpp>

#include <set>
#include <unordered_map>

namespace troupe::cluster {

using namespace troupe::actors;
using runtime::errc;
using runtime::event_kind;

namespace {

struct remote_agent_state {
  std::shared_ptr<transport> net;
  std::string node;
  std::string agent;
  std::unordered_map<std::string, caf::actor> requesters; // by request id
  std::set<caf::actor> subscribers;
  std::unordered_map<uint64_t, caf::response_promise> asks;
  uint64_t next_ask = 0;
  caf::actor_addr owner; // the agent directory holding this proxy
  caf::actor_addr hub;   // the hub routing the peer's frames to us; we end with it
  static inline const char* name = "remote_agent";
};

using proxy_actor = caf::stateful_actor<remote_agent_state>;

bool forward(proxy_actor* self, msg_type type, nlohmann::json payload, uint64_t corr = 0) {
  auto& st = self->state;
  return st.net->send(st.node, type, st.agent, corr, payload);
}

void deliver(proxy_actor* self, const runtime::event_ptr& ev) {
  auto& st = self->state;
  for (auto& s : st.subscribers)
    self->send(s, event_atom::value, ev);
  if (ev->id.empty()) return;
  auto it = st.requesters.find(ev->id);
  if (it == st.requesters.end()) return;
  if (!st.subscribers.contains(it->second)) self->send(it->second, event_atom::value, ev);
  if (ev->kind == event_kind::done || ev->kind == event_kind::error) st.requesters.erase(it);
}

void on_frame(proxy_actor* self, peer_frame& f) {
  auto& st = self->state;
  auto body = decode_payload(f.payload).value_or(nlohmann::json::object());
  switch (f.env.type) {
  case msg_type::agent_event:
    if (auto ev = event_from(body, st.agent)) deliver(self, ev);
    return;
  case msg_type::agent_answer: {
    auto it = st.asks.find(f.env.corr);
    if (it == st.asks.end()) return;
    if (body.contains("failure")) {
      auto fl = failure_from(body["failure"]);
      it->second.deliver(make_error(fl.code, fl.message));
    } else {
      turn_result r;
      r.agent = st.agent;
      r.answer = body.value("answer", "");
      r.tokens.prompt_tokens = body.value("prompt_tokens", int64_t{0});
      r.tokens.completion_tokens = body.value("completion_tokens", int64_t{0});
      r.steps = body.value("steps", int64_t{0});
      it->second.deliver(std::move(r));
    }
    st.asks.erase(it);
    return;
  }
  case msg_type::agent_down: {
    // Requests and asks it held are taken up by whoever watches this
    // proxy: sessions and the directory resend them to the next activation.
    auto fl = failure_from(body.value("failure", nlohmann::json::object()));
    self->quit(make_error(fl.code, fl.message));
    return;
  }
  default:
    return;
  }
}

caf::behavior remote_agent_impl(proxy_actor* self, std::shared_ptr<transport> net, caf::actor hub,
                                std::string node, uint64_t incarnation, std::string agent) {
  auto& st = self->state;
  st.net = std::move(net);
  st.node = std::move(node);
  st.agent = std::move(agent);
  self->send(hub, register_atom::value, st.node, incarnation, st.agent);
  forward(self, msg_type::agent_open, nlohmann::json::object());
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source == st.owner ||
        dm.source == st.hub) { // the directory that holds this proxy is gone
      self->quit(dm.reason);
      return;
    }
    for (auto it = st.subscribers.begin(); it != st.subscribers.end(); ++it)
      if (it->address() == dm.source) {
        st.subscribers.erase(it);
        if (st.subscribers.empty()) forward(self, msg_type::agent_unsub, nlohmann::json::object());
        return;
      }
  });
  return {
      [=](send_atom, std::string& id, std::string& text, caf::actor& requester) {
        auto& st = self->state;
        st.requesters[id] = requester;
        if (!forward(self, msg_type::agent_send, {{"id", id}, {"text", std::move(text)}})) {
          st.requesters.erase(id);
          self->send(requester, event_atom::value,
                     runtime::make_error_event(id, errc::overloaded,
                                               "link to node " + st.node + " is full", st.agent));
        }
      },
      [=](ask_atom, std::string& text, std::string& caller,
          std::string& request_id) -> caf::result<turn_result> {
        auto& st = self->state;
        auto corr = ++st.next_ask;
        if (!forward(self, msg_type::agent_ask,
                     {{"text", std::move(text)}, {"caller", caller}, {"request_id", request_id}},
                     corr))
          return make_error(errc::overloaded, "link to node " + st.node + " is full");
        st.asks[corr] = self->make_response_promise();
        return caf::delegated<turn_result>{};
      },
      [=](subscribe_atom, caf::actor& sub) {
        auto& st = self->state;
        bool first = st.subscribers.empty();
        if (st.subscribers.insert(sub).second) self->monitor(sub);
        if (first) forward(self, msg_type::agent_sub, nlohmann::json::object());
      },
      [=](unsub_atom, caf::actor& sub) {
        auto& st = self->state;
        if (st.subscribers.erase(sub) == 0) return;
        self->demonitor(sub);
        if (st.subscribers.empty()) forward(self, msg_type::agent_unsub, nlohmann::json::object());
      },
      [=](cancel_atom, std::string& id) {
        forward(self, msg_type::agent_cancel, {{"id", std::move(id)}});
      },
      [=](kill_atom) { forward(self, msg_type::agent_kill, nlohmann::json::object()); },
      [=](watch_atom, caf::actor& hub) {
        self->state.hub = hub.address();
        monitor_while_alive(self, hub);
      },
      [=](register_atom, caf::actor& owner) {
        self->state.owner = owner.address();
        monitor_while_alive(self, owner);
      },
      [=](shutdown_atom) {
        // This node stops; the activation on the peer lives on.
        self->quit(caf::exit_reason::user_shutdown);
      },
      [=](peer_frame_atom, peer_frame& f) { guarded(f, [&] { on_frame(self, f); }); },
      [=](peer_down_atom) {
        self->quit(make_error(errc::backend_unavailable, "node " + self->state.node + " hosting " +
                                                             self->state.agent + " is gone"));
      },
  };
}

} // namespace

caf::actor spawn_remote_agent(caf::actor_system& sys, std::shared_ptr<transport> net,
                              caf::actor hub, std::string node, uint64_t incarnation,
                              std::string agent) {
  return sys.spawn(remote_agent_impl, std::move(net), std::move(hub), std::move(node), incarnation,
                   std::move(agent));
}

} // namespace troupe::cluster
