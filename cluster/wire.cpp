#include "cluster/wire.hpp"

namespace troupe::cluster {

using nlohmann::json;

const char* to_string(msg_type t) {
  switch (t) {
  case msg_type::ping:
    return "ping";
  case msg_type::pong:
    return "pong";
  case msg_type::bye:
    return "bye";
  case msg_type::infer:
    return "infer";
  case msg_type::infer_ok:
    return "infer_ok";
  case msg_type::infer_err:
    return "infer_err";
  case msg_type::token:
    return "token";
  case msg_type::done:
    return "done";
  case msg_type::fail:
    return "fail";
  case msg_type::cancel:
    return "cancel";
  case msg_type::agent_send:
    return "agent_send";
  case msg_type::agent_sub:
    return "agent_sub";
  case msg_type::agent_unsub:
    return "agent_unsub";
  case msg_type::agent_cancel:
    return "agent_cancel";
  case msg_type::agent_ask:
    return "agent_ask";
  case msg_type::agent_answer:
    return "agent_answer";
  case msg_type::agent_event:
    return "agent_event";
  case msg_type::agent_down:
    return "agent_down";
  case msg_type::agent_kill:
    return "agent_kill";
  case msg_type::agent_open:
    return "agent_open";
  }
  return "unknown";
}

namespace {

bool known(uint64_t t) {
  return (t >= 1 && t <= 3) || (t >= 10 && t <= 16) || (t >= 20 && t <= 29);
}

} // namespace

std::string encode_envelope(const envelope& env) {
  json j = json::array({env.version, static_cast<uint64_t>(env.type), env.source, env.incarnation,
                        env.target, env.corr});
  auto bytes = json::to_msgpack(j);
  return {bytes.begin(), bytes.end()};
}

std::variant<envelope, decode_error> decode_envelope(std::string_view bytes) {
  json j = json::from_msgpack(bytes.begin(), bytes.end(), true, false);
  if (j.is_discarded() || !j.is_array() || j.empty() || !j[0].is_number_unsigned())
    return decode_error::malformed;
  if (j[0].get<uint64_t>() != protocol_version) return decode_error::version;
  if (j.size() != 6 || !j[1].is_number_unsigned() || !j[2].is_string() ||
      !j[3].is_number_unsigned() || !j[4].is_string() || !j[5].is_number_unsigned())
    return decode_error::malformed;
  auto type = j[1].get<uint64_t>();
  if (!known(type)) return decode_error::malformed;
  envelope env;
  env.version = protocol_version;
  env.type = static_cast<msg_type>(type);
  env.source = j[2].get<std::string>();
  env.incarnation = j[3].get<uint64_t>();
  env.target = j[4].get<std::string>();
  env.corr = j[5].get<uint64_t>();
  if (env.source.empty()) return decode_error::malformed;
  return env;
}

std::string encode_payload(const json& payload) {
  auto bytes = json::to_msgpack(payload);
  return {bytes.begin(), bytes.end()};
}

std::optional<json> decode_payload(std::string_view bytes) {
  json j = json::from_msgpack(bytes.begin(), bytes.end(), true, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

// -- payload helpers ----------------------------------------------------------

namespace {

// Readers tolerate missing or mistyped fields: a peer of the same protocol
// version never sends them, and a bad one must not crash the receiver.
std::string text(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string{};
}

int64_t integer(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

json calls_to_json(const std::vector<runtime::tool_call>& calls) {
  json out = json::array();
  for (auto& c : calls)
    out.push_back({{"id", c.id}, {"name", c.name}, {"arguments", c.arguments}});
  return out;
}

std::vector<runtime::tool_call> calls_from(const json& j) {
  std::vector<runtime::tool_call> out;
  if (!j.is_array()) return out;
  for (auto& c : j)
    if (c.is_object()) out.push_back({text(c, "id"), text(c, "name"), text(c, "arguments")});
  return out;
}

json usage_to(const runtime::usage& u) {
  return {{"p", u.prompt_tokens}, {"c", u.completion_tokens}};
}

runtime::usage usage_from(const json& j) {
  if (!j.is_object()) return {};
  return {integer(j, "p"), integer(j, "c")};
}

std::vector<std::string> strings_from(const json& j) {
  std::vector<std::string> out;
  if (j.is_array())
    for (auto& s : j)
      if (s.is_string()) out.push_back(s.get<std::string>());
  return out;
}

} // namespace

json to_json(const runtime::chat_request& req) {
  json msgs = json::array();
  for (auto& m : req.messages) {
    json o{{"role", m.role}, {"content", m.content}};
    if (!m.tool_calls.empty()) o["tool_calls"] = calls_to_json(m.tool_calls);
    if (!m.tool_call_id.empty()) o["tool_call_id"] = m.tool_call_id;
    if (!m.name.empty()) o["name"] = m.name;
    msgs.push_back(std::move(o));
  }
  json tools = json::array();
  for (auto& t : req.tools)
    tools.push_back(
        {{"name", t.name}, {"description", t.description}, {"parameters", t.parameters_json}});
  return {{"model", req.model},           {"messages", std::move(msgs)},
          {"tools", std::move(tools)},    {"temperature", req.temperature},
          {"max_tokens", req.max_tokens}, {"affinity", req.affinity_key},
          {"prefer", req.prefer}};
}

runtime::chat_request chat_request_from(const json& j) {
  runtime::chat_request req;
  req.model = text(j, "model");
  if (auto it = j.find("messages"); it != j.end() && it->is_array())
    for (auto& o : *it) {
      if (!o.is_object()) continue;
      runtime::chat_message m;
      m.role = text(o, "role");
      m.content = text(o, "content");
      if (auto c = o.find("tool_calls"); c != o.end()) m.tool_calls = calls_from(*c);
      m.tool_call_id = text(o, "tool_call_id");
      m.name = text(o, "name");
      req.messages.push_back(std::move(m));
    }
  if (auto it = j.find("tools"); it != j.end() && it->is_array())
    for (auto& t : *it)
      if (t.is_object())
        req.tools.push_back({text(t, "name"), text(t, "description"), text(t, "parameters")});
  if (auto it = j.find("temperature"); it != j.end() && it->is_number())
    req.temperature = it->get<double>();
  req.max_tokens = integer(j, "max_tokens");
  req.affinity_key = text(j, "affinity");
  if (auto it = j.find("prefer"); it != j.end()) req.prefer = strings_from(*it);
  return req;
}

json to_json(const runtime::chat_result& r) {
  return {{"content", r.content},
          {"tool_calls", calls_to_json(r.tool_calls)},
          {"usage", usage_to(r.tokens)},
          {"finish", r.finish_reason}};
}

runtime::chat_result chat_result_from(const json& j) {
  runtime::chat_result r;
  r.content = text(j, "content");
  if (auto it = j.find("tool_calls"); it != j.end()) r.tool_calls = calls_from(*it);
  if (auto it = j.find("usage"); it != j.end()) r.tokens = usage_from(*it);
  r.finish_reason = text(j, "finish");
  return r;
}

json to_json(const runtime::failure& f) {
  return {{"code", std::string{runtime::to_string(f.code)}}, {"message", f.message}};
}

runtime::failure failure_from(const json& j) {
  if (!j.is_object()) return {runtime::errc::internal, "malformed failure from a peer"};
  return {runtime::errc_from_string(text(j, "code")), text(j, "message")};
}

json to_json(const runtime::agent_event& ev) {
  return {{"kind", static_cast<int>(ev.kind)}, {"id", ev.id}, {"json", ev.json}};
}

runtime::event_ptr event_from(const json& j, const std::string& agent) {
  runtime::agent_event ev;
  auto kind = integer(j, "kind");
  if (kind < 0 || kind > static_cast<int>(runtime::event_kind::pong)) return nullptr;
  ev.kind = static_cast<runtime::event_kind>(kind);
  ev.id = text(j, "id");
  ev.agent = agent;
  ev.json = text(j, "json");
  if (ev.json.empty()) return nullptr;
  return std::make_shared<const runtime::agent_event>(std::move(ev));
}

} // namespace troupe::cluster
