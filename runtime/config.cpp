#include "runtime/config.hpp"
#include "runtime/mcp_tools.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace troupe::runtime {

namespace {

struct invalid {
  std::string what;
};

/// Reads one YAML mapping against a fixed set of keys; whatever is left
/// unread when `finish()` runs is an unknown key.
class map_reader {
public:
  map_reader(const YAML::Node& node, std::string path, const std::string& file)
      : node_(node), path_(std::move(path)), file_(file) {
    if (!node.IsMap())
      fail(node,
           (path_.empty() ? std::string{"config"} : "'" + path_ + "'") + " must be a mapping");
  }

  [[noreturn]] void fail(const YAML::Node& at, const std::string& msg) const {
    auto mark = at.Mark();
    std::ostringstream os;
    os << file_;
    if (!mark.is_null()) os << ':' << mark.line + 1 << ':' << mark.column + 1;
    os << ": " << msg;
    throw invalid{os.str()};
  }

  std::string key_path(const std::string& key) const {
    return path_.empty() ? key : path_ + "." + key;
  }

  std::optional<YAML::Node> get(const std::string& key) {
    seen_.insert(key);
    auto n = node_[key];
    if (!n || n.IsNull()) return std::nullopt;
    return n;
  }

  YAML::Node require(const std::string& key) {
    auto n = get(key);
    if (!n) fail(node_, "missing required key '" + key_path(key) + "'");
    return *n;
  }

  std::string scalar(const YAML::Node& n, const std::string& key) const {
    if (!n.IsScalar()) fail(n, "'" + key_path(key) + "' must be a string");
    return n.Scalar();
  }

  void read(const std::string& key, std::string& out) {
    if (auto n = get(key)) out = scalar(*n, key);
  }

  void read(const std::string& key, int64_t& out, int64_t min, int64_t max) {
    if (auto n = get(key)) {
      auto s = scalar(*n, key);
      char* end = nullptr;
      errno = 0;
      long long v = std::strtoll(s.c_str(), &end, 10);
      if (s.empty() || *end != '\0' || errno != 0)
        fail(*n, "'" + key_path(key) + "' must be an integer, got '" + s + "'");
      if (v < min || v > max)
        fail(*n, "'" + key_path(key) + "' must be between " + std::to_string(min) + " and " +
                     std::to_string(max) + ", got " + s);
      out = v;
    }
  }

  void read(const std::string& key, uint64_t& out, uint64_t min, uint64_t max) {
    int64_t v = static_cast<int64_t>(out);
    read(key, v, static_cast<int64_t>(min), static_cast<int64_t>(max));
    out = static_cast<uint64_t>(v);
  }

  void read(const std::string& key, int& out, int min, int max) {
    int64_t v = out;
    read(key, v, min, max);
    out = static_cast<int>(v);
  }

  void read(const std::string& key, double& out, double min, double max) {
    if (auto n = get(key)) {
      auto s = scalar(*n, key);
      char* end = nullptr;
      double v = std::strtod(s.c_str(), &end);
      if (s.empty() || *end != '\0')
        fail(*n, "'" + key_path(key) + "' must be a number, got '" + s + "'");
      if (v < min || v > max)
        fail(*n, "'" + key_path(key) + "' must be between " + std::to_string(min) + " and " +
                     std::to_string(max));
      out = v;
    }
  }

  void read(const std::string& key, std::chrono::milliseconds& out) {
    if (auto n = get(key)) {
      auto s = scalar(*n, key);
      auto d = parse_duration(s);
      if (!d)
        fail(*n,
             "'" + key_path(key) + "' must be a duration like 500ms, 30s or 10m, got '" + s + "'");
      out = *d;
    }
  }

  /// A file path, the value `n` of `key`: one that cannot be opened is
  /// named here, with its line, instead of stopping the node later with
  /// none to point at.
  std::string readable_file(const YAML::Node& n, const std::string& key) {
    auto path = scalar(n, key);
    if (std::ifstream in{path}; !in) fail(n, "cannot read '" + path + "': " + std::strerror(errno));
    return path;
  }

