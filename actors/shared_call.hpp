#pragma once

#include <caf/fwd.hpp>

#include <cstdint>
#include <string>

namespace troupe::actors {

/// One model call whose answer several agents wait for: identical requests
/// of agent types with `response_cache: true`, coalesced by the router. It
/// is the call's sink: every token and the end go to each waiting agent
/// under that agent's own job id, and an agent that joins late gets the
/// tokens so far first. The finished answer goes to `router` for its cache:
/// `(done_atom, key, tokens, chat_result)`, and the router then ends this
/// actor (a join that crossed the answer still gets it); a failed or
/// abandoned call sends `(forget_atom, key)` and ends itself.
///
/// Messages: `(join_atom, sink, job)` adds a waiting agent (the first is
/// the leader, whose request the router dispatches); `(worker_atom, worker)`
/// names the worker that took the call, to cancel it when every agent has
/// cancelled; `(fail_atom, failure)` says no worker took it (the leader got
/// that as the router's reply; the others get a `fail`, not started, and
/// retry); `(cancel_atom, job)` from an agent stops waiting.
caf::actor spawn_shared_call(caf::actor_system& sys, caf::actor router, std::string key,
                             uint64_t job);

} // namespace troupe::actors
