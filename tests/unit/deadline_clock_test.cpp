// The deadline clock on a real actor system: its thread is real, so these
// wait (briefly) for deadlines of tens of milliseconds to pass.

#include "actors/deadline_clock.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

using namespace troupe::actors;
using namespace std::chrono_literals;

namespace {

using clock_type = std::chrono::steady_clock;

// The actors take an unused argument: CAF 0.17 dereferences a null pointer
// when it starts a function actor spawned without one (UBSan says so).

/// Takes any request and never answers it (as a crashed callee would not).
caf::behavior silent(caf::event_based_actor* self, int) {
  return {[=](int) -> caf::result<int> { return self->make_response_promise<int>(); }};
}

caf::behavior echo(caf::event_based_actor*, int) {
  return {[](int x) { return x; }};
}

/// Asks `callee` once, with a deadline of `timeout`, and tells `report` how
/// it went: the error (none on an answer) and how long it took.
caf::behavior ask(caf::event_based_actor* self, caf::actor callee,
                  std::chrono::milliseconds timeout, caf::actor report) {
  auto start = clock_type::now();
  request_with_deadline(self, timeout, callee, 42)
      .then([=](int) { self->send(report, caf::error{}, clock_type::now() - start); },
            [=](caf::error& err) { self->send(report, err, clock_type::now() - start); });
  return {[](int) {}}; // without a behavior of its own it would not wait for the answer
}

struct deadline_fixture : ::testing::Test {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};

  std::pair<caf::error, clock_type::duration> outcome() {
    std::pair<caf::error, clock_type::duration> result;
    self->receive(
        [&](caf::error& err, clock_type::duration took) {
          result = {std::move(err), took};
        },
        caf::after(10s) >> [&] { ADD_FAILURE() << "no outcome in 10 s"; });
    return result;
  }

  void wait_until_pending(size_t n) {
    auto give_up = clock_type::now() + 5s;
    while (deadline_clock::instance().pending() != n && clock_type::now() < give_up)
      std::this_thread::sleep_for(5ms);
    EXPECT_EQ(deadline_clock::instance().pending(), n);
  }
};

} // namespace

TEST_F(deadline_fixture, a_request_nobody_answers_fails_with_request_timeout_after_its_deadline) {
  auto callee = sys.spawn(silent, 0);
  sys.spawn(ask, callee, 50ms, caf::actor{self});
  auto [err, took] = outcome();
  EXPECT_EQ(err, caf::sec::request_timeout);
  EXPECT_GE(took, 50ms);
  caf::anon_send_exit(callee, caf::exit_reason::user_shutdown);
}

TEST_F(deadline_fixture, an_answered_request_leaves_no_deadline_behind) {
  auto before = deadline_clock::instance().pending();
  auto callee = sys.spawn(echo, 0);
  sys.spawn(ask, callee, 60s, caf::actor{self});
  auto [err, took] = outcome();
  EXPECT_FALSE(err);
  wait_until_pending(before);
  caf::anon_send_exit(callee, caf::exit_reason::user_shutdown);
}

TEST_F(deadline_fixture, a_deadline_for_an_actor_gone_meanwhile_is_dropped) {
  auto before = deadline_clock::instance().pending();
  auto gone = sys.spawn(echo, 0);
  deadline_clock::instance().add(clock_type::now() + 30ms,
                                 caf::actor_cast<caf::strong_actor_ptr>(gone),
                                 caf::make_message_id(), caf::make_message(7));
  caf::anon_send_exit(gone, caf::exit_reason::user_shutdown);
  gone = nullptr;
  wait_until_pending(before); // delivered to nobody, without a crash
}
