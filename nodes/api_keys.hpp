#pragma once

#include "runtime/principal.hpp"

#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace troupe::gateway {

/// The gateway's API keys, held as SHA-256 digests only: a key is hashed as
/// it is read and its text wiped, so neither memory dumps nor logs hold it.
/// The keys file has one key per line (`#` comments): `KEY [name=NAME]
/// [admin]`. A key given as `sha256:<64 hex>` is given by its digest, so
/// the file itself need not hold plaintext either. `name` is the key's
/// principal (agents it spawns are recorded as its; default `key-` and 12
/// hex digits of the digest); an `admin` key sees every agent. Thread-safe: `check` runs on I/O
/// threads while `load` (SIGHUP) swaps in a new set.
class api_keys {
public:
  /// Reads `path`. On failure (unreadable, no keys, a bad digest line) the
  /// keys in force stay and the reason, naming the file and line, is
  /// returned; on success, an empty string.
  std::string load(const std::string& path);

  /// The principal of `key` when its digest is one of the loaded ones.
  std::optional<runtime::principal> check(std::string_view key) const;

  size_t size() const;

private:
  using digest_set = std::unordered_map<std::string, runtime::principal>; // by raw digest
  mutable std::mutex mutex_;
  std::shared_ptr<const digest_set> keys_ = std::make_shared<digest_set>();
};

} // namespace troupe::gateway
