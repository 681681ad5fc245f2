#pragma once

#include "runtime/ids.hpp"
#include "runtime/llm.hpp"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace troupe::runtime {

/// A stored agent: its identity and conversation so far.
struct agent_record {
  agent_id id;
  std::vector<chat_message> history;
};

/// Where agents keep their conversations. Thread-safe: every agent actor
/// calls it. This issue ships the in-memory store; SQLite and Redis stores
/// implement the same interface (DESIGN.md "State and supervision").
class history_store {
public:
  virtual ~history_store() = default;

  /// Creates an empty record; false if it exists already.
  virtual bool create(const agent_id& id) = 0;
  virtual std::optional<agent_record> load(const agent_id& id) = 0;
  virtual void append(const agent_id& id, const chat_message& msg) = 0;
  virtual bool erase(const agent_id& id) = 0;
  virtual std::vector<agent_id> list() = 0;
};

std::shared_ptr<history_store> make_memory_history_store();

} // namespace troupe::runtime
