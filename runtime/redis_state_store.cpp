#include "runtime/redis_client.hpp"
#include "runtime/state_store.hpp"
#include "runtime/stored_message.hpp"

#include <hiredis/hiredis.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <deque>
#include <mutex>

namespace troupe::runtime {

namespace {

using nlohmann::json;

// Key layout (one Redis database per cluster):
//   troupe:meta              hash   schema_version
//   troupe:agents            zset   "type/key" -> created ms
//   troupe:owners            hash   "type/key" -> owner (owned agents only)
//   troupe:owned:{owner}     set    "type/key" of the agents that owner created
//   troupe:h:{agent}         list   history, one JSON message per element
//   troupe:req:{agent}       hash   request id -> {"text","state","outcome"}
//   troupe:open              zset   "{agent}\n{request id}" -> started ms
//   troupe:finished          zset   "{agent}\n{request id}" -> finished ms (for expiry)
//   troupe:job:{id}          hash   type key message state outcome claimed_by attempts entry
//   troupe:jobs              stream job ids, consumer group "runners"
constexpr const char* agents_key = "troupe:agents";
constexpr const char* owners_key = "troupe:owners";

std::string owned_key(const std::string& owner) {
  return "troupe:owned:" + owner;
}
constexpr const char* open_key = "troupe:open";
constexpr const char* finished_key = "troupe:finished";

/// Expires finished requests atomically: a request begun again between a
/// read of the index and its delete would otherwise lose its running entry.
/// KEYS[1] = the finished index; ARGV = cutoff ms, limit.
constexpr const char* expire_script = R"(
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, m in ipairs(members) do
  local nl = string.find(m, '\n', 1, true)
  redis.call('HDEL', 'troupe:req:' .. string.sub(m, 1, nl - 1), string.sub(m, nl + 1))
  redis.call('ZREM', KEYS[1], m)
end
return #members
)";
constexpr const char* jobs_stream = "troupe:jobs";
constexpr const char* jobs_group = "runners";

using reply_ptr = redis_client::reply;
using command = redis_client::command;

std::string str(const redisReply* r) {
  return redis_client::str(r);
}

class redis_state_store final : public state_store {
public:
  explicit redis_state_store(const std::string& url) : url_(url), client_(connect(url)) {
    auto v = run({"HGET", "troupe:meta", "schema_version"});
    if (v->type == REDIS_REPLY_STRING) {
      int version = std::atoi(str(v.get()).c_str());
      if (version > state_schema_version)
        throw store_error("state store " + url_ + " was written by schema version " +
                          std::to_string(version) + "; this build understands up to version " +
                          std::to_string(state_schema_version) + ". Upgrade troupe.");
    } else {
      run({"HSET", "troupe:meta", "schema_version", std::to_string(state_schema_version)});
    }
    auto g = run_raw({"XGROUP", "CREATE", jobs_stream, jobs_group, "0", "MKSTREAM"});
    if (g->type == REDIS_REPLY_ERROR && str_err(g.get()).find("BUSYGROUP") == std::string::npos)
      throw store_error("redis: cannot create the job group: " + str_err(g.get()));
  }

  static redis_client connect(const std::string& url) {
    try {
      return redis_client{url};
    } catch (const redis_error& e) {
      throw store_error(e.what());
    }
  }

  bool create(const agent_id& id, const std::string& owner) override {
    std::lock_guard<std::mutex> guard{mutex_};
    auto created = std::to_string(store_clock_ms());
    if (owner.empty()) return run({"ZADD", agents_key, "NX", created, id.str()})->integer > 0;
    // The owner is written only with a new agent, atomically: one that
    // exists keeps its owner.
    static const char* script =
        "if redis.call('ZADD', KEYS[1], 'NX', ARGV[1], ARGV[2]) == 0 then return 0 end "
        "redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) redis.call('SADD', KEYS[3], ARGV[2]) "
        "return 1";
    return run({"EVAL", script, "3", agents_key, owners_key, owned_key(owner), created, id.str(),
                owner})
               ->integer > 0;
  }

  std::optional<std::string> owner_of(const agent_id& id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    if (run({"ZSCORE", agents_key, id.str()})->type == REDIS_REPLY_NIL) return std::nullopt;
    return str(run({"HGET", owners_key, id.str()}).get());
  }

