// monitor_while_alive on a real actor system: an observer that ends leaves
// no monitor (and so no reference to itself) on the actor it watched.

#include "actors/monitor.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

using namespace troupe::actors;
using namespace std::chrono_literals;

namespace {

// The unused int: CAF 0.17 dereferences a null pointer starting a function
// actor spawned without arguments (UBSan says so).
caf::behavior long_lived(caf::event_based_actor*, int) {
  return {[](int) {}};
}

caf::behavior observer(caf::event_based_actor* self, caf::actor target, bool undo) {
  if (undo)
    monitor_while_alive(self, target);
  else
    self->monitor(target);
  return {[=](int) { self->quit(); }};
}

/// Weak references to an observer of `target` once it has ended and every
/// handle to it is gone: 1 (ours) when nothing else remembers it.
size_t references_left(caf::actor_system& sys, const caf::actor& target, bool undo) {
  auto hdl = sys.spawn(observer, target, undo);
  caf::weak_actor_ptr ours{caf::actor_cast<caf::actor_control_block*>(hdl)};
  {
    caf::scoped_actor self{sys};
    self->monitor(hdl);
    self->send(hdl, 1);
    self->receive([](caf::down_msg&) {}, caf::after(10s) >> [] { ADD_FAILURE() << "no end"; });
  }
  hdl = nullptr;
  auto* ctrl = ours.get();
  auto give_up = std::chrono::steady_clock::now() + 5s;
  while (ctrl->strong_refs > 0 && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(20ms); // the last strong reference also drops a weak one
  return ctrl->weak_refs;
}

} // namespace

TEST(MonitorWhileAlive, AnObserverThatEndsLeavesNothingOnTheActorItWatched) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto target = sys.spawn(long_lived, 0);
  // CAF's own monitor stays on the target and keeps the ended observer's
  // memory: the reason for the helper.
  EXPECT_EQ(references_left(sys, target, false), 2u);
  EXPECT_EQ(references_left(sys, target, true), 1u);
  caf::anon_send_exit(target, caf::exit_reason::user_shutdown);
}
