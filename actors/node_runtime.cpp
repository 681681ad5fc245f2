#include "actors/node_runtime.hpp"
#include "actors/agent_directory.hpp"
#include "actors/atoms.hpp"
#include "actors/backend.hpp"
#include "actors/cluster_hooks.hpp"
#include "actors/deadline_clock.hpp"
#include "actors/inference_router.hpp"
#include "actors/inference_worker.hpp"
#include "actors/job_runner.hpp"
#include "actors/messages.hpp"
#include "actors/stable_address.hpp"
#include "actors/mcp_catalog.hpp"
#include "actors/mcp_client.hpp"
#include "actors/ws_session.hpp"
#include "runtime/log.hpp"

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <random>
#include <set>
#include <thread>

namespace troupe::actors {

/// A call from the callback API to run on a bridge actor (see `in_actor`).
struct bridge_call {
  std::function<void(caf::event_based_actor*)> run;
};

} // namespace troupe::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::bridge_call)

namespace troupe::actors {

using runtime::errc;

namespace {

/// Runs the calls it is sent, each making its requests and handing the
/// answers to their callbacks. Nothing they do may end it: every call of
/// the node's API passes one of these. (`index` only names it; an
/// argument-less function actor makes CAF 0.17 read a null argument tuple.)
caf::behavior bridge_impl(caf::event_based_actor* self, size_t /*index*/) {
  return {[=](bridge_call& c) {
    try {
      c.run(self);
    } catch (const std::exception& e) {
      runtime::log::error("node", "api_call_failed", {{"reason", e.what()}});
    } catch (...) {
      runtime::log::error("node", "api_call_failed", {{"reason", "unknown exception"}});
    }
  }};
}

/// Hands an answer to a caller's callback on a bridge actor; an exception
/// from it is logged, never allowed to end the bridge.
template <class F, class... Ts> void call_back(const F& cb, Ts&&... xs) noexcept {
  try {
    cb(std::forward<Ts>(xs)...);
  } catch (const std::exception& e) {
    runtime::log::error("node", "api_callback_failed", {{"reason", e.what()}});
  } catch (...) {
    runtime::log::error("node", "api_callback_failed", {{"reason", "unknown exception"}});
  }
}

caf::actor_system_config& configure(caf::actor_system_config& cfg) {
  auto threads = std::max(2u, std::thread::hardware_concurrency());
  cfg.set("scheduler.max-threads", static_cast<size_t>(threads));
  return cfg;
}

class caf_session_handle final : public session_handle {
public:
  caf_session_handle(caf::actor hdl, std::function<void()> on_closed)
      : hdl_(std::move(hdl)), on_closed_(std::move(on_closed)) {}

