#include "actors/messages.hpp"

#include <caf/atom.hpp>
#include <caf/make_message.hpp>
#include <caf/sec.hpp>

#include <cstdlib>
#include <stdexcept>

namespace troupe::actors {

namespace {
constexpr auto troupe_category = caf::atom("troupe");
} // namespace

bool fault_injection_enabled() {
  static const bool enabled = [] {
    auto v = std::getenv("TROUPE_FAULT_INJECTION");
    return v && std::string{v} == "1";
  }();
  return enabled;
}

caf::error make_error(runtime::errc code, std::string reason) {
  return caf::error{static_cast<uint8_t>(code), troupe_category,
                    caf::make_message(std::move(reason))};
}

caf::error exception_to_error(std::exception_ptr& eptr) {
  try {
    std::rethrow_exception(eptr);
  } catch (const std::exception& e) {
    return make_error(runtime::errc::internal, e.what());
  } catch (...) {
    return make_error(runtime::errc::internal, "unknown exception");
  }
}

runtime::failure to_failure(const caf::error& err) {
  if (err.category() == troupe_category) {
    std::string reason;
    if (err.context().match_elements<std::string>()) reason = err.context().get_as<std::string>(0);
    return {static_cast<runtime::errc>(err.code()), reason};
  }
  if (err == caf::sec::request_timeout) return {runtime::errc::timeout, "request timed out"};
  if (err == caf::sec::request_receiver_down)
    return {runtime::errc::unknown_agent, "the receiver is gone"};
  return {runtime::errc::internal, caf::to_string(err)};
}

} // namespace troupe::actors
