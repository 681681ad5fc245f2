#pragma once

#include <string>
#include <vector>

namespace troupe::gateway {

/// `troupe load`: a load generator. It opens N WebSocket clients to a
/// gateway (or N streaming HTTP clients straight to an OpenAI-compatible
/// server, the baseline), runs conversations for a while, and reports
/// throughput, time to first token and inter-token latency percentiles,
/// errors and the gateway's RSS, with a progress line while it runs.
/// Returns the process exit code.
int run_load(const std::vector<std::string>& args);

} // namespace troupe::gateway
