#pragma once

#include "runtime/ws_protocol.hpp"

#include <cstddef>
#include <deque>
#include <memory>
#include <string>
#include <utility>

namespace troupe::gateway {

/// What one connection still has to write, bounded in bytes (STYLE.md,
/// "Sockets"). Owned by the connection and touched only on its strand; the
/// frames are shared, since one encoded event may go to many connections.
class write_queue {
public:
  explicit write_queue(size_t max_bytes) : max_bytes_(max_bytes) {}

  /// Queues a frame; false, and nothing queued, if it would pass the bound.
  /// A token event joins the token event of the same request waiting last
  /// (never the front while `front_busy`, being written): a client that
  /// falls behind gets fewer, larger frames, and one that keeps up gets
  /// every token as it comes.
  bool push(std::shared_ptr<const std::string> frame, bool front_busy) {
    if (frames_.size() > (front_busy ? 1u : 0u) && frames_.back()->size() < max_merged)
      if (auto merged = runtime::coalesce_tokens(*frames_.back(), *frame)) {
        auto added = merged->size() - frames_.back()->size();
        if (bytes_ + added > max_bytes_) return false;
        bytes_ += added;
        frames_.back() = std::make_shared<const std::string>(std::move(*merged));
        ++coalesced_;
        return true;
      }
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
  /// Token events merged into another since the last call.
  uint64_t take_coalesced() { return std::exchange(coalesced_, 0); }

  /// Frames grow by merging up to about this size.
  static constexpr size_t max_merged = 16 * 1024;

private:
  uint64_t coalesced_ = 0;
  size_t max_bytes_;
  size_t bytes_ = 0;
  std::deque<std::shared_ptr<const std::string>> frames_;
};

} // namespace troupe::gateway
