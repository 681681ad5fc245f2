#pragma once

#include "runtime/config.hpp"
#include "runtime/history_store.hpp"
#include "runtime/ids.hpp"
#include "runtime/tool.hpp"

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <memory>

namespace troupe::actors {

/// What every agent of a node shares.
struct agent_context {
  std::shared_ptr<runtime::history_store> store;
  caf::actor router;
  caf::actor directory;
  std::string node;
  runtime::limits_config limits;
};

/// Spawns one agent activation with the history it had. The agent runs one
/// turn at a time (the reasoning loop: model call, tool calls, repeat up to
/// `max_steps`) and queues up to `limits.max_pending_turns` more.
///
/// Protocol:
///  - `(send_atom, id, text, requester)`: a turn whose events go to the
///    requester and every subscriber as `(event_atom, event_ptr)`.
///  - `(ask_atom, text, caller)` -> `turn_result`: a turn for REST and the
///    `agent` tool; `caller` is the asking agent ("" for none).
///  - `(subscribe_atom, actor)` / `(unsub_atom, actor)`: event subscribers.
///  - `(cancel_atom, id)`: cancels that turn, aborting the model call.
/// On exit every open turn ends with an `error` event, never silently.
caf::actor spawn_agent(caf::actor_system& sys, runtime::agent_id id,
                       std::shared_ptr<const runtime::agent_type> type,
                       std::vector<runtime::chat_message> history, agent_context ctx);

} // namespace troupe::actors
