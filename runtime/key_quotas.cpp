#include "runtime/key_quotas.hpp"
#include "runtime/metrics.hpp"

#include <algorithm>
#include <cstdio>

namespace troupe::runtime {

key_quotas::key_quotas(per_key_limits limits) : limits_(limits) {}

bool key_quotas::take_request(const std::string& key) {
  auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> guard{*mutex_};
  auto [it, fresh] = table_->try_emplace(key);
  auto& u = it->second;
  if (fresh) {
    u.tokens = limits_.burst;
  } else {
    std::chrono::duration<double> dt = now - u.refilled;
    u.tokens = std::min(limits_.burst, u.tokens + dt.count() * limits_.requests_per_second);
  }
  u.refilled = now;
  if (u.tokens < 1) return false;
  u.tokens -= 1;
  return true;
}

void key_quotas::count_refusal() {
  static runtime::counter& count = runtime::metrics_registry::global().get_counter(
      "troupe_key_limited_total", "Requests refused by a per-key limit (limits.per_key)");
  count.inc();
}

key_quotas::lease key_quotas::acquire(const std::string& key, uint64_t usage::*counter,
                                      uint64_t max) {
  {
    std::lock_guard<std::mutex> guard{*mutex_};
    auto& u = (*table_)[key];
    if (u.refilled == std::chrono::steady_clock::time_point{}) {
      u.tokens = limits_.burst;
      u.refilled = std::chrono::steady_clock::now();
    }
    if (u.*counter >= max) return nullptr;
    ++(u.*counter);
  }
  // The lease owns what it needs to give the slot back, so it may outlive
  // this object (a session actor ending after the gateway).
  static char held; // a lease is truthy; what it points at does not matter
  return lease{static_cast<void*>(&held), [m = mutex_, t = table_, key, counter](void*) {
                 std::lock_guard<std::mutex> guard{*m};
                 auto it = t->find(key);
                 if (it != t->end() && it->second.*counter > 0) --(it->second.*counter);
               }};
}

std::string key_quotas::over_rate(const std::string& key) const {
  char rate[32];
  std::snprintf(rate, sizeof rate, "%g", limits_.requests_per_second);
  return "API key '" + key + "' is over its rate of " + rate +
         " requests/s (limits.per_key.requests_per_second): slow down";
}

std::string key_quotas::over_turns(const std::string& key) const {
  return "API key '" + key + "' has " + std::to_string(limits_.max_turns) +
         " turns running (limits.per_key.max_turns)";
}

std::string key_quotas::over_connections(const std::string& key) const {
  return "API key '" + key + "' has " + std::to_string(limits_.max_connections) +
         " connections open (limits.per_key.max_connections)";
}

key_quotas::lease key_quotas::begin_turn(const std::string& key) {
  return acquire(key, &usage::turns, limits_.max_turns);
}

key_quotas::lease key_quotas::open_connection(const std::string& key) {
  return acquire(key, &usage::connections, limits_.max_connections);
}

} // namespace troupe::runtime
