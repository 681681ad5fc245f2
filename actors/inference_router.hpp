#pragma once

#include "actors/messages.hpp"
#include "runtime/config.hpp"

#include <caf/fwd.hpp>

#include <string>
#include <vector>

namespace troupe::actors {

/// Spawns the router: it picks a worker for every `(infer_atom, infer_job)`
/// by model served, the agent type's accelerator preference, free slots and
/// queue depth, and session affinity (`request.affinity_key` returns to the
/// worker it used last while that worker has room, so the server's prefix
/// cache is reused). A worker that refuses makes it try the next.
/// Replies `(caf::actor worker, std::string worker_id)` or an error.
/// `(stats_atom)` -> `std::vector<worker_status>`; `(lookup_atom, id)` ->
/// the local worker `id`. Remote workers register through their proxies
/// (cluster) like local ones, with `worker_info::node` set. The affinity table holds
/// at most `max_affinity_entries` keys; it starts over when full.
///
/// Requests with `cacheable` set share answers: an identical request gets
/// the stored answer (replayed as tokens, the router as its worker), or
/// joins the identical call in flight (`shared_call`); `cache` bounds what
/// is kept.
caf::actor spawn_inference_router(caf::actor_system& sys,
                                  size_t max_affinity_entries = size_t{1} << 20,
                                  runtime::response_cache_limits cache = {});

/// Orders candidates; exposed for unit tests. Returns indexes into `ws`.
std::vector<size_t> rank_workers(const std::vector<worker_status>& ws, const infer_job& job,
                                 const std::string& affinity_worker);

} // namespace troupe::actors
