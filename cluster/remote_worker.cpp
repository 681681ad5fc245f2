#include "cluster/remote_worker.hpp"
#include "actors/atoms.hpp"
#include "actors/messages.hpp"
#include "actors/monitor.hpp"
#include "cluster/atoms.hpp"
#include "cluster/transport.hpp"
#include "runtime/log.hpp"

#include <caf/all.hpp>

#include <unordered_map>

namespace troupe::cluster {

using namespace troupe::actors;
using runtime::errc;

namespace {

struct call {
  caf::actor sink;
  uint64_t job = 0;
  caf::response_promise rp;
  bool accepted = false;
  bool started = false;
};

struct remote_worker_state {
  std::shared_ptr<transport> net;
  caf::actor router;
  worker_status status;  // id "node/worker"
  std::string remote_id; // the worker's id on its node
  std::unordered_map<uint64_t, call> calls;
  uint64_t next = 0;
  worker_load published; // as the node last reported it
  caf::actor_addr hub;   // the hub routing our frames; we end with it

  remote_worker_state() = default;
  remote_worker_state(const remote_worker_state&) = delete;
  remote_worker_state& operator=(const remote_worker_state&) = delete;
  /// However the proxy ends: no sink is left waiting.
  ~remote_worker_state() {
    runtime::failure gone{errc::backend_unavailable, "node " + status.info.node + " is gone"};
    for (auto& [corr, c] : calls)
      if (c.accepted)
        caf::anon_send(c.sink, fail_atom::value, c.job, gone, c.started, status.info.id);
  }
  static inline const char* name = "remote_worker";
};

using proxy_actor = caf::stateful_actor<remote_worker_state>;

/// Our own calls count at once; the node's report catches up a beat later.
void report(proxy_actor* self) {
  auto& st = self->state;
  auto load = st.published;
  load.id = st.status.info.id;
  load.active = std::max<int64_t>(load.active, static_cast<int64_t>(st.calls.size()));
  self->send(st.router, load_atom::value, std::move(load));
}

bool send_frame(proxy_actor* self, msg_type type, uint64_t corr, const nlohmann::json& payload) {
  auto& st = self->state;
  return st.net->send(st.status.info.node, type, st.remote_id, corr, payload);
}

void on_frame(proxy_actor* self, peer_frame& f) {
  auto& st = self->state;
  auto it = st.calls.find(f.env.corr);
  if (it == st.calls.end()) return; // a call we already ended (cancelled, node down)
  auto& c = it->second;
  auto body = decode_payload(f.payload).value_or(nlohmann::json::object());
  switch (f.env.type) {
  case msg_type::infer_ok:
    c.accepted = true;
    c.rp.deliver(st.status.info.id);
    return;
  case msg_type::infer_err: {
    auto fl = failure_from(body.value("failure", nlohmann::json::object()));
    c.rp.deliver(make_error(fl.code, fl.message));
    st.calls.erase(it);
    report(self);
    return;
  }
  case msg_type::token:
    c.started = true;
    self->send(c.sink, token_atom::value, c.job, body.value("text", ""));
    return;
  case msg_type::done:
    self->send(c.sink, done_atom::value, c.job,
               chat_result_from(body.value("result", nlohmann::json::object())));
    break;
  case msg_type::fail: {
    auto fl = failure_from(body.value("failure", nlohmann::json::object()));
    if (c.accepted)
      self->send(c.sink, fail_atom::value, c.job, fl, body.value("started", false),
                 st.status.info.id);
    else // it never started: the router tries the next worker
      c.rp.deliver(make_error(fl.code, fl.message));
    break;
  }
  default:
    return;
  }
  st.calls.erase(it);
  report(self);
}

/// Fails every open call (a call without a token is retried elsewhere by
/// its router or agent) and exits, so the router and agents watching see it.
void end(proxy_actor* self, const std::string& why) {
  auto& st = self->state;
  runtime::failure gone{errc::backend_unavailable, why};
  for (auto& [corr, c] : st.calls) {
    if (c.accepted)
      self->send(c.sink, fail_atom::value, c.job, gone, c.started, st.status.info.id);
    else
      c.rp.deliver(make_error(gone.code, gone.message));
  }
  st.calls.clear();
  self->quit(make_error(gone.code, gone.message));
}

caf::behavior remote_worker_impl(proxy_actor* self, std::shared_ptr<transport> net,
                                 caf::actor router, worker_status status) {
  auto& st = self->state;
  st.net = std::move(net);
  st.router = std::move(router);
  st.remote_id = status.info.id;
  st.published = status.load;
  status.info.id = status.info.node + "/" + status.info.id;
  st.status = std::move(status);
  self->send(st.router, register_atom::value, st.status.info);
  report(self);
  self->set_down_handler([self](caf::down_msg& dm) {
    if (dm.source == self->state.hub) end(self, "cluster hub restarted");
  });
  return {
      [=](infer_atom, infer_job& job) -> caf::result<std::string> {
        auto& st = self->state;
        auto corr = ++st.next;
        auto rp = self->make_response_promise();
        st.calls[corr] = {job.sink, job.job, rp, false, false};
        if (!send_frame(self, msg_type::infer, corr,
                        {{"request", to_json(job.request)}, {"job", job.job}})) {
          st.calls.erase(corr);
          rp.deliver(
              make_error(errc::overloaded, "link to node " + st.status.info.node + " is full"));
          return caf::delegated<std::string>{};
        }
        report(self);
        return caf::delegated<std::string>{};
      },
      [=](cancel_atom, uint64_t job) {
        auto& st = self->state;
        auto sender = caf::actor_cast<caf::actor>(self->current_sender());
        for (auto it = st.calls.begin(); it != st.calls.end(); ++it)
          if (it->second.job == job && it->second.sink == sender) {
            send_frame(self, msg_type::cancel, it->first, nlohmann::json::object());
            return; // the node answers with `fail` cancelled
          }
      },
      [=](peer_frame_atom, peer_frame& f) { guarded(f, [&] { on_frame(self, f); }); },
      [=](register_atom) { // the router restarted
        self->send(self->state.router, register_atom::value, self->state.status.info);
        report(self);
      },
      [=](load_atom, worker_status& s) {
        self->state.published = s.load;
        report(self);
      },
      [=](peer_down_atom) { end(self, "node " + self->state.status.info.node + " is gone"); },
      [=](watch_atom, caf::actor& hub) {
        self->state.hub = hub.address();
        monitor_while_alive(self, hub);
      },
  };
}

} // namespace

caf::actor spawn_remote_worker(caf::actor_system& sys, std::shared_ptr<transport> net,
                               caf::actor router, worker_status status) {
  return sys.spawn(remote_worker_impl, std::move(net), std::move(router), std::move(status));
}

} // namespace troupe::cluster
