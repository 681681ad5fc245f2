#include "nodes/mcp_endpoint.hpp"
#include "actors/node_runtime.hpp"
#include "runtime/log.hpp"
#include "runtime/openai_codec.hpp"

#include <nlohmann/json.hpp>

#include <cctype>
#include <deque>
#include <mutex>
#include <random>
#include <set>
#include <unordered_map>

namespace troupe::gateway {

namespace {

using nlohmann::json;

constexpr const char* latest_version = "2025-06-18";
const std::set<std::string> supported_versions{"2025-06-18", "2025-03-26", "2025-11-25"};
constexpr size_t max_sessions = 10000;

// JSON-RPC error codes.
constexpr int parse_error = -32700;
constexpr int invalid_request = -32600;
constexpr int method_not_found = -32601;
constexpr int invalid_params = -32602;

http_response rpc(int status, json body, std::vector<std::pair<std::string, std::string>> h = {}) {
  return {status, "application/json", body.dump(-1, ' ', false, json::error_handler_t::replace),
          std::move(h)};
}

json error_body(const json& id, int code, const std::string& message) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", code}, {"message", message}}}};
}

json result_body(const json& id, json result) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}};
}

/// MCP tool names: ^[A-Za-z0-9_-]{1,64}$; anything else becomes '_'.
std::string tool_name(const std::string& type) {
  std::string out;
  for (char c : type.substr(0, 64))
    out.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' ? c : '_');
  return out;
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
  explicit impl(actors::node_runtime& r) : rt(r) {}

  actors::node_runtime& rt;
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

  json tools() const {
    json out = json::array();
    for (auto& [type, system] : rt.agent_types())
      out.push_back(
          {{"name", tool_name(type)},
           {"title", "Agent " + type},
           {"description", "Ask the '" + type + "' agent (" + system +
                               "). Give a key to continue one conversation across calls."},
           {"inputSchema",
            {{"type", "object"},
             {"properties",
              {{"message", {{"type", "string"}, {"description", "what to ask the agent"}}},
               {"key",
                {{"type", "string"},
                 {"description", "the conversation to continue; omitted = a new one"}}}}},
             {"required", json::array({"message"})}}}});
    return out;
  }

  /// The agent type a tool name stands for, or "".
  std::string type_of(const std::string& name) const {
    for (auto& [type, system] : rt.agent_types())
      if (tool_name(type) == name) return type;
    return {};
  }

  void call_tool(const json& id, const json& params, std::shared_ptr<http_exchange> ex) {
    auto name = params.value("name", "");
    auto type = type_of(name);
    if (type.empty())
      return ex->reply(rpc(200, error_body(id, invalid_params, "unknown tool '" + name + "'")));
    auto args = params.contains("arguments") ? params["arguments"] : json::object();
    if (!args.is_object() || !args.contains("message") || !args["message"].is_string() ||
        (args.contains("key") && !args["key"].is_string()))
      return ex->reply(rpc(200, error_body(id, invalid_params,
                                           "arguments must be {message: string, key?: string}")));
    auto key = args.value("key", "");
    rt.execute(type, key, args["message"].get<std::string>(), [ex, id](actors::execute_result r) {
      if (r.error) {
        // The agent failed: a tool error the calling model can read, not a
        // protocol error.
        auto text = std::string{runtime::to_string(r.error->code)} + ": " + r.error->message;
        return ex->reply(
            rpc(200, result_body(id, {{"content", {{{"type", "text"}, {"text", text}}}},
                                      {"isError", true}})));
      }
      ex->reply(rpc(200, result_body(id, {{"content", {{{"type", "text"}, {"text", r.answer}}}},
                                          {"structuredContent",
                                           {{"agent", r.agent},
                                            {"answer", r.answer},
                                            {"steps", r.steps},
                                            {"usage", runtime::usage_to_json(r.tokens)}}},
                                          {"isError", false}})));
    });
  }
};

mcp_endpoint::mcp_endpoint(actors::node_runtime& rt) : impl_(std::make_unique<impl>(rt)) {}

mcp_endpoint::~mcp_endpoint() = default;

