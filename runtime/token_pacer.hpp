#pragma once

#include <chrono>
#include <cstddef>

namespace troupe::runtime {

/// Paces a simulated stream: the first token falls due `ttft` after start,
/// then one every 1/`tokens_per_s`. Tokens that fall due together are
/// released together, so a fast simulated GPU needs no timer per token.
/// Used by the in-process simulated backend and by `troupe sim-llm`.
class token_pacer {
public:
  using clock = std::chrono::steady_clock;

  token_pacer(std::chrono::milliseconds ttft, double tokens_per_s, size_t total)
      : ttft_(ttft), interval_(std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::duration<double>(1.0 / tokens_per_s))),
        total_(total) {}

  /// Starts the clock: generation begins now (a request may have waited
  /// for a slot before this).
  void start() { start_ = clock::now() + ttft_; }

  /// How many more tokens are due at `now`; they count as released.
  size_t release(clock::time_point now) {
    size_t n = 0;
    while (next_ < total_ && due_at(next_) <= now) {
      ++next_;
      ++n;
    }
    return n;
  }

  /// Index of the next token to release.
  size_t next() const { return next_; }
  bool done() const { return next_ >= total_; }
  /// When to wake up next: the first token's time, then the next one's.
  clock::time_point wake_at() const { return due_at(next_); }

private:
  clock::time_point due_at(size_t i) const { return start_ + interval_ * i; }

  std::chrono::milliseconds ttft_;
  std::chrono::nanoseconds interval_;
  clock::time_point start_;
  size_t total_;
  size_t next_ = 0;
};

} // namespace troupe::runtime
