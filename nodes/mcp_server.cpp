#include "nodes/mcp_server.hpp"
#include "actors/node_runtime.hpp"
#include "runtime/openai_codec.hpp"

#include <nlohmann/json.hpp>

#include <atomic>
#include <cctype>
#include <memory>
#include <string>

namespace troupe::gateway {

namespace {

using nlohmann::json;

constexpr int method_not_found = -32601;
constexpr int invalid_params = -32602;

/// A string member, or "" when it is missing or of another type (`value()`
/// would throw on another type, and the message is a client's).
std::string string_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string{};
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

} // namespace

bool mcp_server::supports(const std::string& version) {
  for (auto v : versions)
    if (version == v) return true;
  return false;
}

json mcp_server::error(const json& id, int code, const std::string& message) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", code}, {"message", message}}}};
}

void mcp_server::dispatch(const json& msg, std::function<void(json)> done,
                          std::function<void(json)> progress, const runtime::principal& who) const {
  auto id = msg["id"];
  auto method = msg["method"].get<std::string>();
  auto params =
      msg.contains("params") && msg["params"].is_object() ? msg["params"] : json::object();
  if (method == "initialize") {
    auto asked = string_field(params, "protocolVersion");
    return done(
        result_body(id, {{"protocolVersion", supports(asked) ? asked : std::string{versions[0]}},
                         {"capabilities", {{"tools", {{"listChanged", false}}}}},
                         {"serverInfo", {{"name", "troupe"}, {"version", "0.1.0"}}},
                         {"instructions", "Each tool is a Troupe agent type: send it a message, "
                                          "optionally with a key to continue a conversation."}}));
  }
  if (method == "ping") return done(result_body(id, json::object()));
  if (method == "tools/list") {
    json tools = json::array();
    for (auto& [type, system] : rt_.agent_types())
      tools.push_back(
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
    return done(result_body(id, {{"tools", std::move(tools)}}));
  }
  if (method != "tools/call")
    return done(error(id, method_not_found, "method '" + method + "' not found"));
  auto name = string_field(params, "name");
  std::string type;
  for (auto& [t, system] : rt_.agent_types())
    if (tool_name(t) == name) type = t;
  if (type.empty()) return done(error(id, invalid_params, "unknown tool '" + name + "'"));
  auto args = params.contains("arguments") ? params["arguments"] : json::object();
  if (!args.is_object() || !args.contains("message") || !args["message"].is_string() ||
      (args.contains("key") && !args["key"].is_string()))
    return done(error(id, invalid_params, "arguments must be {message: string, key?: string}"));
  auto finished = [done = std::move(done), id](actors::execute_result r) {
    if (r.error) {
      // The agent failed: a tool error the calling model can
      // read, not a protocol error.
      auto text = std::string{runtime::to_string(r.error->code)} + ": " + r.error->message;
      return done(
          result_body(id, {{"content", {{{"type", "text"}, {"text", text}}}}, {"isError", true}}));
    }
    done(result_body(id, {{"content", {{{"type", "text"}, {"text", r.answer}}}},
                          {"structuredContent",
                           {{"agent", r.agent},
                            {"answer", r.answer},
                            {"steps", r.steps},
                            {"usage", runtime::usage_to_json(r.tokens)}}},
                          {"isError", false}}));
  };
  auto key = args.value("key", "");
  auto text = args["message"].get<std::string>();
  json token = nullptr;
  if (params.contains("_meta") && params["_meta"].is_object())
    token = params["_meta"].value("progressToken", json(nullptr));
  if (!progress || token.is_null()) return rt_.execute(type, key, text, std::move(finished), who);
  // Each streamed token is progress; its text is the message, so a host can
  // show the answer as it forms.
  auto count = std::make_shared<std::atomic<int64_t>>(0);
  rt_.execute_streaming(
      type, key, text,
      [progress, token, count](std::string piece) {
        progress(
            {{"jsonrpc", "2.0"},
             {"method", "notifications/progress"},
             {"params", {{"progressToken", token}, {"progress", ++*count}, {"message", piece}}}});
      },
      std::move(finished), who);
}

} // namespace troupe::gateway
