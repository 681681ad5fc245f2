#pragma once

#include "actors/frame_sink.hpp"
#include "runtime/principal.hpp"

#include <caf/fwd.hpp>

#include <memory>
#include <string>

namespace troupe::runtime {
class key_quotas;
}

namespace troupe::actors {

/// Spawns the actor for one WebSocket connection. It decodes the client's
/// frames (`(frame_atom, text)`), talks to agents through `directory`, and
/// owns the connection's writes: every event for this client goes through
/// it to `sink`. With `fixed_type` set (`/ws/{type}`) it spawns one agent of
/// that type and plain text frames are messages to it.
///
/// It acts for `who` (agents it spawns are its; a scoped principal reaches
/// only those) and, with `quotas`, spends `who`'s request rate and turn
/// slots (`limit_exceeded` when they run out).
///
/// `(shutdown_atom)` cancels the client's open requests and closes the
/// connection once each has ended (or after a grace period).
caf::actor spawn_ws_session(caf::actor_system& sys, std::shared_ptr<frame_sink> sink,
                            caf::actor directory, std::string node, std::string fixed_type,
                            runtime::principal who = {},
                            std::shared_ptr<runtime::key_quotas> quotas = {});

} // namespace troupe::actors
