#pragma once

#include "runtime/config.hpp"

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace troupe::runtime {

/// What each API key holds and spends on this node, against
/// `limits.per_key`: open connections, running turns (each a lease that
/// gives its slot back when dropped, however the turn ends) and a token
/// bucket over requests. Thread-safe: I/O threads and session actors share
/// one. Keys come from the keys file, so the table is bounded by it.
class key_quotas {
public:
  using lease = std::shared_ptr<void>;

  explicit key_quotas(per_key_limits limits);

  /// One request from `key`'s bucket; false when it is over its rate.
  bool take_request(const std::string& key);
  /// A turn slot, or null when `key` has `max_turns` running.
  lease begin_turn(const std::string& key);
  /// A connection slot, or null when `key` has `max_connections` open.
  lease open_connection(const std::string& key);

  const per_key_limits& limits() const { return limits_; }

  /// What a client is told when `key` is refused, naming the limit.
  std::string over_rate(const std::string& key) const;
  std::string over_turns(const std::string& key) const;
  std::string over_connections(const std::string& key) const;
  /// Counts one refusal in `troupe_key_limited_total` (one metric for every
  /// place that refuses: HTTP, `/mcp`).
  static void count_refusal();

private:
  struct usage {
    double tokens = 0;
    std::chrono::steady_clock::time_point refilled{};
    uint64_t turns = 0;
    uint64_t connections = 0;
  };
  lease acquire(const std::string& key, uint64_t usage::*counter, uint64_t max);

  per_key_limits limits_;
  std::shared_ptr<std::mutex> mutex_ = std::make_shared<std::mutex>();
  std::shared_ptr<std::unordered_map<std::string, usage>> table_ =
      std::make_shared<std::unordered_map<std::string, usage>>();
};

} // namespace troupe::runtime
