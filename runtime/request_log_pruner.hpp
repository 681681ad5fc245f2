#pragma once

#include "runtime/state_store.hpp"

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

namespace troupe::runtime {

/// Forgets the request log's finished entries once they are older than
/// `state.request_retention`, so the log does not grow for ever: every
/// `interval` it expires them in batches from a thread of its own (store
/// calls block). In a cluster every agents node runs one against the shared
/// store; expiry is idempotent. Owned by the node's main; the destructor
/// stops and joins the thread.
class request_log_pruner {
public:
  request_log_pruner(std::shared_ptr<state_store> store, std::chrono::milliseconds retention);
  ~request_log_pruner();

  request_log_pruner(const request_log_pruner&) = delete;
  request_log_pruner& operator=(const request_log_pruner&) = delete;

private:
  /// How often it looks: a tenth of the retention, between 1 s and 1 min.
  static std::chrono::milliseconds interval_for(std::chrono::milliseconds retention);
  /// One pass: expires everything finished before now - retention, in
  /// batches of `batch`. Returns how many went.
  size_t prune_once(size_t batch = 1000);
  void loop();

  std::shared_ptr<state_store> store_;
  std::chrono::milliseconds retention_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_; // last: it starts once the rest is built
};

} // namespace troupe::runtime
