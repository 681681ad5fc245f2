#pragma once

#include "runtime/ids.hpp"
#include "runtime/llm.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace troupe::runtime {

/// A stored agent: its identity and conversation so far.
struct agent_record {
  agent_id id;
  std::vector<chat_message> history;
  /// The principal that created it ("" = nobody's), as `owner_of` says:
  /// one read gives an activation both.
  std::string owner;
};

enum class request_state { running, done, failed };

/// One entry of the request log, keyed by (agent, client request id). It
/// makes a retried `send` idempotent and tells which turns a crash cut.
struct request_entry {
  std::string id;
  std::string text;
  request_state state = request_state::running;
  /// JSON: `{"answer","usage","steps"}` when done, `{"code","message"}` when failed.
  std::string outcome;
};

enum class job_state { queued, running, done, failed };

std::string_view to_string(job_state s);

/// One async job (`POST /api/{type}/jobs`): a message for an agent, run by
/// whichever node claims it. `outcome` is as in `request_entry`.
struct job_record {
  std::string id;
  agent_id agent;
  std::string message;
  job_state state = job_state::queued;
  std::string outcome;
  std::string claimed_by; // node that runs it
  int64_t attempts = 0;
};

/// A store that cannot do its job (disk full, corrupt file, newer schema).
struct store_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Where agents keep their conversations and the request log (DESIGN.md
/// "State and supervision"). Thread-safe: every agent actor calls it.
/// Failures throw `store_error`; the calling actor dies and is reactivated
/// from what was stored.
class state_store {
public:
  virtual ~state_store() = default;

  // -- agents -----------------------------------------------------------------

  /// Creates an empty record owned by `owner`, the API key (principal) that
  /// spawned it ("" = none: auth is off, or an agent made by the runtime);
  /// false if it exists already (its owner stays).
  virtual bool create(const agent_id& id, const std::string& owner) = 0;
  bool create(const agent_id& id) { return create(id, {}); }
  /// The agent's owner ("" = none), or nullopt when there is no such agent.
  virtual std::optional<std::string> owner_of(const agent_id& id) = 0;
  /// The agents `owner` (not "") created, in no particular order.
  virtual std::vector<agent_id> list_owned(const std::string& owner) = 0;
  /// How many agents `owner` has: checked on every spawn with a key, so
  /// stores answer it without listing them.
  virtual size_t count_owned(const std::string& owner) { return list_owned(owner).size(); }
  /// True when the agent is stored; cheaper than `load` where it matters.
  virtual bool exists(const agent_id& id) { return load(id).has_value(); }
  virtual std::optional<agent_record> load(const agent_id& id) = 0;
  /// Appends one message to an agent's history (creating the record if needed).
  virtual void append(const agent_id& id, const chat_message& msg) = 0;
  /// Removes the agent, its history and its request log.
  virtual bool erase(const agent_id& id) = 0;
  virtual std::vector<agent_id> list() = 0;

  // -- request log ------------------------------------------------------------

  /// Write-ahead for a turn: records request `request_id` as running and
  /// appends the user message, atomically.
  virtual void begin_turn(const agent_id& id, const std::string& request_id,
                          const std::string& text) = 0;
  virtual void finish_turn(const agent_id& id, const std::string& request_id, request_state state,
                           const std::string& outcome) = 0;
  virtual std::optional<request_entry> find_request(const agent_id& id,
                                                    const std::string& request_id) = 0;
  /// Turns still marked running, oldest first: cut by a crash if no live
  /// activation is running them.
  virtual std::vector<std::pair<agent_id, request_entry>> open_turns() = 0;
  /// Forgets up to `limit` finished requests (done or failed) last written
  /// before `before_ms` (ms since the Unix epoch); a retry of one runs again.
  /// Running ones stay: a cut turn resumes from its entry. Returns how many
  /// went; fewer than `limit` means none older is left.
  virtual size_t expire_requests(int64_t before_ms, size_t limit) = 0;

  // -- async jobs -------------------------------------------------------------

  virtual void enqueue_job(const job_record& job) = 0;
  /// Claims the oldest queued job, or a running one whose claim expired
  /// (its node died), for `visibility`. Marks it running by `owner`.
  virtual std::optional<job_record> claim_job(const std::string& owner,
                                              std::chrono::milliseconds visibility) = 0;
  virtual void finish_job(const std::string& id, job_state state, const std::string& outcome) = 0;
  virtual std::optional<job_record> find_job(const std::string& id) = 0;
  /// Puts `owner`'s running jobs back in the queue: at start, a node takes
  /// back what its previous incarnation was running. Returns how many.
  virtual size_t requeue_jobs_of(const std::string& owner) = 0;

  /// "sqlite ./data/troupe.db" or "memory", for logs.
  virtual std::string describe() const = 0;
};

/// Now, in ms since the Unix epoch: the clock of the stores' timestamps
/// (`updated_ms`, claims) and of `expire_requests`' cutoff. Any thread.
inline int64_t store_clock_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::shared_ptr<state_store> make_memory_state_store();

/// Opens (creating if needed) a SQLite store in WAL mode. A file written by
/// a newer schema version is refused with a `store_error` saying so.
std::shared_ptr<state_store> make_sqlite_state_store(const std::string& path);

/// Connects to a Redis store (`redis://host:port/db`), the store every node
/// of a cluster shares. Unreachable at start: `store_error`. A connection
/// lost later is re-made on the next call; a call that still fails throws.
std::shared_ptr<state_store> make_redis_state_store(const std::string& url);

/// The schema version this build writes.
constexpr int state_schema_version = 1;

} // namespace troupe::runtime
