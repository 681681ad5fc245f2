#include "cluster/cluster_node.hpp"
#include "actors/atoms.hpp"
#include "actors/messages.hpp"
#include "actors/stable_address.hpp"
#include "actors/supervision.hpp"
#include "cluster/atoms.hpp"
#include "cluster/hub.hpp"
#include "cluster/membership.hpp"
#include "cluster/placement.hpp"
#include "cluster/remote_agent.hpp"
#include "cluster/transport.hpp"
#include "runtime/log.hpp"
#include "runtime/redis_client.hpp"

#include <caf/all.hpp>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <set>
#include <thread>

namespace troupe::cluster {

namespace {

uint64_t new_incarnation() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

curve_keys curve_of(const runtime::node_config& cfg) {
  if (cfg.cluster.curve_secret_key_file.empty()) return {};
  return load_curve_keys(cfg.cluster.curve_secret_key_file, cfg.cluster.curve_allowed_keys_file);
}

} // namespace

struct cluster_node::impl {
  runtime::node_config cfg;
  uint64_t incarnation = new_incarnation();
  curve_keys curve;
  membership members;
  std::shared_ptr<transport> net;
  caf::actor hub; // stable address, set in start() before any peer is known
  caf::actor hub_supervisor;
  std::shared_ptr<actors::incarnation_cell> hub_cell = std::make_shared<actors::incarnation_cell>();
  std::shared_ptr<actors::incarnation_cell> directory_cell =
      std::make_shared<actors::incarnation_cell>();
  /// Frames handed to the hub and not yet routed (the transport's credit).
  std::shared_ptr<std::atomic<int64_t>> backlog = std::make_shared<std::atomic<int64_t>>(0);
  static constexpr int64_t max_backlog = 10000;
  std::function<void()> drain_cb;
  std::atomic<bool> drain_requested{false};
  std::atomic<bool> draining{false};
  std::vector<actors::worker_status> last_workers;
  int64_t last_agents = 0;
  mutable std::mutex mutex;
  std::set<std::string> dead; // "node:incarnation" the transport declared dead
  bool stopped = false;
  std::atomic<bool> started{false}; // a restarted hub asks for the view itself

  explicit impl(const runtime::node_config& c)
      : cfg(c), curve(curve_of(c)), members(c, incarnation, curve) {
    transport::options o;
    o.node = cfg.id;
    o.incarnation = incarnation;
    o.bind = cfg.cluster.bind;
    o.ping_interval = std::min(cfg.cluster.heartbeat, cfg.cluster.suspect_after / 5);
    o.suspect_after = cfg.cluster.suspect_after;
    o.can_deliver = [b = backlog] { return b->load(std::memory_order_relaxed) < max_backlog; };
    o.curve = curve;
    net = std::make_shared<transport>(
        o,
        [this](envelope env, std::string payload) {
          backlog->fetch_add(1, std::memory_order_relaxed);
          caf::anon_send(hub, peer_frame_atom::value,
                         peer_frame{std::move(env), std::move(payload)});
        },
        [this](const std::string& node, uint64_t inc, bool) {
          {
            std::lock_guard<std::mutex> guard{mutex};
            dead.insert(node + ":" + std::to_string(inc));
          }
          caf::anon_send(hub, peer_down_atom::value, node);
        });
  }

