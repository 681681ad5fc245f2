#include "runtime/openai_codec.hpp"
#include "runtime/json_text.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>

namespace troupe::runtime {

using nlohmann::json;

namespace {

json to_json(const chat_message& m) {
  json j{{"role", m.role}};
  if (m.role == "assistant" && !m.tool_calls.empty()) {
    j["content"] = m.content.empty() ? json(nullptr) : json(m.content);
    json calls = json::array();
    for (auto& c : m.tool_calls)
      calls.push_back({{"id", c.id},
                       {"type", "function"},
                       {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
    j["tool_calls"] = std::move(calls);
  } else {
    j["content"] = m.content;
  }
  if (m.role == "tool") {
    j["tool_call_id"] = m.tool_call_id;
    if (!m.name.empty()) j["name"] = m.name;
  }
  return j;
}

std::string string_or_empty(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

/// A token count as the server reported it, or 0 when it is not one a
/// model could produce: totals and per-turn sums of them must not overflow.
int64_t token_count(const json& u, const char* key) {
  auto it = u.find(key);
  if (it == u.end() || !it->is_number_integer()) return 0;
  auto n = it->get<int64_t>();
  return n >= 0 && n <= max_reported_tokens ? n : 0;
}

usage parse_usage(const json& u) {
  return {token_count(u, "prompt_tokens"), token_count(u, "completion_tokens")};
}

} // namespace

json usage_to_json(const usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.total_tokens()}};
}

std::string encode_chat_request(const chat_request& req, bool stream) {
  // Written directly, not through a json tree: this runs on every model call,
  // on the path to its first token. Keys in nlohmann's (sorted) order, so
  // the text stays what the tree would have printed.
  size_t guess = 256;
  for (auto& m : req.messages)
    guess += m.content.size() + 48;
  for (auto& t : req.tools)
    guess += t.description.size() + t.parameters_json.size() + 64;
  std::string out;
  out.reserve(guess);
  out += '{';
  if (req.max_tokens > 0) {
    out += "\"max_tokens\":";
    out += std::to_string(req.max_tokens);
    out += ',';
  }
  out += "\"messages\":[";
  for (size_t i = 0; i < req.messages.size(); ++i) {
    auto& m = req.messages[i];
    if (i > 0) out += ',';
    out += "{\"content\":";
    bool calls = m.role == "assistant" && !m.tool_calls.empty();
    if (calls && m.content.empty())
      out += "null";
    else
      append_json_string(out, m.content);
    if (m.role == "tool" && !m.name.empty()) {
      out += ",\"name\":";
      append_json_string(out, m.name);
    }
    out += ",\"role\":";
    append_json_string(out, m.role);
    if (m.role == "tool") {
      out += ",\"tool_call_id\":";
      append_json_string(out, m.tool_call_id);
    }
    if (calls) {
      out += ",\"tool_calls\":[";
      for (size_t k = 0; k < m.tool_calls.size(); ++k) {
        auto& c = m.tool_calls[k];
        if (k > 0) out += ',';
        out += "{\"function\":{\"arguments\":";
        append_json_string(out, c.arguments);
        out += ",\"name\":";
        append_json_string(out, c.name);
        out += "},\"id\":";
        append_json_string(out, c.id);
        out += ",\"type\":\"function\"}";
      }
      out += ']';
    }
    out += '}';
  }
  out += "],\"model\":";
  append_json_string(out, req.model);
  if (stream) out += ",\"stream\":true,\"stream_options\":{\"include_usage\":true}";
  out += ",\"temperature\":";
  if (std::isfinite(req.temperature)) {
    char num[32];
    auto [end, ec] = std::to_chars(num, num + sizeof num, req.temperature);
    out.append(num, ec == std::errc{} ? end : num);
  } else {
    out += "null";
  }
  if (!req.tools.empty()) {
    // Tool schemas are JSON text already (built-ins, MCP listings re-encoded
    // by the client): spliced in rather than parsed on every call.
    out += ",\"tools\":[";
    for (size_t i = 0; i < req.tools.size(); ++i) {
      auto& t = req.tools[i];
      if (i > 0) out += ',';
      out += "{\"function\":{\"description\":";
      append_json_string(out, t.description);
      out += ",\"name\":";
      append_json_string(out, t.name);
      out += ",\"parameters\":";
      out += t.parameters_json.empty() ? std::string_view{R"({"type":"object"})"}
                                       : std::string_view{t.parameters_json};
      out += "},\"type\":\"function\"}";
    }
    out += ']';
  }
  out += '}';
  return out;
}

std::optional<chat_request> decode_chat_request(std::string_view body, bool& stream,
                                                std::string& error) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    error = "body is not a JSON object";
    return std::nullopt;
  }
  chat_request req;
  req.model = string_or_empty(j, "model");
  stream = j.value("stream", false);
  if (auto it = j.find("temperature"); it != j.end() && it->is_number())
    req.temperature = it->get<double>();
  if (auto it = j.find("max_tokens"); it != j.end() && it->is_number_integer())
    req.max_tokens = it->get<int64_t>();
  auto msgs = j.find("messages");
  if (msgs == j.end() || !msgs->is_array() || msgs->empty()) {
    error = "'messages' must be a non-empty array";
    return std::nullopt;
  }
  for (auto& m : *msgs) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      error = "each message needs a string 'role'";
      return std::nullopt;
    }
    chat_message msg;
    msg.role = m["role"].get<std::string>();
    msg.content = string_or_empty(m, "content");
    msg.tool_call_id = string_or_empty(m, "tool_call_id");
    msg.name = string_or_empty(m, "name");
    if (auto tc = m.find("tool_calls"); tc != m.end() && tc->is_array()) {
      for (auto& c : *tc) {
        if (!c.is_object() || !c.contains("function") || !c["function"].is_object()) continue;
        auto& f = c["function"];
        msg.tool_calls.push_back({string_or_empty(c, "id"), string_or_empty(f, "name"),
                                  string_or_empty(f, "arguments")});
      }
    }
    req.messages.push_back(std::move(msg));
  }
  if (auto tools = j.find("tools"); tools != j.end() && tools->is_array()) {
    for (auto& t : *tools) {
      if (!t.is_object() || !t.contains("function") || !t["function"].is_object()) continue;
      auto& f = t["function"];
      tool_spec spec{string_or_empty(f, "name"), string_or_empty(f, "description"), "{}"};
      if (auto p = f.find("parameters"); p != f.end()) spec.parameters_json = p->dump();
      req.tools.push_back(std::move(spec));
    }
  }
  return req;
}

