#pragma once

#include <string>
#include <string_view>

namespace troupe::runtime {

/// Error codes of the public protocol (DESIGN.md "Public API"). Every
/// subsystem's failures map onto these in one place before reaching a client.
enum class errc {
  success = 0,
  bad_request,
  unauthorized,
  unknown_type,
  unknown_agent,
  overloaded,
  backend_unavailable,
  cancelled,
  timeout,
  limit_exceeded, // a per-key limit (agents, turns, connections, rate)
  internal,       // last: errc_from_string iterates up to it
};

/// The wire name of a code, e.g. "backend_unavailable".
std::string_view to_string(errc code);

/// The code for a wire name; `internal` for an unknown one.
errc errc_from_string(std::string_view name);

/// HTTP status a REST reply carries for a code.
int http_status(errc code);

/// A failure with a code and a human-readable reason.
struct failure {
  errc code = errc::internal;
  std::string_view what() const { return message; }
  std::string message;
};

} // namespace troupe::runtime
