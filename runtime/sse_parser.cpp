#include "runtime/sse_parser.hpp"

namespace troupe::runtime {

bool sse_parser::feed(std::string_view bytes) {
  if (overflowed_) return false;
  for (char c : bytes) {
    if (skip_lf_) {
      skip_lf_ = false;
      if (c == '\n') continue;
    }
    if (c == '\r' || c == '\n') {
      skip_lf_ = c == '\r';
      process_line(line_);
      line_.clear();
      continue;
    }
    if (line_.size() >= max_line_) {
      overflowed_ = true;
      return false;
    }
    line_.push_back(c);
  }
  return true;
}

void sse_parser::process_line(std::string_view line) {
  if (line.empty()) {
    if (has_data_) {
      auto ev = std::move(pending_);
      pending_ = sse_event{};
      has_data_ = false;
      on_event_(std::move(ev));
    } else {
      pending_.event.clear();
    }
    return;
  }
  if (line.front() == ':') return; // comment, e.g. a keep-alive
  std::string_view field = line;
  std::string_view value;
  if (auto colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    if (has_data_) pending_.data.push_back('\n');
    pending_.data.append(value);
    has_data_ = true;
  } else if (field == "event") {
    pending_.event = std::string{value};
  } else if (field == "id") {
    pending_.id = std::string{value};
  }
  // `retry` and unknown fields are ignored, as the spec says.
}

} // namespace troupe::runtime
