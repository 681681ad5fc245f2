#include "runtime/state_store.hpp"

#include <iterator>
#include <map>
#include <algorithm>
#include <mutex>
#include <tuple>

namespace troupe::runtime {

namespace {

class memory_state_store final : public state_store {
public:
  bool create(const agent_id& id, const std::string& owner) override {
    std::lock_guard<std::mutex> guard{mutex_};
    if (!records_.emplace(id, agent_record{id, {}, owner}).second) return false;
    if (!owner.empty()) owners_[id] = owner;
    return true;
  }

  std::optional<std::string> owner_of(const agent_id& id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    if (!records_.contains(id)) return std::nullopt;
    auto it = owners_.find(id);
    return it == owners_.end() ? std::string{} : it->second;
  }

  std::vector<agent_id> list_owned(const std::string& owner) override {
    std::lock_guard<std::mutex> guard{mutex_};
    std::vector<agent_id> out;
    for (auto& [id, o] : owners_)
      if (o == owner) out.push_back(id);
    return out;
  }

  std::optional<agent_record> load(const agent_id& id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    auto it = records_.find(id);
    if (it == records_.end()) return std::nullopt;
    return it->second;
  }

  void append(const agent_id& id, const chat_message& msg) override {
    std::lock_guard<std::mutex> guard{mutex_};
    append_locked(id, msg);
  }

  bool erase(const agent_id& id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    requests_.erase(id);
    owners_.erase(id);
    return records_.erase(id) > 0;
  }

  std::vector<agent_id> list() override {
    std::lock_guard<std::mutex> guard{mutex_};
    std::vector<agent_id> out;
    out.reserve(records_.size());
    for (auto& [id, rec] : records_)
      out.push_back(id);
    return out;
  }

  void begin_turn(const agent_id& id, const std::string& request_id,
                  const std::string& text) override {
    std::lock_guard<std::mutex> guard{mutex_};
    auto& e = requests_[id][request_id];
    e = {request_id, text, request_state::running, {}, ++seq_};
    e.updated_ms = store_clock_ms();
    append_locked(id, {"user", text, {}, {}, {}});
  }

  void finish_turn(const agent_id& id, const std::string& request_id, request_state state,
                   const std::string& outcome) override {
    std::lock_guard<std::mutex> guard{mutex_};
    auto& e = requests_[id][request_id];
    e.entry.id = request_id;
    e.entry.state = state;
    e.entry.outcome = outcome;
    e.updated_ms = store_clock_ms();
  }

  size_t expire_requests(int64_t before_ms, size_t limit) override {
    std::lock_guard<std::mutex> guard{mutex_};
    size_t n = 0;
    for (auto a = requests_.begin(); a != requests_.end() && n < limit;) {
      auto& reqs = a->second;
      for (auto r = reqs.begin(); r != reqs.end() && n < limit;) {
        if (r->second.entry.state != request_state::running && r->second.updated_ms < before_ms) {
          r = reqs.erase(r);
          ++n;
        } else {
          ++r;
        }
      }
      a = reqs.empty() ? requests_.erase(a) : std::next(a);
    }
    return n;
  }

  std::optional<request_entry> find_request(const agent_id& id,
                                            const std::string& request_id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    auto a = requests_.find(id);
    if (a == requests_.end()) return std::nullopt;
    auto r = a->second.find(request_id);
    if (r == a->second.end()) return std::nullopt;
    return r->second.entry;
  }

  std::vector<std::pair<agent_id, request_entry>> open_turns() override {
    std::lock_guard<std::mutex> guard{mutex_};
    std::vector<std::tuple<uint64_t, agent_id, request_entry>> open;
    for (auto& [id, reqs] : requests_)
      for (auto& [rid, e] : reqs)
        if (e.entry.state == request_state::running) open.emplace_back(e.seq, id, e.entry);
    std::sort(open.begin(), open.end(),
              [](auto& a, auto& b) { return std::get<0>(a) < std::get<0>(b); });
    std::vector<std::pair<agent_id, request_entry>> out;
    for (auto& [seq, id, e] : open)
      out.emplace_back(id, e);
    return out;
  }

  void enqueue_job(const job_record& job) override {
    std::lock_guard<std::mutex> guard{mutex_};
    jobs_[job.id] = {job, ++seq_, {}};
  }

  std::optional<job_record> claim_job(const std::string& owner,
                                      std::chrono::milliseconds visibility) override {
    std::lock_guard<std::mutex> guard{mutex_};
    auto now = std::chrono::steady_clock::now();
    queued_job* best = nullptr;
    for (auto& [id, j] : jobs_) {
      bool claimable =
          j.job.state == job_state::queued || (j.job.state == job_state::running && j.until <= now);
      if (claimable && (!best || j.seq < best->seq)) best = &j;
    }
    if (!best) return std::nullopt;
    best->job.state = job_state::running;
    best->job.claimed_by = owner;
    ++best->job.attempts;
    best->until = now + visibility;
    return best->job;
  }

  void finish_job(const std::string& id, job_state state, const std::string& outcome) override {
    std::lock_guard<std::mutex> guard{mutex_};
    if (auto it = jobs_.find(id); it != jobs_.end()) {
      it->second.job.state = state;
      it->second.job.outcome = outcome;
    }
  }

  std::optional<job_record> find_job(const std::string& id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return std::nullopt;
    return it->second.job;
  }

  size_t requeue_jobs_of(const std::string& owner) override {
    std::lock_guard<std::mutex> guard{mutex_};
    size_t n = 0;
    for (auto& [id, j] : jobs_)
      if (j.job.state == job_state::running && j.job.claimed_by == owner) {
        j.job.state = job_state::queued;
        ++n;
      }
    return n;
  }

  std::string describe() const override { return "memory"; }

private:
  struct logged {
    logged() = default;
    logged(std::string id, std::string text, request_state s, std::string outcome, uint64_t q)
        : entry{std::move(id), std::move(text), s, std::move(outcome)}, seq(q) {}
    request_entry entry;
    uint64_t seq = 0;
    int64_t updated_ms = 0;
  };

  void append_locked(const agent_id& id, const chat_message& msg) {
    auto& rec = records_[id];
    rec.id = id;
    rec.history.push_back(msg);
  }

  std::mutex mutex_;
  std::map<agent_id, agent_record> records_;
  std::map<agent_id, std::string> owners_; // only agents with an owner
  std::map<agent_id, std::map<std::string, logged>> requests_;
  struct queued_job {
    job_record job;
    uint64_t seq = 0;
    std::chrono::steady_clock::time_point until;
  };
  std::map<std::string, queued_job> jobs_;
  uint64_t seq_ = 0;
};

} // namespace

std::string_view to_string(job_state s) {
  switch (s) {
  case job_state::queued:
    return "queued";
  case job_state::running:
    return "running";
  case job_state::done:
    return "done";
  case job_state::failed:
    return "failed";
  }
  return "queued";
}

std::shared_ptr<state_store> make_memory_state_store() {
  return std::make_shared<memory_state_store>();
}

} // namespace troupe::runtime
