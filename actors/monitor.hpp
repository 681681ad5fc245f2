#pragma once

#include <caf/actor_addr.hpp>
#include <caf/actor_cast.hpp>

namespace troupe::actors {

/// `self->monitor(whom)`, undone when `self` ends. CAF 0.17 keeps a monitor
/// on the monitored actor until that one ends, and the monitor's reference
/// to `self` pins all of `self`'s memory: a short-lived actor watching a
/// long-lived one (a shared call its router, a relay its hub) would stay in
/// memory for the other's whole life. Call from `self`'s own context.
template <class Self, class Handle> void monitor_while_alive(Self* self, const Handle& whom) {
  self->monitor(whom);
  self->attach_functor(
      [self, addr = caf::actor_cast<caf::actor_addr>(whom)] { self->demonitor(addr); });
}

} // namespace troupe::actors
