#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>

namespace troupe::gateway {

/// The gateway's API keys, held as SHA-256 digests only: a key is hashed as
/// it is read and its text wiped, so neither memory dumps nor logs hold it.
/// The keys file has one key per line (`#` comments); a line
/// `sha256:<64 hex>` is a key given by its digest, so the file itself need
/// not hold plaintext either. Thread-safe: `check` runs on I/O threads while
/// `load` (SIGHUP) swaps in a new set.
class api_keys {
public:
  /// Reads `path`. On failure (unreadable, no keys, a bad digest line) the
  /// keys in force stay and the reason, naming the file and line, is
  /// returned; on success, an empty string.
  std::string load(const std::string& path);

  /// True when `key`'s digest is one of the loaded ones.
  bool check(std::string_view key) const;

  size_t size() const;

private:
  using digest_set = std::unordered_set<std::string>; // raw 32-byte digests
  mutable std::mutex mutex_;
  std::shared_ptr<const digest_set> keys_ = std::make_shared<digest_set>();
};

} // namespace troupe::gateway
