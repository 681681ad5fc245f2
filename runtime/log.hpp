#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace troupe::runtime::log {

enum class level { debug, info, warn, error };

/// Process-wide settings; set once at start, before other threads log.
void set_json(bool json);
void set_level(level min);
bool parse_level(std::string_view text, level& out);

using field = std::pair<std::string_view, std::string>;

/// Writes one line: `TIME LEVEL subsystem event key=value ...`, or one JSON
/// object per line with `--log-json`. Thread-safe; lines never interleave.
void write(level lvl, std::string_view subsystem, std::string_view event,
           std::initializer_list<field> fields = {});

inline void debug(std::string_view sub, std::string_view ev, std::initializer_list<field> f = {}) {
  write(level::debug, sub, ev, f);
}
inline void info(std::string_view sub, std::string_view ev, std::initializer_list<field> f = {}) {
  write(level::info, sub, ev, f);
}
inline void warn(std::string_view sub, std::string_view ev, std::initializer_list<field> f = {}) {
  write(level::warn, sub, ev, f);
}
inline void error(std::string_view sub, std::string_view ev, std::initializer_list<field> f = {}) {
  write(level::error, sub, ev, f);
}

} // namespace troupe::runtime::log
