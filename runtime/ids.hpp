#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace troupe::runtime {

/// An agent's identity, `type/key`: stable across restarts and nodes.
struct agent_id {
  std::string type;
  std::string key;

  std::string str() const { return type + "/" + key; }

  /// Parses `type/key`; both parts must be non-empty.
  static std::optional<agent_id> parse(std::string_view text) {
    auto slash = text.find('/');
    if (slash == std::string_view::npos || slash == 0 || slash + 1 == text.size())
      return std::nullopt;
    return agent_id{std::string{text.substr(0, slash)}, std::string{text.substr(slash + 1)}};
  }

  friend bool operator==(const agent_id&, const agent_id&) = default;
  friend auto operator<=>(const agent_id&, const agent_id&) = default;
};

/// A node's identity from `node.id` (default: hostname).
struct node_id {
  std::string value;
  friend bool operator==(const node_id&, const node_id&) = default;
};

/// The client's request id, echoed on every reply to that request.
struct request_id {
  std::string value;
  friend bool operator==(const request_id&, const request_id&) = default;
};

} // namespace troupe::runtime

template <> struct std::hash<troupe::runtime::agent_id> {
  size_t operator()(const troupe::runtime::agent_id& id) const noexcept {
    return std::hash<std::string>{}(id.type) * 31 + std::hash<std::string>{}(id.key);
  }
};
