#pragma once

#include <caf/detail/type_traits.hpp>
#include <caf/duration.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>
#include <caf/make_message.hpp>
#include <caf/message_id.hpp>
#include <caf/sec.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <utility>

namespace troupe::actors {

/// Coarse deadlines for the timeouts armed on every message: a model call's
/// requests (agent to router to worker), the node API's requests to the
/// directory, a turn's time limit, an agent's idle check.
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

  /// Deadlines waiting (for tests).
  size_t pending() const;

  ~deadline_clock();

private:
  deadline_clock();
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// One deadline owned by an actor's state: cancelled when replaced or
/// destroyed, so an actor that ends (or moves on) leaves nothing pending.
class scoped_deadline {
public:
  scoped_deadline() = default;
  scoped_deadline(const scoped_deadline&) = delete;
  scoped_deadline& operator=(const scoped_deadline&) = delete;
  ~scoped_deadline() { deadline_clock::instance().cancel(token_); }

  /// Delivers `content` to `whom` at `at`, instead of what was set before.
  void set(deadline_clock::clock::time_point at, const caf::strong_actor_ptr& whom,
           caf::message content) {
    deadline_clock::instance().cancel(token_);
    token_ = deadline_clock::instance().add(at, whom, caf::make_message_id(), std::move(content));
  }

private:
  deadline_clock::token token_;
};

namespace detail {

/// `f` with the same parameters (CAF reads a handler's message type off
/// them), cancelling `deadline` before it runs.
template <class F, class... Ts>
auto cancelling(deadline_clock::token deadline, F f, caf::detail::type_list<Ts...>) {
  return [deadline, f = std::move(f)](Ts... xs) mutable {
    deadline_clock::instance().cancel(deadline);
    return f(std::forward<Ts>(xs)...);
  };
}

template <class F> auto cancelling(deadline_clock::token deadline, F f) {
  using args = typename caf::detail::get_callable_trait<F>::arg_types;
  return cancelling(deadline, std::move(f), args{});
}

} // namespace detail

/// A response handle whose handlers forget the request's deadline: a
/// response that beats it would leave it pending until it expired unheard.
template <class Handle> class deadline_response {
public:
  deadline_response(Handle handle, deadline_clock::token deadline)
      : handle_(std::move(handle)), deadline_(deadline) {}

  template <class F, class OnError> void then(F f, OnError on_error) {
    handle_.then(detail::cancelling(deadline_, std::move(f)),
                 detail::cancelling(deadline_, std::move(on_error)));
  }

private:
  Handle handle_;
  deadline_clock::token deadline_;
};

/// `self->request(dest, timeout, xs...)`, its timeout kept by the deadline
/// clock: on expiry the error handler sees `sec::request_timeout`, as with
/// CAF's own. For requests on the paths that carry every message (CAF's
/// timers cost two cross-core wake-ups each); `.then` takes both handlers.
template <class Self, class Dest, class... Ts>
auto request_with_deadline(Self* self, std::chrono::milliseconds timeout, const Dest& dest,
                           Ts&&... xs) {
  auto handle = self->request(dest, caf::infinite, std::forward<Ts>(xs)...);
  auto deadline = deadline_clock::instance().add(
      deadline_clock::clock::now() + timeout, self->ctrl(), handle.id(),
      caf::make_message(caf::make_error(caf::sec::request_timeout)));
  return deadline_response<decltype(handle)>{std::move(handle), deadline};
}

} // namespace troupe::actors
