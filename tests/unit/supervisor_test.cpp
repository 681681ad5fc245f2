// The supervisor on CAF's test coordinator: every message runs on the test
// thread (`sched.run()`), children crash on demand, nothing sleeps.

#include "actors/atoms.hpp"
#include "actors/messages.hpp"
#include "actors/supervision.hpp"

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <gtest/gtest.h>

#include <stdexcept>

using namespace troupe::actors;

namespace {

/// A child that throws when told to crash; like the node's actors, it turns
/// the exception into an error that keeps its message.
caf::behavior fragile(caf::event_based_actor* self, int) {
  self->set_exception_handler(
      [](caf::scheduled_actor*, std::exception_ptr& eptr) { return exception_to_error(eptr); });
  return {
      [](crash_atom) -> caf::result<void> { throw std::runtime_error("boom"); },
  };
}

struct supervisor_fixture : ::testing::Test {
  supervisor_fixture()
      : sys(configure()), sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())),
        self(sys) {}

  caf::actor_system_config& configure() {
    cfg.set("scheduler.policy", caf::atom("testing"));
    return cfg;
  }

  /// Starts a supervisor over one `fragile` child; `current` is its live handle.
  caf::actor start(int max_restarts) {
    auto sup = spawn_supervisor(
        sys, "test",
        {{"child", [this](caf::actor_system& s) { return current = s.spawn(fragile, ++starts); }}},
        {max_restarts, std::chrono::minutes(1)}, status);
    sched.run();
    return sup;
  }

  void crash_child() {
    self->send(current, crash_atom::value);
    sched.run();
  }

  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scheduler::test_coordinator& sched;
  caf::scoped_actor self;
  std::shared_ptr<supervision_status> status = std::make_shared<supervision_status>();
  caf::actor current;
  int starts = 0;
};

} // namespace

TEST_F(supervisor_fixture, a_crashed_child_is_started_again) {
  auto sup = start(3);
  EXPECT_EQ(starts, 1);
  crash_child();
  EXPECT_EQ(starts, 2);
  auto snap = status->snapshot();
  EXPECT_EQ(snap.at("child").restarts, 1u);
  EXPECT_FALSE(snap.at("child").escalated);
  EXPECT_NE(snap.at("child").last_failure.find("boom"), std::string::npos);
  self->send_exit(sup, caf::exit_reason::user_shutdown);
  sched.run();
}

TEST_F(supervisor_fixture, past_the_restart_intensity_it_escalates_and_stops) {
  auto sup = start(2);
  self->monitor(sup);
  crash_child();
  crash_child();
  EXPECT_EQ(starts, 3);
  EXPECT_FALSE(status->any_escalated());
  crash_child(); // the third crash within the window is one too many
  EXPECT_EQ(starts, 3);
  EXPECT_TRUE(status->any_escalated());
  bool down = false;
  self->receive([&](caf::down_msg& dm) { down = dm.source == sup.address(); },
                caf::after(std::chrono::seconds(0)) >> [] {});
  EXPECT_TRUE(down) << "the supervisor must stop so its own watcher knows";
}

TEST_F(supervisor_fixture, a_child_stopped_on_purpose_is_not_restarted) {
  auto sup = start(3);
  self->send_exit(current, caf::exit_reason::user_shutdown);
  sched.run();
  EXPECT_EQ(starts, 1);
  EXPECT_TRUE(status->snapshot().empty());
  self->send_exit(sup, caf::exit_reason::user_shutdown);
  sched.run();
}
