#include "runtime/tool.hpp"
#include "runtime/calculator.hpp"

#include <chrono>
#include <ctime>

namespace troupe::runtime {

std::vector<tool> builtin_tools() {
  std::vector<tool> out;
  out.push_back(
      {{"calculator", "Evaluates an arithmetic expression, e.g. (2+3)*4 or sqrt(2).",
        R"({"type":"object","properties":{"expression":{"type":"string","description":"the expression"}},"required":["expression"]})"},
       [](const nlohmann::json& args) -> tool_outcome {
         auto it = args.find("expression");
         if (it == args.end() || !it->is_string())
           return {"missing string argument 'expression'", true};
         auto r = evaluate_expression(it->get<std::string>());
         if (auto err = std::get_if<std::string>(&r)) return {*err, true};
         return {format_number(std::get<double>(r)), false};
       }});
  out.push_back({{"clock", "Returns the current date and time in UTC (ISO 8601).",
                  R"({"type":"object","properties":{}})"},
                 [](const nlohmann::json&) -> tool_outcome {
                   auto now =
                       std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
                   std::tm tm{};
                   gmtime_r(&now, &tm);
                   char buf[32];
                   std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
                   return {buf, false};
                 }});
  return out;
}

tool_spec agent_tool_spec() {
  return {
      "agent", "Asks another agent (by type/key, e.g. chat/helper) and returns its answer.",
      R"({"type":"object","properties":{"agent":{"type":"string","description":"type/key of the agent"},"message":{"type":"string"}},"required":["agent","message"]})"};
}

tool_outcome run_tool(const tool& t, const std::string& arguments_json) {
  auto args = nlohmann::json::parse(arguments_json.empty() ? "{}" : arguments_json, nullptr, false);
  if (args.is_discarded() || !args.is_object())
    return {"arguments are not a JSON object: " + arguments_json, true};
  try {
    return t.run(args);
  } catch (const std::exception& e) {
    return {std::string{"tool failed: "} + e.what(), true};
  }
}

void agent_type_registry::add_cpp_type(agent_type_config cfg, std::vector<tool> own_tools) {
  auto name = cfg.name;
  cpp_[name] = {std::move(cfg), std::move(own_tools)};
}

std::string
agent_type_registry::finalize(const std::map<std::string, agent_type_config>& from_config) {
  std::map<std::string, tool> builtins;
  for (auto& t : builtin_tools())
    builtins[t.spec.name] = t;
  std::map<std::string, std::pair<agent_type_config, std::vector<tool>>> all = cpp_;
  for (auto& [name, cfg] : from_config) {
    auto it = all.find(name);
    if (it == all.end())
      all[name] = {cfg, {}};
    else
      it->second.first = cfg; // config overrides a C++ type's settings, keeps its tools
  }
  types_.clear();
  for (auto& [name, entry] : all) {
    auto t = std::make_shared<agent_type>();
    t->cfg = entry.first;
    for (auto& own : entry.second) {
      t->tools[own.spec.name] = own;
      t->specs.push_back(own.spec);
    }
    for (auto& tool_name : t->cfg.tools) {
      if (t->tools.contains(tool_name)) continue;
      if (auto sel = mcp_selector::parse(tool_name)) {
        t->mcp.push_back(std::move(*sel));
      } else if (tool_name == "agent") {
        t->can_ask_agents = true;
        t->specs.push_back(agent_tool_spec());
      } else if (auto b = builtins.find(tool_name); b != builtins.end()) {
        t->tools[tool_name] = b->second;
        t->specs.push_back(b->second.spec);
      } else {
        return "agent type '" + name + "' lists unknown tool '" + tool_name +
               "' (known: calculator, clock, agent, mcp:SERVER/*, mcp:SERVER/TOOL)";
      }
    }
    types_[name] = t;
  }
  return {};
}

std::shared_ptr<const agent_type> agent_type_registry::find(const std::string& name) const {
  auto it = types_.find(name);
  return it == types_.end() ? nullptr : it->second;
}

std::vector<std::string> agent_type_registry::names() const {
  std::vector<std::string> out;
  for (auto& [name, t] : types_)
    out.push_back(name);
  return out;
}

} // namespace troupe::runtime
