#pragma once

#include "runtime/config.hpp"
#include "runtime/llm.hpp"
#include "runtime/mcp_tools.hpp"

#include <caf/actor.hpp>

#include <chrono>
#include <map>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

namespace troupe::actors {

/// The MCP tools a node's agents can call: for each server, the actor that
/// calls it (a client's stable address) and the tools it listed. Client
/// actors write it when a server (re)lists its tools; agents read it at
/// every model step. Thread-safe.
class mcp_catalog {
public:
  /// Where one exposed tool is called.
  struct route {
    caf::actor client;
    std::string server;
    std::string tool; // the server's own name
    std::chrono::milliseconds timeout;
  };

  void add_server(const runtime::mcp_server_config& cfg, caf::actor client);

  /// The server's current tools (after `tools/list`), with exposed names.
  void set_tools(const std::string& server, const std::vector<runtime::mcp_tool>& tools);

  /// Connection state for `GET /api/mcp`: `starting`, `ready`, `restarting`.
  void set_state(const std::string& server, const std::string& state,
                 const std::string& error = {});
  void set_session(const std::string& server, const std::string& protocol,
                   const std::string& server_info);
  /// A new incarnation of the server's client starts; counts restarts.
  void starting(const std::string& server);

  /// Specs of the tools `selectors` opt into, for a model call.
  std::vector<runtime::tool_spec>
  specs_for(const std::vector<runtime::mcp_selector>& selectors) const;

  /// The route of exposed tool `name`, if `selectors` opt into it.
  std::optional<route> resolve(const std::string& name,
                               const std::vector<runtime::mcp_selector>& selectors) const;

  std::vector<runtime::mcp_server_view> view() const;

private:
  struct entry {
    runtime::mcp_server_view view;
    caf::actor client;
    std::chrono::milliseconds timeout{60000};
    uint64_t starts = 0;
  };

  mutable std::shared_mutex mutex_;
  std::map<std::string, entry> servers_;
};

} // namespace troupe::actors
