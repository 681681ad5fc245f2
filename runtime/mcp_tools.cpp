#include "runtime/mcp_tools.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <numeric>

namespace troupe::runtime {

std::optional<mcp_selector> mcp_selector::parse(const std::string& entry) {
  if (entry.rfind("mcp:", 0) != 0) return std::nullopt;
  auto slash = entry.find('/', 4);
  if (slash == std::string::npos || slash == 4 || slash + 1 == entry.size()) return std::nullopt;
  return mcp_selector{entry.substr(4, slash - 4), entry.substr(slash + 1)};
}

bool mcp_selector::matches(const std::string& server_name, const std::string& tool_name) const {
  return server == server_name && (tool == "*" || tool == tool_name);
}

namespace {

constexpr size_t max_name = 64; // OpenAI's limit for function names

uint32_t fnv1a(const std::string& s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s)
    h = (h ^ c) * 16777619u;
  return h;
}

std::string sanitize(const std::string& server, const std::string& tool) {
  std::string full = server + "__" + tool;
  std::string out;
  out.reserve(full.size());
  for (unsigned char c : full)
    out += std::isalnum(c) || c == '_' || c == '-' ? static_cast<char>(c) : '_';
  if (out.size() > max_name) {
    char hash[10];
    std::snprintf(hash, sizeof hash, "_%08x", fnv1a(full));
    out = out.substr(0, max_name - 9) + hash;
  }
  return out;
}

} // namespace

std::vector<std::string> expose_mcp_tool_names(const std::string& server,
                                               const std::vector<std::string>& tools) {
  std::vector<size_t> order(tools.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return tools[a] < tools[b]; });
  std::vector<std::string> out(tools.size());
  std::map<std::string, int> taken;
  for (auto i : order) {
    auto name = sanitize(server, tools[i]);
    auto candidate = name;
    for (int n = 2; taken.contains(candidate); ++n) {
      char suffix[16];
      int len = std::snprintf(suffix, sizeof suffix, "_%d", n);
      candidate = name.substr(0, std::min(name.size(), max_name - static_cast<size_t>(len)));
      candidate.append(suffix, static_cast<size_t>(len));
    }
    taken[candidate] = 1;
    out[i] = candidate;
  }
  return out;
}

} // namespace troupe::runtime
