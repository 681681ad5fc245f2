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

namespace {

uint64_t version_of(const std::vector<runtime::mcp_tool>& tools) {
  uint64_t h = 14695981039346656037ull; // FNV-1a over what a peer would copy
  auto mix = [&](const std::string& s) {
    for (unsigned char c : s)
      h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
  };
  for (auto& t : tools) {
    mix(t.name);
    mix(t.exposed);
    mix(t.description);
    mix(t.input_schema);
  }
  return h | 1; // never 0, which means "none"
}

} // namespace

void mcp_catalog::set_tools(const std::string& server,
                            const std::vector<runtime::mcp_tool>& tools) {
  std::unique_lock guard{mutex_};
  if (auto it = servers_.find(server); it != servers_.end()) {
    it->second.view.tools = tools;
    it->second.version = version_of(tools);
  }
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

const mcp_catalog::entry* mcp_catalog::local(const std::string& server) const {
  auto it = servers_.find(server);
  return it == servers_.end() ? nullptr : &it->second;
}

const std::pair<const std::string, mcp_catalog::remote_entry>*
mcp_catalog::remote(const std::string& server) const {
  auto it = remote_.find(server);
  return it == remote_.end() || it->second.empty() ? nullptr : &*it->second.begin();
}

std::vector<runtime::tool_spec>
mcp_catalog::specs_for(const std::vector<runtime::mcp_selector>& selectors) const {
  std::vector<runtime::tool_spec> out;
  std::shared_lock guard{mutex_};
  auto offer = [&](const std::string& server, const std::vector<runtime::mcp_tool>& tools) {
    for (auto& t : tools)
      for (auto& sel : selectors)
        if (sel.matches(server, t.name)) {
          out.push_back({t.exposed, t.description, t.input_schema});
          break;
        }
  };
  for (auto& [name, e] : servers_)
    offer(name, e.view.tools);
  for (auto& [name, nodes] : remote_)
    if (!local(name))
      if (auto r = remote(name)) offer(name, r->second.tools.tools);
  return out;
}

std::optional<mcp_catalog::route>
mcp_catalog::resolve(const std::string& exposed,
                     const std::vector<runtime::mcp_selector>& selectors) const {
  std::shared_lock guard{mutex_};
  auto find = [&](const std::string& server, const std::vector<runtime::mcp_tool>& tools,
                  const caf::actor& client,
                  std::chrono::milliseconds timeout) -> std::optional<route> {
    for (auto& t : tools) {
      if (t.exposed != exposed) continue;
      for (auto& sel : selectors)
        if (sel.matches(server, t.name)) return route{client, server, t.name, timeout};
      return std::nullopt;
    }
    return std::nullopt;
  };
  // Exposed names start with their server's name, which has no "__".
  auto server = exposed.substr(0, exposed.find("__"));
  if (auto e = local(server)) return find(server, e->view.tools, e->client, e->timeout);
  if (auto r = remote(server))
    return find(server, r->second.tools.tools, r->second.proxy, r->second.tools.timeout);
  return std::nullopt;
}

std::vector<runtime::mcp_server_view> mcp_catalog::view() const {
  std::vector<runtime::mcp_server_view> out;
  std::shared_lock guard{mutex_};
  for (auto& [name, e] : servers_)
    out.push_back(e.view);
  for (auto& [name, nodes] : remote_)
    if (!local(name))
      if (auto r = remote(name)) {
        runtime::mcp_server_view v;
        v.name = name;
        v.transport = "remote";
        v.target = r->first; // the node that runs it
        v.state = "ready";
        v.tools = r->second.tools.tools;
        out.push_back(std::move(v));
      }
  return out;
}

std::map<std::string, uint64_t> mcp_catalog::local_versions() const {
  std::map<std::string, uint64_t> out;
  std::shared_lock guard{mutex_};
  for (auto& [name, e] : servers_)
    if (e.version != 0 && e.view.state == "ready") out[name] = e.version;
  return out;
}

std::optional<mcp_catalog::listing> mcp_catalog::local_listing(const std::string& server) const {
  std::shared_lock guard{mutex_};
  auto e = local(server);
  if (!e) return std::nullopt;
  return listing{e->view.tools, e->version, e->timeout};
}

std::optional<mcp_catalog::route> mcp_catalog::local_route(const std::string& server) const {
  std::shared_lock guard{mutex_};
  auto e = local(server);
  if (!e) return std::nullopt;
  return route{e->client, server, {}, e->timeout};
}

void mcp_catalog::set_remote(const std::string& node, const std::string& server, listing tools,
                             caf::actor proxy) {
  std::unique_lock guard{mutex_};
  remote_[server][node] = {std::move(tools), std::move(proxy)};
}

uint64_t mcp_catalog::remote_version(const std::string& node, const std::string& server) const {
  std::shared_lock guard{mutex_};
  auto it = remote_.find(server);
  if (it == remote_.end()) return 0;
  auto n = it->second.find(node);
  return n == it->second.end() ? 0 : n->second.tools.version;
}

void mcp_catalog::drop_remote(const std::string& node, const std::string& server) {
  std::unique_lock guard{mutex_};
  for (auto it = remote_.begin(); it != remote_.end();) {
    if (server.empty() || it->first == server) it->second.erase(node);
    it = it->second.empty() ? remote_.erase(it) : std::next(it);
  }
}

} // namespace troupe::actors
