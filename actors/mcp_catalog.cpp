#include "actors/mcp_catalog.hpp"

#include <mutex>

namespace troupe::actors {

void mcp_catalog::add_server(const runtime::mcp_server_config& cfg, caf::actor client) {
  std::unique_lock guard{mutex_};
  auto& e = servers_[cfg.name];
  e.view.name = cfg.name;
  e.view.transport = cfg.url.empty() ? "stdio" : "http";
  if (cfg.url.empty()) {
    for (auto& a : cfg.command)
      e.view.target += (e.view.target.empty() ? "" : " ") + a;
  } else {
    e.view.target = cfg.url;
  }
  e.view.state = "starting";
  e.client = std::move(client);
  e.timeout = cfg.call_timeout;
}

void mcp_catalog::set_tools(const std::string& server,
                            const std::vector<runtime::mcp_tool>& tools) {
  std::unique_lock guard{mutex_};
  if (auto it = servers_.find(server); it != servers_.end()) it->second.view.tools = tools;
}

void mcp_catalog::set_state(const std::string& server, const std::string& state,
                            const std::string& error) {
  std::unique_lock guard{mutex_};
  auto it = servers_.find(server);
  if (it == servers_.end()) return;
  it->second.view.state = state;
  if (!error.empty()) it->second.view.last_error = error;
}

void mcp_catalog::set_session(const std::string& server, const std::string& protocol,
                              const std::string& server_info) {
  std::unique_lock guard{mutex_};
  auto it = servers_.find(server);
  if (it == servers_.end()) return;
  it->second.view.protocol = protocol;
  it->second.view.server_info = server_info;
}

void mcp_catalog::starting(const std::string& server) {
  std::unique_lock guard{mutex_};
  auto it = servers_.find(server);
  if (it == servers_.end()) return;
  if (it->second.starts++ > 0) {
    ++it->second.view.restarts;
    it->second.view.state = "restarting";
  }
}

std::vector<runtime::tool_spec>
mcp_catalog::specs_for(const std::vector<runtime::mcp_selector>& selectors) const {
  std::vector<runtime::tool_spec> out;
  std::shared_lock guard{mutex_};
  for (auto& [name, e] : servers_)
    for (auto& t : e.view.tools)
      for (auto& sel : selectors)
        if (sel.matches(name, t.name)) {
          out.push_back({t.exposed, t.description, t.input_schema});
          break;
        }
  return out;
}

std::optional<mcp_catalog::route>
mcp_catalog::resolve(const std::string& exposed,
                     const std::vector<runtime::mcp_selector>& selectors) const {
  std::shared_lock guard{mutex_};
  for (auto& [name, e] : servers_) {
    if (exposed.rfind(name + "__", 0) != 0) continue; // exposed names start with the server's
    for (auto& t : e.view.tools) {
      if (t.exposed != exposed) continue;
      for (auto& sel : selectors)
        if (sel.matches(name, t.name)) return route{e.client, name, t.name, e.timeout};
      return std::nullopt;
    }
  }
  return std::nullopt;
}

std::vector<runtime::mcp_server_view> mcp_catalog::view() const {
  std::vector<runtime::mcp_server_view> out;
  std::shared_lock guard{mutex_};
  for (auto& [name, e] : servers_)
    out.push_back(e.view);
  return out;
}

} // namespace troupe::actors