  void read(const std::string& key, std::vector<std::string>& out) {
    if (auto n = get(key)) {
      if (!n->IsSequence()) fail(*n, "'" + key_path(key) + "' must be a list of strings");
      out.clear();
      for (auto item : *n)
        out.push_back(scalar(item, key));
    }
  }

  /// Reports the first key that nobody asked for.
  void finish() const {
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      auto key = it->first.Scalar();
      if (!seen_.contains(key)) fail(it->first, "unknown key '" + key_path(key) + "'");
    }
  }

  const std::string& file() const { return file_; }
  const std::string& path() const { return path_; }
  const YAML::Node& node() const { return node_; }

private:
  YAML::Node node_;
  std::string path_;
  const std::string& file_;
  std::set<std::string> seen_;
};

void check_one_of(map_reader& r, const YAML::Node& at, const std::string& key,
                  const std::string& value, std::initializer_list<const char*> allowed) {
  for (auto a : allowed)
    if (value == a) return;
  std::string list;
  for (auto a : allowed)
    list += (list.empty() ? "" : ", ") + std::string{a};
  r.fail(at, "'" + r.key_path(key) + "' must be one of " + list + ", got '" + value + "'");
}

void parse_listen(map_reader& r, const YAML::Node& at, const std::string& text,
                  gateway_config& gw) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0)
    r.fail(at, "'gateway.listen' must be HOST:PORT, got '" + text + "'");
  gw.host = text.substr(0, colon);
  auto port = text.substr(colon + 1);
  char* end = nullptr;
  long v = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || v < 0 || v > 65535)
    r.fail(at, "'gateway.listen' has a bad port '" + port + "'");
  gw.port = static_cast<uint16_t>(v);
}

backend_config parse_backend(const YAML::Node& n, const std::string& path,
                             const std::string& file) {
  map_reader r{n, path, file};
  backend_config b;
  auto type_node = r.require("type");
  b.type = r.scalar(type_node, "type");
  check_one_of(r, type_node, "type", b.type, {"openai", "lemonade", "simulated"});
  r.read("url", b.url);
  std::string model;
  r.read("model", model);
  r.read("models", b.models);
  if (!model.empty()) b.models.insert(b.models.begin(), model);
  r.read("api_key", b.api_key);
  r.read("connect_timeout", b.connect_timeout);
  r.read("first_token_timeout", b.first_token_timeout);
  r.read("idle_timeout", b.idle_timeout);
  r.read("health_interval", b.health_interval);
  r.read("ttft_ms", b.ttft_ms, 0, 600000);
  r.read("tokens_per_s", b.tokens_per_s, 0.001, 1e7);
  if (b.type == "lemonade" && b.url.empty()) b.url = "http://localhost:8000/api/v1";
  if (b.type == "openai" && b.url.empty())
    r.fail(n, "'" + r.key_path("url") + "' is required for an openai backend");
  if (!b.url.empty() && b.url.rfind("http://", 0) != 0)
    r.fail(n, "'" + r.key_path("url") + "' must start with http:// (got '" + b.url + "')");
  while (!b.url.empty() && b.url.back() == '/')
    b.url.pop_back();
  r.finish();
  return b;
}

bool valid_mcp_server_name(const std::string& name) {
  // Exposed tool names are NAME__TOOL and are split at the first "__".
  if (name.empty() || name.size() > 32 || name.find("__") != std::string::npos ||
      name.back() == '_')
    return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
}

std::string default_node_id() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) == 0 && buf[0] != '\0') return buf;
  return "node";
}

