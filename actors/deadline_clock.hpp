#pragma once

#include <caf/error.hpp>
#include <caf/fwd.hpp>
#include <caf/duration.hpp>
#include <caf/make_message.hpp>
#include <caf/message_id.hpp>
#include <caf/sec.hpp>

#include <chrono>
#include <cstdint>
#include <memory>

namespace troupe::actors {

/// Coarse deadlines for the hot path's timeouts (a model call's request to
/// the router and the router's to a worker, a turn's time limit).
///
/// CAF 0.17's clock wakes its thread for every timeout set and again for
/// every one cancelled: two futex calls and a cross-core wake-up per request,
/// a tenth of a millisecond on the way to a first token on a VM. Here adding
/// or cancelling a deadline takes an uncontended lock and nothing else; the
/// clock's thread wakes on its own every `granularity` and delivers what is
/// due, that late at most. Fine for timeouts of seconds, not for pacing.
///
/// Thread-safe; process-wide (its thread starts on first use).
class deadline_clock {
public:
  using clock = std::chrono::steady_clock;
  static constexpr auto granularity = std::chrono::milliseconds(20);

  /// Names one deadline for `cancel`. Empty (false) until set.
  struct token {
    clock::time_point at;
    uint64_t seq = 0;
    explicit operator bool() const { return seq != 0; }
  };

  static deadline_clock& instance();

  /// At `at`, `content` reaches `whom` under message id `mid` (a response
  /// id for a request's timeout) unless cancelled first. Holds `whom`
  /// until then, as CAF's clock does: an actor that waits for nothing but
  /// a timeout must not end as unreachable before it hears it.
  token add(clock::time_point at, const caf::strong_actor_ptr& whom, caf::message_id mid,
            caf::message content);

  /// Forgets a deadline not yet delivered; a no-op for an empty or spent one.
  void cancel(const token& t);

  /// Deadlines waiting (for tests and metrics).
  size_t pending() const;

  ~deadline_clock();

private:
  deadline_clock();
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// `self->request(dest, timeout, xs...)`, its timeout kept by the deadline
/// clock: on expiry the response handlers see `sec::request_timeout`, as
/// with CAF's own. Both handlers cancel `deadline` first thing (a response
/// that beats it leaves it pending otherwise, until it expires unheard).
template <class Self, class Dest, class... Ts>
auto request_with_deadline(Self* self, deadline_clock::token& deadline,
                           std::chrono::milliseconds timeout, const Dest& dest, Ts&&... xs) {
  auto handle = self->request(dest, caf::infinite, std::forward<Ts>(xs)...);
  deadline = deadline_clock::instance().add(
      deadline_clock::clock::now() + timeout, self->ctrl(), handle.id(),
      caf::make_message(caf::make_error(caf::sec::request_timeout)));
  return handle;
}

} // namespace troupe::actors