  std::vector<agent_id> list_owned(const std::string& owner) override {
    std::lock_guard<std::mutex> guard{mutex_};
    std::vector<agent_id> out;
    auto r = run({"SMEMBERS", owned_key(owner)});
    for (size_t i = 0; i < r->elements; ++i)
      if (auto id = agent_id::parse(str(r->element[i]))) out.push_back(*id);
    return out;
  }

  size_t count_owned(const std::string& owner) override {
    std::lock_guard<std::mutex> guard{mutex_};
    return static_cast<size_t>(run({"SCARD", owned_key(owner)})->integer);
  }

  bool exists(const agent_id& id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    return run({"ZSCORE", agents_key, id.str()})->type != REDIS_REPLY_NIL;
  }

  std::optional<agent_record> load(const agent_id& id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    auto a = id.str();
    // One round trip: whether it exists, its owner and its history.
    auto r = transaction({{"ZSCORE", agents_key, a},
                          {"HGET", owners_key, a},
                          {"LRANGE", "troupe:h:" + a, "0", "-1"}});
    if (r->elements != 3 || r->element[0]->type == REDIS_REPLY_NIL) return std::nullopt;
    agent_record rec{id, {}, str(r->element[1])};
    auto* h = r->element[2];
    for (size_t i = 0; i < h->elements; ++i)
      rec.history.push_back(decode_stored_message(str(h->element[i])));
    return rec;
  }

  void append(const agent_id& id, const chat_message& msg) override {
    std::lock_guard<std::mutex> guard{mutex_};
    transaction({{"ZADD", agents_key, "NX", std::to_string(store_clock_ms()), id.str()},
                 {"RPUSH", "troupe:h:" + id.str(), encode_stored_message(msg)}});
  }

  bool erase(const agent_id& id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    auto a = id.str();
    std::vector<command> cmds{
        {"ZREM", agents_key, a}, {"DEL", "troupe:h:" + a}, {"DEL", "troupe:req:" + a}};
    if (auto owner = str(run({"HGET", owners_key, a}).get()); !owner.empty()) {
      cmds.push_back({"HDEL", owners_key, a});
      cmds.push_back({"SREM", owned_key(owner), a});
    }
    auto keys = run({"HKEYS", "troupe:req:" + a});
    for (size_t i = 0; i < keys->elements; ++i) {
      cmds.push_back({"ZREM", open_key, a + "\n" + str(keys->element[i])});
      cmds.push_back({"ZREM", finished_key, a + "\n" + str(keys->element[i])});
    }
    auto r = transaction(cmds);
    return r->elements > 0 && r->element[0]->integer > 0;
  }

  std::vector<agent_id> list() override {
    std::lock_guard<std::mutex> guard{mutex_};
    std::vector<agent_id> out;
    auto r = run({"ZRANGE", agents_key, "0", "-1"});
    for (size_t i = 0; i < r->elements; ++i)
      if (auto id = agent_id::parse(str(r->element[i]))) out.push_back(*id);
    return out;
  }

  void begin_turn(const agent_id& id, const std::string& request_id,
                  const std::string& text) override {
    std::lock_guard<std::mutex> guard{mutex_};
    auto a = id.str();
    json entry{{"text", text}, {"state", 0}, {"outcome", ""}};
    transaction({{"ZADD", agents_key, "NX", std::to_string(store_clock_ms()), a},
                 {"HSET", "troupe:req:" + a, request_id, entry.dump()},
                 {"ZADD", open_key, std::to_string(store_clock_ms()), a + "\n" + request_id},
                 {"ZREM", finished_key, a + "\n" + request_id},
                 {"RPUSH", "troupe:h:" + a, encode_stored_message({"user", text, {}, {}, {}})}});
  }

  void finish_turn(const agent_id& id, const std::string& request_id, request_state state,
                   const std::string& outcome) override {
    std::lock_guard<std::mutex> guard{mutex_};
    auto a = id.str();
    auto old = json::parse(str(run({"HGET", "troupe:req:" + a, request_id}).get()), nullptr, false);
    json entry{{"text", old.is_object() ? old.value("text", "") : std::string{}},
               {"state", static_cast<int>(state)},
               {"outcome", outcome}};
    transaction({{"HSET", "troupe:req:" + a, request_id, entry.dump()},
                 {"ZREM", open_key, a + "\n" + request_id},
                 {"ZADD", finished_key, std::to_string(store_clock_ms()), a + "\n" + request_id}});
  }

