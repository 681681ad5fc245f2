#pragma once

#include "runtime/principal.hpp"

#include <nlohmann/json_fwd.hpp>

#include <functional>
#include <string>

namespace troupe::actors {
class node_runtime;
}

namespace troupe::gateway {

/// MCP's JSON-RPC methods over a node's agents, whatever carries them (the
/// gateway's `/mcp`, `troupe mcp` on stdio): `initialize`, `ping`,
/// `tools/list` (one tool per agent type) and `tools/call` (one turn of
/// that agent; a failed turn is `isError: true`, an unknown tool or bad
/// arguments -32602), anything else -32601. Thread-safe.
class mcp_server {
public:
  /// The versions this server speaks; the first is its own.
  static constexpr const char* versions[] = {"2025-06-18", "2025-03-26", "2025-11-25"};
  static bool supports(const std::string& version);

  explicit mcp_server(actors::node_runtime& rt) : rt_(rt) {}

  /// Answers request `msg` (it has an `id` and a `method`): `done` receives
  /// the JSON-RPC response, possibly later and from another thread. When
  /// `progress` is set and a `tools/call` carries `_meta.progressToken`, it
  /// receives a `notifications/progress` for each token the agent streams.
  /// A `tools/call` acts for `who` (its agents, its scope).
  void dispatch(const nlohmann::json& msg, std::function<void(nlohmann::json)> done,
                std::function<void(nlohmann::json)> progress = nullptr,
                const runtime::principal& who = {}) const;

  static nlohmann::json error(const nlohmann::json& id, int code, const std::string& message);

private:
  actors::node_runtime& rt_;
};

} // namespace troupe::gateway
