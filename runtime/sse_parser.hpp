#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace troupe::runtime {

/// One Server-Sent Event.
struct sse_event {
  std::string event; // empty = "message"
  std::string data;  // `data:` lines joined by '\n'
  std::string id;
};

/// Incremental parser for `text/event-stream` (WHATWG HTML, "Server-sent
/// events"). Bytes may arrive split anywhere, lines end in LF, CRLF or CR,
/// `:` lines are comments. A blank line dispatches the pending event.
/// Not thread-safe; owned by one stream.
class sse_parser {
public:
  using handler = std::function<void(sse_event&&)>;

  /// `max_line` bounds the memory a peer that never ends a line can take.
  explicit sse_parser(handler on_event, size_t max_line = 4 * 1024 * 1024)
      : on_event_(std::move(on_event)), max_line_(max_line) {}

  /// Feeds bytes. Returns false once a line exceeded `max_line`; the
  /// parser then ignores further input.
  bool feed(std::string_view bytes);

  /// True after a line longer than `max_line`.
  bool overflowed() const { return overflowed_; }

private:
  void process_line(std::string_view line);

  handler on_event_;
  size_t max_line_;
  std::string line_;
  sse_event pending_;
  bool has_data_ = false;
  bool skip_lf_ = false; // last byte was CR: a following LF belongs to it
  bool overflowed_ = false;
};

} // namespace troupe::runtime
