#include "runtime/ws_protocol.hpp"
#include "runtime/json_text.hpp"

#include <nlohmann/json.hpp>

namespace troupe::runtime {

using nlohmann::json;

namespace {

/// Reads an optional string field; a present field of another type is an error.
bool read_string(const json& j, const char* key, std::string& out, protocol_error& err,
                 bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) {
      err.message = std::string{"missing field '"} + key + "'";
      return false;
    }
    return true;
  }
  if (!it->is_string()) {
    err.message = std::string{"field '"} + key + "' must be a string";
    return false;
  }
  out = it->get<std::string>();
  return true;
}

/// A client request id may be a string or a number; it is echoed as a string.
bool read_id(const json& j, std::string& out, protocol_error& err) {
  auto it = j.find("id");
  if (it == j.end() || it->is_null()) return true;
  if (it->is_string())
    out = it->get<std::string>();
  else if (it->is_number_integer())
    out = std::to_string(it->get<int64_t>());
  else {
    err.message = "field 'id' must be a string or an integer";
    return false;
  }
  return true;
}

json maybe_json(const std::string& text) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return text;
  return j;
}

} // namespace

std::variant<client_op, protocol_error> decode_client_frame(std::string_view text) {
  protocol_error err;
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) {
    err.message = "malformed JSON";
    return err;
  }
  if (!j.is_object()) {
    err.message = "frame must be a JSON object";
    return err;
  }
  client_op op;
  if (!read_id(j, op.id, err)) return err;
  err.id = op.id;
  std::string name;
  if (!read_string(j, "op", name, err, true)) return err;
  bool ok = true;
  if (name == "spawn") {
    op.kind = client_op_kind::spawn;
    ok = read_string(j, "type", op.type, err, true) && read_string(j, "key", op.key, err, false);
    if (ok && op.type.empty()) {
      err.message = "field 'type' must not be empty";
      ok = false;
    }
    if (ok && op.key.find('/') != std::string::npos) {
      err.message = "field 'key' must not contain '/'";
      ok = false;
    }
  } else if (name == "send") {
    op.kind = client_op_kind::send;
    ok = read_string(j, "agent", op.agent, err, true) && read_string(j, "text", op.text, err, true);
  } else if (name == "cancel") {
    op.kind = client_op_kind::cancel;
    if (op.id.empty()) {
      err.message = "cancel needs the 'id' of the request to cancel";
      ok = false;
    }
  } else if (name == "attach" || name == "detach" || name == "kill") {
    op.kind = name == "attach"   ? client_op_kind::attach
              : name == "detach" ? client_op_kind::detach
                                 : client_op_kind::kill;
    ok =
        read_string(j, "job", op.job, err, false) &&
        read_string(j, "agent", op.agent, err, op.kind != client_op_kind::attach || op.job.empty());
    // Found by fuzz_ws_protocol: "" passed as a present field. An op on no
    // agent (and, for attach, no job) is refused here, with its reason.
    if (ok && op.agent.empty() && (op.kind != client_op_kind::attach || op.job.empty())) {
      err.message = "field 'agent' must not be empty";
      ok = false;
    }
  } else if (name == "list") {
    op.kind = client_op_kind::list;
  } else if (name == "ping") {
    op.kind = client_op_kind::ping;
  } else {
    err.message = "unknown op '" + name + "'";
    return err;
  }
  if (!ok) return err;
  return op;
}

