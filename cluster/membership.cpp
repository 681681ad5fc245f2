#include "cluster/membership.hpp"
#include "runtime/log.hpp"
#include "runtime/redis_client.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <map>

namespace troupe::cluster {

using nlohmann::json;
using runtime::redis_client;

bool member::has_role(const std::string& r) const {
  return std::find(roles.begin(), roles.end(), r) != roles.end();
}

const member* cluster_view::find(const std::string& id) const {
  for (auto& m : members)
    if (m.id == id) return &m;
  return nullptr;
}

json to_json(const member& m) {
  json workers = json::array();
  for (auto& w : m.workers)
    workers.push_back({{"id", w.info.id},
                       {"kind", w.info.kind},
                       {"models", w.info.models},
                       {"backend", w.info.backend},
                       {"slots", w.info.slots},
                       {"max_queue", w.info.max_queue},
                       {"active", w.load.active},
                       {"queued", w.load.queued},
                       {"healthy", w.load.healthy},
                       {"health", w.load.health_detail},
                       {"served", w.load.served},
                       {"failed", w.load.failed}});
  return {{"id", m.id},           {"endpoint", m.endpoint},    {"incarnation", m.incarnation},
          {"roles", m.roles},     {"weight", m.weight},        {"draining", m.draining},
          {"gateway", m.gateway}, {"agents", m.active_agents}, {"workers", std::move(workers)},
          {"mcp", m.mcp},         {"curve_key", m.curve_key}};
}

member member_from(const json& j) {
  member m;
  m.id = j.value("id", "");
  m.endpoint = j.value("endpoint", "");
  m.incarnation = j.value("incarnation", uint64_t{0});
  m.roles = j.value("roles", std::vector<std::string>{});
  m.weight = j.value("weight", 1.0);
  m.draining = j.value("draining", false);
  m.gateway = j.value("gateway", "");
  m.curve_key = j.value("curve_key", "");
  m.active_agents = j.value("agents", int64_t{0});
  if (auto mcp = j.find("mcp"); mcp != j.end() && mcp->is_object())
    for (auto& [server, version] : mcp->items())
      if (version.is_number_unsigned()) m.mcp[server] = version.get<uint64_t>();
  for (auto& w : j.value("workers", json::array())) {
    actors::worker_status s;
    s.info.id = w.value("id", "");
    s.info.kind = w.value("kind", "cpu");
    s.info.models = w.value("models", std::vector<std::string>{});
    s.info.backend = w.value("backend", "");
    s.info.slots = w.value("slots", int64_t{1});
    s.info.max_queue = w.value("max_queue", int64_t{0});
    s.info.node = m.id;
    s.load.id = s.info.id;
    s.load.active = w.value("active", int64_t{0});
    s.load.queued = w.value("queued", int64_t{0});
    s.load.healthy = w.value("healthy", true);
    s.load.health_detail = w.value("health", "");
    s.load.served = w.value("served", uint64_t{0});
    s.load.failed = w.value("failed", uint64_t{0});
    m.workers.push_back(std::move(s));
  }
  return m;
}

membership::membership(const runtime::node_config& cfg, uint64_t incarnation, curve_keys curve)
    : cfg_(cfg), curve_(std::move(curve)) {
  self_.id = cfg.id;
  self_.curve_key = curve_.public_key;
  self_.endpoint = cfg.cluster.advertise;
  self_.incarnation = incarnation;
  self_.roles = cfg.roles;
  self_.weight = cfg.cluster.weight;
  if (cfg.has_role("gateway"))
    self_.gateway = cfg.gateway.host + ":" + std::to_string(cfg.gateway.port);
  redis_ = std::make_unique<redis_client>(cfg.cluster.redis, 1000);
  auto v = std::make_shared<cluster_view>();
  v->members.push_back(self_);
  view_ = v;
  read_view(); // the node starts knowing the cluster; it joins in `start`
}

membership::~membership() {
  leave();
}

void membership::start(callbacks cb) {
  cb_ = std::move(cb);
  try {
    beat(); // joins with what was published: peers see its workers at once
  } catch (const runtime::redis_error& e) {
    redis_ok_ = false; // the heartbeat thread keeps trying
    runtime::log::warn("cluster", "redis_lost",
                       {{"redis", cfg_.cluster.redis}, {"reason", e.what()}});
  }
  thread_ = std::thread([this] { run(); });
}

void membership::publish(std::vector<actors::worker_status> workers, int64_t active_agents,
                         bool draining, std::map<std::string, uint64_t> mcp) {
  std::lock_guard<std::mutex> guard{mutex_};
  self_.workers = std::move(workers);
  self_.mcp = std::move(mcp);
  self_.active_agents = active_agents;
  self_.draining = self_.draining || draining;
}

void membership::publish_draining() {
  std::lock_guard<std::mutex> guard{mutex_};
  self_.draining = true;
  auto v = std::make_shared<cluster_view>(*view_);
  for (auto& m : v->members)
    if (m.id == self_.id) m.draining = true;
  view_ = v;
}

std::shared_ptr<const cluster_view> membership::view() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return view_;
}

