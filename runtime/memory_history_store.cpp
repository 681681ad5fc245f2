#include "runtime/history_store.hpp"

#include <map>
#include <mutex>

namespace troupe::runtime {

namespace {

class memory_history_store final : public history_store {
public:
  bool create(const agent_id& id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    return records_.emplace(id, agent_record{id, {}}).second;
  }

  std::optional<agent_record> load(const agent_id& id) override {
    std::lock_guard<std::mutex> guard{mutex_};
    auto it = records_.find(id);
    if (it == records_.end()) return std::nullopt;
    return it->second;
  }

  void append(const agent_id& id, const chat_message& msg) override {
    std::lock_guard<std::mutex> guard{mutex_};
    auto& rec = records_[id];
    rec.id = id;
    rec.history.push_back(msg);
  }

  bool erase(const agent_id& id) override {
    std::lock_guard<std::mutex> guard{mutex_};
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

private:
  std::mutex mutex_;
  std::map<agent_id, agent_record> records_;
};

} // namespace

std::shared_ptr<history_store> make_memory_history_store() {
  return std::make_shared<memory_history_store>();
}

} // namespace troupe::runtime
