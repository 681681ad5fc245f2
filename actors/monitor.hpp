#pragma once

#include <caf/actor_addr.hpp>
#include <caf/actor_cast.hpp>
#include <caf/local_actor.hpp>

#include <set>

namespace troupe::actors {

// CAF 0.17 keeps a monitor on the monitored actor until that one ends, and
// the monitor's reference to the observer pins all of the observer's memory.
// An observer that ends first must undo its monitors itself, or a
// long-lived actor collects the memory of every short-lived one that ever
// watched it. The two helpers below do that.

/// `self->monitor(whom)`, undone when `self` ends: for an actor that watches
/// a fixed few (a shared call its router, a relay its hub). Each call adds an
/// attachable to `self` for its lifetime. Call from `self`'s own context.
template <class Self, class Handle> void monitor_while_alive(Self* self, const Handle& whom) {
  self->monitor(whom);
  self->attach_functor(
      [self, addr = caf::actor_cast<caf::actor_addr>(whom)] { self->demonitor(addr); });
}

/// The monitors an actor holds on a changing set of others, undone when this
/// goes: a member of the actor's state, which CAF destroys when the actor
/// ends (on crash and kill too). Used only from the owning actor's context.
class monitor_set {
public:
  explicit monitor_set(caf::local_actor* self) : self_(self) {}
  monitor_set(const monitor_set&) = delete;
  monitor_set& operator=(const monitor_set&) = delete;
  ~monitor_set() {
    for (auto& a : watched_)
      self_->demonitor(a);
  }

  /// Monitors `whom` unless it already is; false if it was.
  template <class Handle> bool add(const Handle& whom) {
    if (!watched_.insert(caf::actor_cast<caf::actor_addr>(whom)).second) return false;
    self_->monitor(whom);
    return true;
  }

  /// Forgets `whom` after its down message: nothing is left to undo.
  void forget(const caf::actor_addr& whom) { watched_.erase(whom); }

private:
  caf::local_actor* self_;
  std::set<caf::actor_addr> watched_;
};

} // namespace troupe::actors
