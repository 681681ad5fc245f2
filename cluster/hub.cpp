#include "cluster/hub.hpp"
#include "actors/atoms.hpp"
#include "actors/messages.hpp"
#include "cluster/agent_relay.hpp"
#include "cluster/atoms.hpp"
#include "cluster/membership.hpp"
#include "cluster/remote_worker.hpp"
#include "cluster/transport.hpp"
#include "cluster/worker_relay.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"

#include <caf/all.hpp>

#include <map>
#include <set>
#include <unordered_map>

namespace troupe::cluster {

using namespace troupe::actors;
using runtime::errc;

namespace {

/// The actors the hub routes to, each keyed by its peer: "node/worker" for
/// worker proxies, "node\n..." for the rest, so a node's are found by prefix.
using table = std::map<std::string, caf::actor>;

struct hub_state {
  std::string self_node;
  std::shared_ptr<transport> net;
  caf::actor router;
  caf::actor directory;
  publish_fn publish;
  std::chrono::milliseconds heartbeat{250};
  std::map<std::string, uint64_t> incarnations; // live peers
  std::set<std::string> dead;                   // "node:incarnation", never again
  table worker_proxies; // node/worker: remote workers, registered with the router
  table agent_proxies;  // node\nagent: agents hosted by that node
  table agent_relays;   // node\nagent: our agents, driven by that node
  table worker_relays;  // node\ncorr: our workers' calls for that node
  std::unordered_map<caf::actor_addr, std::pair<table*, std::string>> by_addr;
  runtime::gauge* peers_gauge = nullptr;
  std::shared_ptr<std::atomic<int64_t>> backlog;
  static inline const char* name = "cluster_hub";
};

using hub_actor = caf::stateful_actor<hub_state>;

void keep(hub_actor* self, table& t, std::string key, caf::actor hdl) {
  // It watches the hub: if the hub dies, every proxy and relay ends with
  // it, so their watchers retry through the next hub instead of waiting on
  // orphans no frame can reach. (Not a link: a child's end must not take
  // the hub down.)
  self->send(hdl, watch_atom::value, caf::actor_cast<caf::actor>(self));
  self->monitor(hdl);
  self->state.by_addr[hdl.address()] = {&t, key};
  t[std::move(key)] = std::move(hdl);
}

/// Tells every actor of `t` whose key starts with `prefix` that its node
/// (or, for a worker proxy, its worker) is gone, unless `keep` holds its key.
void drop_prefix(hub_actor* self, table& t, const std::string& prefix,
                 const std::set<std::string>& keep = {}) {
  for (auto it = t.lower_bound(prefix); it != t.end() && it->first.rfind(prefix, 0) == 0;) {
    if (keep.contains(it->first)) {
      ++it;
      continue;
    }
    self->send(it->second, peer_down_atom::value);
    self->state.by_addr.erase(it->second.address());
    it = t.erase(it);
  }
}

void node_down(hub_actor* self, const std::string& node) {
  auto& st = self->state;
  auto it = st.incarnations.find(node);
  if (it == st.incarnations.end()) return;
  st.dead.insert(node + ":" + std::to_string(it->second));
  st.incarnations.erase(it);
  st.peers_gauge->set(static_cast<int64_t>(st.incarnations.size()));
  runtime::log::warn("cluster", "node_down", {{"node", node}});
  drop_prefix(self, st.worker_proxies, node + "/");
  drop_prefix(self, st.agent_proxies, node + "\n");
  drop_prefix(self, st.agent_relays, node + "\n");
  drop_prefix(self, st.worker_relays, node + "\n");
}

void on_view(hub_actor* self, const cluster_view& view) {
  auto& st = self->state;
  std::set<std::string> present;
  for (auto& m : view.members) {
    if (m.id == st.self_node) continue;
    if (st.dead.contains(m.id + ":" + std::to_string(m.incarnation))) continue;
    present.insert(m.id);
    if (auto it = st.incarnations.find(m.id);
        it != st.incarnations.end() && it->second != m.incarnation)
      node_down(self, m.id); // restarted: everything of the old one is gone
    if (!st.incarnations.contains(m.id))
      runtime::log::info("cluster", "node_up",
                         {{"node", m.id}, {"incarnation", std::to_string(m.incarnation)}});
    st.incarnations[m.id] = m.incarnation;
    std::set<std::string> listed;
    if (m.has_role("inference"))
      for (auto w : m.workers) {
        auto key = m.id + "/" + w.info.id;
        listed.insert(key);
        if (m.draining) { // finish what runs there, send nothing new
          w.load.healthy = false;
          w.load.health_detail = "node " + m.id + " is draining";
        }
        if (auto p = st.worker_proxies.find(key); p != st.worker_proxies.end())
          self->send(p->second, load_atom::value, std::move(w));
        else
          keep(self, st.worker_proxies, key,
               spawn_remote_worker(self->system(), st.net, st.router, std::move(w)));
      }
    drop_prefix(self, st.worker_proxies, m.id + "/", listed); // workers it no longer lists
  }
  std::vector<std::string> gone;
  for (auto& [node, inc] : st.incarnations)
    if (!present.contains(node)) gone.push_back(node);
  for (auto& node : gone)
    node_down(self, node);
  st.peers_gauge->set(static_cast<int64_t>(st.incarnations.size()));
}

void on_frame(hub_actor* self, peer_frame& f) {
  auto& st = self->state;
  auto& env = f.env;
  if (!st.incarnations.contains(env.source)) return; // not (or no longer) a live peer to us
  auto forward = [&](table& t, const std::string& key) {
    if (auto it = t.find(key); it != t.end())
      self->send(it->second, peer_frame_atom::value, std::move(f));
  };
  switch (env.type) {
  case msg_type::infer: {
    auto key = env.source + "\n" + std::to_string(env.corr);
    keep(self, st.worker_relays, key,
         spawn_worker_relay(self->system(), st.net, st.router, env.source, env.corr, env.target,
                            std::move(f.payload)));
    return;
  }
  case msg_type::cancel:
    return forward(st.worker_relays, env.source + "\n" + std::to_string(env.corr));
  case msg_type::infer_ok:
  case msg_type::infer_err:
  case msg_type::token:
  case msg_type::done:
  case msg_type::fail:
    return forward(st.worker_proxies, env.source + "/" + env.target);
  case msg_type::agent_open:
  case msg_type::agent_send:
  case msg_type::agent_sub:
  case msg_type::agent_unsub:
  case msg_type::agent_cancel:
  case msg_type::agent_ask:
  case msg_type::agent_kill: {
    auto key = env.source + "\n" + env.target;
    if (!st.agent_relays.contains(key)) {
      if (!st.directory) return; // not started yet: the peer's proxy times out and retries
      keep(self, st.agent_relays, key,
           spawn_agent_relay(self->system(), st.net, st.directory, env.source, env.target));
    }
    return forward(st.agent_relays, key);
  }
  case msg_type::agent_event:
  case msg_type::agent_answer:
  case msg_type::agent_down:
    return forward(st.agent_proxies, env.source + "\n" + env.target);
  default:
    return;
  }
}

caf::behavior hub_impl(hub_actor* self, std::string self_node, std::shared_ptr<transport> net,
                       caf::actor router, publish_fn publish, std::chrono::milliseconds heartbeat,
                       std::shared_ptr<std::atomic<int64_t>> backlog, caf::actor directory) {
  auto& st = self->state;
  st.backlog = std::move(backlog);
  st.self_node = std::move(self_node);
  st.net = std::move(net);
  st.router = std::move(router);
  st.publish = std::move(publish);
  st.heartbeat = heartbeat;
  st.peers_gauge =
      &runtime::metrics_registry::global().get_gauge("troupe_cluster_peers", "Live peer nodes");
  st.backlog->store(0); // frames the previous incarnation held died with it
  st.directory = std::move(directory);
  self->set_exception_handler(
      [](caf::scheduled_actor*, std::exception_ptr& eptr) { return exception_to_error(eptr); });
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    auto it = st.by_addr.find(dm.source);
    if (it == st.by_addr.end()) return;
    auto& [t, key] = it->second;
    if (auto e = t->find(key); e != t->end() && e->second.address() == dm.source) t->erase(e);
    st.by_addr.erase(it);
  });
  self->send(self, tick_atom::value);
  return {
      [=](peer_frame_atom, peer_frame& f) {
        self->state.backlog->fetch_sub(1, std::memory_order_relaxed);
        on_frame(self, f);
      },
      [=](view_atom, view_ptr& v) { on_view(self, *v); },
      [=](peer_down_atom, std::string& node) { node_down(self, node); },
      [=](register_atom, std::string& node, std::string& agent) {
        auto proxy = caf::actor_cast<caf::actor>(self->current_sender());
        keep(self, self->state.agent_proxies, node + "\n" + agent, proxy);
      },
      [=](register_atom, caf::actor& directory) { self->state.directory = directory; },
      [=](crash_atom) {
        if (fault_injection_enabled())
          throw std::runtime_error("injected crash of the cluster hub");
      },
      [=](tick_atom) {
        auto& st = self->state;
        self->delayed_send(self, st.heartbeat, tick_atom::value);
        self->request(st.router, st.heartbeat, stats_atom::value)
            .then(
                [=](std::vector<worker_status>& ws) {
                  auto agents = runtime::metrics_registry::global()
                                    .get_gauge("troupe_active_agents",
                                               "Agent activations in memory on this node")
                                    .value();
                  self->state.publish(local_workers(std::move(ws)), agents);
                },
                [](caf::error&) {});
      },
  };
}

} // namespace

caf::actor spawn_hub(caf::actor_system& sys, std::string self_node, std::shared_ptr<transport> net,
                     caf::actor router, publish_fn publish, std::chrono::milliseconds heartbeat,
                     std::shared_ptr<std::atomic<int64_t>> backlog, caf::actor directory) {
  return sys.spawn(hub_impl, std::move(self_node), std::move(net), std::move(router),
                   std::move(publish), heartbeat, std::move(backlog), std::move(directory));
}

} // namespace troupe::cluster