  size_t expire_requests(int64_t before_ms, size_t limit) override {
    std::lock_guard<std::mutex> guard{mutex_};
    auto r = run({"EVAL", expire_script, "1", finished_key, std::to_string(before_ms),
                  std::to_string(limit)});
    return r->type == REDIS_REPLY_INTEGER ? static_cast<size_t>(r->integer) : 0;
  }

  std::optional<request_entry> find_request(const agent_id& id,
                                            const std::string& request_id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    return find_request_locked(id.str(), request_id);
  }

  std::vector<std::pair<agent_id, request_entry>> open_turns() override {
    std::lock_guard<std::mutex> guard{mutex_};
    std::vector<std::pair<agent_id, request_entry>> out;
    auto r = run({"ZRANGE", open_key, "0", "-1"});
    for (size_t i = 0; i < r->elements; ++i) {
      auto member = str(r->element[i]);
      auto nl = member.find('\n');
      auto id = agent_id::parse(member.substr(0, nl));
      if (!id || nl == std::string::npos) continue;
      if (auto e = find_request_locked(member.substr(0, nl), member.substr(nl + 1)))
        out.emplace_back(*id, std::move(*e));
    }
    return out;
  }

  void enqueue_job(const job_record& job) override {
    std::lock_guard<std::mutex> guard{mutex_};
    transaction(
        {{"HSET", "troupe:job:" + job.id, "type", job.agent.type, "key", job.agent.key, "message",
          job.message, "state", "0", "outcome", "", "claimed_by", "", "attempts", "0", "entry", ""},
         {"XADD", jobs_stream, "*", "job", job.id}});
  }

  std::optional<job_record> claim_job(const std::string& owner,
                                      std::chrono::milliseconds visibility) override {
    std::lock_guard<std::mutex> guard{mutex_};
    for (int guard_loop = 0; guard_loop < 64; ++guard_loop) {
      std::string entry, job_id;
      if (!reclaimed_.empty()) {
        std::tie(entry, job_id) = reclaimed_.front();
        reclaimed_.pop_front();
      } else if (!next_entry(owner, visibility, entry, job_id)) {
        return std::nullopt;
      }
      auto job = find_job_locked(job_id);
      if (!job || job->state == job_state::done || job->state == job_state::failed) {
        run({"XACK", jobs_stream, jobs_group, entry}); // stale entry: finished elsewhere
        continue;
      }
      transaction({{"HSET", "troupe:job:" + job_id, "state", "1", "claimed_by", owner, "entry",
                    entry, "claimed_until", std::to_string(store_clock_ms() + visibility.count())},
                   {"HINCRBY", "troupe:job:" + job_id, "attempts", "1"}});
      job->state = job_state::running;
      job->claimed_by = owner;
      ++job->attempts;
      return job;
    }
    return std::nullopt;
  }

  void finish_job(const std::string& id, job_state state, const std::string& outcome) override {
    std::lock_guard<std::mutex> guard{mutex_};
    auto entry = str(run({"HGET", "troupe:job:" + id, "entry"}).get());
    std::vector<command> cmds{{"HSET", "troupe:job:" + id, "state",
                               std::to_string(static_cast<int>(state)), "outcome", outcome}};
    if (!entry.empty()) {
      cmds.push_back({"XACK", jobs_stream, jobs_group, entry});
      cmds.push_back({"XDEL", jobs_stream, entry});
    }
    transaction(cmds);
  }

  std::optional<job_record> find_job(const std::string& id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    return find_job_locked(id);
  }

  size_t requeue_jobs_of(const std::string& owner) override {
    std::lock_guard<std::mutex> guard{mutex_};
    // Reading the group from id 0 returns this consumer's own pending
    // entries: what its previous incarnation claimed and never finished.
    auto r = run(
        {"XREADGROUP", "GROUP", jobs_group, owner, "COUNT", "100000", "STREAMS", jobs_stream, "0"});
    size_t n = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
      auto entries = r->element[0]->element[1];
      for (size_t i = 0; i < entries->elements; ++i) {
        auto e = entries->element[i];
        if (e->elements < 2 || e->element[1]->elements < 2) continue;
        reclaimed_.emplace_back(str(e->element[0]), str(e->element[1]->element[1]));
        ++n;
      }
    }
    return n;
  }