  bool is_live(const std::string& node, uint64_t inc) const {
    std::lock_guard<std::mutex> guard{mutex};
    return !dead.contains(node + ":" + std::to_string(inc));
  }
};

cluster_node::cluster_node(const runtime::node_config& cfg) : impl_(std::make_unique<impl>(cfg)) {
  runtime::log::info("cluster", "joined",
                     {{"node", cfg.id},
                      {"incarnation", std::to_string(impl_->incarnation)},
                      {"bind", cfg.cluster.bind},
                      {"advertise", cfg.cluster.advertise},
                      {"curve", impl_->curve.enabled() ? impl_->curve.public_key : "off"},
                      {"members", std::to_string(impl_->members.view()->members.size())}});
}

cluster_node::~cluster_node() {
  stop();
}

std::shared_ptr<actors::agent_placement>
cluster_node::start(caf::actor_system& sys, caf::actor router, actors::restart_policy policy,
                    std::shared_ptr<actors::supervision_status> status,
                    std::shared_ptr<actors::mcp_catalog> mcp) {
  auto* im = impl_.get();
  // The cluster subtree: the hub, behind a stable address the transport
  // and membership threads send to. A restarted hub rebuilds its proxies
  // from the next view; the ones it had died with it (they are linked).
  im->hub = actors::spawn_stable_address(sys, im->hub_cell, "cluster hub");
  im->hub_supervisor = actors::spawn_supervisor(
      sys, "cluster",
      {{"hub",
        [im, router, mcp](caf::actor_system& sys) {
          auto h = spawn_hub(
              sys, im->cfg.id, im->net, router,
              [im](std::vector<actors::worker_status> workers, int64_t agents,
                   std::map<std::string, uint64_t> mcp_versions) {
                im->members.publish(std::move(workers), agents, im->draining.load(),
                                    std::move(mcp_versions));
              },
              im->cfg.cluster.heartbeat, im->backlog, im->directory_cell->get(), mcp);
          im->hub_cell->set(h);
          if (im->started) caf::anon_send(h, view_atom::value, view_ptr{im->members.view()});
          return h;
        }}},
      policy, std::move(status));
  im->hub_cell->wait_for_first(std::chrono::seconds(5));
  membership::callbacks cb;
  cb.on_view = [im](std::shared_ptr<const cluster_view> v) {
    std::map<std::string, peer_address> peers;
    for (auto& m : v->members)
      if (m.id != im->cfg.id && im->is_live(m.id, m.incarnation))
        peers[m.id] = {m.endpoint, m.incarnation, m.curve_key};
    // The hub hears of a new peer before the transport lets its frames in.
    caf::anon_send(im->hub, view_atom::value, view_ptr{v});
    im->net->set_peers(std::move(peers));
  };
  cb.take_fenced = [im] { return im->net->take_fenced(); };
  cb.on_fenced = [im] {
    // Peers declared this incarnation dead and may already run its agents:
    // going on would make two activations. Stop now; the service manager
    // restarts the node, which joins with a new incarnation.
    runtime::log::error("cluster", "fenced",
                        {{"node", im->cfg.id},
                         {"incarnation", std::to_string(im->incarnation)},
                         {"action", "exiting; restart to rejoin with a new incarnation"}});
    std::_Exit(3);
  };
  cb.on_drain = [im] {
    if (!im->drain_requested.exchange(true) && im->drain_cb) im->drain_cb();
  };
  // Join with the local workers already listed, so a peer that sees this
  // node can route to them in the same heartbeat.
  {
    caf::scoped_actor self{sys};
    self->request(router, std::chrono::seconds(2), actors::stats_atom::value)
        .receive(
            [&](std::vector<actors::worker_status>& ws) {
              im->members.publish(actors::local_workers(std::move(ws)), 0, false);
            },
            [](caf::error&) {});
  }
  im->members.start(std::move(cb));
  im->started = true;
  auto hub = im->hub;
  auto net = im->net;
  return std::make_shared<placement>(
      im->cfg.cluster.redis, im->cfg.id, im->incarnation, im->cfg.has_role("agents"),
      [im] { return im->draining.load(); }, [im] { return im->members.view(); },
      [im](const std::string& node, uint64_t inc) { return im->is_live(node, inc); },
      [&sys, net, hub](const std::string& node, uint64_t inc, const std::string& agent) {
        return spawn_remote_agent(sys, net, hub, node, inc, agent);
      });
}

void cluster_node::attach(caf::actor directory) {
  impl_->directory_cell->set(directory);
  caf::anon_send(impl_->hub, actors::register_atom::value, std::move(directory));
}

bool cluster_node::crash(const std::string& part) {
  if (part != "hub" || !actors::fault_injection_enabled()) return false;
  caf::anon_send(impl_->hub, actors::crash_atom::value);
  return true;
}

void cluster_node::stop() {
  auto& im = *impl_;
  if (im.stopped) return;
  im.stopped = true;
  im.members.leave();
  if (im.hub_supervisor) caf::anon_send_exit(im.hub_supervisor, caf::exit_reason::user_shutdown);
  if (im.hub) caf::anon_send_exit(im.hub, caf::exit_reason::user_shutdown);
  im.net->close(); // bye to the peers; no frame reaches the hub after this
}

nlohmann::json cluster_node::describe() const {
  auto v = impl_->members.view();
  nlohmann::json nodes = nlohmann::json::array();
  for (auto& m : v->members) {
    auto j = to_json(m);
    j["self"] = m.id == impl_->cfg.id;
    j["live"] = m.id == impl_->cfg.id || impl_->is_live(m.id, m.incarnation);
    nodes.push_back(std::move(j));
  }
  return {{"node", impl_->cfg.id},
          {"incarnation", impl_->incarnation},
          {"redis", impl_->cfg.cluster.redis},
          {"nodes", std::move(nodes)}};
}

void cluster_node::on_drain(std::function<void()> f) {
  impl_->drain_cb = std::move(f);
}

void cluster_node::set_draining() {
  impl_->draining = true;
  impl_->members.publish_draining();
}

bool cluster_node::request_drain(const std::string& node) const {
  if (!impl_->members.view()->find(node)) return false;
  // Its own heartbeat picks the request up (and clears it).
  runtime::redis_client redis{impl_->cfg.cluster.redis, 2000};
  redis.run({"SET", "troupe:drain:" + node, "1", "PX", "600000"});
  runtime::log::info("cluster", "drain_requested", {{"node", node}});
  return true;
}

} // namespace troupe::cluster
