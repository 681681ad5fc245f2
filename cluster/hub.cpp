#include "cluster/hub.hpp"
#include "actors/atoms.hpp"
#include "actors/messages.hpp"
#include "cluster/agent_relay.hpp"
#include "cluster/atoms.hpp"
#include "actors/mcp_catalog.hpp"
#include "cluster/membership.hpp"
#include "cluster/remote_mcp.hpp"
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
  table mcp_proxies;    // node\nserver: MCP servers that node runs
  std::shared_ptr<mcp_catalog> mcp;
  std::set<std::string> mcp_asked; // node\nserver\nversion: tool lists asked for
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
  drop_prefix(self, st.mcp_proxies, node + "\n");
  st.mcp->drop_remote(node);
  std::erase_if(st.mcp_asked, [&](auto& k) { return k.rfind(node + "\n", 0) == 0; });
}

/// Asks peer `m` for the tool lists of its MCP servers whose version changed,
/// and forgets the servers it no longer runs.
void sync_mcp(hub_actor* self, const member& m) {
  auto& st = self->state;
  std::set<std::string> listed;
  for (auto& [server, version] : m.mcp) {
    listed.insert(m.id + "\n" + server);
    if (st.mcp->remote_version(m.id, server) == version) continue;
    if (st.mcp_asked.insert(m.id + "\n" + server + "\n" + std::to_string(version)).second)
      st.net->send(m.id, msg_type::mcp_list, server, 0, nlohmann::json::object());
  }
  for (auto it = st.mcp_proxies.lower_bound(m.id + "\n");
       it != st.mcp_proxies.end() && it->first.rfind(m.id + "\n", 0) == 0; ++it)
    if (!listed.contains(it->first)) st.mcp->drop_remote(m.id, it->first.substr(m.id.size() + 1));
  drop_prefix(self, st.mcp_proxies, m.id + "\n", listed);
}

/// A peer's tool list for one of its MCP servers: agents here may call it.
void add_remote_mcp(hub_actor* self, const std::string& node, const std::string& server,
                    const nlohmann::json& body) {
  auto& st = self->state;
  mcp_catalog::listing l;
  l.version = body.value("version", uint64_t{0});
  l.timeout = std::chrono::milliseconds{body.value("timeout_ms", int64_t{60000})};
  for (auto& t : body.value("tools", nlohmann::json::array())) {
    if (!t.is_object()) continue;
    runtime::mcp_tool tool;
    tool.server = server;
    tool.name = t.value("name", "");
    tool.exposed = t.value("exposed", "");
    tool.description = t.value("description", "");
    tool.input_schema = t.value("schema", "{}");
    // The owner computed the exposed name; it must still be ours to route.
    if (tool.name.empty() || tool.exposed.rfind(server + "__", 0) != 0) continue;
    l.tools.push_back(std::move(tool));
  }
  auto key = node + "\n" + server;
  auto it = st.mcp_proxies.find(key);
  if (it == st.mcp_proxies.end()) {
    keep(self, st.mcp_proxies, key, spawn_remote_mcp(self->system(), st.net, node, server));
    it = st.mcp_proxies.find(key);
  }
  runtime::log::info(
      "cluster", "remote_mcp_server",
      {{"node", node}, {"server", server}, {"tools", std::to_string(l.tools.size())}});
  st.mcp->set_remote(node, server, std::move(l), it->second);
}

/// A peer's agent calls one of our MCP servers' tools.
void serve_mcp_call(hub_actor* self, const envelope& env, const nlohmann::json& body) {
  auto& st = self->state;
  auto reply = [net = st.net, env](const runtime::tool_outcome& out) {
    net->send(env.source, msg_type::mcp_result, env.target, env.corr,
              {{"result", out.result}, {"is_error", out.is_error}});
  };
  auto route = st.mcp->local_route(env.target);
  if (!route) return reply({"no MCP server '" + env.target + "' on node " + st.self_node, true});
  // Keys are unique per calling node: its agents' keys prefixed with it.
  self->request(route->client, route->timeout + std::chrono::seconds(5), tool_atom::value,
                body.value("tool", ""), body.value("arguments", nlohmann::json::object()).dump(),
                env.source + "\n" + body.value("key", ""))
      .then([reply](runtime::tool_outcome& out) { reply(out); },
            [reply](caf::error& err) {
              reply({to_failure(err).message, true});
            });
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
    sync_mcp(self, m);
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
  case msg_type::mcp_list: {
    auto l = st.mcp->local_listing(env.target);
    if (!l) return;
    nlohmann::json tools = nlohmann::json::array();
    for (auto& t : l->tools)
      tools.push_back({{"name", t.name},
                       {"exposed", t.exposed},
                       {"description", t.description},
                       {"schema", t.input_schema}});
    st.net->send(
        env.source, msg_type::mcp_tools, env.target, 0,
        {{"version", l->version}, {"timeout_ms", l->timeout.count()}, {"tools", std::move(tools)}});
    return;
  }
  case msg_type::mcp_tools:
    return add_remote_mcp(self, env.source, env.target,
                          decode_payload(f.payload).value_or(nlohmann::json::object()));
  case msg_type::mcp_call:
    return serve_mcp_call(self, env, decode_payload(f.payload).value_or(nlohmann::json::object()));
  case msg_type::mcp_cancel:
    if (auto route = st.mcp->local_route(env.target)) {
      auto body = decode_payload(f.payload).value_or(nlohmann::json::object());
      self->send(route->client, cancel_atom::value, env.source + "\n" + body.value("key", ""));
    }
    return;
  case msg_type::mcp_result:
    return forward(st.mcp_proxies, env.source + "\n" + env.target);
  default:
    return;
  }
}

caf::behavior hub_impl(hub_actor* self, std::string self_node, std::shared_ptr<transport> net,
                       caf::actor router, publish_fn publish, std::chrono::milliseconds heartbeat,
                       std::shared_ptr<std::atomic<int64_t>> backlog, caf::actor directory,
                       std::shared_ptr<mcp_catalog> mcp) {
  auto& st = self->state;
  st.mcp = std::move(mcp);
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
        guarded(f, [&] { on_frame(self, f); });
      },
      [=](view_atom, view_ptr& v) { on_view(self, *v); },
      [=](peer_down_atom, std::string& node) { node_down(self, node); },
      [=](register_atom, std::string& node, uint64_t inc, std::string& agent) {
        auto proxy = caf::actor_cast<caf::actor>(self->current_sender());
        // Placement may have judged the node live just before its death
        // reached us: kept, this proxy would wait forever for frames that
        // never come. Ending it now sends its requests to the next host.
        if (self->state.dead.contains(node + ":" + std::to_string(inc)))
          return self->send(proxy, peer_down_atom::value);
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
                  self->state.publish(local_workers(std::move(ws)), agents,
                                      self->state.mcp->local_versions());
                },
                [](caf::error&) {});
      },
  };
}

} // namespace

caf::actor spawn_hub(caf::actor_system& sys, std::string self_node, std::shared_ptr<transport> net,
                     caf::actor router, publish_fn publish, std::chrono::milliseconds heartbeat,
                     std::shared_ptr<std::atomic<int64_t>> backlog, caf::actor directory,
                     std::shared_ptr<mcp_catalog> mcp) {
  return sys.spawn(hub_impl, std::move(self_node), std::move(net), std::move(router),
                   std::move(publish), heartbeat, std::move(backlog), std::move(directory),
                   std::move(mcp));
}

} // namespace troupe::cluster
