#pragma once

#include "cluster/curve_keys.hpp"
#include "cluster/wire.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace troupe::cluster {

/// A member as the transport needs it.
struct peer_address {
  std::string endpoint; // tcp://host:port
  uint64_t incarnation = 0;
  std::string curve_key; // its CurveZMQ public key (Z85), when Curve is on
};

/// The node's ZeroMQ endpoint: one ROUTER bound at `bind` receives from
/// every peer; one DEALER per peer sends to it. Every socket lives on the
/// transport's own I/O thread; other threads hand it frames through a
/// bounded outbox and wake it with an eventfd (a ZeroMQ socket is owned by
/// exactly one thread, so actors never touch one).
///
/// It also detects failures: it pings every peer each `ping_interval`; a
/// peer silent for `suspect_after` is declared dead, reported once through
/// `on_peer_down`, and fenced: frames from that incarnation are dropped from
/// then on, even if the membership table still lists it.
///
/// With Curve (`options::curve`), the ROUTER is a CurveZMQ server that
/// admits only clients whose public key is allowed (a ZAP handler on this
/// thread decides), and each DEALER authenticates the peer by the public
/// key the peer published: frames are encrypted, and a node without an
/// allowed key can neither connect nor inject frames.
class transport {
public:
  struct options {
    std::string node;
    uint64_t incarnation = 0;
    std::string bind;
    std::chrono::milliseconds ping_interval{200};
    std::chrono::milliseconds suspect_after{1000};
    /// Bytes queued for one peer beyond which `send` refuses (overloaded).
    size_t max_queued_bytes = 64u << 20;
    /// Credit: while it returns false, frames are held back (up to 64 MiB
    /// here, then in ZeroMQ and the senders' bounded queues) instead of
    /// piling up in a slow consumer's mailbox. Pings are still answered, so
    /// a busy node is not mistaken for a dead one. Null = always.
    std::function<bool()> can_deliver;
    /// Keys and the allowed list; empty = plain ZeroMQ.
    curve_keys curve;
  };
  /// Runs on the I/O thread for every accepted frame; must not block.
  using frame_handler = std::function<void(envelope, std::string payload)>;
  /// Runs on the I/O thread when a peer is declared dead (`left` = it said
  /// bye) ; must not block.
  using down_handler =
      std::function<void(const std::string& node, uint64_t incarnation, bool left)>;

  /// Binds and starts the I/O thread. A bind that fails throws
  /// `std::runtime_error` naming the endpoint.
  transport(options opts, frame_handler on_frame, down_handler on_peer_down);
  /// Calls `close()`.
  ~transport();
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;

  /// Any thread. Queues one frame for `node`; `env.source` and
  /// `env.incarnation` are filled in. False when that peer's queue is full
  /// (the caller answers `overloaded`); a frame for a peer that is not a
  /// live member is dropped by the I/O thread.
  bool send(const std::string& node, envelope env, std::string payload);
  /// The same for the usual frame: `type` for `target` with correlation
  /// `corr` and `payload` encoded as MessagePack.
  bool send(const std::string& node, msg_type type, std::string target, uint64_t corr,
            const nlohmann::json& payload);

  /// Any thread. The live members (this node excluded); connects to new
  /// ones, disconnects from those gone. A fenced incarnation stays fenced.
  void set_peers(std::map<std::string, peer_address> peers);

  /// Fenced (declared dead) incarnations, `node:incarnation`, for the
  /// membership table.
  std::vector<std::string> take_fenced();

  /// Says bye to the peers and joins the I/O thread; no handler runs after
  /// it returns and `send` drops everything. Idempotent; not from a handler.
  void close();

  const options& opts() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace troupe::cluster