std::string membership::self_key() const {
  return self_.id + ":" + std::to_string(self_.incarnation);
}

void membership::leave() {
  {
    std::lock_guard<std::mutex> guard{mutex_};
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  try {
    redis_->send({{"DEL", "troupe:node:" + self_key()}, {"SREM", "troupe:members", self_key()}});
    runtime::log::info("cluster", "left", {{"node", self_.id}});
  } catch (const runtime::redis_error&) {
    // Our entry expires with its TTL.
  }
}

void membership::beat() {
  member me;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    me = self_;
  }
  auto key = self_key();
  // First: are we still a member? A node that was paused may have been
  // declared dead meanwhile; it must not write anything (least of all
  // fences for the peers it could not hear while it slept).
  auto self_fenced = redis_->run({"EXISTS", "troupe:fenced:" + key});
  if (self_fenced->type == REDIS_REPLY_INTEGER && self_fenced->integer == 1) {
    if (cb_.on_fenced) cb_.on_fenced();
    return;
  }
  auto ttl = std::max(3 * cfg_.cluster.suspect_after, 4 * cfg_.cluster.heartbeat);
  std::vector<redis_client::command> cmds{
      {"SET", "troupe:node:" + key, to_json(me).dump(), "PX", std::to_string(ttl.count())},
      {"SADD", "troupe:members", key}};
  if (cb_.take_fenced)
    for (auto& f : cb_.take_fenced()) {
      cmds.push_back({"SET", "troupe:fenced:" + f, "1", "PX", "3600000"});
      cmds.push_back({"DEL", "troupe:node:" + f});
      cmds.push_back({"SREM", "troupe:members", f});
    }
  redis_->send(cmds);
  if (cb_.on_drain &&
      redis_client::str(redis_->run({"GET", "troupe:drain:" + me.id}).get()) == "1") {
    redis_->run({"DEL", "troupe:drain:" + me.id}); // a restart must not drain again
    cb_.on_drain();
  }
  read_view();
}

void membership::read_view() {
  member me;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    me = self_;
  }
  auto ids = redis_->run({"SMEMBERS", "troupe:members"});
  std::vector<std::string> keys;
  for (size_t i = 0; i < ids->elements; ++i)
    keys.push_back(redis_client::str(ids->element[i]));
  std::map<std::string, member> latest; // one incarnation per node: the newest
  if (!keys.empty()) {
    redis_client::command mget{"MGET"};
    for (auto& k : keys)
      mget.push_back("troupe:node:" + k);
    auto vals = redis_->run(mget);
    std::vector<redis_client::command> gone;
    for (size_t i = 0; i < vals->elements && i < keys.size(); ++i) {
      auto text = redis_client::str(vals->element[i]);
      if (text.empty()) {
        gone.push_back({"SREM", "troupe:members", keys[i]});
        continue;
      }
      auto j = json::parse(text, nullptr, false);
      if (j.is_discarded() || !j.is_object()) continue;
      member m;
      try {
        m = member_from(j);
      } catch (const json::exception&) { // a record of the wrong shape is no member
        continue;
      }
      if (curve_.enabled() && !curve_.allowed.contains(m.curve_key)) {
        if (refused_.insert(m.id + ":" + std::to_string(m.incarnation)).second)
          runtime::log::warn("cluster", "member_key_not_allowed",
                             {{"node", m.id},
                              {"key", m.curve_key.empty() ? "(none: Curve off)" : m.curve_key},
                              {"action", "left out of the cluster view"}});
        continue;
      }
      auto& slot = latest[m.id];
      if (slot.id.empty() || slot.incarnation < m.incarnation) slot = std::move(m);
    }
    if (!gone.empty()) redis_->send(gone);
  }
  latest[me.id] = me; // this node as it is now, not as it was a beat ago
  auto v = std::make_shared<cluster_view>();
  for (auto& [id, m] : latest)
    v->members.push_back(std::move(m));
  {
    std::lock_guard<std::mutex> guard{mutex_};
    view_ = v;
  }
  if (cb_.on_view) cb_.on_view(v);
}

void membership::run() {
  auto backoff = cfg_.cluster.heartbeat;
  while (true) {
    {
      std::unique_lock<std::mutex> lock{mutex_};
      if (wake_.wait_for(lock, redis_ok_ ? cfg_.cluster.heartbeat : backoff,
                         [this] { return stopping_; }))
        return;
    }
    try {
      beat();
      if (!redis_ok_)
        runtime::log::info("cluster", "redis_recovered", {{"redis", cfg_.cluster.redis}});
      redis_ok_ = true;
      backoff = cfg_.cluster.heartbeat;
    } catch (const runtime::redis_error& e) {
      if (redis_ok_)
        runtime::log::warn("cluster", "redis_lost",
                           {{"redis", cfg_.cluster.redis},
                            {"reason", e.what()},
                            {"action", "serving on the last known membership; reconnecting"}});
      redis_ok_ = false;
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(5));
    }
  }
}

} // namespace troupe::cluster