  void on_text(std::string frame) override {
    caf::anon_send(hdl_, frame_atom::value, std::move(frame));
  }
  void on_binary() override { caf::anon_send(hdl_, binary_atom::value); }
  void closed() override {
    caf::anon_send_exit(hdl_, caf::exit_reason::user_shutdown);
    if (on_closed_) on_closed_();
  }

private:
  caf::actor hdl_;
  std::function<void()> on_closed_;
};

} // namespace

struct node_runtime::impl {
  impl(const runtime::node_config& c, std::shared_ptr<const runtime::agent_type_registry> t,
       std::shared_ptr<runtime::state_store> store, io_threads& io,
       std::shared_ptr<cluster_hooks> cl)
      : cfg(c), types(std::move(t)), system(configure(caf_cfg)), cluster(std::move(cl)) {
    restart_policy policy{static_cast<int>(cfg.max_restarts), cfg.restart_window};
    for (unsigned i = 0; i < std::max(2u, std::thread::hardware_concurrency()); ++i)
      bridges.push_back(system.spawn(bridge_impl, size_t{i}));
    // Everyone talks to the router, the directory and the job runner through
    // stable addresses, so their supervisors can restart them unnoticed.
    router = spawn_stable_address(system, router_cell, "inference router");
    routing =
        spawn_supervisor(system, "routing",
                         {{"router",
                           [cell = router_cell, cache = c.response_cache](caf::actor_system& sys) {
                             auto r = spawn_inference_router(sys, size_t{1} << 20, cache);
                             cell->set(r); // workers re-register at their next report
                             return r;
                           }}},
                         policy, status);
    router_cell->wait_for_first(std::chrono::seconds(5));
    if (cfg.has_role("inference")) {
      // The inference subtree: one supervised worker per accelerator. A
      // crashed worker comes back on the same backend and registers again.
      std::vector<child_spec> children;
      for (auto& acc : cfg.accelerators) {
        auto be = make_backend(acc, io);
        auto r = router;
        children.push_back({"worker:" + acc.id, [acc, be, r](caf::actor_system& sys) {
                              return spawn_inference_worker(sys, acc, be, r);
                            }});
      }
      inference = spawn_supervisor(system, "inference", std::move(children), policy, status);
    }
    wait_for_workers(cfg.has_role("inference") ? cfg.accelerators.size() : 0);
    start_mcp_clients(io);
    agent_context ctx;
    ctx.mcp = mcp_catalog_;
    ctx.store = std::move(store);
    ctx.idle_timeout = cfg.idle_timeout;
    ctx.router = router;
    ctx.node = cfg.id;
    ctx.limits = cfg.limits;
    if (cluster) ctx.placement = cluster->start(system, router, policy, status, mcp_catalog_);
    // The agents subtree: the job runner first (at shutdown it must stop
    // before the directory, so its running jobs stay claimed and run again),
    // then the directory. A crashed directory takes its agents with it; the
    // new one reactivates the cut turns and sessions resend what they sent.
    directory = spawn_stable_address(system, directory_cell, "agent directory");
    std::vector<child_spec> agent_children;
    if (cfg.has_role("agents")) {
      jobs = spawn_stable_address(system, jobs_cell, "job runner");
      auto visibility = cfg.limits.job_visibility.count() > 0
                            ? cfg.limits.job_visibility
                            : cfg.limits.turn_timeout + std::chrono::seconds(30);
      agent_children.push_back({"jobs", [cell = jobs_cell, store = ctx.store, dir = directory,
                                         node = cfg.id, visibility](caf::actor_system& sys) {
                                  auto j = spawn_job_runner(sys, store, dir, node, 16, visibility);
                                  cell->set(j);
                                  return j;
                                }});
    }
    agent_children.push_back(
        {"directory", [cell = directory_cell, t = types, ctx](caf::actor_system& sys) {
           auto d = spawn_agent_directory(sys, t, ctx, cell);
           cell->set(d);
           return d;
         }});
    agents = spawn_supervisor(system, "agents", std::move(agent_children), policy, status);
    directory_cell->wait_for_first(std::chrono::seconds(5));
    if (cluster) cluster->attach(directory);
    store_ = ctx.store;
  }

  /// The mcp subtree: one client per configured server, behind a stable
  /// address. A server failing is outside the node's control, so the
  /// subtree never escalates; it restarts the client with backoff instead.
  void start_mcp_clients(io_threads& io) {
    if (cfg.mcp_servers.empty()) return;
    std::vector<child_spec> children;
    for (auto& server : cfg.mcp_servers) {
      auto cell = std::make_shared<incarnation_cell>();
      auto addr = spawn_stable_address(system, cell, "mcp:" + server.name);
      mcp_addresses.push_back(addr);
      mcp_catalog_->add_server(server, addr);
      children.push_back({"mcp:" + server.name,
                          [cell, server, cat = mcp_catalog_, io = &io](caf::actor_system& sys) {
                            auto c = spawn_mcp_client(sys, server, cat, *io);
                            cell->set(c);
                            return c;
                          }});
    }
    restart_policy policy{-1, std::chrono::seconds(60), std::chrono::milliseconds(200),
                          std::chrono::seconds(30)};
    mcp = spawn_supervisor(system, "mcp", std::move(children), policy, status);
  }

  // The bridges outlive `shutdown()` (a late call gets its error answer) and
  // stop here, before the actor system waits for every actor to end.
  ~impl() {
    for (auto& b : bridges)
      caf::anon_send_exit(b, caf::exit_reason::user_shutdown);
  }

