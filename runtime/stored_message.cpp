#include "runtime/stored_message.hpp"

#include <nlohmann/json.hpp>

namespace troupe::runtime {

using nlohmann::json;

std::string encode_stored_message(const chat_message& m) {
  json j{{"role", m.role}, {"content", m.content}};
  if (!m.tool_calls.empty()) {
    json calls = json::array();
    for (auto& c : m.tool_calls)
      calls.push_back({{"id", c.id}, {"name", c.name}, {"arguments", c.arguments}});
    j["tool_calls"] = std::move(calls);
  }
  if (!m.tool_call_id.empty()) j["tool_call_id"] = m.tool_call_id;
  if (!m.name.empty()) j["name"] = m.name;
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

chat_message decode_stored_message(const std::string& text) {
  auto j = json::parse(text, nullptr, false);
  chat_message m;
  if (!j.is_object()) return m;
  m.role = j.value("role", "");
  m.content = j.value("content", "");
  m.tool_call_id = j.value("tool_call_id", "");
  m.name = j.value("name", "");
  if (auto it = j.find("tool_calls"); it != j.end() && it->is_array())
    for (auto& c : *it)
      m.tool_calls.push_back({c.value("id", ""), c.value("name", ""), c.value("arguments", "")});
  return m;
}

} // namespace troupe::runtime