std::optional<chat_chunk> decode_chat_chunk(std::string_view data, std::string& error) {
  json j = json::parse(data, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    error = "chunk is not a JSON object";
    return std::nullopt;
  }
  if (auto err = j.find("error"); err != j.end()) {
    error = err->is_object() ? string_or_empty(*err, "message") : err->dump();
    if (error.empty()) error = err->dump();
    return std::nullopt;
  }
  chat_chunk out;
  if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
    out.has_usage = true;
    out.tokens = parse_usage(*u);
  }
  auto choices = j.find("choices");
  if (choices == j.end() || !choices->is_array() || choices->empty()) return out;
  auto& choice = (*choices)[0];
  if (!choice.is_object()) return out;
  out.finish_reason = string_or_empty(choice, "finish_reason");
  auto delta = choice.find("delta");
  if (delta == choice.end() || !delta->is_object()) return out;
  out.content = string_or_empty(*delta, "content");
  if (auto tc = delta->find("tool_calls"); tc != delta->end() && tc->is_array()) {
    for (auto& c : *tc) {
      if (!c.is_object()) continue;
      tool_call_fragment frag;
      // Not value(): it throws on a non-number and overflows on a float.
      if (auto i = c.find("index"); i != c.end() && i->is_number_integer())
        frag.index = static_cast<int>(std::clamp<int64_t>(i->get<int64_t>(), 0, INT_MAX));
      frag.id = string_or_empty(c, "id");
      if (auto f = c.find("function"); f != c.end() && f->is_object()) {
        frag.name = string_or_empty(*f, "name");
        frag.arguments = string_or_empty(*f, "arguments");
      }
      out.tool_calls.push_back(std::move(frag));
    }
  }
  return out;
}

std::string encode_chat_chunk(const std::string& id, const std::string& model,
                              const chat_chunk& chunk) {
  json j{{"id", id}, {"object", "chat.completion.chunk"}, {"created", 0}, {"model", model}};
  if (chunk.has_usage && chunk.content.empty() && chunk.tool_calls.empty() &&
      chunk.finish_reason.empty()) {
    j["choices"] = json::array();
    j["usage"] = usage_to_json(chunk.tokens);
    return j.dump();
  }
  json delta = json::object();
  if (!chunk.content.empty()) delta["content"] = chunk.content;
  if (!chunk.tool_calls.empty()) {
    json calls = json::array();
    for (auto& f : chunk.tool_calls) {
      json c{{"index", f.index}, {"function", {{"arguments", f.arguments}}}};
      if (!f.id.empty()) {
        c["id"] = f.id;
        c["type"] = "function";
      }
      if (!f.name.empty()) c["function"]["name"] = f.name;
      calls.push_back(std::move(c));
    }
    delta["tool_calls"] = std::move(calls);
  }
  j["choices"] =
      json::array({{{"index", 0},
                    {"delta", delta},
                    {"finish_reason",
                     chunk.finish_reason.empty() ? json(nullptr) : json(chunk.finish_reason)}}});
  return j.dump();
}

std::string encode_chat_completion(const std::string& id, const std::string& model,
                                   const chat_result& result) {
  chat_message m{"assistant", result.content, result.tool_calls, {}, {}};
  json j{{"id", id},
         {"object", "chat.completion"},
         {"created", 0},
         {"model", model},
         {"choices",
          json::array(
              {{{"index", 0}, {"message", to_json(m)}, {"finish_reason", result.finish_reason}}})},
         {"usage", usage_to_json(result.tokens)}};
  return j.dump();
}

std::optional<chat_result> decode_chat_completion(std::string_view body, std::string& error) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("choices") || !j["choices"].is_array() ||
      j["choices"].empty()) {
    error = "not a chat.completion object";
    return std::nullopt;
  }
  chat_result out;
  auto& choice = j["choices"][0];
  out.finish_reason = string_or_empty(choice, "finish_reason");
  if (auto m = choice.find("message"); m != choice.end() && m->is_object()) {
    out.content = string_or_empty(*m, "content");
    if (auto tc = m->find("tool_calls"); tc != m->end() && tc->is_array())
      for (auto& c : *tc)
        if (c.is_object() && c.contains("function"))
          out.tool_calls.push_back({string_or_empty(c, "id"),
                                    string_or_empty(c["function"], "name"),
                                    string_or_empty(c["function"], "arguments")});
  }
  if (auto u = j.find("usage"); u != j.end() && u->is_object()) out.tokens = parse_usage(*u);
  return out;
}

} // namespace troupe::runtime
