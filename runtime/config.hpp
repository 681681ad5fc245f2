#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace troupe::runtime {

/// How a worker reaches its model server (DESIGN.md "Backends").
struct backend_config {
  std::string type = "simulated";  // openai | lemonade | simulated
  std::string url;                 // e.g. http://127.0.0.1:8080/v1
  std::vector<std::string> models; // `model:` and/or `models:`; empty = any
  std::string api_key;
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds first_token_timeout{60000};
  std::chrono::milliseconds idle_timeout{30000};
  std::chrono::milliseconds health_interval{5000};
  // simulated only
  int64_t ttft_ms = 50;
  double tokens_per_s = 200;
};

/// One accelerator entry = one inference worker actor.
struct accelerator_config {
  std::string id;
  std::string kind = "cpu"; // npu | gpu | cpu
  int64_t slots = 4;
  int64_t max_queue = 256; // requests waiting beyond `slots`
  backend_config backend;
};

struct agent_type_config {
  std::string name;
  std::string system = "You are a helpful assistant.";
  std::string model; // empty = any model
  std::vector<std::string> prefer;
  std::vector<std::string> tools;
  int64_t max_steps = 8;
  double temperature = 0.7;
  int64_t max_tokens = 0;
  /// Identical model calls share one answer: concurrent ones wait for the
  /// same call, later ones get it from `inference.response_cache`. Only
  /// with `temperature: 0`, where the answer is the same anyway.
  bool response_cache = false;
};

/// `inference.response_cache`: how much the router keeps of answers to
/// deterministic model calls (agent types with `response_cache: true`).
struct response_cache_limits {
  size_t max_entries = 10000;
  size_t max_bytes = 64 << 20;
  std::chrono::milliseconds ttl{600000};
};

/// `gateway.tls`: PEM certificate (chain) and private key.
struct tls_config {
  std::string cert;
  std::string key;
  /// Also serve plain HTTP on the same port; off by default once TLS is on.
  bool allow_plain = false;

  bool enabled() const { return !cert.empty(); }
};

/// I/O threads when the config names none: one per 8 cores, at least one.
/// On a small machine the CAF scheduler needs the cores more.
int default_io_threads();

struct gateway_config {
  std::string host = "127.0.0.1";
  uint16_t port = 7800;
  tls_config tls;
  std::string keys_file; // empty = auth none
  /// `auth: none` was written out: required to listen beyond loopback
  /// without keys (the node then warns at start).
  bool auth_none = false;

  /// Threads serving the HTTP and WebSocket connections (each connection on
  /// its own strand). Default: one per 8 cores, at least one.
  int io_threads = default_io_threads();

  /// True when `host` is a loopback address (only this machine can connect).
  bool loopback() const;
};

/// `limits.per_key`: what one API key may hold and do on one node (agents:
/// in the whole store). Apply only with `gateway.auth.keys_file`.
struct per_key_limits {
  uint64_t max_connections = 256;  // open WebSockets and HTTP connections mid-request
  uint64_t max_agents = 10000;     // agents it created that still exist
  uint64_t max_turns = 64;         // turns running or queued at once
  double requests_per_second = 50; // token bucket over API requests and WebSocket ops
  double burst = 100;
};

struct limits_config {
  per_key_limits per_key;
  uint64_t max_frame_bytes = 1 << 20;
  uint64_t max_connections = 20000;
  /// Bytes queued to one WebSocket client before it is disconnected as slow.
  uint64_t max_outbound_bytes = 8 << 20;
  /// Turns queued on one agent behind the running one.
  uint64_t max_pending_turns = 32;
  /// Messages of an agent's history kept in memory and sent to the model;
  /// older whole turns are dropped first (the running turn never is).
  uint64_t max_history_messages = 200;
  /// A tool result longer than this reaches the model cut, with a note.
  uint64_t max_tool_output_bytes = 256 << 10;
  /// How long the gateway waits for an HTTP request (head and body) and
  /// for any sign of life from a WebSocket peer (pinged at half of it).
  std::chrono::milliseconds connection_idle_timeout{60000};
  /// Upper bound for a REST `execute` or a turn, end to end.
  std::chrono::milliseconds turn_timeout{300000};
  /// An async job claimed by a node that then goes silent this long is
  /// claimed again by another (0 = `turn_timeout` + 30s).
  std::chrono::milliseconds job_visibility{0};
};

