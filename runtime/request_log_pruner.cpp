#include "runtime/request_log_pruner.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"

#include <algorithm>

namespace troupe::runtime {

namespace {

counter& expired_total() {
  static counter& c = metrics_registry::global().get_counter(
      "troupe_request_log_expired_total",
      "Finished requests forgotten after state.request_retention");
  return c;
}

} // namespace

request_log_pruner::request_log_pruner(std::shared_ptr<state_store> store,
                                       std::chrono::milliseconds retention)
    : store_(std::move(store)), retention_(retention), thread_([this] { loop(); }) {
  expired_total(); // on /metrics from the start, at 0
}

request_log_pruner::~request_log_pruner() {
  {
    std::lock_guard<std::mutex> guard{mutex_};
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

std::chrono::milliseconds request_log_pruner::interval_for(std::chrono::milliseconds retention) {
  return std::clamp<std::chrono::milliseconds>(retention / 10, std::chrono::seconds(1),
                                               std::chrono::minutes(1));
}

size_t request_log_pruner::prune_once(size_t batch) {
  auto before = store_clock_ms() - retention_.count();
  size_t total = 0;
  // Batches keep each store call short: agents wait on the same store.
  for (;;) {
    auto n = store_->expire_requests(before, batch);
    total += n;
    expired_total().inc(n);
    if (n < batch) break;
    std::lock_guard<std::mutex> guard{mutex_};
    if (stopping_) break;
  }
  return total;
}

void request_log_pruner::loop() {
  std::unique_lock<std::mutex> lock{mutex_};
  while (!wake_.wait_for(lock, interval_for(retention_), [this] { return stopping_; })) {
    lock.unlock();
    try {
      if (auto n = prune_once(); n > 0)
        log::debug("store", "requests_expired", {{"count", std::to_string(n)}});
    } catch (const std::exception& e) { // the store is down: try again next time
      log::warn("store", "request_expiry_failed", {{"reason", e.what()}});
    }
    lock.lock();
  }
}

} // namespace troupe::runtime
