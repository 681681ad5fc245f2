#pragma once

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace troupe::actors {

/// The current incarnation of a supervised child. Its start function sets
/// it; the child's stable address reads it. Thread-safe.
class incarnation_cell {
public:
  void set(caf::actor hdl) {
    std::lock_guard<std::mutex> guard{mutex_};
    current_ = std::move(hdl);
  }
  caf::actor get() const {
    std::lock_guard<std::mutex> guard{mutex_};
    return current_;
  }
  /// Blocks (briefly) until the first incarnation is set: a supervisor
  /// starts its children in its own first step, and nothing sent at node
  /// start should have to wait for it. Not from an actor.
  void wait_for_first(std::chrono::milliseconds limit) const {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!get() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  /// Forgets the incarnation `gone` if it is still the current one.
  void clear_if(const caf::actor_addr& gone) {
    std::lock_guard<std::mutex> guard{mutex_};
    if (current_ && current_.address() == gone) current_ = nullptr;
  }

private:
  mutable std::mutex mutex_;
  caf::actor current_;
};

/// Spawns a stable address for a supervised child, as Erlang's registered
/// names give one: everything sent to it is delegated to the child's
/// current incarnation with the original sender and request id, so replies
/// come from the child itself. Holders of the address never see the child
/// restart: what arrives while no incarnation runs waits (in order, up to
/// 10,000 messages for up to 3 s) for the next one; past that, a request
/// gets an `internal` error ("not running": its supervisor gave up) and a
/// plain message is dropped. It stops on an exit message.
caf::actor spawn_stable_address(caf::actor_system& sys, std::shared_ptr<incarnation_cell> cell,
                                std::string name);

} // namespace troupe::actors
