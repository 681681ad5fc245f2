#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace troupe::actors {

/// What a worker tells the router about itself. Plain data, no CAF, so the
/// gateway can show it.
struct worker_info {
  std::string id;
  std::string kind;                // npu | gpu | cpu
  std::vector<std::string> models; // empty = serves any model
  std::string backend;
  int64_t slots = 0;
  int64_t max_queue = 0;
  std::string node; // the node it runs on; empty = this node
};

/// A worker's load and health, sent to the router on every change.
struct worker_load {
  std::string id;
  int64_t active = 0;
  int64_t queued = 0;
  bool healthy = true;
  std::string health_detail;
  uint64_t served = 0;
  uint64_t failed = 0;
};

/// A worker as the router sees it: for routing, `/health`, `/api/cluster`.
struct worker_status {
  worker_info info;
  worker_load load;
};

/// This node's own workers out of a router's list (remote proxies dropped).
inline std::vector<worker_status> local_workers(std::vector<worker_status> all) {
  std::erase_if(all, [](const worker_status& w) { return !w.info.node.empty(); });
  return all;
}

} // namespace troupe::actors
