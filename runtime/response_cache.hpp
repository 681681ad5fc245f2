#pragma once

#include "runtime/config.hpp"
#include "runtime/llm.hpp"

#include <chrono>
#include <cstddef>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace troupe::runtime {

/// Answers to deterministic model calls, kept for an identical request:
/// exact match on the request as it would be sent to the model server
/// (model, messages, tools, temperature, max_tokens). Bounded in entries
/// and bytes (the least recently used go first) and in age. One actor owns
/// it; not thread-safe.
class response_cache {
public:
  using clock = std::chrono::steady_clock;

  /// What a client saw: the tokens as they were streamed, and the result.
  struct answer {
    std::vector<std::string> tokens;
    chat_result result;
  };

  explicit response_cache(response_cache_limits limits) : limits_(limits) {}

  /// The answer stored for `key` and not older than the ttl, or null. The
  /// pointer is valid until the next `put`.
  const answer* find(const std::string& key, clock::time_point now);

  /// Stores `a` for `key` (replacing an older one), then evicts down to the
  /// limits. An answer larger than `max_bytes` alone is not kept.
  void put(const std::string& key, answer a, clock::time_point now);

  size_t size() const { return index_.size(); }
  size_t bytes() const { return bytes_; }

private:
  struct entry {
    std::string key;
    answer value;
    clock::time_point stored;
    size_t bytes;
  };

  void erase(std::list<entry>::iterator it);

  response_cache_limits limits_;
  std::list<entry> lru_; // front: most recently used
  std::unordered_map<std::string_view, std::list<entry>::iterator> index_;
  size_t bytes_ = 0;
};

} // namespace troupe::runtime
