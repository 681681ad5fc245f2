#pragma once

#include "nodes/http_server.hpp"

#include <memory>
#include <string>

namespace troupe::actors {
class io_threads;
class node_runtime;
} // namespace troupe::actors

namespace troupe::cluster {
class cluster_node;
}

namespace troupe::gateway {

/// The public API of a node (docs/protocol.md): `/ws`, `/ws/{type}`, REST
/// under `/api`, `/health`, `/metrics` and `/v1/chat/completions`, served
/// over the node's actors.
class gateway {
public:
  /// `cluster`: the node's cluster membership, for `/api/cluster`; null on
  /// a single node.
  gateway(actors::io_threads& io, actors::node_runtime& rt,
          const cluster::cluster_node* cluster = nullptr);
  ~gateway();

  /// Binds `gateway.listen`; throws std::runtime_error if it cannot.
  void start();
  uint16_t port() const;

  /// Reads `gateway.auth.keys_file` and the TLS certificate and key again
  /// (SIGHUP); a file that cannot be used leaves what it held in force.
  /// Returns the errors, or "" on success.
  std::string reload();

  /// Graceful stop, step one: refuse new connections.
  void stop_accepting();
  /// Step two, after the actors have ended open requests: close what is left.
  void close_all();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace troupe::gateway
