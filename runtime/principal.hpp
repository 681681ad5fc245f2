#pragma once

#include <string>

namespace troupe::runtime {

/// Who calls the API: the API key's name and what it may see. Agents a
/// principal spawns are recorded as its own; a scoped principal sees and
/// drives only those (another key's agent is `unknown_agent`, exactly like
/// one that does not exist).
struct principal {
  /// The key's name (`name=` in the keys file, else `key-` and the first
  /// 12 hex digits of its digest); "" when auth is off.
  std::string name;
  /// Sees every agent: `admin` keys, and everyone when auth is off.
  bool all_agents = true;

  /// What an ownership check compares with: "" = no restriction.
  std::string scope() const { return all_agents ? std::string{} : name; }
};

} // namespace troupe::runtime