event_ptr seal(agent_event ev) {
  if (ev.kind == event_kind::token) {
    // One per token, so written directly; the keys in the order a tree
    // prints them, which `coalesce_tokens` relies on.
    std::string out;
    out.reserve(ev.agent.size() + ev.id.size() + ev.text.size() + 40);
    out += '{';
    if (!ev.agent.empty()) {
      out += "\"agent\":";
      append_json_string(out, ev.agent);
      out += ',';
    }
    out += "\"ev\":\"token\"";
    if (!ev.id.empty()) {
      out += ",\"id\":";
      append_json_string(out, ev.id);
    }
    out += ",\"text\":";
    append_json_string(out, ev.text);
    out += '}';
    ev.json = std::move(out);
    return std::make_shared<const agent_event>(std::move(ev));
  }
  json j;
  auto put_common = [&](const char* name) {
    j["ev"] = name;
    if (!ev.agent.empty()) j["agent"] = ev.agent;
    if (!ev.id.empty()) j["id"] = ev.id;
  };
  switch (ev.kind) {
  case event_kind::spawned:
    put_common("spawned");
    j["node"] = ev.node;
    break;
  case event_kind::token:
    put_common("token");
    j["text"] = ev.text;
    break;
  case event_kind::tool_call:
    put_common("tool_call");
    j["name"] = ev.name;
    j["arguments"] = maybe_json(ev.arguments);
    break;
  case event_kind::tool_result:
    put_common("tool_result");
    j["name"] = ev.name;
    j["result"] = maybe_json(ev.result);
    j["is_error"] = ev.is_error;
    break;
  case event_kind::done:
    put_common("done");
    j["answer"] = ev.answer;
    j["usage"] = {{"prompt_tokens", ev.tokens.prompt_tokens},
                  {"completion_tokens", ev.tokens.completion_tokens},
                  {"total_tokens", ev.tokens.total_tokens()}};
    j["steps"] = ev.steps;
    break;
  case event_kind::error:
    put_common("error");
    j["code"] = to_string(ev.code);
    j["message"] = ev.message;
    break;
  case event_kind::attached:
    put_common("attached");
    break;
  case event_kind::detached:
    put_common("detached");
    break;
  case event_kind::killed:
    put_common("killed");
    break;
  case event_kind::agents:
    put_common("agents");
    j["agents"] = ev.agent_list;
    break;
  case event_kind::pong:
    put_common("pong");
    break;
  }
  ev.json = j.dump(-1, ' ', false, json::error_handler_t::replace);
  return std::make_shared<const agent_event>(std::move(ev));
}

event_ptr make_done_event(std::string id, std::string agent, std::string answer,
                          const usage& tokens, int64_t steps) {
  agent_event ev;
  ev.kind = event_kind::done;
  ev.id = std::move(id);
  ev.agent = std::move(agent);
  ev.answer = std::move(answer);
  ev.tokens = tokens;
  ev.steps = steps;
  return seal(std::move(ev));
}

event_ptr make_error_event(std::string id, errc code, std::string message, std::string agent) {
  agent_event ev;
  ev.kind = event_kind::error;
  ev.id = std::move(id);
  ev.code = code;
  ev.message = std::move(message);
  ev.agent = std::move(agent);
  return seal(std::move(ev));
}

std::optional<std::string> coalesce_tokens(std::string_view first, std::string_view second) {
  // `seal` writes a token as {"agent":..,"ev":"token","id":..,"text":".."}
  // (nlohmann sorts keys): everything before the text must match. An
  // unescaped `,"text":"` only occurs as the key: quotes inside strings are
  // escaped.
  constexpr std::string_view key = R"(,"text":")";
  constexpr std::string_view tail = R"("})";
  if (first.substr(0, 9) != R"({"agent":)") return std::nullopt; // cheap for other frames
  auto cut = first.find(key);
  if (cut == std::string_view::npos ||
      first.substr(0, cut).find(R"(,"ev":"token")") == std::string_view::npos)
    return std::nullopt;
  auto prefix = first.substr(0, cut + key.size());
  if (second.substr(0, prefix.size()) != prefix || first.size() < prefix.size() + tail.size() ||
      second.size() < prefix.size() + tail.size() ||
      first.substr(first.size() - tail.size()) != tail ||
      second.substr(second.size() - tail.size()) != tail)
    return std::nullopt;
  std::string out;
  out.reserve(first.size() + second.size() - prefix.size() - tail.size());
  out.append(first.substr(0, first.size() - tail.size()));
  out.append(second.substr(prefix.size()));
  return out;
}

} // namespace troupe::runtime
