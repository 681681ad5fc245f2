// `troupe`: the node, the simulated model server and small utilities.

#include "actors/io_threads.hpp"
#include "actors/node_runtime.hpp"
#include "cluster/cluster_node.hpp"
#include "cluster/curve_keys.hpp"
#include "examples/weather_agent.hpp"
#include "nodes/ctl.hpp"
#include "nodes/gateway.hpp"
#include "nodes/load.hpp"
#include "nodes/mcp_stdio.hpp"
#include "nodes/sim_llm.hpp"
#include "runtime/config.hpp"
#include "runtime/log.hpp"
#include "runtime/request_log_pruner.hpp"

#include <csignal>
#include <cstdio>
#include <cstring>
#include <pthread.h>
#include <sys/resource.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace troupe;

namespace {

const char* usage_text =
    "usage:\n"
    "  troupe node --config FILE [--check] [--log-json] [--log-level debug|info|warn|error]\n"
    "  troupe sim-llm [--host H] [--port P] [--ttft-ms N] [--tokens-per-s R] [--slots N]\n"
    "                 [--max-queue N] [--model NAME]\n"
    "  troupe mcp --config FILE   (MCP over stdio: the node's agent types as tools)\n"
    "  troupe ctl [--gateway URL] [--key KEY] [--json] nodes|workers|agents|drain NODE\n"
    "  troupe load [--gateway URL | --direct URL] [--connections N] [--rate R] [--duration D]\n"
    "  troupe keygen [--out PREFIX]   (a CurveZMQ key pair for cluster.curve)\n"
    "  troupe version\n";

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "troupe: %s\n%s", msg.c_str(), usage_text);
  return 2;
}

/// Blocks SIGINT/SIGTERM in every thread (threads inherit the mask), so one
/// `sigwait` in main sees them.
sigset_t block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1); // cluster drain, raised by the membership thread
  sigaddset(&set, SIGHUP);  // reload the gateway's API keys
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

