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
  case msg_type::mcp_list:
    return "mcp_list";
  case msg_type::mcp_tools:
    return "mcp_tools";
  case msg_type::mcp_call:
    return "mcp_call";
  case msg_type::mcp_result:
    return "mcp_result";
  case msg_type::mcp_cancel:
    return "mcp_cancel";
  }
  return "unknown";
}

namespace {

bool known(uint64_t t) {
  return (t >= 1 && t <= 3) || (t >= 10 && t <= 16) || (t >= 20 && t <= 34);
}

} // namespace

// The envelope is on every frame, so it is written and read by hand: the
// same MessagePack nlohmann would produce (smallest int and str forms), with
// no JSON tree in between.
namespace {

void put_uint(std::string& out, uint64_t v) {
  auto be = [&](int bytes) {
    for (int i = bytes - 1; i >= 0; --i)
      out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  if (v < 128) {
    out.push_back(static_cast<char>(v));
  } else if (v <= 0xff) {
    out.push_back(static_cast<char>(0xcc));
    be(1);
  } else if (v <= 0xffff) {
    out.push_back(static_cast<char>(0xcd));
    be(2);
  } else if (v <= 0xffffffffu) {
    out.push_back(static_cast<char>(0xce));
    be(4);
  } else {
    out.push_back(static_cast<char>(0xcf));
    be(8);
  }
}

void put_str(std::string& out, std::string_view s) {
  auto n = s.size();
  if (n < 32) {
    out.push_back(static_cast<char>(0xa0 | n));
  } else if (n <= 0xff) {
    out.push_back(static_cast<char>(0xd9));
    out.push_back(static_cast<char>(n));
  } else if (n <= 0xffff) {
    out.push_back(static_cast<char>(0xda));
    out.push_back(static_cast<char>(n >> 8));
    out.push_back(static_cast<char>(n & 0xff));
  } else {
    out.push_back(static_cast<char>(0xdb));
    for (int i = 3; i >= 0; --i)
      out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  }
  out.append(s);
}

/// A bounds-checked reader over the envelope's bytes.
struct reader {
  std::string_view in;
  size_t pos = 0;

  bool big_endian(int bytes, uint64_t& v) {
    if (in.size() - pos < static_cast<size_t>(bytes)) return false;
    v = 0;
    for (int i = 0; i < bytes; ++i)
      v = (v << 8) | static_cast<unsigned char>(in[pos++]);
    return true;
  }
  bool uint(uint64_t& v) {
    if (pos >= in.size()) return false;
    auto b = static_cast<unsigned char>(in[pos++]);
    if (b < 0x80) {
      v = b;
      return true;
    }
    if (b >= 0xcc && b <= 0xcf) return big_endian(1 << (b - 0xcc), v);
    return false;
  }
  bool str(std::string& s) {
    if (pos >= in.size()) return false;
    auto b = static_cast<unsigned char>(in[pos++]);
    uint64_t n = 0;
    if ((b & 0xe0) == 0xa0)
      n = b & 0x1f;
    else if (b >= 0xd9 && b <= 0xdb) {
      if (!big_endian(1 << (b - 0xd9), n)) return false;
    } else
      return false;
    if (in.size() - pos < n) return false;
    s.assign(in.substr(pos, n));
    pos += n;
    return true;
  }
  bool array(uint64_t& n) {
    if (pos >= in.size()) return false;
    auto b = static_cast<unsigned char>(in[pos++]);
    if ((b & 0xf0) == 0x90) {
      n = b & 0x0f;
      return true;
    }
    if (b == 0xdc) return big_endian(2, n);
    if (b == 0xdd) return big_endian(4, n);
    return false;
  }
};

} // namespace

std::string encode_envelope(const envelope& env) {
  std::string out;
  out.reserve(24 + env.source.size() + env.target.size());
  out.push_back(static_cast<char>(0x96)); // array of 6
  put_uint(out, env.version);
  put_uint(out, static_cast<uint64_t>(env.type));
  put_str(out, env.source);
  put_uint(out, env.incarnation);
  put_str(out, env.target);
  put_uint(out, env.corr);
  return out;
}

namespace {

/// The envelope at the front of `bytes`; `r.pos` ends just past it.
std::variant<envelope, decode_error> read_envelope(reader& r) {
  uint64_t n = 0, version = 0, type = 0;
  if (!r.array(n) || n == 0 || !r.uint(version)) return decode_error::malformed;
  if (version != protocol_version) return decode_error::version;
  envelope env;
  if (n != 6 || !r.uint(type) || !r.str(env.source) || !r.uint(env.incarnation) ||
      !r.str(env.target) || !r.uint(env.corr))
    return decode_error::malformed;
  if (!known(type) || env.source.empty()) return decode_error::malformed;
  env.type = static_cast<msg_type>(type);
  return env;
}

} // namespace

std::variant<envelope, decode_error> decode_envelope(std::string_view bytes) {
  reader r{bytes};
  auto env = read_envelope(r);
  if (std::holds_alternative<envelope>(env) && r.pos != bytes.size())
    return decode_error::malformed;
  return env;
}

std::variant<frame_view, decode_error> decode_frame(std::string_view bytes) {
  reader r{bytes};
  auto env = read_envelope(r);
  if (auto* err = std::get_if<decode_error>(&env)) return *err;
  return frame_view{std::move(std::get<envelope>(env)), bytes.substr(r.pos)};
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
  // As from a model server: an impossible count reads as 0, so the turn's
  // sums of them cannot overflow.
  auto count = [&](const char* key) {
    auto n = integer(j, key);
    return n >= 0 && n <= runtime::max_reported_tokens ? n : 0;
  };
  return {count("p"), count("c")};
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
