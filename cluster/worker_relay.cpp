#include "cluster/worker_relay.hpp"
#include "actors/atoms.hpp"
#include "actors/messages.hpp"
#include "actors/monitor.hpp"
#include "cluster/atoms.hpp"
#include "cluster/transport.hpp"

#include <caf/all.hpp>

namespace troupe::cluster {

using namespace troupe::actors;
using runtime::errc;

namespace {

struct relay_state {
  std::shared_ptr<transport> net;
  std::string peer;
  uint64_t corr = 0;
  std::string worker_id;
  caf::actor worker;
  bool cancelled = false;
  caf::actor_addr hub;  // the hub routing our frames; we end with it
  bool ended = false;   // the caller has its answer
  bool started = false; // a token went out

  relay_state() = default;
  relay_state(const relay_state&) = delete;
  relay_state& operator=(const relay_state&) = delete;
  /// However the relay ends (its hub crashed, say): the caller's call fails
  /// instead of waiting; before the first token it is retried elsewhere.
  ~relay_state() {
    if (ended || !net) return;
    net->send(peer, msg_type::fail, worker_id, corr,
              {{"failure", to_json(runtime::failure{runtime::errc::backend_unavailable,
                                                    "worker relay ended"})},
               {"started", started}});
  }
  static inline const char* name = "worker_relay";
};

using relay_actor = caf::stateful_actor<relay_state>;

void reply(relay_actor* self, msg_type type, const nlohmann::json& payload) {
  auto& st = self->state;
  st.net->send(st.peer, type, st.worker_id, st.corr, payload);
}

void refuse(relay_actor* self, const runtime::failure& f) {
  reply(self, msg_type::infer_err, {{"failure", to_json(f)}});
  self->state.ended = true;
  self->quit();
}

caf::behavior relay_impl(relay_actor* self, std::shared_ptr<transport> net, caf::actor router,
                         std::string peer, uint64_t corr, std::string worker, std::string payload) {
  auto& st = self->state;
  st.net = std::move(net);
  st.peer = std::move(peer);
  st.corr = corr;
  st.worker_id = std::move(worker);
  auto body = decode_payload(payload);
  if (!body || !body->contains("request")) {
    refuse(self, {errc::bad_request, "malformed infer frame"});
    return {};
  }
  // Our hub ended: a cancel could no longer reach us. Stop the call; the
  // state's destructor tells the caller.
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source != st.hub) return;
    if (st.worker) self->send(st.worker, cancel_atom::value, st.corr);
    self->quit();
  });
  infer_job job{corr, chat_request_from((*body)["request"]), caf::actor_cast<caf::actor>(self), {}};
  self->request(router, std::chrono::seconds(5), lookup_atom::value, st.worker_id)
      .then(
          [=](caf::actor& worker) mutable {
            self->state.worker = worker;
            self->request(worker, std::chrono::seconds(10), infer_atom::value, std::move(job))
                .then(
                    [=](std::string& id) {
                      reply(self, msg_type::infer_ok, {{"worker", id}});
                      // A cancel that came while the worker decided.
                      if (self->state.cancelled)
                        self->send(self->state.worker, cancel_atom::value, self->state.corr);
                    },
                    [=](caf::error& err) { refuse(self, to_failure(err)); });
          },
          [=](caf::error& err) { refuse(self, to_failure(err)); });
  return {
      [=](token_atom, uint64_t, std::string& text) {
        self->state.started = true;
        reply(self, msg_type::token, {{"text", std::move(text)}});
      },
      [=](done_atom, uint64_t, runtime::chat_result& r) {
        reply(self, msg_type::done, {{"result", to_json(r)}});
        self->state.ended = true;
        self->quit();
      },
      [=](fail_atom, uint64_t, runtime::failure& f, bool started, std::string&) {
        reply(self, msg_type::fail, {{"failure", to_json(f)}, {"started", started}});
        self->state.ended = true;
        self->quit();
      },
      [=](peer_frame_atom, peer_frame& f) {
        if (f.env.type != msg_type::cancel) return;
        auto& st = self->state;
        st.cancelled = true;
        if (st.worker) self->send(st.worker, cancel_atom::value, st.corr);
      },
      [=](watch_atom, caf::actor& hub) {
        self->state.hub = hub.address();
        monitor_while_alive(self, hub);
      },
      [=](peer_down_atom) {
        // Nobody is left to read the answer: free the slot now.
        auto& st = self->state;
        if (st.worker) self->send(st.worker, cancel_atom::value, st.corr);
        st.ended = true; // nobody to tell
        self->quit();
      },
  };
}

} // namespace

caf::actor spawn_worker_relay(caf::actor_system& sys, std::shared_ptr<transport> net,
                              caf::actor router, std::string peer, uint64_t corr,
                              std::string worker, std::string payload) {
  return sys.spawn(relay_impl, std::move(net), std::move(router), std::move(peer), corr,
                   std::move(worker), std::move(payload));
}

} // namespace troupe::cluster
