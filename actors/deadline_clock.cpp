#include "actors/deadline_clock.hpp"
#include "runtime/metrics.hpp"

#include <caf/actor_control_block.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/message.hpp>

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace troupe::actors {

namespace {

struct entry {
  caf::strong_actor_ptr whom;
  caf::message_id mid;
  caf::message content;
};

using key = std::pair<deadline_clock::clock::time_point, uint64_t>;

} // namespace

struct deadline_clock::impl {
  mutable std::mutex mutex;
  std::condition_variable cv;
  std::map<key, entry> due;
  uint64_t seq = 0;
  bool stop = false;
  std::thread thread;

  void run() {
    // For operators: a pending count that only grows is calls nobody answers.
    auto& reg = runtime::metrics_registry::global();
    auto& armed = reg.get_gauge("troupe_deadlines_pending",
                                "Request and turn deadlines armed on the deadline clock");
    auto& fired =
        reg.get_counter("troupe_deadlines_fired_total",
                        "Deadlines delivered: request timeouts, turn limits, idle checks");
    std::vector<entry> fire;
    std::unique_lock<std::mutex> guard{mutex};
    while (!stop) {
      armed.set(static_cast<int64_t>(due.size()));
      auto now = clock::now();
      while (!due.empty() && due.begin()->first.first <= now) {
        fire.push_back(std::move(due.begin()->second));
        due.erase(due.begin());
      }
      if (!fire.empty()) {
        fired.inc(fire.size());
        guard.unlock();
        for (auto& e : fire)
          e.whom->enqueue(caf::make_mailbox_element(nullptr, e.mid, {}, std::move(e.content)),
                          nullptr);
        fire.clear();
        guard.lock();
        continue;
      }
      // Not woken by `add`: that would cost the call a system call, the very
      // thing this clock exists to avoid. A deadline added meanwhile waits
      // for the next round, `granularity` at most.
      auto next = now + granularity;
      if (!due.empty() && due.begin()->first.first < next) next = due.begin()->first.first;
      cv.wait_until(guard, next, [this] { return stop; });
    }
  }
};

deadline_clock::deadline_clock() : impl_(std::make_unique<impl>()) {
  impl_->thread = std::thread{[this] { impl_->run(); }};
}

deadline_clock::~deadline_clock() {
  {
    std::lock_guard<std::mutex> guard{impl_->mutex};
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  impl_->thread.join();
}

deadline_clock& deadline_clock::instance() {
  static deadline_clock clock;
  return clock;
}

deadline_clock::token deadline_clock::add(clock::time_point at, const caf::strong_actor_ptr& whom,
                                          caf::message_id mid, caf::message content) {
  entry e{whom, mid, std::move(content)};
  std::lock_guard<std::mutex> guard{impl_->mutex};
  token t{at, ++impl_->seq};
  impl_->due.emplace(key{t.at, t.seq}, std::move(e));
  return t;
}

void deadline_clock::cancel(const token& t) {
  if (!t) return;
  std::lock_guard<std::mutex> guard{impl_->mutex};
  impl_->due.erase(key{t.at, t.seq});
}

size_t deadline_clock::pending() const {
  std::lock_guard<std::mutex> guard{impl_->mutex};
  return impl_->due.size();
}

} // namespace troupe::actors