/// `cluster:`: absent = a single node (DESIGN.md "Cluster").
struct cluster_config {
  bool enabled = false;
  std::string bind;      // tcp://0.0.0.0:7400, the node's ZeroMQ ROUTER
  std::string advertise; // tcp://10.0.0.5:7400, how peers reach it (default: bind)
  std::string redis;     // redis://host:port/db, the membership table
  /// How often the node writes itself (and its load) to the membership table.
  std::chrono::milliseconds heartbeat{250};
  /// A peer silent this long over ZeroMQ is declared dead and fenced.
  std::chrono::milliseconds suspect_after{1000};
  /// Placement weight of this node's agents role (weighted rendezvous hashing).
  double weight = 1.0;
  /// `cluster.curve`: CurveZMQ on every node-to-node socket. Both set, or
  /// neither (plain: for a private network only).
  std::string curve_secret_key_file;
  std::string curve_allowed_keys_file;
};

/// One entry of `mcp.servers`: an MCP server whose tools agents may call.
/// Exactly one of `command` (stdio: the node spawns it) and `url`
/// (Streamable HTTP) is set.
struct mcp_server_config {
  std::string name; // the key under `mcp.servers`; tools appear as name__tool
  std::vector<std::string> command;
  /// The spawned server's whole environment (plus PATH when not given) and
  /// working directory: it gets nothing else from the node.
  std::map<std::string, std::string> env;
  std::string cwd;
  std::string url;                            // http://host:port/mcp
  std::map<std::string, std::string> headers; // sent with every HTTP request
  std::chrono::milliseconds call_timeout{60000};
  std::chrono::milliseconds startup_timeout{30000}; // spawn/connect to tools listed
  std::chrono::milliseconds ping_interval{15000};   // liveness; a missed ping restarts it
};

struct node_config {
  std::string source; // file the config came from, for messages
  std::string id;
  std::vector<std::string> roles{"gateway", "agents", "inference"};
  gateway_config gateway;
  limits_config limits;
  /// SQLite file for agents and the request log; ":memory:" keeps nothing.
  std::string state_path = "./data/troupe.db";
  /// `redis://host:port/db`: the shared Redis store instead of SQLite.
  std::string state_redis;
  /// `state.request_retention`: how long a finished request's outcome stays
  /// in the request log, so a retry with its id gets it again (24 h, as
  /// Stripe and OpenAI keep idempotency keys); 0 keeps them for ever.
  std::chrono::milliseconds request_retention{std::chrono::hours(24)};
  std::vector<accelerator_config> accelerators;
  /// `inference.io_threads`: threads driving the model servers' HTTP streams
  /// (each stream on its own strand). Default as `gateway.io_threads`.
  int backend_io_threads = default_io_threads();
  response_cache_limits response_cache;
  /// True when no accelerator was configured and the embedded simulated
  /// backend stands in; the node says so loudly at start.
  bool simulated_default = false;
  std::chrono::milliseconds idle_timeout{600000};
  /// Restart intensity of supervisors: more than `max_restarts` within
  /// `restart_window` and the subtree is given up (shown in `/health`).
  int64_t max_restarts = 5;
  std::chrono::milliseconds restart_window{10000};
  std::map<std::string, agent_type_config> agent_types;
  cluster_config cluster;
  std::vector<mcp_server_config> mcp_servers;

  bool has_role(const std::string& r) const;
};

/// A config that could not be used; `what` is `file:line:col: message`.
struct config_error {
  std::string what;
};

/// Loads and validates a YAML config. Unknown keys, wrong types, missing
/// required fields and bad values are errors naming the key, file and line.
/// Returns the config or the error.
std::variant<node_config, config_error> load_config_file(const std::string& path);

/// Same as `load_config_file` for text already in memory.
std::variant<node_config, config_error> load_config_text(const std::string& text,
                                                         const std::string& source);

/// Parses "500ms", "30s", "10m", "1h" or a bare number of seconds.
std::optional<std::chrono::milliseconds> parse_duration(const std::string& text);

} // namespace troupe::runtime
