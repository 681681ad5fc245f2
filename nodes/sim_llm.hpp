#pragma once

#include <cstdint>
#include <string>

namespace troupe::gateway {

struct sim_llm_options {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
  int64_t ttft_ms = 50;
  double tokens_per_s = 200;
  int64_t slots = 8;
  int64_t max_queue = 1024;
  std::string model = "sim-model";
};

/// `troupe sim-llm`: the simulated model server, OpenAI-compatible over
/// real HTTP (`/v1/chat/completions` streaming or not, `/v1/models`,
/// `/health`, and Lemonade's `/api/v1/...` routes). Deterministic answers
/// from runtime/simulated_model.hpp. Runs until SIGINT/SIGTERM.
int run_sim_llm(const sim_llm_options& opts);

} // namespace troupe::gateway
