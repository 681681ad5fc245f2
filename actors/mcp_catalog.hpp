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

  // -- cluster: servers configured on other nodes ------------------------------

  /// Each ready local server's tool-list version (nonzero; changes with
  /// the tools), for this node's membership record.
  std::map<std::string, uint64_t> local_versions() const;
  /// A local server's tools, version and call timeout, for a peer's `mcp_list`.
  struct listing {
    std::vector<runtime::mcp_tool> tools;
    uint64_t version = 0;
    std::chrono::milliseconds timeout{0};
  };
  std::optional<listing> local_listing(const std::string& server) const;
  /// The local client of `server`, for a peer's call.
  std::optional<route> local_route(const std::string& server) const;

  /// Server `server` on peer `node`, reached through `proxy`. A server
  /// configured here shadows a peer's of the same name; among peers the
  /// first by node id serves it.
  void set_remote(const std::string& node, const std::string& server, listing tools,
                  caf::actor proxy);
  /// The version last set for `server` on `node`; 0 if none.
  uint64_t remote_version(const std::string& node, const std::string& server) const;
  /// Forgets `server` on `node`, or every server of `node` when empty.
  void drop_remote(const std::string& node, const std::string& server = {});

private:
  struct entry {
    runtime::mcp_server_view view;
    caf::actor client;
    std::chrono::milliseconds timeout{60000};
    uint64_t starts = 0;
    uint64_t version = 0;
  };
  struct remote_entry {
    listing tools;
    caf::actor proxy;
  };

  /// Where calls of `server` go: the local entry, else a peer's (with its
  /// node id); null when nobody serves it. Under the lock.
  const entry* local(const std::string& server) const;
  const std::pair<const std::string, remote_entry>* remote(const std::string& server) const;

  mutable std::shared_mutex mutex_;
  std::map<std::string, entry> servers_;
  std::map<std::string, std::map<std::string, remote_entry>> remote_; // server -> node -> entry
};

} // namespace troupe::actors
