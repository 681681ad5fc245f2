#pragma once

#include <optional>
#include <string>
#include <vector>

namespace troupe::runtime {

/// An agent type's opt-in to MCP tools: `mcp:SERVER/*` (every tool of that
/// server) or `mcp:SERVER/TOOL` (one tool, by the server's own name).
struct mcp_selector {
  std::string server;
  std::string tool; // "*" = all

  static std::optional<mcp_selector> parse(const std::string& entry);
  bool matches(const std::string& server_name, const std::string& tool_name) const;
};

/// One tool a server listed, with the name models see.
struct mcp_tool {
  std::string server;
  std::string name;    // the server's own name, used in `tools/call`
  std::string exposed; // SERVER__TOOL, sanitized and unique
  std::string description;
  std::string input_schema; // JSON Schema text, offered to models as `parameters`
};

/// The names models see for one server's tools, in the order of `tools`:
/// `SERVER__TOOL` cut to OpenAI's function-name rules (`[A-Za-z0-9_-]`,
/// at most 64 characters; other characters become `_`, over-long names keep
/// a hash of the full name). Names that collide after that are numbered in
/// the order of the servers' own names, so the result depends only on the
/// set of tools, not on the order the server listed them.
std::vector<std::string> expose_mcp_tool_names(const std::string& server,
                                               const std::vector<std::string>& tools);

/// What `GET /api/mcp` shows of one configured server.
struct mcp_server_view {
  std::string name;
  std::string transport;   // stdio | http
  std::string target;      // the command line or the URL
  std::string state;       // starting | ready | restarting
  std::string protocol;    // the negotiated protocol version
  std::string server_info; // the server's name and version from `initialize`
  std::string last_error;
  uint64_t restarts = 0;
  std::vector<mcp_tool> tools;
};

} // namespace troupe::runtime