  /// Agents resumed at start must find the workers: wait (briefly) until
  /// every local worker has registered with the router.
  void wait_for_workers(size_t expected) {
    caf::scoped_actor self{system};
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      size_t known = 0;
      self->request(router, std::chrono::seconds(1), stats_atom::value)
          .receive([&](std::vector<worker_status>& ws) { known = ws.size(); }, [&](caf::error&) {});
      if (known >= expected) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  runtime::node_config cfg;
  std::shared_ptr<const runtime::agent_type_registry> types;
  caf::actor_system_config caf_cfg;
  caf::actor_system system;
  caf::actor router;
  caf::actor directory;
  caf::actor jobs;
  caf::actor inference; // supervisor of the workers
  caf::actor routing;   // supervisor of the router
  caf::actor agents;    // supervisor of the directory and the job runner
  caf::actor mcp;       // supervisor of the MCP clients
  std::vector<caf::actor> mcp_addresses;
  /// Local servers, and in a cluster the servers peers run.
  std::shared_ptr<mcp_catalog> mcp_catalog_ = std::make_shared<mcp_catalog>();
  std::shared_ptr<incarnation_cell> router_cell = std::make_shared<incarnation_cell>();
  std::shared_ptr<incarnation_cell> directory_cell = std::make_shared<incarnation_cell>();
  std::shared_ptr<incarnation_cell> jobs_cell = std::make_shared<incarnation_cell>();
  std::shared_ptr<cluster_hooks> cluster;
  std::shared_ptr<supervision_status> status = std::make_shared<supervision_status>();
  std::shared_ptr<runtime::state_store> store_;
  std::mt19937_64 rng{std::random_device{}()};
  std::mutex rng_mutex;

  std::mutex sessions_mutex;
  std::set<caf::actor> sessions;
  bool stopped = false;
  /// Long-lived actors that bridge the callback API to request/response;
  /// calls go round-robin. (A helper actor spawned per call was a third of
  /// an activation's cost.)
  std::vector<caf::actor> bridges;
  std::atomic<size_t> next_bridge{0};

  /// Runs `f(self)` on a bridge actor: `f` makes its requests from there.
  void in_actor(std::function<void(caf::event_based_actor*)> f) {
    auto i = next_bridge.fetch_add(1, std::memory_order_relaxed) % bridges.size();
    caf::anon_send(bridges[i], bridge_call{std::move(f)});
  }
};

node_runtime::node_runtime(const runtime::node_config& cfg,
                           std::shared_ptr<const runtime::agent_type_registry> types,
                           std::shared_ptr<runtime::state_store> store, io_threads& io,
                           std::shared_ptr<cluster_hooks> cluster)
    : impl_(std::make_unique<impl>(cfg, std::move(types), std::move(store), io,
                                   std::move(cluster))) {}

node_runtime::~node_runtime() {
  shutdown();
}

const runtime::node_config& node_runtime::config() const {
  return impl_->cfg;
}

std::vector<std::pair<std::string, std::string>> node_runtime::agent_types() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& name : impl_->types->names())
    if (auto t = impl_->types->find(name)) out.emplace_back(name, t->cfg.system);
  return out;
}

std::vector<runtime::mcp_server_view> node_runtime::mcp_servers() const {
  return impl_->mcp_catalog_->view();
}

bool node_runtime::has_type(const std::string& type) const {
  return impl_->types->find(type) != nullptr;
}

std::unique_ptr<session_handle>
node_runtime::open_session(std::shared_ptr<frame_sink> sink, std::string fixed_type,
                           runtime::principal who, std::shared_ptr<runtime::key_quotas> quotas) {
  auto hdl = spawn_ws_session(impl_->system, std::move(sink), impl_->directory, impl_->cfg.id,
                              std::move(fixed_type), std::move(who), std::move(quotas));
  {
    std::lock_guard<std::mutex> guard{impl_->sessions_mutex};
    impl_->sessions.insert(hdl);
  }
  auto* im = impl_.get();
  return std::make_unique<caf_session_handle>(hdl, [im, hdl] {
    std::lock_guard<std::mutex> guard{im->sessions_mutex};
    im->sessions.erase(hdl);
  });
}

