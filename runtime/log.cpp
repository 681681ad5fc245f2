#include "runtime/log.hpp"

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace troupe::runtime::log {

namespace {

std::atomic<bool> json_mode{false};
std::atomic<level> min_level{level::info};
std::mutex out_mutex;

const char* name(level l) {
  switch (l) {
  case level::debug:
    return "debug";
  case level::info:
    return "info";
  case level::warn:
    return "warn";
  case level::error:
    return "error";
  }
  return "info";
}

std::string timestamp() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms.count()));
  return buf;
}

bool needs_quotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v)
    if (c == ' ' || c == '"' || c == '=' || c == '\n' || c == '\t') return true;
  return false;
}

} // namespace

void set_json(bool json) {
  json_mode = json;
}
void set_level(level min) {
  min_level = min;
}

bool parse_level(std::string_view text, level& out) {
  for (auto l : {level::debug, level::info, level::warn, level::error})
    if (text == name(l)) {
      out = l;
      return true;
    }
  return false;
}

void write(level lvl, std::string_view subsystem, std::string_view event,
           std::initializer_list<field> fields) {
  if (lvl < min_level.load(std::memory_order_relaxed)) return;
  std::string line;
  if (json_mode) {
    nlohmann::json j{
        {"ts", timestamp()}, {"level", name(lvl)}, {"sub", subsystem}, {"event", event}};
    for (auto& [k, v] : fields)
      j[std::string{k}] = v;
    line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    line = timestamp();
    line += ' ';
    line += name(lvl);
    line += ' ';
    line += subsystem;
    line += ' ';
    line += event;
    for (auto& [k, v] : fields) {
      line += ' ';
      line += k;
      line += '=';
      if (needs_quotes(v))
        line += nlohmann::json(v).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      else
        line += v;
    }
  }
  line += '\n';
  std::lock_guard<std::mutex> guard{out_mutex};
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

} // namespace troupe::runtime::log
