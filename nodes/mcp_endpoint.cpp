#include "nodes/mcp_endpoint.hpp"
#include "nodes/mcp_server.hpp"
#include "runtime/log.hpp"

#include <nlohmann/json.hpp>

#include <deque>
#include <mutex>
#include <random>
#include <unordered_map>

namespace troupe::gateway {

namespace {

using nlohmann::json;

constexpr size_t max_sessions = 10000;

// JSON-RPC error codes.
constexpr int parse_error = -32700;
constexpr int invalid_request = -32600;
constexpr int server_limit = -32000; // implementation-defined server error: a per-key limit

http_response rpc(int status, const json& body,
                  std::vector<std::pair<std::string, std::string>> h = {}) {
  return {status, "application/json", body.dump(-1, ' ', false, json::error_handler_t::replace),
          std::move(h)};
}

/// The host part of "scheme://host:port" or "host:port".
std::string host_of(std::string s) {
  if (auto p = s.find("://"); p != std::string::npos) s = s.substr(p + 3);
  if (auto p = s.find('/'); p != std::string::npos) s = s.substr(0, p);
  if (!s.empty() && s.front() == '[') return s.substr(0, s.find(']') + 1);
  return s.substr(0, s.rfind(':') == std::string::npos ? s.size() : s.rfind(':'));
}

/// Browsers send Origin; a page from elsewhere must not drive local agents
/// (DNS rebinding). Loopback and this server's own host are allowed.
bool origin_allowed(const std::string& origin, const std::string& host_header) {
  auto host = host_of(origin);
  return host == "localhost" || host == "127.0.0.1" || host == "[::1]" ||
         (!host_header.empty() && host == host_of(host_header));
}

} // namespace

struct mcp_endpoint::impl {
  explicit impl(actors::node_runtime& rt) : server(rt) {}

  mcp_server server;
  std::mutex mutex;
  std::unordered_map<std::string, std::string> sessions; // id -> protocol version
  std::deque<std::string> order;                         // oldest first, for the bound
  std::mt19937_64 rng{std::random_device{}()};

  std::string new_session(const std::string& version) {
    std::lock_guard<std::mutex> guard{mutex};
    char buf[33];
    std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                  static_cast<unsigned long long>(rng()));
    std::string id{buf};
    sessions[id] = version;
    order.push_back(id);
    while (order.size() > max_sessions) { // the oldest go first
      sessions.erase(order.front());
      order.pop_front();
    }
    return id;
  }

  bool has_session(const std::string& id) {
    std::lock_guard<std::mutex> guard{mutex};
    return sessions.contains(id);
  }

  bool end_session(const std::string& id) {
    std::lock_guard<std::mutex> guard{mutex};
    return sessions.erase(id) > 0;
  }
};

mcp_endpoint::mcp_endpoint(actors::node_runtime& rt) : impl_(std::make_unique<impl>(rt)) {}

mcp_endpoint::~mcp_endpoint() = default;

