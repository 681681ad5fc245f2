#include "runtime/log.hpp"
#include "runtime/state_store.hpp"
#include "runtime/stored_message.hpp"

#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>
#include <condition_variable>

namespace troupe::runtime {

namespace {

using nlohmann::json;

/// One prepared statement, reset after each use.
class statement {
public:
  statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr) != SQLITE_OK)
      throw store_error(std::string{"sqlite prepare failed: "} + sqlite3_errmsg(db) +
                        " in: " + sql);
  }
  ~statement() { sqlite3_finalize(stmt_); }
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;

  statement& bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  statement& bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }

  /// Steps once; true while a row is available.
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE)
      throw store_error(std::string{"sqlite step failed: "} + sqlite3_errmsg(db_));
    return false;
  }
  void run() {
    step();
    reset();
  }
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  std::string text(int col) {
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p ? std::string{p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))}
             : std::string{};
  }
  int64_t integer(int col) { return sqlite3_column_int64(stmt_, col); }

private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

/// Resets a statement however the scope is left.
struct reset_on_exit {
  statement& s;
  ~reset_on_exit() { s.reset(); }
};

class sqlite_state_store final : public state_store {
public:
  explicit sqlite_state_store(const std::string& path) : path_(path) {
    auto parent = std::filesystem::path(path).parent_path();
    std::error_code ec;
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    if (sqlite3_open_v2(path.c_str(), &db_.p,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK) {
      std::string why = db_.p ? sqlite3_errmsg(db_) : "out of memory";
      throw store_error("cannot open state store '" + path + "': " + why);
    }
    sqlite3_busy_timeout(db_, 5000);
    // WAL: a committed transaction survives the process dying at any point.
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    exec("PRAGMA foreign_keys=OFF");
    // Checkpoints (the only fsyncs in this mode) run on their own thread and
    // connection: on the committing agent's thread they stalled it, and every
    // agent behind the store's mutex, for milliseconds.
    exec("PRAGMA wal_autocheckpoint=0");
    exec("PRAGMA journal_size_limit=67108864"); // the WAL shrinks back to 64 MiB after a burst
    exec("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)");
    check_version();
    exec("CREATE TABLE IF NOT EXISTS agents(type TEXT NOT NULL, key TEXT NOT NULL, "
         "created_ms INTEGER NOT NULL, owner TEXT NOT NULL DEFAULT '', PRIMARY KEY(type, key)) "
         "WITHOUT ROWID");
    // Files written before agents had owners get the column (every agent
    // in them is unowned, as they were made without per-key scoping).
    if (!statement{db_, "SELECT 1 FROM pragma_table_info('agents') WHERE name='owner'"}.step())
      exec("ALTER TABLE agents ADD COLUMN owner TEXT NOT NULL DEFAULT ''");
    exec("CREATE INDEX IF NOT EXISTS agents_owner ON agents(owner) WHERE owner != ''");
    exec("CREATE TABLE IF NOT EXISTS messages(type TEXT NOT NULL, key TEXT NOT NULL, "
         "seq INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY(type, key, seq)) WITHOUT ROWID");
    exec("CREATE TABLE IF NOT EXISTS requests(type TEXT NOT NULL, key TEXT NOT NULL, "
         "request_id TEXT NOT NULL, text TEXT NOT NULL, state INTEGER NOT NULL, "
         "outcome TEXT NOT NULL DEFAULT '', updated_ms INTEGER NOT NULL, "
         "PRIMARY KEY(type, key, request_id)) WITHOUT ROWID");
    exec("CREATE INDEX IF NOT EXISTS requests_open ON requests(updated_ms) WHERE state = 0");
    // For expiry (`state.request_retention`): finished requests by age.
    exec("CREATE INDEX IF NOT EXISTS requests_finished ON requests(updated_ms) WHERE state != 0");
    exec("CREATE TABLE IF NOT EXISTS jobs(id TEXT PRIMARY KEY, type TEXT NOT NULL, "
         "key TEXT NOT NULL, message TEXT NOT NULL, state INTEGER NOT NULL, "
         "outcome TEXT NOT NULL DEFAULT '', claimed_by TEXT NOT NULL DEFAULT '', "
         "claimed_until_ms INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, "
         "created_ms INTEGER NOT NULL)");
    exec("CREATE INDEX IF NOT EXISTS jobs_pending ON jobs(created_ms) WHERE state <= 1");
    insert_agent_ = std::make_unique<statement>(
        db_, "INSERT OR IGNORE INTO agents(type, key, created_ms) VALUES(?1, ?2, ?3)");
    insert_owned_agent_ = std::make_unique<statement>(
        db_, "INSERT OR IGNORE INTO agents(type, key, created_ms, owner) VALUES(?1, ?2, ?3, ?4)");
    select_agent_ =
        std::make_unique<statement>(db_, "SELECT owner FROM agents WHERE type=?1 AND key=?2");
    list_owned_ = std::make_unique<statement>(db_, "SELECT type, key FROM agents WHERE owner=?1");
    count_owned_ = std::make_unique<statement>(db_, "SELECT COUNT(*) FROM agents WHERE owner=?1");
    select_messages_ = std::make_unique<statement>(
        db_, "SELECT body FROM messages WHERE type=?1 AND key=?2 ORDER BY seq");
    insert_message_ = std::make_unique<statement>(
        db_, "INSERT INTO messages(type, key, seq, body) VALUES(?1, ?2, "
             "(SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE type=?1 AND key=?2), ?3)");
    delete_agent_ = std::make_unique<statement>(db_, "DELETE FROM agents WHERE type=?1 AND key=?2");
    delete_messages_ =
        std::make_unique<statement>(db_, "DELETE FROM messages WHERE type=?1 AND key=?2");
    delete_requests_ =
        std::make_unique<statement>(db_, "DELETE FROM requests WHERE type=?1 AND key=?2");
    list_agents_ =
        std::make_unique<statement>(db_, "SELECT type, key FROM agents ORDER BY type, key");
    upsert_request_ = std::make_unique<statement>(
        db_, "INSERT INTO requests(type, key, request_id, text, state, outcome, updated_ms) "
             "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(type, key, request_id) DO UPDATE SET "
             "text=excluded.text, state=excluded.state, outcome=excluded.outcome, "
             "updated_ms=excluded.updated_ms");
    finish_request_ =
        std::make_unique<statement>(db_, "UPDATE requests SET state=?4, outcome=?5, updated_ms=?6 "
                                         "WHERE type=?1 AND key=?2 AND request_id=?3");
    find_request_ = std::make_unique<statement>(
        db_,
        "SELECT text, state, outcome FROM requests WHERE type=?1 AND key=?2 AND request_id=?3");
    insert_job_ = std::make_unique<statement>(
        db_, "INSERT INTO jobs(id, type, key, message, state, created_ms) "
             "VALUES(?1, ?2, ?3, ?4, 0, ?5)");
    pick_job_ = std::make_unique<statement>(
        db_, "SELECT id FROM jobs WHERE state = 0 OR (state = 1 AND claimed_until_ms < ?1) "
             "ORDER BY created_ms, id LIMIT 1");
    claim_job_ = std::make_unique<statement>(
        db_, "UPDATE jobs SET state = 1, claimed_by = ?2, claimed_until_ms = ?3, "
             "attempts = attempts + 1 WHERE id = ?1");
    finish_job_ =
        std::make_unique<statement>(db_, "UPDATE jobs SET state = ?2, outcome = ?3 WHERE id = ?1");
    find_job_ = std::make_unique<statement>(
        db_, "SELECT type, key, message, state, outcome, claimed_by, attempts FROM jobs "
             "WHERE id = ?1");
    requeue_jobs_ = std::make_unique<statement>(
        db_, "UPDATE jobs SET state = 0 WHERE state = 1 AND claimed_by = ?1");
    expire_requests_ = std::make_unique<statement>(
        db_, "DELETE FROM requests WHERE (type, key, request_id) IN (SELECT type, key, request_id "
             "FROM requests WHERE state != 0 AND updated_ms < ?1 ORDER BY updated_ms LIMIT ?2)");
    open_requests_ = std::make_unique<statement>(
        db_,
        "SELECT type, key, request_id, text FROM requests WHERE state = 0 ORDER BY updated_ms");
    checkpointer_ = std::thread([this] { checkpoint_loop(); });
  }

  bool create(const agent_id& id, const std::string& owner) override {
    std::lock_guard<std::mutex> guard{mutex_};
    insert_owned_agent_->bind(1, id.type)
        .bind(2, id.key)
        .bind(3, store_clock_ms())
        .bind(4, owner)
        .run();
    return sqlite3_changes(db_) > 0;
  }

  std::optional<std::string> owner_of(const agent_id& id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    reset_on_exit r{*select_agent_};
    if (!select_agent_->bind(1, id.type).bind(2, id.key).step()) return std::nullopt;
    return select_agent_->text(0);
  }

  std::vector<agent_id> list_owned(const std::string& owner) override {
    std::lock_guard<std::mutex> guard{mutex_};
    std::vector<agent_id> out;
    reset_on_exit r{*list_owned_};
    list_owned_->bind(1, owner);
    while (list_owned_->step())
      out.push_back({list_owned_->text(0), list_owned_->text(1)});
    return out;
  }

  size_t count_owned(const std::string& owner) override {
    std::lock_guard<std::mutex> guard{mutex_};
    reset_on_exit r{*count_owned_};
    count_owned_->bind(1, owner).step();
    return static_cast<size_t>(count_owned_->integer(0));
  }

  std::optional<agent_record> load(const agent_id& id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    agent_record rec{id, {}, {}};
    {
      reset_on_exit r{*select_agent_};
      if (!select_agent_->bind(1, id.type).bind(2, id.key).step()) return std::nullopt;
      rec.owner = select_agent_->text(0);
    }
    reset_on_exit r{*select_messages_};
    select_messages_->bind(1, id.type).bind(2, id.key);
    while (select_messages_->step())
      rec.history.push_back(decode_stored_message(select_messages_->text(0)));
    return rec;
  }

  void append(const agent_id& id, const chat_message& msg) override {
    std::lock_guard<std::mutex> guard{mutex_};
    transaction tx{*this};
    insert_agent_->bind(1, id.type).bind(2, id.key).bind(3, store_clock_ms()).run();
    insert_message_->bind(1, id.type).bind(2, id.key).bind(3, encode_stored_message(msg)).run();
    tx.commit();
  }

  bool erase(const agent_id& id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    transaction tx{*this};
    delete_agent_->bind(1, id.type).bind(2, id.key).run();
    bool existed = sqlite3_changes(db_) > 0;
    delete_messages_->bind(1, id.type).bind(2, id.key).run();
    delete_requests_->bind(1, id.type).bind(2, id.key).run();
    tx.commit();
    return existed;
  }

  std::vector<agent_id> list() override {
    std::lock_guard<std::mutex> guard{mutex_};
    std::vector<agent_id> out;
    reset_on_exit r{*list_agents_};
    while (list_agents_->step())
      out.push_back({list_agents_->text(0), list_agents_->text(1)});
    return out;
  }

  void begin_turn(const agent_id& id, const std::string& request_id,
                  const std::string& text) override {
    std::lock_guard<std::mutex> guard{mutex_};
    transaction tx{*this};
    insert_agent_->bind(1, id.type).bind(2, id.key).bind(3, store_clock_ms()).run();
    upsert_request_->bind(1, id.type)
        .bind(2, id.key)
        .bind(3, request_id)
        .bind(4, text)
        .bind(5, int64_t{0})
        .bind(6, std::string{})
        .bind(7, store_clock_ms())
        .run();
    insert_message_->bind(1, id.type)
        .bind(2, id.key)
        .bind(3, encode_stored_message({"user", text, {}, {}, {}}))
        .run();
    tx.commit();
  }

  void finish_turn(const agent_id& id, const std::string& request_id, request_state state,
                   const std::string& outcome) override {
    std::lock_guard<std::mutex> guard{mutex_};
    finish_request_->bind(1, id.type)
        .bind(2, id.key)
        .bind(3, request_id)
        .bind(4, static_cast<int64_t>(state))
        .bind(5, outcome)
        .bind(6, store_clock_ms())
        .run();
  }

  std::optional<request_entry> find_request(const agent_id& id,
                                            const std::string& request_id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    reset_on_exit r{*find_request_};
    if (!find_request_->bind(1, id.type).bind(2, id.key).bind(3, request_id).step())
      return std::nullopt;
    return request_entry{request_id, find_request_->text(0),
                         static_cast<request_state>(find_request_->integer(1)),
                         find_request_->text(2)};
  }

  std::vector<std::pair<agent_id, request_entry>> open_turns() override {
    std::lock_guard<std::mutex> guard{mutex_};
    std::vector<std::pair<agent_id, request_entry>> out;
    reset_on_exit r{*open_requests_};
    while (open_requests_->step())
      out.push_back(
          {{open_requests_->text(0), open_requests_->text(1)},
           {open_requests_->text(2), open_requests_->text(3), request_state::running, {}}});
    return out;
  }

  size_t expire_requests(int64_t before_ms, size_t limit) override {
    std::lock_guard<std::mutex> guard{mutex_};
    expire_requests_->bind(1, before_ms).bind(2, static_cast<int64_t>(limit)).run();
    return static_cast<size_t>(sqlite3_changes(db_));
  }

  void enqueue_job(const job_record& job) override {
    std::lock_guard<std::mutex> guard{mutex_};
    insert_job_->bind(1, job.id)
        .bind(2, job.agent.type)
        .bind(3, job.agent.key)
        .bind(4, job.message)
        .bind(5, store_clock_ms())
        .run();
  }

  std::optional<job_record> claim_job(const std::string& owner,
                                      std::chrono::milliseconds visibility) override {
    std::lock_guard<std::mutex> guard{mutex_};
    transaction tx{*this};
    std::string id;
    {
      reset_on_exit r{*pick_job_};
      if (!pick_job_->bind(1, store_clock_ms()).step()) return std::nullopt;
      id = pick_job_->text(0);
    }
    claim_job_->bind(1, id).bind(2, owner).bind(3, store_clock_ms() + visibility.count()).run();
    tx.commit();
    return find_job_locked(id);
  }

  void finish_job(const std::string& id, job_state state, const std::string& outcome) override {
    std::lock_guard<std::mutex> guard{mutex_};
    finish_job_->bind(1, id).bind(2, static_cast<int64_t>(state)).bind(3, outcome).run();
  }

  std::optional<job_record> find_job(const std::string& id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    return find_job_locked(id);
  }

  size_t requeue_jobs_of(const std::string& owner) override {
    std::lock_guard<std::mutex> guard{mutex_};
    requeue_jobs_->bind(1, owner).run();
    return static_cast<size_t>(sqlite3_changes(db_));
  }

  ~sqlite_state_store() override {
    {
      std::lock_guard<std::mutex> guard{checkpoint_mutex_};
      stopping_ = true;
    }
    checkpoint_wake_.notify_all();
    if (checkpointer_.joinable()) checkpointer_.join();
  }

  std::string describe() const override { return "sqlite " + path_; }

private:
  /// BEGIN IMMEDIATE ... COMMIT, rolled back if not committed.
  struct transaction {
    explicit transaction(sqlite_state_store& s) : s_(s) { s_.exec("BEGIN IMMEDIATE"); }
    void commit() {
      s_.exec("COMMIT");
      done_ = true;
    }
    ~transaction() {
      if (!done_) sqlite3_exec(s_.db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
    sqlite_state_store& s_;
    bool done_ = false;
  };

  std::optional<job_record> find_job_locked(const std::string& id) {
    reset_on_exit r{*find_job_};
    if (!find_job_->bind(1, id).step()) return std::nullopt;
    job_record j;
    j.id = id;
    j.agent = {find_job_->text(0), find_job_->text(1)};
    j.message = find_job_->text(2);
    j.state = static_cast<job_state>(find_job_->integer(3));
    j.outcome = find_job_->text(4);
    j.claimed_by = find_job_->text(5);
    j.attempts = find_job_->integer(6);
    return j;
  }

  /// Copies the WAL into the database every second, on its own connection,
  /// so writers never wait for it (PASSIVE: it skips what readers still use).
  void checkpoint_loop() {
    connection db;
    if (sqlite3_open_v2(path_.c_str(), &db.p, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK) {
      log::warn("store", "checkpointer_failed", {{"path", path_}, {"reason", sqlite3_errmsg(db)}});
      return;
    }
    sqlite3_busy_timeout(db, 1000);
    // A connection learns the file is in WAL mode when it first reads it;
    // until then a checkpoint does nothing.
    sqlite3_exec(db, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
    bool warned = false;
    std::unique_lock<std::mutex> lock{checkpoint_mutex_};
    while (!stopping_) {
      checkpoint_wake_.wait_for(lock, std::chrono::seconds(1));
      lock.unlock();
      auto rc = sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      if (rc != SQLITE_OK && !std::exchange(warned, true))
        log::warn("store", "checkpoint_failed", {{"path", path_}, {"reason", sqlite3_errmsg(db)}});
      lock.lock();
    }
  }

  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string why = err ? err : "unknown error";
      sqlite3_free(err);
      throw store_error("state store '" + path_ + "': " + why + " (in: " + sql + ")");
    }
  }

  void check_version() {
    statement get{db_, "SELECT value FROM meta WHERE key='schema_version'"};
    if (get.step()) {
      int v = std::atoi(get.text(0).c_str());
      if (v > state_schema_version)
        throw store_error("state store '" + path_ + "' was written by schema version " +
                          std::to_string(v) + "; this build understands up to version " +
                          std::to_string(state_schema_version) +
                          ". Upgrade troupe or point state.path elsewhere.");
      return;
    }
    exec(("INSERT INTO meta(key, value) VALUES('schema_version', '" +
          std::to_string(state_schema_version) + "')")
             .c_str());
  }

  /// Closes the database however the object ends, a throwing constructor
  /// included; declared before the statements so it outlives them.
  struct connection {
    sqlite3* p = nullptr;
    ~connection() { sqlite3_close(p); }
    operator sqlite3*() const { return p; }
  };

  std::string path_;
  connection db_;
  std::mutex mutex_;
  std::mutex checkpoint_mutex_;
  std::condition_variable checkpoint_wake_;
  bool stopping_ = false;
  std::thread checkpointer_; // last: it starts once everything else is built
  std::unique_ptr<statement> insert_agent_, select_agent_, select_messages_, insert_message_,
      delete_agent_, delete_messages_, delete_requests_, list_agents_, upsert_request_,
      finish_request_, find_request_, open_requests_, expire_requests_, insert_job_, pick_job_,
      claim_job_, finish_job_, find_job_, requeue_jobs_, insert_owned_agent_, list_owned_,
      count_owned_;
};

} // namespace

std::shared_ptr<state_store> make_sqlite_state_store(const std::string& path) {
  return std::make_shared<sqlite_state_store>(path);
}

} // namespace troupe::runtime