void node_runtime::execute(std::string type, std::string key, std::string message,
                           std::function<void(execute_result)> cb, const runtime::principal& who) {
  execute_streaming(std::move(type), std::move(key), std::move(message), nullptr, std::move(cb),
                    who);
}

void node_runtime::execute_streaming(std::string type, std::string key, std::string message,
                                     std::function<void(std::string)> on_token,
                                     std::function<void(execute_result)> cb,
                                     const runtime::principal& who) {
  auto dir = impl_->directory;
  auto timeout = impl_->cfg.limits.turn_timeout + std::chrono::seconds(5);
  std::string request_id;
  {
    std::lock_guard<std::mutex> guard{impl_->rng_mutex};
    request_id = "exec-" + std::to_string(impl_->rng());
  }
  // Subscribed to the agent, it sees every event; ours carry our request id.
  impl_->system.spawn(
      [=](caf::event_based_actor* self, std::string id) -> caf::behavior {
        auto finish = [=](execute_result r) {
          cb(std::move(r));
          self->quit();
        };
        // Our request id makes the turn's events ours among everything a
        // subscription sees; it is also the idempotency key of the ask.
        auto ask = [=](const std::string& agent, caf::actor watched) {
          request_with_deadline(self, timeout, dir, ask_atom::value, agent, message, std::string{},
                                id)
              .then(
                  [=](turn_result& r) {
                    if (watched)
                      self->send(watched, unsub_atom::value, caf::actor_cast<caf::actor>(self));
                    finish({std::nullopt, r.agent, std::move(r.answer), r.tokens, r.steps});
                  },
                  [=](caf::error& err) {
                    finish({to_failure(err), agent, {}, {}, 0});
                  });
        };
        request_with_deadline(self, std::chrono::seconds(10), dir, spawn_atom::value, type, key,
                              who.name, who.scope())
            .then(
                [=](std::string& agent, std::string&) {
                  if (!on_token) return ask(agent, nullptr);
                  request_with_deadline(self, std::chrono::seconds(10), dir, lookup_atom::value,
                                        agent)
                      .then(
                          [=](caf::actor& hdl) {
                            self->send(hdl, subscribe_atom::value,
                                       caf::actor_cast<caf::actor>(self));
                            ask(agent, hdl);
                          },
                          [=](caf::error& err) {
                            finish({to_failure(err), agent, {}, {}, 0});
                          });
                },
                [=](caf::error& err) {
                  finish({to_failure(err), {}, {}, {}, 0});
                });
        return {
            [=](event_atom, runtime::event_ptr& ev) {
              if (!on_token || ev->id != id || ev->kind != runtime::event_kind::token) return;
              if (!ev->text.empty()) return on_token(ev->text);
              // From another node only the encoded event travels.
              auto j = nlohmann::json::parse(ev->json, nullptr, false);
              if (j.is_object() && j.contains("text") && j["text"].is_string())
                on_token(j["text"].get<std::string>());
            },
        };
      },
      std::move(request_id));
}

void node_runtime::spawn_agent(std::string type, std::string key,
                               std::function<void(std::optional<runtime::failure>, std::string)> cb,
                               const runtime::principal& who) {
  auto dir = impl_->directory;
  impl_->in_actor([=](caf::event_based_actor* self) {
    request_with_deadline(self, std::chrono::seconds(10), dir, spawn_atom::value, type, key,
                          who.name, who.scope())
        .then([=](std::string& agent, std::string&) { call_back(cb, std::nullopt, agent); },
              [=](caf::error& err) { call_back(cb, to_failure(err), std::string{}); });
  });
}

void node_runtime::kill_agent(std::string agent,
                              std::function<void(std::optional<runtime::failure>)> cb,
                              const runtime::principal& who) {
  auto dir = impl_->directory;
  impl_->in_actor([=](caf::event_based_actor* self) {
    self->request(dir, std::chrono::seconds(10), kill_atom::value, agent, who.scope())
        .then([=](bool) { call_back(cb, std::nullopt); },
              [=](caf::error& err) { call_back(cb, to_failure(err)); });
  });
}

