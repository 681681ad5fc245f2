#pragma once

#include <caf/atom.hpp>

/// Every atom of the actors subsystem, declared once.
namespace troupe::actors {

using infer_atom = caf::atom_constant<caf::atom("infer")>;
using token_atom = caf::atom_constant<caf::atom("token")>;
using done_atom = caf::atom_constant<caf::atom("done")>;
using fail_atom = caf::atom_constant<caf::atom("fail")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
using register_atom = caf::atom_constant<caf::atom("register")>;
using load_atom = caf::atom_constant<caf::atom("load")>;
using health_atom = caf::atom_constant<caf::atom("health")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using send_atom = caf::atom_constant<caf::atom("send")>;
using ask_atom = caf::atom_constant<caf::atom("ask")>;
using event_atom = caf::atom_constant<caf::atom("event")>;
using subscribe_atom = caf::atom_constant<caf::atom("subscribe")>;
using unsub_atom = caf::atom_constant<caf::atom("unsub")>;
using spawn_atom = caf::atom_constant<caf::atom("spawn")>;
using lookup_atom = caf::atom_constant<caf::atom("lookup")>;
using kill_atom = caf::atom_constant<caf::atom("kill")>;
using list_atom = caf::atom_constant<caf::atom("list")>;
using frame_atom = caf::atom_constant<caf::atom("frame")>;
using binary_atom = caf::atom_constant<caf::atom("binary")>;
using tool_atom = caf::atom_constant<caf::atom("tool")>;
using timeout_atom = caf::atom_constant<caf::atom("timeout")>;
using stats_atom = caf::atom_constant<caf::atom("stats")>;
using shutdown_atom = caf::atom_constant<caf::atom("shutdown")>;
using idle_atom = caf::atom_constant<caf::atom("idle")>;
using passivate_atom = caf::atom_constant<caf::atom("passivate")>;
using crash_atom = caf::atom_constant<caf::atom("crash")>;
using job_atom = caf::atom_constant<caf::atom("job")>;
using drain_atom = caf::atom_constant<caf::atom("drain")>;
using join_atom = caf::atom_constant<caf::atom("join")>;
using worker_atom = caf::atom_constant<caf::atom("worker")>;
using forget_atom = caf::atom_constant<caf::atom("forget")>;

} // namespace troupe::actors