void mcp_endpoint::handle(const http_request& req, std::shared_ptr<http_exchange> ex) {
  auto& im = *impl_;
  json null_id = nullptr;
  if (auto origin = req.header("origin");
      !origin.empty() && !origin_allowed(origin, req.header("host")))
    return ex->reply(
        rpc(403, error_body(null_id, invalid_request, "origin '" + origin + "' is not allowed")));
  auto sid = req.header("mcp-session-id");
  if (req.method == "DELETE") {
    if (sid.empty())
      return ex->reply(rpc(400, error_body(null_id, invalid_request, "missing Mcp-Session-Id")));
    if (!im.end_session(sid))
      return ex->reply(rpc(404, error_body(null_id, invalid_request, "unknown session")));
    return ex->reply({200, "application/json", "", {}});
  }
  if (req.method != "POST")
    return ex->reply(
        {405,
         "application/json",
         error_body(null_id, invalid_request, "use POST (no server stream here)").dump(),
         {{"Allow", "POST, DELETE"}}});
  if (auto v = req.header("mcp-protocol-version"); !v.empty() && !supported_versions.contains(v))
    return ex->reply(rpc(400, error_body(null_id, invalid_request,
                                         "unsupported MCP-Protocol-Version '" + v +
                                             "'; this server speaks 2025-06-18, 2025-03-26 and "
                                             "2025-11-25")));
  auto msg = json::parse(req.body, nullptr, false);
  if (msg.is_discarded())
    return ex->reply(rpc(400, error_body(null_id, parse_error, "body is not JSON")));
  if (msg.is_array())
    return ex->reply(rpc(400, error_body(null_id, invalid_request,
                                         "JSON-RPC batches are not part of MCP 2025-06-18")));
  if (!msg.is_object() || msg.value("jsonrpc", "") != "2.0")
    return ex->reply(rpc(400, error_body(null_id, invalid_request, "not a JSON-RPC 2.0 message")));
  json id = msg.contains("id") ? msg["id"] : null_id;
  if (!msg.contains("method") || !msg["method"].is_string()) {
    if (msg.contains("result") || msg.contains("error"))
      return ex->reply({202, "application/json", "", {}}); // a response to us: nothing asked
    return ex->reply(rpc(400, error_body(id, invalid_request, "missing method")));
  }
  auto method = msg["method"].get<std::string>();
  auto params =
      msg.contains("params") && msg["params"].is_object() ? msg["params"] : json::object();
  if (!msg.contains("id")) // a notification (initialized, cancelled, ...)
    return ex->reply({202, "application/json", "", {}});

  if (method == "initialize") {
    auto asked = params.value("protocolVersion", "");
    auto version = supported_versions.contains(asked) ? asked : std::string{latest_version};
    auto session = im.new_session(version);
    runtime::log::info("mcp", "session_started",
                       {{"session", session.substr(0, 8)},
                        {"version", version},
                        {"client", params.contains("clientInfo") && params["clientInfo"].is_object()
                                       ? params["clientInfo"].value("name", "?")
                                       : std::string{"?"}}});
    return ex->reply(rpc(
        200,
        result_body(id, {{"protocolVersion", version},
                         {"capabilities", {{"tools", {{"listChanged", false}}}}},
                         {"serverInfo", {{"name", "troupe"}, {"version", "0.1.0"}}},
                         {"instructions", "Each tool is a Troupe agent type: send it a message, "
                                          "optionally with a key to continue a conversation."}}),
        {{"Mcp-Session-Id", session}}));
  }
  if (sid.empty())
    return ex->reply(
        rpc(400, error_body(id, invalid_request, "missing Mcp-Session-Id: call initialize first")));
  if (!im.has_session(sid))
    return ex->reply(rpc(404, error_body(id, invalid_request, "unknown or ended session")));
  if (method == "ping") return ex->reply(rpc(200, result_body(id, json::object())));
  if (method == "tools/list") return ex->reply(rpc(200, result_body(id, {{"tools", im.tools()}})));
  if (method == "tools/call") return im.call_tool(id, params, std::move(ex));
  ex->reply(rpc(200, error_body(id, method_not_found, "method '" + method + "' not found")));
}

} // namespace troupe::gateway
