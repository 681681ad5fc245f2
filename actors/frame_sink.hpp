#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace troupe::actors {

/// The write side of one client connection, as a session actor sees it.
/// Implemented by the gateway over a WebSocket; any thread may call it.
class frame_sink {
public:
  virtual ~frame_sink() = default;

  /// Queues one text frame. The connection bounds what it buffers and
  /// closes a client that does not read rather than grow without limit.
  virtual void send(std::shared_ptr<const std::string> frame) = 0;

  /// Closes with a WebSocket close code and reason.
  virtual void close(uint16_t code, std::string reason) = 0;
};

} // namespace troupe::actors