void node_runtime::list_agents(std::function<void(std::vector<std::string>)> cb,
                               const runtime::principal& who) {
  auto dir = impl_->directory;
  impl_->in_actor([=](caf::event_based_actor* self) {
    self->request(dir, std::chrono::seconds(10), list_atom::value, who.scope())
        .then([=](std::vector<std::string>& agents) { call_back(cb, std::move(agents)); },
              [=](caf::error&) { call_back(cb, std::vector<std::string>{}); });
  });
}

void node_runtime::workers(std::function<void(std::vector<worker_status>)> cb) {
  auto router = impl_->router;
  impl_->in_actor([=](caf::event_based_actor* self) {
    self->request(router, std::chrono::seconds(10), stats_atom::value)
        .then([=](std::vector<worker_status>& ws) { call_back(cb, std::move(ws)); },
              [=](caf::error&) { call_back(cb, std::vector<worker_status>{}); });
  });
}

std::variant<runtime::job_record, runtime::failure>
node_runtime::submit_job(const std::string& type, std::string key, std::string message,
                         const runtime::principal& who) {
  if (!has_type(type))
    return runtime::failure{errc::unknown_type, "unknown agent type '" + type + "'"};
  auto hex = [this] {
    std::lock_guard<std::mutex> guard{impl_->rng_mutex};
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(impl_->rng()));
    return std::string{buf};
  };
  runtime::job_record job;
  job.id = "job-" + hex();
  job.agent = {type, key.empty() ? hex().substr(0, 12) : std::move(key)};
  job.message = std::move(message);
  try {
    // The job's agent is the key's from the start: its owner is what later
    // decides who may read the job.
    auto owner = impl_->store_->owner_of(job.agent);
    if (!owner) {
      impl_->store_->create(job.agent, who.name);
    } else if (!who.scope().empty() && *owner != who.scope()) {
      return runtime::failure{errc::unknown_agent, "agent '" + job.agent.str() +
                                                       "' belongs to another API key: pick "
                                                       "another key"};
    }
    impl_->store_->enqueue_job(job);
  } catch (const runtime::store_error& e) {
    return runtime::failure{errc::internal, e.what()};
  }
  if (impl_->jobs) caf::anon_send(impl_->jobs, tick_atom::value);
  return job;
}

const supervision_status& node_runtime::supervision() const {
  return *impl_->status;
}

void node_runtime::crash_worker(const std::string& id) {
  if (fault_injection_enabled()) caf::anon_send(impl_->router, crash_atom::value, id);
}

bool node_runtime::crash(const std::string& part) {
  if (!fault_injection_enabled()) return false;
  auto& im = *impl_;
  if (im.cluster && im.cluster->crash(part)) return true;
  auto target = part == "router"      ? im.router
                : part == "directory" ? im.directory
                : part == "jobs"      ? im.jobs
                                      : caf::actor{};
  if (!target) return false;
  caf::anon_send(target, crash_atom::value);
  return true;
}

std::optional<runtime::job_record> node_runtime::find_job(const std::string& id,
                                                          const runtime::principal& who) {
  try {
    auto job = impl_->store_->find_job(id);
    if (job && !who.scope().empty() && impl_->store_->owner_of(job->agent) != who.scope())
      return std::nullopt; // another key's job reads like one that does not exist
    return job;
  } catch (const runtime::store_error&) {
    return std::nullopt;
  }
}