node_config parse(const YAML::Node& root, const std::string& file) {
  node_config cfg;
  cfg.source = file;
  map_reader top{root, "", file};

  if (auto n = top.get("node")) {
    map_reader r{*n, "node", file};
    r.read("id", cfg.id);
    if (auto roles = r.get("roles")) {
      r.read("roles", cfg.roles);
      for (auto item : *roles)
        check_one_of(r, item, "roles", item.Scalar(), {"gateway", "agents", "inference"});
    }
    r.finish();
  }
  if (cfg.id.empty()) cfg.id = default_node_id();

  if (auto n = top.get("gateway")) {
    map_reader r{*n, "gateway", file};
    if (auto listen = r.get("listen"))
      parse_listen(r, *listen, r.scalar(*listen, "listen"), cfg.gateway);
    r.read("io_threads", cfg.gateway.io_threads, 1, 256);
    auto auth = r.get("auth");
    if (auth) {
      if (auth->IsScalar()) {
        check_one_of(r, *auth, "auth", auth->Scalar(), {"none"});
        cfg.gateway.auth_none = true;
      } else {
        map_reader a{*auth, "gateway.auth", file};
        a.read("keys_file", cfg.gateway.keys_file);
        a.finish();
      }
    }
    if (auto t = r.get("tls")) {
      map_reader tr{*t, "gateway.tls", file};
      auto cert = tr.require("cert"); // both named as missing before either is read
      auto key = tr.require("key");
      cfg.gateway.tls.cert = tr.readable_file(cert, "cert");
      cfg.gateway.tls.key = tr.readable_file(key, "key");
      if (auto p = tr.get("allow_plain")) {
        check_one_of(tr, *p, "allow_plain", tr.scalar(*p, "allow_plain"), {"true", "false"});
        cfg.gateway.tls.allow_plain = p->Scalar() == "true";
      }
      tr.finish();
    }
    // Beyond loopback, running without keys must be a decision, not a default.
    if (!cfg.gateway.loopback() && cfg.gateway.keys_file.empty() && !cfg.gateway.auth_none)
      r.fail(*n, "gateway listens on " + cfg.gateway.host +
                     ", beyond loopback: set 'gateway.auth.keys_file', or 'auth: none' to serve "
                     "without authentication");
    r.finish();
  }

  if (auto n = top.get("limits")) {
    map_reader r{*n, "limits", file};
    r.read("max_frame_bytes", cfg.limits.max_frame_bytes, 64, 1ull << 30);
    r.read("max_connections", cfg.limits.max_connections, 1, 10000000);
    r.read("max_outbound_bytes", cfg.limits.max_outbound_bytes, 1024, 1ull << 32);
    r.read("max_pending_turns", cfg.limits.max_pending_turns, 1, 100000);
    r.read("max_history_messages", cfg.limits.max_history_messages, 2, 1000000);
    r.read("max_tool_output_bytes", cfg.limits.max_tool_output_bytes, 256, 64 << 20);
    r.read("connection_idle_timeout", cfg.limits.connection_idle_timeout);
    if (cfg.limits.connection_idle_timeout < std::chrono::milliseconds{100})
      r.fail(*n, "'limits.connection_idle_timeout' must be at least 100ms");
    r.read("turn_timeout", cfg.limits.turn_timeout);
    r.read("job_visibility", cfg.limits.job_visibility);
    if (auto k = r.get("per_key")) {
      map_reader pk{*k, "limits.per_key", file};
      auto& l = cfg.limits.per_key;
      pk.read("max_connections", l.max_connections, 1, 10000000);
      pk.read("max_agents", l.max_agents, 1, 1000000000);
      pk.read("max_turns", l.max_turns, 1, 1000000);
      pk.read("requests_per_second", l.requests_per_second, 0.01, 1e6);
      pk.read("burst", l.burst, 1, 1e6);
      pk.finish();
    }
    r.finish();
  }

  if (auto n = top.get("supervision")) {
    map_reader r{*n, "supervision", file};
    r.read("max_restarts", cfg.max_restarts, 0, 1000);
    r.read("within", cfg.restart_window);
    r.finish();
  }

  std::optional<YAML::Node> cluster_node;
  if (auto n = top.get("cluster")) {
    cluster_node = n;
    map_reader r{*n, "cluster", file};
    auto& c = cfg.cluster;
    c.enabled = true;
    auto endpoint = [&](const char* key, std::string& out) {
      if (auto e = r.get(key)) {
        out = r.scalar(*e, key);
        if (out.rfind("tcp://", 0) != 0 || out.rfind(':') <= 5)
          r.fail(*e, "'cluster." + std::string{key} + "' must look like tcp://host:port, got '" +
                         out + "'");
      }
    };
    endpoint("bind", c.bind);
    endpoint("advertise", c.advertise);
    if (c.bind.empty()) r.fail(*n, "missing required key 'cluster.bind'");
    if (c.advertise.empty()) {
      if (c.bind.find("0.0.0.0") != std::string::npos || c.bind.find('*') != std::string::npos)
        r.fail(*n, "'cluster.advertise' is required when 'cluster.bind' is a wildcard address");
      c.advertise = c.bind;
    }
    auto redis = r.require("redis");
    c.redis = r.scalar(redis, "redis");
    if (c.redis.rfind("redis://", 0) != 0)
      r.fail(redis, "'cluster.redis' must look like redis://host:port/db, got '" + c.redis + "'");
    r.read("heartbeat", c.heartbeat);
    r.read("suspect_after", c.suspect_after);
    if (c.heartbeat.count() < 10) r.fail(*n, "'cluster.heartbeat' must be at least 10ms");
    if (c.suspect_after < 2 * c.heartbeat)
      r.fail(*n, "'cluster.suspect_after' must be at least twice 'cluster.heartbeat'");
    r.read("weight", c.weight, 0.01, 1000);
    if (auto cv = r.get("curve")) {
      map_reader cr{*cv, "cluster.curve", file};
      auto secret = cr.require("secret_key_file");
      auto allowed = cr.require("allowed_keys_file");
      c.curve_secret_key_file = cr.readable_file(secret, "secret_key_file");
      c.curve_allowed_keys_file = cr.readable_file(allowed, "allowed_keys_file");
      cr.finish();
    }
    r.finish();
  }

  if (auto n = top.get("state")) {
    map_reader r{*n, "state", file};
    r.read("path", cfg.state_path);
    if (auto ret = r.get("request_retention")) {
      r.read("request_retention", cfg.request_retention);
      if (cfg.request_retention.count() != 0 && cfg.request_retention < std::chrono::seconds(1))
        r.fail(*ret, "'state.request_retention' must be 0 (keep for ever) or at least 1s");
    }
    if (auto redis = r.get("redis")) {
      cfg.state_redis = r.scalar(*redis, "redis");
      if (cfg.state_redis.rfind("redis://", 0) != 0)
        r.fail(*redis,
               "'state.redis' must look like redis://host:port/db, got '" + cfg.state_redis + "'");
    }
    r.finish();
  }

  std::set<std::string> mcp_names;
  if (auto n = top.get("mcp")) {
    map_reader r{*n, "mcp", file};
    if (auto servers = r.get("servers")) {
      if (!servers->IsMap())
        r.fail(*servers, "'mcp.servers' must be a mapping of server name to settings");
      for (auto it = servers->begin(); it != servers->end(); ++it) {
        auto path = "mcp.servers." + it->first.Scalar();
        mcp_server_config m;
        m.name = it->first.Scalar();
        if (!valid_mcp_server_name(m.name))
          r.fail(it->first, "MCP server name '" + m.name +
                                "' must be 1-32 letters, digits, '-' or '_', without '__' or a "
                                "trailing '_'");
        map_reader s{it->second, path, file};
        s.read("command", m.command);
        s.read("url", m.url);
        s.read("cwd", m.cwd);
        auto string_map = [&](const char* key, std::map<std::string, std::string>& out) {
          if (auto e = s.get(key)) {
            if (!e->IsMap()) s.fail(*e, "'" + s.key_path(key) + "' must be a mapping");
            for (auto kv = e->begin(); kv != e->end(); ++kv)
              out[kv->first.Scalar()] = s.scalar(kv->second, key);
          }
        };
        string_map("env", m.env);
        string_map("headers", m.headers);
        s.read("call_timeout", m.call_timeout);
        s.read("startup_timeout", m.startup_timeout);
        s.read("ping_interval", m.ping_interval);
        if (m.command.empty() == m.url.empty())
          s.fail(it->second, "'" + path +
                                 "' needs exactly one of 'command' (stdio) or 'url' "
                                 "(Streamable HTTP)");
        if (!m.url.empty() && m.url.rfind("http://", 0) != 0)
          s.fail(it->second, "'" + path + ".url' must start with http:// (got '" + m.url + "')");
        if (!m.url.empty() && (!m.env.empty() || !m.cwd.empty()))
          s.fail(it->second, "'" + path + "': 'env' and 'cwd' apply to a 'command' server only");
        if (m.call_timeout.count() < 1 || m.startup_timeout.count() < 1 ||
            m.ping_interval.count() < 100)
          s.fail(it->second, "'" + path + "': timeouts must be positive, ping_interval >= 100ms");
        s.finish();
        mcp_names.insert(m.name);
        cfg.mcp_servers.push_back(std::move(m));
      }
    }
    r.finish();
  }

  if (auto n = top.get("inference")) {
    map_reader r{*n, "inference", file};
    if (auto accs = r.get("accelerators")) {
      if (!accs->IsSequence()) r.fail(*accs, "'inference.accelerators' must be a list");
      std::set<std::string> ids;
      size_t i = 0;
      for (auto item : *accs) {
        auto path = "inference.accelerators[" + std::to_string(i++) + "]";
        map_reader a{item, path, file};
        accelerator_config acc;
        auto id_node = a.require("id");
        acc.id = a.scalar(id_node, "id");
        if (!ids.insert(acc.id).second)
          a.fail(id_node, "duplicate accelerator id '" + acc.id + "'");
        if (auto kind = a.get("kind")) {
          acc.kind = a.scalar(*kind, "kind");
          check_one_of(a, *kind, "kind", acc.kind, {"npu", "gpu", "cpu"});
        }
        a.read("slots", acc.slots, 1, 100000);
        a.read("max_queue", acc.max_queue, 0, 1000000);
        acc.backend = parse_backend(a.require("backend"), path + ".backend", file);
        a.finish();
        cfg.accelerators.push_back(std::move(acc));
      }
    }
    r.read("io_threads", cfg.backend_io_threads, 1, 256);
    if (auto rc = r.get("response_cache")) {
      map_reader c{*rc, "inference.response_cache", file};
      uint64_t entries = cfg.response_cache.max_entries, bytes = cfg.response_cache.max_bytes;
      c.read("max_entries", entries, 0, 100000000);
      c.read("max_bytes", bytes, 0, uint64_t{1} << 40);
      c.read("ttl", cfg.response_cache.ttl);
      cfg.response_cache.max_entries = entries;
      cfg.response_cache.max_bytes = bytes;
      c.finish();
    }
    r.finish();
  }

  if (auto n = top.get("agents")) {
    map_reader r{*n, "agents", file};
    r.read("idle_timeout", cfg.idle_timeout);
    if (auto types = r.get("types")) {
      if (!types->IsMap())
        r.fail(*types, "'agents.types' must be a mapping of type name to settings");
      for (auto it = types->begin(); it != types->end(); ++it) {
        auto name = it->first.Scalar();
        auto path = "agents.types." + name;
        if (name.empty() || name.find('/') != std::string::npos)
          r.fail(it->first, "agent type name '" + name + "' must be non-empty without '/'");
        agent_type_config t;
        t.name = name;
        if (!it->second.IsNull()) {
          map_reader a{it->second, path, file};
          a.read("system", t.system);
          a.read("model", t.model);
          if (auto prefer = a.get("prefer")) {
            a.read("prefer", t.prefer);
            for (auto item : *prefer)
              check_one_of(a, item, "prefer", item.Scalar(), {"npu", "gpu", "cpu"});
          }
          a.read("tools", t.tools);
          if (auto tools = a.get("tools"))
            for (auto item : *tools) {
              auto name = item.Scalar();
              if (name.rfind("mcp:", 0) != 0) continue;
              auto sel = mcp_selector::parse(name);
              if (!sel)
                a.fail(item, "MCP tool '" + name + "' must be mcp:SERVER/* or mcp:SERVER/TOOL");
              // In a cluster the server may be configured on another node.
              if (!mcp_names.contains(sel->server) && !top.node()["cluster"])
                a.fail(item, "MCP tool '" + name + "' names server '" + sel->server +
                                 "', which is not under 'mcp.servers'");
            }
          a.read("max_steps", t.max_steps, 1, 1000);
          a.read("temperature", t.temperature, 0, 2);
          a.read("max_tokens", t.max_tokens, 0, 10000000);
          if (auto rc = a.get("response_cache")) {
            check_one_of(a, *rc, "response_cache", a.scalar(*rc, "response_cache"),
                         {"true", "false"});
            t.response_cache = rc->Scalar() == "true";
            if (t.response_cache && t.temperature != 0)
              a.fail(*rc, "'" + path +
                              ".response_cache' needs 'temperature: 0': only a deterministic "
                              "answer can be given to an identical request");
          }
          a.finish();
        }
        cfg.agent_types[name] = std::move(t);
      }
    }
    r.finish();
  }
  top.finish();

  // Agents move between nodes, so in a cluster their state must be shared.
  if (cluster_node && cfg.state_redis.empty() &&
      (cfg.has_role("agents") || cfg.has_role("gateway")))
    top.fail(*cluster_node, "a cluster node with the 'agents' or 'gateway' role needs the shared "
                            "store: set 'state.redis'");

  if (cfg.accelerators.empty() && cfg.has_role("inference")) {
    accelerator_config sim;
    sim.id = "sim0";
    sim.kind = "cpu";
    sim.slots = 8;
    sim.backend.type = "simulated";
    cfg.accelerators.push_back(sim);
    cfg.simulated_default = true;
  }
  if (cfg.agent_types.empty()) {
    agent_type_config chat;
    chat.name = "chat";
    chat.tools = {"calculator", "clock", "agent"};
    cfg.agent_types["chat"] = chat;
  }
  return cfg;
}

} // namespace