/// `troupe node`, or with `mcp_stdio` `troupe mcp`: the same node, serving
/// MCP on stdin/stdout instead of the gateway, until stdin closes.
int run_node(const std::vector<std::string>& args, bool mcp_stdio = false) {
  std::string config_path;
  bool check_only = false;
  for (size_t i = 0; i < args.size(); ++i) {
    auto& a = args[i];
    if (a == "--config" && i + 1 < args.size())
      config_path = args[++i];
    else if (a == "--check")
      check_only = true;
    else if (a == "--log-json")
      runtime::log::set_json(true);
    else if (a == "--log-level" && i + 1 < args.size()) {
      runtime::log::level lvl;
      if (!runtime::log::parse_level(args[++i], lvl))
        return usage_error("unknown log level '" + args[i] + "'");
      runtime::log::set_level(lvl);
    } else
      return usage_error("unknown option '" + a + "'");
  }
  if (config_path.empty()) return usage_error("node needs --config FILE");

  auto loaded = runtime::load_config_file(config_path);
  if (auto err = std::get_if<runtime::config_error>(&loaded)) {
    std::fprintf(stderr, "troupe: invalid config: %s\n", err->what.c_str());
    return 2;
  }
  auto cfg = std::get<runtime::node_config>(std::move(loaded));
  auto types = std::make_shared<runtime::agent_type_registry>();
  examples::register_weather_agent(*types);
  if (auto err = types->finalize(cfg.agent_types); !err.empty()) {
    std::fprintf(stderr, "troupe: invalid config: %s: %s\n", config_path.c_str(), err.c_str());
    return 2;
  }
  if (check_only) {
    std::printf("%s: config OK (node %s, %zu accelerator(s), %zu agent type(s))\n",
                config_path.c_str(), cfg.id.c_str(), cfg.accelerators.size(),
                types->names().size());
    return 0;
  }

  auto stop_signals = block_stop_signals();
  std::string roles;
  for (auto& r : cfg.roles)
    roles += (roles.empty() ? "" : ",") + r;
  runtime::log::info("node", "starting",
                     {{"node", cfg.id},
                      {"config", config_path},
                      {"roles", roles},
                      {"gateway_io_threads", std::to_string(cfg.gateway.io_threads)},
                      {"backend_io_threads", std::to_string(cfg.backend_io_threads)}});
  if (cfg.has_role("gateway") && !cfg.gateway.loopback() && cfg.gateway.keys_file.empty())
    runtime::log::warn("gateway", "no_auth",
                       {{"listen", cfg.gateway.host},
                        {"reason", "auth: none while listening beyond loopback: anyone who can "
                                   "reach this port can drive every agent"}});
  if (cfg.has_role("gateway") && !cfg.gateway.loopback() && !cfg.gateway.tls.enabled())
    runtime::log::warn("gateway", "no_tls",
                       {{"listen", cfg.gateway.host},
                        {"reason", "plain HTTP beyond loopback: API keys and conversations cross "
                                   "the network in clear; set gateway.tls"}});
  if (cfg.simulated_default) {
    const char* banner = "\n"
                         "  *****************************************************************\n"
                         "  *  NO MODEL SERVER CONFIGURED: using the embedded SIMULATED      *\n"
                         "  *  backend. Answers are canned, not from a language model.       *\n"
                         "  *  Add inference.accelerators to the config to use a real one.   *\n"
                         "  *****************************************************************\n\n";
    std::fputs(banner, stderr);
    runtime::log::warn("node", "simulated_backend", {{"reason", "no accelerators configured"}});
  }
  std::shared_ptr<runtime::state_store> store;
  try {
    // An inference-only cluster node holds no agents: nothing to store.
    bool stateless = cfg.cluster.enabled && !cfg.has_role("agents") && !cfg.has_role("gateway");
    if (!cfg.state_redis.empty())
      store = runtime::make_redis_state_store(cfg.state_redis);
    else if (cfg.state_path == ":memory:" || stateless)
      store = runtime::make_memory_state_store();
    else
      store = runtime::make_sqlite_state_store(cfg.state_path);
  } catch (const runtime::store_error& e) {
    runtime::log::error("node", "state_store_failed", {{"reason", e.what()}});
    std::fprintf(stderr, "troupe: %s\n", e.what());
    return 2;
  }
  runtime::log::info("node", "state_store", {{"store", store->describe()}});
  // Only a node that runs turns writes the request log.
  std::unique_ptr<runtime::request_log_pruner> pruner;
  if (cfg.request_retention.count() > 0 && cfg.has_role("agents"))
    pruner = std::make_unique<runtime::request_log_pruner>(store, cfg.request_retention);
  if (cfg.state_redis.empty() && cfg.state_path == ":memory:" && !cfg.cluster.enabled)
    runtime::log::warn("node", "state_in_memory",
                       {{"reason", "state.path is :memory:; a restart forgets every agent"}});

  std::shared_ptr<cluster::cluster_node> cluster;
  if (cfg.cluster.enabled) {
    try {
      cluster = std::make_shared<cluster::cluster_node>(cfg);
      cluster->on_drain([] { ::kill(::getpid(), SIGUSR1); });
    } catch (const std::exception& e) { // Redis unreachable, endpoint taken
      runtime::log::error("node", "cluster_failed", {{"reason", e.what()}});
      std::fprintf(stderr, "troupe: cannot join the cluster: %s\n", e.what());
      return 2;
    }
  }

  actors::io_threads backend_io{cfg.backend_io_threads};
  actors::io_threads gateway_io{cfg.gateway.io_threads};
  actors::node_runtime rt{cfg, types, store, backend_io, cluster};
  std::unique_ptr<gateway::gateway> gw;
  std::unique_ptr<gateway::mcp_stdio> stdio;
  if (mcp_stdio)
    stdio = std::make_unique<gateway::mcp_stdio>(rt, [] { ::kill(::getpid(), SIGTERM); });
  else if (cfg.has_role("gateway")) {
    try { // a keys file, certificate or address that cannot be used stops the node cleanly
      gw = std::make_unique<gateway::gateway>(gateway_io, rt, cluster.get());
      gw->start();
    } catch (const std::exception& e) {
      runtime::log::error("node", "gateway_failed", {{"reason", e.what()}});
      std::fprintf(stderr, "troupe: %s\n", e.what());
      rt.shutdown();
      return 2;
    }
    runtime::log::info("gateway", "listening",
                       {{"addr", cfg.gateway.host + ":" + std::to_string(gw->port())},
                        {"ws", (cfg.gateway.tls.enabled() ? "wss://" : "ws://") + cfg.gateway.host +
                                   ":" + std::to_string(gw->port()) + "/ws"}});
  }
  runtime::log::info("node", "ready", {{"node", cfg.id}});

  int sig = 0;
  for (;;) {
    sigwait(&stop_signals, &sig);
    if (sig != SIGHUP) break;
    if (gw) gw->reload();
  }
  if (sig == SIGUSR1 && cluster) {
    // `troupe ctl drain`: take no new work, let every agent finish its turns
    // and move on, let the workers finish their streams, then leave.
    runtime::log::info("node", "draining", {{"node", cfg.id}});
    cluster->set_draining();
    // Peers see it within a heartbeat; work they routed before still lands.
    std::this_thread::sleep_for(3 * cfg.cluster.heartbeat);
    rt.drain(cfg.limits.turn_timeout);
  }
  runtime::log::info("node", "stopping",
                     {{"signal", sig == SIGINT    ? "SIGINT"
                                 : sig == SIGTERM ? "SIGTERM"
                                                  : "drain"}});
  if (gw) gw->stop_accepting();
  stdio.reset(); // no new MCP calls while the actors stop
  rt.shutdown();
  if (gw) gw->close_all();
  // Let the close frames and last replies reach the wire.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  gateway_io.stop();
  backend_io.stop();
  runtime::log::info("node", "stopped", {{"node", cfg.id}});
  return 0;
}

