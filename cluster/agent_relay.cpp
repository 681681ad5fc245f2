#include "cluster/agent_relay.hpp"
#include "actors/atoms.hpp"
#include "actors/messages.hpp"
#include "actors/monitor.hpp"
#include "cluster/atoms.hpp"
#include "cluster/transport.hpp"

#include <caf/all.hpp>

#include <deque>

namespace troupe::cluster {

using namespace troupe::actors;
using runtime::errc;

namespace {

struct agent_relay_state {
  std::shared_ptr<transport> net;
  caf::actor directory;
  std::string peer;
  std::string agent_name;
  caf::actor agent;
  std::deque<peer_frame> early; // frames that came before the activation
  bool subscribed = false;
  caf::actor_addr hub; // the hub routing the peer's frames; we end with it
  bool ended = false;  // the peer has been told

  agent_relay_state() = default;
  agent_relay_state(const agent_relay_state&) = delete;
  agent_relay_state& operator=(const agent_relay_state&) = delete;
  /// However the relay ends (its hub crashed, say): the peer's proxy must
  /// not wait for events that will never come.
  ~agent_relay_state() {
    if (ended || !net) return;
    net->send(
        peer, msg_type::agent_down, agent_name, 0,
        {{"failure", to_json(runtime::failure{runtime::errc::internal, "agent relay ended"})}});
  }
  static inline const char* name = "agent_relay";
};

using relay_actor = caf::stateful_actor<agent_relay_state>;

void reply(relay_actor* self, msg_type type, const nlohmann::json& payload, uint64_t corr = 0) {
  auto& st = self->state;
  st.net->send(st.peer, type, st.agent_name, corr, payload);
}

void end(relay_actor* self, const runtime::failure& why) {
  reply(self, msg_type::agent_down, {{"failure", to_json(why)}});
  self->state.ended = true;
  self->quit();
}

void handle(relay_actor* self, peer_frame& f) {
  auto& st = self->state;
  auto me = caf::actor_cast<caf::actor>(self);
  auto body = decode_payload(f.payload).value_or(nlohmann::json::object());
  switch (f.env.type) {
  case msg_type::agent_open:
    return;
  case msg_type::agent_send:
    self->send(st.agent, send_atom::value, body.value("id", ""), body.value("text", ""), me);
    return;
  case msg_type::agent_sub:
    if (!st.subscribed) self->send(st.agent, subscribe_atom::value, me);
    st.subscribed = true;
    return;
  case msg_type::agent_unsub:
    if (st.subscribed) self->send(st.agent, unsub_atom::value, me);
    st.subscribed = false;
    return;
  case msg_type::agent_cancel:
    self->send(st.agent, cancel_atom::value, body.value("id", ""));
    return;
  case msg_type::agent_kill:
    self->send(st.directory, kill_atom::value, st.agent_name);
    return;
  case msg_type::agent_ask: {
    auto corr = f.env.corr;
    self->request(st.agent, std::chrono::seconds(3600), ask_atom::value, body.value("text", ""),
                  body.value("caller", ""), body.value("request_id", ""))
        .then(
            [=](turn_result& r) {
              reply(self, msg_type::agent_answer,
                    {{"answer", r.answer},
                     {"prompt_tokens", r.tokens.prompt_tokens},
                     {"completion_tokens", r.tokens.completion_tokens},
                     {"steps", r.steps}},
                    corr);
            },
            [=](caf::error& err) {
              // A passivating agent: the peer's directory asks again.
              if (err == caf::sec::request_receiver_down) return;
              reply(self, msg_type::agent_answer, {{"failure", to_json(to_failure(err))}}, corr);
            });
    return;
  }
  default:
    return;
  }
}

caf::behavior relay_impl(relay_actor* self, std::shared_ptr<transport> net, caf::actor directory,
                         std::string peer, std::string agent) {
  auto& st = self->state;
  st.net = std::move(net);
  st.directory = std::move(directory);
  st.peer = std::move(peer);
  st.agent_name = std::move(agent);
  self->set_down_handler([self](caf::down_msg& dm) {
    if (dm.source == self->state.hub) {
      self->quit(); // our hub ended; the destructor tells the peer
      return;
    }
    end(self, dm.reason ? to_failure(dm.reason)
                        : runtime::failure{errc::internal, "agent activation ended"});
  });
  self->request(st.directory, std::chrono::seconds(10), lookup_atom::value, st.agent_name, true)
      .then(
          [=](caf::actor& agent) {
            auto& st = self->state;
            st.agent = agent;
            self->monitor(agent);
            auto early = std::move(st.early);
            for (auto& f : early)
              handle(self, f);
          },
          [=](caf::error& err) { end(self, to_failure(err)); });
  return {
      [=](peer_frame_atom, peer_frame& f) {
        if (!self->state.agent) {
          if (self->state.early.size() < 1024) self->state.early.push_back(std::move(f));
          return;
        }
        guarded(f, [&] { handle(self, f); });
      },
      [=](event_atom, runtime::event_ptr& ev) { reply(self, msg_type::agent_event, to_json(*ev)); },
      [=](watch_atom, caf::actor& hub) {
        self->state.hub = hub.address();
        monitor_while_alive(self, hub);
      },
      [=](peer_down_atom) {
        self->state.ended = true; // nobody to tell
        self->quit();
      },
  };
}

} // namespace

caf::actor spawn_agent_relay(caf::actor_system& sys, std::shared_ptr<transport> net,
                             caf::actor directory, std::string peer, std::string agent) {
  return sys.spawn(relay_impl, std::move(net), std::move(directory), std::move(peer),
                   std::move(agent));
}

} // namespace troupe::cluster
