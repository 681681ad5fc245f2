#pragma once

#include "actors/worker_status.hpp"
#include "runtime/errc.hpp"
#include "runtime/llm.hpp"
#include "runtime/state_store.hpp"
#include "runtime/tool.hpp"
#include "runtime/ws_protocol.hpp"

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/error.hpp>

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

namespace troupe::actors {

/// One model call handed to the router and then to a worker. The worker
/// streams `(token_atom, job, text)` and ends with `(done_atom, job,
/// chat_result)` or `(fail_atom, job, failure, started, worker_id)` to `sink`.
struct infer_job {
  uint64_t job = 0;
  runtime::chat_request request;
  caf::actor sink;
  /// Workers that already failed this job before its first token.
  std::vector<std::string> exclude;
};

/// The end of one agent turn, for callers that wait for it (REST, agent tool).
struct turn_result {
  std::string agent;
  std::string answer;
  runtime::usage tokens;
  int64_t steps = 0;
};

/// An async job as a session sees it when a client attaches to it.
struct job_view {
  runtime::job_record job;
  caf::actor agent; // its activation, when the job is not finished
};

/// True when the process was started with TROUPE_FAULT_INJECTION=1: tests
/// may then crash actors on purpose (`crash_atom`). Off in production.
bool fault_injection_enabled();

/// Builds a CAF error carrying one of the protocol's codes and a reason.
caf::error make_error(runtime::errc code, std::string reason);

/// For `set_exception_handler`: an exception escaping a handler becomes an
/// `internal` error carrying its message, so logs and `/health` say what broke.
caf::error exception_to_error(std::exception_ptr& eptr);

/// Maps any CAF error (ours, a timeout, a dead receiver) to a protocol failure.
runtime::failure to_failure(const caf::error& err);

} // namespace troupe::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::infer_job)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::worker_info)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::worker_load)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::worker_status)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::turn_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::job_view)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<troupe::actors::worker_status>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::runtime::chat_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::runtime::failure)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::runtime::event_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::runtime::errc)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::runtime::tool_outcome)