void node_runtime::complete(
    runtime::chat_request req, std::function<void(std::string)> on_token,
    std::function<void(std::optional<runtime::failure>, runtime::chat_result)> on_end) {
  auto router = impl_->router;
  auto timeout = impl_->cfg.limits.turn_timeout;
  impl_->system.spawn(
      [=](caf::event_based_actor* self, runtime::chat_request req) -> caf::behavior {
        auto fail = [=](runtime::failure f) {
          on_end(std::move(f), {});
          self->quit();
        };
        infer_job job{1, std::move(req), caf::actor_cast<caf::actor>(self), {}};
        request_with_deadline(self, std::chrono::seconds(30), router, infer_atom::value,
                              std::move(job))
            .then([](caf::actor&, std::string&) {},
                  [=](caf::error& err) { fail(to_failure(err)); });
        // The call's time limit, forgotten when the call ends: a CAF delayed
        // message would hold this actor in memory until it fired.
        auto limit = deadline_clock::instance().add(deadline_clock::clock::now() + timeout,
                                                    self->ctrl(), caf::make_message_id(),
                                                    caf::make_message(timeout_atom::value));
        self->attach_functor([limit] { deadline_clock::instance().cancel(limit); });
        return {
            [=](token_atom, uint64_t, std::string& text) { on_token(std::move(text)); },
            [=](done_atom, uint64_t, runtime::chat_result& r) {
              on_end(std::nullopt, std::move(r));
              self->quit();
            },
            [=](fail_atom, uint64_t, runtime::failure& f, bool, std::string&) {
              fail(std::move(f));
            },
            [=](timeout_atom) {
              fail({errc::timeout, "completion timed out"});
            },
        };
      },
      std::move(req));
}

bool node_runtime::drain(std::chrono::milliseconds timeout) {
  auto& im = *impl_;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  caf::scoped_actor self{im.system};
  bool agents_gone = false;
  self->request(im.directory, timeout, drain_atom::value)
      .receive([&](bool) { agents_gone = true; }, [](caf::error&) {});
  bool idle = false;
  while (!idle && std::chrono::steady_clock::now() < deadline) {
    self->request(im.router, std::chrono::seconds(1), stats_atom::value)
        .receive(
            [&](std::vector<worker_status>& ws) {
              idle = true;
              for (auto& w : ws)
                if (w.info.node.empty() && w.load.active + w.load.queued > 0) idle = false;
            },
            [](caf::error&) {});
    if (!idle) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  runtime::log::info("node", "drained",
                     {{"agents_passivated", agents_gone ? "all" : "timed out"},
                      {"workers_idle", idle ? "yes" : "timed out"}});
  return agents_gone && idle;
}

void node_runtime::shutdown() {
  auto& im = *impl_;
  if (im.stopped) return;
  im.stopped = true;
  std::set<caf::actor> sessions;
  {
    std::lock_guard<std::mutex> guard{im.sessions_mutex};
    sessions = im.sessions;
  }
  {
    caf::scoped_actor self{im.system};
    for (auto& s : sessions)
      self->send(s, shutdown_atom::value);
    // Sessions close once their requests have ended; give them the grace
    // period the session itself uses.
    for (auto& s : sessions)
      self->monitor(s);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(2500);
    size_t down = 0;
    while (down < sessions.size() && std::chrono::steady_clock::now() < deadline) {
      self->receive([&](caf::down_msg&) { ++down; },
                    caf::after(std::chrono::milliseconds(100)) >> [] {});
    }
    // The agents subtree stops its job runner first (its running jobs stay
    // claimed in the store and run again at the next start, instead of
    // failing as "cancelled"), then the directory. Agents first, workers
    // after: a worker stopping under a live agent would look to it like a
    // failed call and end its turn for good.
    if (auto dir = im.directory_cell->get()) self->monitor(dir);
    self->send_exit(im.agents, caf::exit_reason::user_shutdown);
    self->receive([](caf::down_msg&) {}, caf::after(std::chrono::seconds(4)) >> [] {});
    // Leave before the workers stop: peers then route around this node
    // instead of seeing its workers fail.
    if (im.cluster) im.cluster->stop();
    if (im.inference) self->send_exit(im.inference, caf::exit_reason::user_shutdown);
    self->send_exit(im.routing, caf::exit_reason::user_shutdown);
    if (im.mcp) self->send_exit(im.mcp, caf::exit_reason::user_shutdown);
    for (auto& addr : im.mcp_addresses)
      self->send_exit(addr, caf::exit_reason::user_shutdown);
    for (auto& addr : {im.router, im.directory, im.jobs})
      if (addr) self->send_exit(addr, caf::exit_reason::user_shutdown);
  }
  runtime::log::info("node", "actors_stopped", {{"sessions", std::to_string(sessions.size())}});
}

} // namespace troupe::actors