void mcp_endpoint::handle(const http_request& req, std::shared_ptr<http_exchange> ex,
                          const runtime::principal& who,
                          const std::shared_ptr<runtime::key_quotas>& quotas) {
  auto& im = *impl_;
  json null_id = nullptr;
  auto fail = [&](int status, int code, const std::string& message, const json& id = nullptr) {
    ex->reply(rpc(status, mcp_server::error(id, code, message)));
  };
  if (auto origin = req.header("origin");
      !origin.empty() && !origin_allowed(origin, req.header("host")))
    return fail(403, invalid_request, "origin '" + origin + "' is not allowed");
  auto sid = req.header("mcp-session-id");
  if (req.method == "DELETE") {
    if (sid.empty()) return fail(400, invalid_request, "missing Mcp-Session-Id");
    if (!im.end_session(sid)) return fail(404, invalid_request, "unknown session");
    return ex->reply({200, "application/json", "", {}});
  }
  if (req.method != "POST")
    return ex->reply(
        {405,
         "application/json",
         mcp_server::error(null_id, invalid_request, "use POST (no server stream here)").dump(),
         {{"Allow", "POST, DELETE"}}});
  if (auto v = req.header("mcp-protocol-version"); !v.empty() && !mcp_server::supports(v))
    return fail(400, invalid_request,
                "unsupported MCP-Protocol-Version '" + v +
                    "'; this server speaks 2025-06-18, 2025-03-26 and 2025-11-25");
  auto msg = json::parse(req.body, nullptr, false);
  if (msg.is_discarded()) return fail(400, parse_error, "body is not JSON");
  if (msg.is_array())
    return fail(400, invalid_request, "JSON-RPC batches are not part of MCP 2025-06-18");
  if (!msg.is_object() || msg.value("jsonrpc", json{}) != "2.0")
    return fail(400, invalid_request, "not a JSON-RPC 2.0 message");
  json id = msg.contains("id") ? msg["id"] : null_id;
  if (!msg.contains("method") || !msg["method"].is_string()) {
    if (msg.contains("result") || msg.contains("error"))
      return ex->reply({202, "application/json", "", {}}); // a response to us: nothing asked
    return fail(400, invalid_request, "missing method", id);
  }
  if (!msg.contains("id")) // a notification (initialized, cancelled, ...)
    return ex->reply({202, "application/json", "", {}});
  auto method = msg["method"].get<std::string>();
  if (method == "initialize") {
    return im.server.dispatch(msg, [&im, ex, msg](json reply) {
      auto version = reply["result"].value("protocolVersion", "");
      auto session = im.new_session(version);
      // `msg` is const here: read it without operator[], which asserts on
      // a missing key, and without value(), which throws on another type.
      auto params = msg.value("params", json::object());
      auto client = params.is_object() ? params.value("clientInfo", json{}) : json{};
      auto name = client.is_object() ? client.value("name", json{}) : json{};
      runtime::log::info(
          "mcp", "session_started",
          {{"session", session.substr(0, 8)},
           {"version", version},
           {"client", name.is_string() ? name.get<std::string>() : std::string{"?"}}});
      ex->reply(rpc(200, reply, {{"Mcp-Session-Id", session}}));
    });
  }
  if (sid.empty())
    return fail(400, invalid_request, "missing Mcp-Session-Id: call initialize first", id);
  if (!im.has_session(sid)) return fail(404, invalid_request, "unknown or ended session", id);
  // A tool call is a turn: it holds one of the key's turn slots until answered.
  runtime::key_quotas::lease slot;
  if (method == "tools/call" && quotas && !(slot = quotas->begin_turn(who.name))) {
    runtime::key_quotas::count_refusal();
    return fail(429, server_limit, "limit_exceeded: " + quotas->over_turns(who.name), id);
  }
  auto& params = msg["params"];
  bool wants_progress = method == "tools/call" && params.is_object() && params.contains("_meta") &&
                        params["_meta"].is_object() && params["_meta"].contains("progressToken") &&
                        req.header("accept").find("text/event-stream") != std::string::npos;
  if (!wants_progress)
    return im.server.dispatch(
        msg, [ex, slot](json reply) { ex->reply(rpc(200, reply)); }, nullptr, who);
  // Progress while the agent works: the reply becomes an SSE stream of
  // progress notifications ending with the response.
  ex->start_stream(200, "text/event-stream");
  auto event = [](const json& m) {
    return std::make_shared<const std::string>(
        "event: message\ndata: " + m.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n");
  };
  im.server.dispatch(
      msg,
      [ex, event, slot](json reply) {
        ex->write_chunk(event(reply));
        ex->end_stream();
      },
      [ex, event](json note) {
        if (!ex->client_gone()) ex->write_chunk(event(note));
      },
      who);
}

} // namespace troupe::gateway