  std::string describe() const override { return "redis " + url_; }

private:
  static std::string str_err(const redisReply* r) { return redis_client::error_text(r); }

  /// A job entry for `owner`: one whose claim lapsed, else a new one.
  bool next_entry(const std::string& owner, std::chrono::milliseconds visibility,
                  std::string& entry, std::string& job_id) {
    auto take = [&](const redisReply* entries) {
      if (!entries || entries->type != REDIS_REPLY_ARRAY || entries->elements == 0) return false;
      auto e = entries->element[0];
      if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || e->element[1]->elements < 2)
        return false;
      entry = str(e->element[0]);
      job_id = str(e->element[1]->element[1]);
      return true;
    };
    // A claim lapses at the deadline its claimer set (claimed_until), as in
    // the other stores; look at the oldest pending entries for one.
    (void)visibility;
    auto pending = run({"XPENDING", jobs_stream, jobs_group, "-", "+", "16"});
    for (size_t i = 0; i < pending->elements; ++i) {
      auto p = pending->element[i];
      if (p->type != REDIS_REPLY_ARRAY || p->elements < 2) continue;
      auto id = str(p->element[0]);
      auto rng = run({"XRANGE", jobs_stream, id, id});
      if (rng->elements == 0) {
        run({"XACK", jobs_stream, jobs_group, id}); // deleted: nothing to run
        continue;
      }
      auto job = str(rng->element[0]->element[1]->element[1]);
      auto until = run({"HGET", "troupe:job:" + job, "claimed_until"});
      if (std::atoll(str(until.get()).c_str()) >= store_clock_ms()) continue;
      auto claimed = run({"XCLAIM", jobs_stream, jobs_group, owner, "0", id});
      if (take(claimed.get())) return true;
    }
    auto fresh =
        run({"XREADGROUP", "GROUP", jobs_group, owner, "COUNT", "1", "STREAMS", jobs_stream, ">"});
    return fresh->type == REDIS_REPLY_ARRAY && fresh->elements > 0 &&
           take(fresh->element[0]->element[1]);
  }

  std::optional<request_entry> find_request_locked(const std::string& agent,
                                                   const std::string& request_id) {
    auto r = run({"HGET", "troupe:req:" + agent, request_id});
    if (r->type != REDIS_REPLY_STRING) return std::nullopt;
    auto j = json::parse(str(r.get()), nullptr, false);
    if (!j.is_object()) return std::nullopt;
    return request_entry{request_id, j.value("text", ""),
                         static_cast<request_state>(j.value("state", 0)), j.value("outcome", "")};
  }

  std::optional<job_record> find_job_locked(const std::string& id) {
    auto r = run({"HGETALL", "troupe:job:" + id});
    if (r->elements == 0) return std::nullopt;
    job_record j;
    j.id = id;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
      auto k = str(r->element[i]);
      auto v = str(r->element[i + 1]);
      if (k == "type")
        j.agent.type = v;
      else if (k == "key")
        j.agent.key = v;
      else if (k == "message")
        j.message = v;
      else if (k == "state")
        j.state = static_cast<job_state>(std::atoi(v.c_str()));
      else if (k == "outcome")
        j.outcome = v;
      else if (k == "claimed_by")
        j.claimed_by = v;
      else if (k == "attempts")
        j.attempts = std::atoll(v.c_str());
    }
    return j;
  }

  reply_ptr run_raw(const command& c) {
    return wrap([&] { return client_.send({c}); });
  }
  reply_ptr run(const command& c) {
    return wrap([&] { return client_.run(c); });
  }
  reply_ptr transaction(const std::vector<command>& cmds) {
    return wrap([&] { return client_.transaction(cmds); });
  }
  /// The store's callers expect `store_error`.
  template <class F> static reply_ptr wrap(F f) {
    try {
      return f();
    } catch (const redis_error& e) {
      throw store_error(e.what());
    }
  }

  std::string url_;
  redis_client client_;
  std::mutex mutex_;
  std::deque<std::pair<std::string, std::string>> reclaimed_; // (entry, job id)
};

} // namespace

std::shared_ptr<state_store> make_redis_state_store(const std::string& url) {
  return std::make_shared<redis_state_store>(url);
}

} // namespace troupe::runtime
