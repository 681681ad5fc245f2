#pragma once

#include "actors/agent.hpp"
#include "runtime/tool.hpp"

#include <caf/fwd.hpp>

#include <memory>

namespace troupe::actors {

class incarnation_cell;

/// Spawns the node's agent directory: it knows every agent activation on
/// the node, creates agents, activates stored ones on first use (virtual
/// agents) and kills them.
///
/// Protocol:
///  - `(spawn_atom, type, key)` -> (agent id, hosting node); an empty key gets a
///    fresh one; spawning an existing agent returns it (idempotent).
///  - `(lookup_atom, agent)` -> `caf::actor`, activating it if stored; in a
///    cluster possibly a proxy for its activation on another node.
///  - `(lookup_atom, agent, true)`: activate it here or fail (a peer asks).
///  - `(ask_atom, agent, text, caller)` -> `turn_result` (delegated).
///  - `(kill_atom, agent)` -> `true`; the agent's open turns end in `error`.
///  - `(list_atom)` -> `std::vector<std::string>` of stored agents.
///  - `(drain_atom)` -> `true` once every local activation finished its
///    turns and passivated; no new one starts here (cluster drain).
///
/// `cell`: the incarnation cell its stable address reads (may be null). A
/// directory that ends clears it before its activations hear of the end, so
/// that what they and their sessions send next waits for the next
/// incarnation instead of reaching this one, gone.
caf::actor spawn_agent_directory(caf::actor_system& sys,
                                 std::shared_ptr<const runtime::agent_type_registry> types,
                                 agent_context ctx,
                                 std::shared_ptr<incarnation_cell> cell = nullptr);

} // namespace troupe::actors