int run_sim(const std::vector<std::string>& args) {
  gateway::sim_llm_options opts;
  for (size_t i = 0; i < args.size(); ++i) {
    auto& a = args[i];
    if (i + 1 >= args.size()) return usage_error("option '" + a + "' needs a value");
    auto& v = args[++i];
    char* end = nullptr;
    if (a == "--host")
      opts.host = v;
    else if (a == "--model")
      opts.model = v;
    else if (a == "--port")
      opts.port = static_cast<uint16_t>(std::strtoul(v.c_str(), &end, 10));
    else if (a == "--ttft-ms")
      opts.ttft_ms = std::strtoll(v.c_str(), &end, 10);
    else if (a == "--tokens-per-s")
      opts.tokens_per_s = std::strtod(v.c_str(), &end);
    else if (a == "--slots")
      opts.slots = std::strtoll(v.c_str(), &end, 10);
    else if (a == "--max-queue")
      opts.max_queue = std::strtoll(v.c_str(), &end, 10);
    else
      return usage_error("unknown option '" + a + "'");
    if (end && *end != '\0') return usage_error("bad value '" + v + "' for " + a);
  }
  if (opts.tokens_per_s <= 0 || opts.slots < 1 || opts.ttft_ms < 0)
    return usage_error("--tokens-per-s and --slots must be positive, --ttft-ms not negative");
  return gateway::run_sim_llm(opts);
}

} // namespace

int main(int argc, char** argv) {
  // A write to a dead MCP server's stdin must fail with EPIPE, not kill us.
  std::signal(SIGPIPE, SIG_IGN);
  // Every connection is a descriptor: take the hard limit, not the soft 1024
  // many systems start with (limits.max_connections defaults to 20,000).
  if (rlimit lim{}; getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    std::fputs(usage_text, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  auto cmd = args[0];
  args.erase(args.begin());
  if (cmd == "node") return run_node(args);
  if (cmd == "mcp") return run_node(args, true);
  if (cmd == "sim-llm") return run_sim(args);
  if (cmd == "ctl") return gateway::run_ctl(args);
  if (cmd == "load") return gateway::run_load(args);
  if (cmd == "keygen") return cluster::keygen_command(argc - 2, argv + 2);
  if (cmd == "version") {
    std::printf("troupe 0.1.0\n");
    return 0;
  }
  return usage_error("unknown command '" + cmd + "'");
}
