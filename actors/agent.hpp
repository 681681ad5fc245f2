#pragma once

#include "runtime/config.hpp"
#include "runtime/state_store.hpp"
#include "runtime/ids.hpp"
#include "runtime/tool.hpp"

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <memory>

namespace troupe::actors {

/// What every agent of a node shares.
class agent_placement;
class mcp_catalog;

struct agent_context {
  std::shared_ptr<runtime::state_store> store;
  caf::actor router;
  caf::actor directory;
  std::string node;
  runtime::limits_config limits;
  /// Idle activations passivate after this long (0 = never).
  std::chrono::milliseconds idle_timeout{0};
  /// Cluster placement; null on a single node.
  std::shared_ptr<agent_placement> placement;
  /// MCP tools this node can call; null without `mcp.servers`.
  std::shared_ptr<const mcp_catalog> mcp;
};

/// Spawns one agent activation with the history it had and the turns a
/// crash cut (`resume`, run first). The agent runs one turn at a time (the
/// reasoning loop: model call, tool calls, repeat up to `max_steps`) and
/// queues up to `limits.max_pending_turns` more. Write-ahead: the user
/// message and the request are stored before a turn runs, each step when it
/// completes, the outcome when it ends. Idle past `ctx.idle_timeout` with no
/// subscribers, it asks the directory to passivate it and stops.
///
/// Protocol:
///  - `(send_atom, id, text, requester)`: a turn whose events go to the
///    requester and every subscriber as `(event_atom, event_ptr)`. `id` is an
///    idempotency key: the same id and text again joins the running turn or
///    replays its stored outcome instead of running twice.
///  - `(ask_atom, text, caller)` -> `turn_result`: a turn for REST and the
///    `agent` tool; `caller` is the asking agent ("" for none).
///  - `(subscribe_atom, actor)` / `(unsub_atom, actor)`: event subscribers.
///  - `(cancel_atom, id)`: cancels that turn, aborting the model call.
///  - `(drain_atom)`: finish the queued turns, then passivate (node drain).
/// On exit every open turn ends with an `error` event, never silently.
caf::actor spawn_agent(caf::actor_system& sys, runtime::agent_id id,
                       std::shared_ptr<const runtime::agent_type> type,
                       std::vector<runtime::chat_message> history,
                       std::vector<runtime::request_entry> resume,
                       std::shared_ptr<const agent_context> ctx);

} // namespace troupe::actors
