#pragma once

#include "runtime/state_store.hpp"

#include <caf/fwd.hpp>

#include <chrono>
#include <memory>
#include <string>

namespace troupe::actors {

/// Spawns the node's job runner: it claims async jobs from the store (up to
/// `max_running` at once), runs each as an agent turn through `directory`,
/// and stores the outcome. The job id is the turn's request id, so a job
/// re-run after a crash joins or replays its turn instead of running twice.
/// Claims last `visibility`; a job whose node died is claimed again after
/// that. At start it takes back the jobs its node was running.
///
/// `(tick_atom)` makes it look for work now (after `POST .../jobs`).
caf::actor spawn_job_runner(caf::actor_system& sys, std::shared_ptr<runtime::state_store> store,
                            caf::actor directory, std::string node, size_t max_running,
                            std::chrono::milliseconds visibility);

} // namespace troupe::actors
