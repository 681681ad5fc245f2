// Monitors undone on a real actor system: an observer that ends leaves no
// monitor (and so no reference to itself) on the actor it watched. CAF 0.17
// would keep one, and with it the ended observer's memory.

#include "actors/agent.hpp"
#include "actors/atoms.hpp"
#include "actors/messages.hpp"
#include "actors/monitor.hpp"
#include "runtime/state_store.hpp"
#include "runtime/tool.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

using namespace troupe::actors;
using namespace std::chrono_literals;

namespace {

// The unused int: CAF 0.17 dereferences a null pointer starting a function
// actor spawned without arguments (UBSan says so).
caf::behavior long_lived(caf::event_based_actor*, int) {
  return {[](int) {}};
}

enum class how { plain, while_alive, in_state };

struct watcher_state {
  explicit watcher_state(caf::local_actor* self) : watching(self) {}
  monitor_set watching;
};

caf::behavior observer(caf::stateful_actor<watcher_state>* self, caf::actor target, how h) {
  if (h == how::plain)
    self->monitor(target);
  else if (h == how::while_alive)
    monitor_while_alive(self, target);
  else
    self->state.watching.add(target);
  return {[=](int) { self->quit(); }};
}

/// Weak references to `hdl` once `end` has ended it and every handle to it
/// is gone: 1 (ours) when nothing else remembers it.
template <class End> size_t references_left(caf::actor_system& sys, caf::actor hdl, End end) {
  caf::weak_actor_ptr ours{caf::actor_cast<caf::actor_control_block*>(hdl)};
  {
    caf::scoped_actor self{sys};
    self->monitor(hdl);
    end(self, hdl);
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

size_t observer_references_left(caf::actor_system& sys, const caf::actor& target, how h) {
  return references_left(sys, sys.spawn(observer, target, h),
                         [](auto& self, const caf::actor& hdl) { self->send(hdl, 1); });
}

/// An agent activation with a memory store, the given router, and no idle
/// timeout: it ends when killed.
caf::actor spawn_test_agent(caf::actor_system& sys, caf::actor router, caf::actor directory) {
  auto ctx = std::make_shared<agent_context>();
  ctx->store = troupe::runtime::make_memory_state_store();
  ctx->router = std::move(router);
  ctx->directory = std::move(directory);
  ctx->node = "test";
  auto type = std::make_shared<troupe::runtime::agent_type>();
  type->cfg.name = "chat";
  return spawn_agent(sys, {"chat", "k1"}, type, {}, {}, ctx);
}

constexpr auto kill_it = [](auto& self, const caf::actor& hdl) {
  self->send_exit(hdl, caf::exit_reason::kill);
};

} // namespace

TEST(MonitorHelpers, AnObserverThatEndsLeavesNothingOnTheActorItWatched) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto target = sys.spawn(long_lived, 0);
  // CAF's own monitor stays on the target and keeps the ended observer's
  // memory: the reason for the helper.
  EXPECT_EQ(observer_references_left(sys, target, how::plain), 2u);
  EXPECT_EQ(observer_references_left(sys, target, how::while_alive), 1u);
  EXPECT_EQ(observer_references_left(sys, target, how::in_state), 1u); // monitor_set
  caf::anon_send_exit(target, caf::exit_reason::user_shutdown);
}

TEST(AgentMonitors, AKilledAgentLeavesNothingOnTheSessionsAttachedToIt) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto session = sys.spawn(long_lived, 0);
  auto directory = sys.spawn(long_lived, 0);
  auto agent = spawn_test_agent(sys, directory, directory);
  caf::anon_send(agent, subscribe_atom::value, session);
  EXPECT_EQ(references_left(sys, std::move(agent), kill_it), 1u);
  for (auto& a : {session, directory})
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
}

TEST(AgentMonitors, AnAgentKilledMidCallLeavesNothingOnItsWorker) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto directory = sys.spawn(long_lived, 0);
  // A worker that takes the call and never answers; a router that hands it out.
  auto worker = sys.spawn(long_lived, 0);
  auto called = std::make_shared<std::promise<void>>();
  // Spawned with arguments: see long_lived.
  auto router = sys.spawn(
      [](caf::event_based_actor*, caf::actor worker,
         std::shared_ptr<std::promise<void>> called) -> caf::behavior {
        return {[=](infer_atom, infer_job&) -> caf::result<caf::actor, std::string> {
          called->set_value();
          return {worker, std::string{"w1"}};
        }};
      },
      worker, called);
  auto agent = spawn_test_agent(sys, router, directory);
  auto* ctrl = caf::actor_cast<caf::actor_control_block*>(agent);
  auto before = ctrl->weak_refs.load();
  auto requester = sys.spawn(long_lived, 0);
  caf::anon_send(agent, send_atom::value, std::string{"r1"}, std::string{"hi"}, requester);
  ASSERT_EQ(called->get_future().wait_for(10s), std::future_status::ready);
  // The agent has taken the call once its monitor on the worker (a weak
  // reference to the agent) exists.
  auto give_up = std::chrono::steady_clock::now() + 10s;
  while (ctrl->weak_refs <= before && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(1ms);
  ASSERT_GT(ctrl->weak_refs.load(), before) << "the agent never monitored its worker";
  EXPECT_EQ(references_left(sys, std::move(agent), kill_it), 1u);
  for (auto& a : {directory, worker, router, requester})
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
}
