#pragma once

#include <set>
#include <string>

namespace troupe::cluster {

/// CurveZMQ keys of a node, as Z85 text (40 characters per key). Empty =
/// Curve is off and node-to-node traffic is plain.
struct curve_keys {
  std::string secret_key;
  std::string public_key;
  /// Public keys of the nodes allowed to connect to this one and to be
  /// connected to (its own included, so one list serves the whole cluster).
  std::set<std::string> allowed;

  bool enabled() const { return !secret_key.empty(); }
};

/// A fresh key pair, Z85 (`troupe keygen`).
curve_keys generate_curve_keys();

/// Reads `secret_key_file` (the first line that is not blank or a `#`
/// comment is the Z85 secret key) and `allowed_keys_file` (one Z85 public
/// key per line, `#` comments). Throws std::runtime_error naming the file
/// and line of anything that is not a key.
curve_keys load_curve_keys(const std::string& secret_key_file,
                           const std::string& allowed_keys_file);

/// The Z85 text of a 32-byte binary key (what ZAP hands over).
std::string z85_key(const void* binary32);

/// `troupe keygen [--out PREFIX]`: writes PREFIX.key (secret, mode 0600)
/// and PREFIX.pub, refusing to overwrite either. Returns the exit status.
int keygen_command(int argc, char** argv);

} // namespace troupe::cluster
