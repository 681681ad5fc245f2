#pragma once

#include <string>
#include <vector>

namespace troupe::gateway {

/// `troupe ctl [--gateway URL] [--key KEY] [--json] nodes|workers|agents|drain NODE`:
/// the operator's view of a cluster through any gateway's REST API. Returns
/// the process exit code (0 ok, 1 the gateway refused, 2 usage or unreachable).
int run_ctl(const std::vector<std::string>& args);

} // namespace troupe::gateway
