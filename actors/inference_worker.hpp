#pragma once

#include "runtime/config.hpp"

#include <caf/fwd.hpp>

#include <memory>

namespace troupe::actors {

class backend;

/// Spawns the worker for one accelerator entry. It runs up to `slots` model
/// calls at once and queues up to `max_queue` more; beyond that it answers
/// `overloaded`. It health-checks its backend, reports its load to `router`
/// on every change, and registers itself with the router on start.
///
/// Protocol: `(infer_atom, infer_job)` -> worker id or error;
/// `(cancel_atom, job)` from the job's sink aborts that job. The sink gets
/// `(token_atom, job, text)` straight from the backend's thread, then
/// `(done_atom, job, chat_result)` from the worker, or `(fail_atom, ...)`.
caf::actor spawn_inference_worker(caf::actor_system& sys, runtime::accelerator_config cfg,
                                  std::shared_ptr<backend> be, caf::actor router);

} // namespace troupe::actors
