#include "nodes/gateway.hpp"
#include "nodes/api_keys.hpp"
#include "actors/node_runtime.hpp"
#include "cluster/cluster_node.hpp"
#include "nodes/mcp_endpoint.hpp"
#include "runtime/key_quotas.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"
#include "runtime/openai_codec.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <set>

namespace troupe::gateway {

using nlohmann::json;
using runtime::errc;

namespace {

http_response json_response(int status, const json& body) {
  return {
      status, "application/json", body.dump(-1, ' ', false, json::error_handler_t::replace), {}};
}

http_response error_response(errc code, const std::string& message, int status = 0) {
  return json_response(status ? status : runtime::http_status(code),
                       {{"error", {{"code", runtime::to_string(code)}, {"message", message}}}});
}

/// Splits "/a/b/c" into {"a","b","c"}.
std::vector<std::string> segments(const std::string& path) {
  std::vector<std::string> out;
  size_t i = 1;
  while (i <= path.size()) {
    auto j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    if (j > i) out.push_back(path.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

std::string query_param(const std::string& query, const std::string& name) {
  size_t i = 0;
  while (i < query.size()) {
    auto amp = query.find('&', i);
    auto part = query.substr(i, amp == std::string::npos ? std::string::npos : amp - i);
    auto eq = part.find('=');
    if (part.substr(0, eq) == name) return eq == std::string::npos ? "" : part.substr(eq + 1);
    if (amp == std::string::npos) break;
    i = amp + 1;
  }
  return {};
}

/// Bridges one WebSocket to its session actor.
class session_bridge final : public ws_handler {
public:
  session_bridge(actors::node_runtime& rt, std::string fixed_type, runtime::principal who,
                 std::shared_ptr<runtime::key_quotas> quotas, runtime::key_quotas::lease conn)
      : rt_(rt), fixed_type_(std::move(fixed_type)), who_(std::move(who)),
        quotas_(std::move(quotas)), connection_(std::move(conn)) {}

  void on_open(std::shared_ptr<actors::frame_sink> sink) override {
    session_ = rt_.open_session(std::move(sink), fixed_type_, who_, quotas_);
  }
  void on_text(std::string frame) override { session_->on_text(std::move(frame)); }
  void on_binary() override { session_->on_binary(); }
  void on_close() override { session_->closed(); }

private:
  actors::node_runtime& rt_;
  std::string fixed_type_;
  runtime::principal who_;
  std::shared_ptr<runtime::key_quotas> quotas_;
  runtime::key_quotas::lease connection_; // the key's connection slot, while the socket lives
  std::unique_ptr<actors::session_handle> session_;
};

} // namespace

struct gateway::impl {
  impl(actors::io_threads& io, actors::node_runtime& r, const cluster::cluster_node* c)
      : rt(r), cfg(r.config()), cluster_node(c),
        server(io,
               http_server_options{cfg.gateway.host, cfg.gateway.port, cfg.limits.max_frame_bytes,
                                   cfg.limits.max_frame_bytes, cfg.limits.max_outbound_bytes,
                                   cfg.limits.max_connections, "troupe", cfg.gateway.tls.cert,
                                   cfg.gateway.tls.key, cfg.gateway.tls.allow_plain,
                                   cfg.limits.connection_idle_timeout},
               [this](http_request req, std::shared_ptr<http_exchange> ex) {
                 handle(std::move(req), std::move(ex));
               }) {
    if (!cfg.gateway.keys_file.empty()) {
      if (auto err = keys.load(cfg.gateway.keys_file); !err.empty())
        throw std::runtime_error("gateway.auth.keys_file: " + err);
      quotas = std::make_shared<runtime::key_quotas>(cfg.limits.per_key);
    }
  }

  actors::node_runtime& rt;
  const runtime::node_config& cfg;
  const cluster::cluster_node* cluster_node;
  mcp_endpoint mcp{rt};
  http_server server;
  api_keys keys;
  std::shared_ptr<runtime::key_quotas> quotas; // with keys only: limits are per key

  /// The caller's principal, or nothing for a missing or unknown key.
  std::optional<runtime::principal> authenticate(const http_request& req) const {
    if (cfg.gateway.keys_file.empty()) return runtime::principal{}; // `auth: none`
    auto auth = req.header("authorization");
    if (auth.rfind("Bearer ", 0) == 0)
      if (auto who = keys.check(std::string_view{auth}.substr(7))) return who;
    // Browsers cannot set headers on a WebSocket handshake: `?token=` (or
    // the older `?api_key=`) carries the key there.
    auto key = query_param(req.query, "token");
    if (key.empty()) key = query_param(req.query, "api_key");
    return keys.check(key);
  }

  /// A turn slot of `who`'s (always one without keys), or a 429 sent.
  std::optional<runtime::key_quotas::lease> turn_slot(const runtime::principal& who,
                                                      const std::shared_ptr<http_exchange>& ex) {
    if (!quotas) return runtime::key_quotas::lease{};
    if (auto l = quotas->begin_turn(who.name)) return l;
    limited(ex, quotas->over_turns(who.name));
    return std::nullopt;
  }

  static void limited(const std::shared_ptr<http_exchange>& ex, std::string why) {
    runtime::key_quotas::count_refusal();
    ex->reply(error_response(errc::limit_exceeded, std::move(why)));
  }

  /// Every refusal is counted; the log gets at most one line per second
  /// (with how many were refused since), so a flood cannot fill the disk.
  void denied(const http_request& req) {
    static runtime::counter& count = runtime::metrics_registry::global().get_counter(
        "troupe_auth_denied_total", "Requests refused for a missing or unknown API key");
    count.inc();
    std::lock_guard<std::mutex> guard{denied_mutex};
    ++denied_since_log;
    auto now = std::chrono::steady_clock::now();
    if (now - denied_logged < std::chrono::seconds(1)) return;
    denied_logged = now;
    runtime::log::warn("gateway", "auth_denied",
                       {{"path", req.path.substr(0, 100)},
                        {"refused", std::to_string(std::exchange(denied_since_log, 0))}});
  }
  std::mutex denied_mutex;
  std::chrono::steady_clock::time_point denied_logged{};
  uint64_t denied_since_log = 0;

  void handle(http_request req, std::shared_ptr<http_exchange> ex) {
    auto& reg = runtime::metrics_registry::global();
    reg.get_counter("troupe_http_requests_total", "HTTP requests received",
                    "method=\"" + (req.method.size() <= 7 ? req.method : std::string{"OTHER"}) +
                        "\"")
        .inc();
    auto seg = segments(req.path);
    if (req.path == "/health" && req.method == "GET") return health(ex);
    auto who = authenticate(req);
    if (!who) {
      denied(req);
      return ex->reply(error_response(errc::unauthorized, "missing or unknown API key"));
    }
    if (quotas && !quotas->take_request(who->name))
      return limited(ex, quotas->over_rate(who->name));
    if (!seg.empty() && seg[0] == "ws" && seg.size() <= 2) {
      if (!ex->is_upgrade())
        return ex->reply(
            error_response(errc::bad_request, "this route takes a WebSocket upgrade", 426));
      std::string type = seg.size() == 2 ? seg[1] : "";
      if (!type.empty() && !rt.has_type(type))
        return ex->reply(error_response(errc::unknown_type, "unknown agent type '" + type + "'"));
      runtime::key_quotas::lease conn;
      if (quotas && !(conn = quotas->open_connection(who->name)))
        return limited(ex, quotas->over_connections(who->name));
      return ex->upgrade(std::make_shared<session_bridge>(rt, type, *who, quotas, std::move(conn)));
    }
    // Operating the cluster is for admin keys (and everyone without keys).
    bool admin = who->all_agents;
    if (seg.size() == 4 && seg[0] == "debug" && seg[1] == "crash" && seg[2] == "worker" &&
        req.method == "POST" && admin && std::getenv("TROUPE_FAULT_INJECTION") &&
        std::string{std::getenv("TROUPE_FAULT_INJECTION")} == "1") {
      rt.crash_worker(seg[3]);
      return ex->reply(json_response(202, {{"crashing", seg[3]}}));
    }
    if (seg.size() == 3 && seg[0] == "debug" && seg[1] == "crash" && req.method == "POST" &&
        admin && rt.crash(seg[2]))
      return ex->reply(json_response(202, {{"crashing", seg[2]}}));
    if (req.path == "/mcp") return mcp.handle(req, std::move(ex), *who, quotas);
    if (req.path == "/metrics" && req.method == "GET") {
      runtime::metrics_registry::global().sample_process();
      return ex->reply(
          {200, "text/plain; version=0.0.4", runtime::metrics_registry::global().render(), {}});
    }
    if (seg.size() >= 2 && seg[0] == "api") {
      if (seg[1] == "agents") return agents(req, seg, ex, *who);
      if (seg[1] == "cluster" && seg.size() == 2 && req.method == "GET") return cluster(ex);
      if (seg[1] == "mcp" && seg.size() == 2 && req.method == "GET")
        return ex->reply(json_response(200, mcp_servers()));
      if (seg[1] == "cluster" && seg.size() == 5 && seg[2] == "nodes" && seg[4] == "drain" &&
          req.method == "POST") {
        if (!admin)
          return ex->reply(error_response(errc::unauthorized, "draining needs an admin key", 403));
        return drain(seg[3], ex);
      }
      if (seg[1] == "jobs" && seg.size() == 3 && req.method == "GET")
        return get_job(seg[2], ex, *who);
      if (seg.size() == 3 && seg[2] == "jobs") {
        if (req.method != "POST")
          return ex->reply(error_response(errc::bad_request, "use POST", 405));
        return submit_job(seg[1], req, ex, *who);
      }
      if (seg.size() == 3 && seg[2] == "execute") {
        if (req.method != "POST")
          return ex->reply(error_response(errc::bad_request, "use POST", 405));
        return execute(seg[1], req, ex, *who);
      }
    }
    if (req.path == "/v1/chat/completions") {
      if (req.method != "POST")
        return ex->reply(error_response(errc::bad_request, "use POST", 405));
      return completions(req, ex, *who);
    }
    if (req.path == "/v1/models" && req.method == "GET") return models(ex);
    ex->reply(error_response(errc::bad_request, "no route " + req.method + " " + req.path, 404));
  }

  /// `GET /api/mcp`: each configured MCP server with its state and tools.
  json mcp_servers() const {
    json servers = json::array();
    for (auto& v : rt.mcp_servers()) {
      json tools = json::array();
      for (auto& t : v.tools)
        tools.push_back({{"name", t.name}, {"exposed", t.exposed}, {"description", t.description}});
      servers.push_back({{"name", v.name},
                         {"transport", v.transport},
                         {"target", v.target},
                         {"state", v.state},
                         {"protocol", v.protocol},
                         {"server", v.server_info},
                         {"restarts", v.restarts},
                         {"last_error", v.last_error},
                         {"tools", std::move(tools)}});
    }
    return {{"servers", std::move(servers)}};
  }

  static json worker_json(const actors::worker_status& w) {
    return {
        {"id", w.info.id},         {"kind", w.info.kind},       {"backend", w.info.backend},
        {"models", w.info.models}, {"slots", w.info.slots},     {"active", w.load.active},
        {"queued", w.load.queued}, {"healthy", w.load.healthy}, {"health", w.load.health_detail},
        {"served", w.load.served}, {"failed", w.load.failed}};
  }

  void health(std::shared_ptr<http_exchange> ex) {
    bool sim = cfg.simulated_default;
    auto node = cfg.id;
    bool needs_workers = cfg.has_role("inference");
    json supervision = json::object();
    for (auto& [name, c] : rt.supervision().snapshot())
      supervision[name] = {{"subtree", c.subtree},
                           {"restarts", c.restarts},
                           {"last_failure", c.last_failure},
                           {"escalated", c.escalated}};
    bool escalated = rt.supervision().any_escalated();
    rt.workers([ex, sim, node, needs_workers, supervision,
                escalated](std::vector<actors::worker_status> ws) {
      json workers = json::array();
      bool any_healthy = false;
      for (auto& w : ws) {
        any_healthy |= w.load.healthy;
        workers.push_back(worker_json(w));
      }
      // An escalated subtree means the node needs a restart: say so, so an
      // orchestrator probing /health replaces it.
      bool ok = (any_healthy || !needs_workers) && !escalated;
      ex->reply(json_response(ok ? 200 : 503, {{"status", ok ? "ok" : "degraded"},
                                               {"node", node},
                                               {"simulated_backend", sim},
                                               {"workers", workers},
                                               {"supervision", supervision}}));
    });
  }

  void cluster(std::shared_ptr<http_exchange> ex) {
    if (cluster_node) {
      // Every member with its workers and load as of its last heartbeat.
      return ex->reply(json_response(200, cluster_node->describe()));
    }
    auto node = cfg.id;
    auto roles = cfg.roles;
    rt.workers([ex, node, roles](std::vector<actors::worker_status> ws) {
      json workers = json::array();
      for (auto& w : ws)
        workers.push_back(worker_json(w));
      ex->reply(json_response(
          200, {{"nodes", json::array({{{"id", node}, {"roles", roles}, {"workers", workers}}})}}));
    });
  }

  void drain(const std::string& node, std::shared_ptr<http_exchange> ex) {
    if (!cluster_node)
      return ex->reply(error_response(errc::bad_request, "this node is not part of a cluster"));
    try {
      if (!cluster_node->request_drain(node))
        return ex->reply(error_response(errc::bad_request, "no live node '" + node + "'", 404));
    } catch (const std::exception& e) {
      return ex->reply(error_response(errc::internal, e.what()));
    }
    ex->reply(json_response(202, {{"node", node}, {"draining", true}}));
  }

  void agents(const http_request& req, const std::vector<std::string>& seg,
              std::shared_ptr<http_exchange> ex, const runtime::principal& who) {
    if (seg.size() == 2 && req.method == "GET")
      return rt.list_agents(
          [ex](std::vector<std::string> agents) {
            ex->reply(json_response(200, {{"agents", agents}}));
          },
          who);
    if (seg.size() == 2 && req.method == "POST") {
      auto body = json::parse(req.body, nullptr, false);
      if (!body.is_object() || !body.contains("type") || !body["type"].is_string())
        return ex->reply(
            error_response(errc::bad_request, "body must be {\"type\":..,\"key\":..}"));
      std::string key =
          body.contains("key") && body["key"].is_string() ? body["key"].get<std::string>() : "";
      return rt.spawn_agent(
          body["type"].get<std::string>(), key,
          [ex](std::optional<runtime::failure> f, std::string agent) {
            if (f) return ex->reply(error_response(f->code, f->message));
            ex->reply(json_response(201, {{"agent", agent}}));
          },
          who);
    }
    if (seg.size() == 4 && req.method == "DELETE") {
      auto agent = seg[2] + "/" + seg[3];
      return rt.kill_agent(
          agent,
          [ex, agent](std::optional<runtime::failure> f) {
            if (f) return ex->reply(error_response(f->code, f->message));
            ex->reply(json_response(200, {{"killed", agent}}));
          },
          who);
    }
    ex->reply(error_response(errc::bad_request, "no route " + req.method + " " + req.path, 404));
  }

  void execute(const std::string& type, const http_request& req, std::shared_ptr<http_exchange> ex,
               const runtime::principal& who) {
    auto mk = message_and_key(req, ex);
    if (!mk) return;
    auto [message, key] = *mk;
    if (!rt.has_type(type))
      return ex->reply(error_response(errc::unknown_type, "unknown agent type '" + type + "'"));
    auto slot = turn_slot(who, ex);
    if (!slot) return;
    rt.execute(
        type, key, message,
        [ex, slot = std::move(*slot)](actors::execute_result r) {
          if (r.error) {
            runtime::log::info("gateway", "execute_failed",
                               {{"agent", r.agent},
                                {"code", std::string{runtime::to_string(r.error->code)}},
                                {"reason", r.error->message}});
            return ex->reply(error_response(r.error->code, r.error->message));
          }
          ex->reply(json_response(200, {{"agent", r.agent},
                                        {"answer", r.answer},
                                        {"steps", r.steps},
                                        {"usage", runtime::usage_to_json(r.tokens)}}));
        },
        who);
  }

  /// `{"message":"..","key":".."}` from a request body, or an error reply.
  static std::optional<std::pair<std::string, std::string>>
  message_and_key(const http_request& req, const std::shared_ptr<http_exchange>& ex) {
    auto body = json::parse(req.body, nullptr, false);
    if (!body.is_object()) {
      ex->reply(error_response(errc::bad_request, "body must be a JSON object"));
      return std::nullopt;
    }
    auto msg = body.find("message");
    if (msg == body.end() || !msg->is_string()) {
      ex->reply(error_response(errc::bad_request, "missing string field 'message'"));
      return std::nullopt;
    }
    std::string key;
    if (auto k = body.find("key"); k != body.end()) {
      if (!k->is_string() || k->get<std::string>().find('/') != std::string::npos) {
        ex->reply(error_response(errc::bad_request, "'key' must be a string without '/'"));
        return std::nullopt;
      }
      key = k->get<std::string>();
    }
    return std::make_pair(msg->get<std::string>(), key);
  }

  void submit_job(const std::string& type, const http_request& req,
                  std::shared_ptr<http_exchange> ex, const runtime::principal& who) {
    auto mk = message_and_key(req, ex);
    if (!mk) return;
    auto r = rt.submit_job(type, mk->second, mk->first, who);
    if (auto f = std::get_if<runtime::failure>(&r))
      return ex->reply(error_response(f->code, f->message));
    auto& job = std::get<runtime::job_record>(r);
    ex->reply(
        json_response(202, {{"job", job.id}, {"agent", job.agent.str()}, {"state", "queued"}}));
  }

  void get_job(const std::string& id, std::shared_ptr<http_exchange> ex,
               const runtime::principal& who) {
    auto job = rt.find_job(id, who);
    if (!job) return ex->reply(error_response(errc::bad_request, "no job '" + id + "'", 404));
    json out{{"job", job->id},
             {"agent", job->agent.str()},
             {"state", runtime::to_string(job->state)},
             {"attempts", job->attempts}};
    auto outcome = json::parse(job->outcome, nullptr, false);
    if (job->state == runtime::job_state::done && outcome.is_object()) {
      out["answer"] = outcome.value("answer", "");
      out["steps"] = outcome.value("steps", 0);
      out["usage"] = outcome.value("usage", json::object());
    } else if (job->state == runtime::job_state::failed && outcome.is_object()) {
      out["error"] = outcome;
    }
    ex->reply(json_response(200, out));
  }

  void models(std::shared_ptr<http_exchange> ex) {
    rt.workers([ex](std::vector<actors::worker_status> ws) {
      std::set<std::string> names;
      for (auto& w : ws)
        for (auto& m : w.info.models)
          names.insert(m);
      json data = json::array();
      for (auto& n : names)
        data.push_back({{"id", n}, {"object", "model"}, {"owned_by", "troupe"}});
      ex->reply(json_response(200, {{"object", "list"}, {"data", data}}));
    });
  }

  void completions(const http_request& req, std::shared_ptr<http_exchange> ex,
                   const runtime::principal& who) {
    bool stream = false;
    std::string err;
    auto creq = runtime::decode_chat_request(req.body, stream, err);
    if (!creq) return ex->reply(error_response(errc::bad_request, err));
    auto slot = turn_slot(who, ex);
    if (!slot) return;
    auto model = creq->model;
    auto id = "chatcmpl-troupe";
    if (!stream) {
      return rt.complete(
          std::move(*creq), [](std::string) {},
          [ex, model, id, slot = *slot](std::optional<runtime::failure> f, runtime::chat_result r) {
            if (f) return ex->reply(error_response(f->code, f->message));
            ex->reply({200, "application/json", runtime::encode_chat_completion(id, model, r), {}});
          });
    }
    // The status line waits for the first token, so a routing failure can
    // still be a proper HTTP error.
    auto started = std::make_shared<std::atomic<bool>>(false);
    auto begin = [ex, started] {
      if (!started->exchange(true)) ex->start_stream(200, "text/event-stream");
    };
    auto chunk_of = [model, id](const runtime::chat_chunk& c) {
      return std::make_shared<const std::string>(
          "data: " + runtime::encode_chat_chunk(id, model, c) + "\n\n");
    };
    rt.complete(
        std::move(*creq),
        [ex, begin, chunk_of](std::string text) {
          begin();
          runtime::chat_chunk c;
          c.content = std::move(text);
          ex->write_chunk(chunk_of(c));
        },
        [ex, begin, started, chunk_of, slot = *slot](std::optional<runtime::failure> f,
                                                     runtime::chat_result r) {
          if (f && !started->load()) return ex->reply(error_response(f->code, f->message));
          begin();
          if (f) {
            json e{{"error", {{"code", runtime::to_string(f->code)}, {"message", f->message}}}};
            ex->write_chunk(std::make_shared<const std::string>("data: " + e.dump() + "\n\n"));
          } else {
            runtime::chat_chunk c;
            for (size_t i = 0; i < r.tool_calls.size(); ++i)
              c.tool_calls.push_back({static_cast<int>(i), r.tool_calls[i].id, r.tool_calls[i].name,
                                      r.tool_calls[i].arguments});
            c.finish_reason = r.finish_reason;
            ex->write_chunk(chunk_of(c));
            runtime::chat_chunk u;
            u.has_usage = true;
            u.tokens = r.tokens;
            ex->write_chunk(chunk_of(u));
          }
          ex->write_chunk(std::make_shared<const std::string>("data: [DONE]\n\n"));
          ex->end_stream();
        });
  }
};

gateway::gateway(actors::io_threads& io, actors::node_runtime& rt,
                 const cluster::cluster_node* cluster)
    : impl_(std::make_unique<impl>(io, rt, cluster)) {}

gateway::~gateway() = default;

void gateway::start() {
  impl_->server.start();
}
std::string gateway::reload() {
  std::string errors;
  if (!impl_->cfg.gateway.keys_file.empty()) {
    auto err = impl_->keys.load(impl_->cfg.gateway.keys_file);
    if (err.empty())
      runtime::log::info("gateway", "keys_reloaded",
                         {{"keys", std::to_string(impl_->keys.size())}});
    else
      runtime::log::error("gateway", "keys_reload_failed",
                          {{"reason", err}, {"action", "the keys loaded before stay in force"}});
    errors += err;
  }
  if (impl_->cfg.gateway.tls.enabled()) {
    auto err = impl_->server.reload_tls();
    if (err.empty())
      runtime::log::info("gateway", "tls_reloaded", {{"cert", impl_->cfg.gateway.tls.cert}});
    else
      runtime::log::error(
          "gateway", "tls_reload_failed",
          {{"reason", err}, {"action", "the certificate loaded before stays in force"}});
    errors += (errors.empty() || err.empty() ? "" : "; ") + err;
  }
  return errors;
}

uint16_t gateway::port() const {
  return impl_->server.port();
}
void gateway::stop_accepting() {
  impl_->server.stop_accepting();
}
void gateway::close_all() {
  impl_->server.close_all(1001, "node shutting down");
}

} // namespace troupe::gateway