int default_io_threads() {
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency() / 8));
}

bool gateway_config::loopback() const {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

bool node_config::has_role(const std::string& r) const {
  return std::find(roles.begin(), roles.end(), r) != roles.end();
}

std::optional<std::chrono::milliseconds> parse_duration(const std::string& text) {
  if (text.empty()) return std::nullopt;
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
    ++i;
  if (i == 0) return std::nullopt;
  char* end = nullptr;
  auto num_text = text.substr(0, i);
  double v = std::strtod(num_text.c_str(), &end);
  if (*end != '\0') return std::nullopt;
  auto unit = text.substr(i);
  double ms;
  if (unit == "ms")
    ms = v;
  else if (unit == "s" || unit.empty())
    ms = v * 1000;
  else if (unit == "m")
    ms = v * 60000;
  else if (unit == "h")
    ms = v * 3600000;
  else
    return std::nullopt;
  // Timers add durations to clock readings in nanoseconds: refuse what
  // could overflow there (and the cast below) rather than wrap.
  constexpr double ten_years_ms = 10.0 * 365 * 24 * 3600 * 1000;
  if (ms > ten_years_ms) return std::nullopt;
  return std::chrono::milliseconds{static_cast<int64_t>(ms)};
}

std::variant<node_config, config_error> load_config_text(const std::string& text,
                                                         const std::string& source) {
  try {
    auto root = YAML::Load(text);
    if (!root || root.IsNull()) root = YAML::Node{YAML::NodeType::Map};
    return parse(root, source);
  } catch (const invalid& e) {
    return config_error{e.what};
  } catch (const YAML::Exception& e) {
    std::ostringstream os;
    os << source;
    if (!e.mark.is_null()) os << ':' << e.mark.line + 1 << ':' << e.mark.column + 1;
    os << ": " << e.msg;
    return config_error{os.str()};
  }
}

std::variant<node_config, config_error> load_config_file(const std::string& path) {
  std::ifstream in{path};
  if (!in) return config_error{path + ": cannot open config file"};
  std::stringstream ss;
  ss << in.rdbuf();
  return load_config_text(ss.str(), path);
}

} // namespace troupe::runtime
