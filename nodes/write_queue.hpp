#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <string>

namespace troupe::gateway {

/// What one connection still has to write, bounded in bytes (STYLE.md,
/// "Sockets"). Owned by the connection and touched only on its strand; the
/// frames are shared, since one encoded event may go to many connections.
class write_queue {
public:
  explicit write_queue(size_t max_bytes) : max_bytes_(max_bytes) {}

  /// Queues a frame; false, and nothing queued, if it would pass the bound.
  bool push(std::shared_ptr<const std::string> frame) {
    if (bytes_ + frame->size() > max_bytes_) return false;
    bytes_ += frame->size();
    frames_.push_back(std::move(frame));
    return true;
  }

  /// The frame being written; valid until `pop()`.
  const std::string& front() const { return *frames_.front(); }

  void pop() {
    bytes_ -= frames_.front()->size();
    frames_.pop_front();
  }

  void clear() {
    frames_.clear();
    bytes_ = 0;
  }

  bool empty() const { return frames_.empty(); }
  size_t bytes() const { return bytes_; }

private:
  size_t max_bytes_;
  size_t bytes_ = 0;
  std::deque<std::shared_ptr<const std::string>> frames_;
};

} // namespace troupe::gateway
