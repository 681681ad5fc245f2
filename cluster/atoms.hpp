#pragma once

#include "cluster/wire.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

#include <memory>

/// Every atom and message type of the cluster subsystem, declared once.
namespace troupe::cluster {

struct cluster_view;

using peer_frame_atom = caf::atom_constant<caf::atom("pframe")>;
using view_atom = caf::atom_constant<caf::atom("view")>;
using peer_down_atom = caf::atom_constant<caf::atom("peerdown")>;
/// `(watch_atom, hub)`: end when the hub that routes your frames ends.
using watch_atom = caf::atom_constant<caf::atom("watch")>;

/// One frame from a peer, envelope decoded, payload still MessagePack: the
/// actor it is for decodes it.
struct peer_frame {
  envelope env;
  std::string payload;
};

using view_ptr = std::shared_ptr<const cluster_view>;

/// Counts (and logs, once per source) a frame whose payload decoded but
/// held fields of the wrong types.
void drop_malformed_frame(const peer_frame& f, const char* why);

/// Runs `handle` for frame `f`. A payload with mistyped fields makes
/// nlohmann throw where it is read; that frame is dropped and counted
/// instead of ending the actor (and the requests it holds) that reads it.
template <class F> void guarded(const peer_frame& f, F&& handle) {
  try {
    handle();
  } catch (const nlohmann::json::exception& e) {
    drop_malformed_frame(f, e.what());
  }
}

} // namespace troupe::cluster

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::cluster::peer_frame)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::cluster::view_ptr)
