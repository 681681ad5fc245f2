#pragma once

#include "runtime/config.hpp"
#include "runtime/llm.hpp"
#include "runtime/mcp_tools.hpp"

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace troupe::runtime {

/// What a tool gives back to the model. Errors are results too: the model
/// sees them (`is_error`) and may recover; they never crash the agent.
struct tool_outcome {
  std::string result;
  bool is_error = false;
};

/// A tool that runs synchronously inside the agent's turn. `run` gets the
/// parsed arguments; it must be quick and must not block on I/O.
struct tool {
  tool_spec spec;
  std::function<tool_outcome(const nlohmann::json& args)> run;
};

/// Builds a tool whose arguments arrive as a typed struct. `Args` needs
/// `from_json(const nlohmann::json&, Args&)`; a mismatch becomes a tool error
/// naming the problem, so the model can correct its call.
template <class Args, class F>
tool make_typed_tool(std::string name, std::string description, std::string schema, F fn) {
  return tool{{std::move(name), std::move(description), std::move(schema)},
              [fn = std::move(fn)](const nlohmann::json& j) -> tool_outcome {
                Args args;
                try {
                  args = j.get<Args>();
                } catch (const nlohmann::json::exception& e) {
                  return {std::string{"bad arguments: "} + e.what(), true};
                }
                return fn(args);
              }};
}

/// The built-in synchronous tools: `calculator` and `clock`.
std::vector<tool> builtin_tools();

/// The spec of the built-in `agent` tool (ask another agent by type/key).
/// It runs asynchronously, so the agent actor implements it.
tool_spec agent_tool_spec();

/// Runs a sync tool on a call's raw JSON arguments.
tool_outcome run_tool(const tool& t, const std::string& arguments_json);

/// An agent type: its config plus tools registered in C++. Immutable once
/// the node starts; shared by every agent of the type.
struct agent_type {
  agent_type_config cfg;
  std::map<std::string, tool> tools; // the sync tools this type may call
  bool can_ask_agents = false;       // `agent` in its tool list
  std::vector<tool_spec> specs;      // what the model is offered
  /// MCP tools it opted into; their specs come from the node's MCP catalog
  /// at each step, since servers list (and change) their tools at run time.
  std::vector<mcp_selector> mcp;
};

/// Agent types known to a node: config-declared and C++-registered.
class agent_type_registry {
public:
  /// Registers a C++ type with its own tools; config may override its
  /// settings (system prompt, model, ...) by declaring the same name.
  void add_cpp_type(agent_type_config cfg, std::vector<tool> own_tools);

  /// Merges the config's types; resolves tool names. Returns an error
  /// message naming an unknown tool, or empty on success.
  std::string finalize(const std::map<std::string, agent_type_config>& from_config);

  std::shared_ptr<const agent_type> find(const std::string& name) const;
  std::vector<std::string> names() const;

private:
  std::map<std::string, std::pair<agent_type_config, std::vector<tool>>> cpp_;
  std::map<std::string, std::shared_ptr<const agent_type>> types_;
};

} // namespace troupe::runtime
