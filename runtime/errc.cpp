#include "runtime/errc.hpp"

namespace troupe::runtime {

std::string_view to_string(errc code) {
  switch (code) {
  case errc::success:
    return "success";
  case errc::bad_request:
    return "bad_request";
  case errc::unauthorized:
    return "unauthorized";
  case errc::unknown_type:
    return "unknown_type";
  case errc::unknown_agent:
    return "unknown_agent";
  case errc::overloaded:
    return "overloaded";
  case errc::backend_unavailable:
    return "backend_unavailable";
  case errc::cancelled:
    return "cancelled";
  case errc::timeout:
    return "timeout";
  case errc::limit_exceeded:
    return "limit_exceeded";
  case errc::internal:
    return "internal";
  }
  return "internal";
}

errc errc_from_string(std::string_view name) {
  for (int i = 0; i <= static_cast<int>(errc::internal); ++i)
    if (to_string(static_cast<errc>(i)) == name) return static_cast<errc>(i);
  return errc::internal;
}

int http_status(errc code) {
  switch (code) {
  case errc::success:
    return 200;
  case errc::bad_request:
    return 400;
  case errc::unauthorized:
    return 401;
  case errc::unknown_type:
  case errc::unknown_agent:
    return 404;
  case errc::overloaded:
  case errc::limit_exceeded:
    return 429;
  case errc::backend_unavailable:
    return 503;
  case errc::cancelled:
    return 499;
  case errc::timeout:
    return 504;
  case errc::internal:
    return 500;
  }
  return 500;
}

} // namespace troupe::runtime
