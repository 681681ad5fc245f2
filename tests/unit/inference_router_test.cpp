#include "actors/inference_router.hpp"

#include <gtest/gtest.h>

using namespace troupe::actors;

namespace {

worker_status worker(std::string id, std::string kind, int64_t slots, int64_t active,
                     int64_t queued = 0, bool healthy = true,
                     std::vector<std::string> models = {}) {
  worker_status w;
  w.info.id = id;
  w.info.kind = kind;
  w.info.slots = slots;
  w.info.models = std::move(models);
  w.load.id = id;
  w.load.active = active;
  w.load.queued = queued;
  w.load.healthy = healthy;
  return w;
}

infer_job job(std::string model = "", std::vector<std::string> prefer = {}) {
  infer_job j;
  j.request.model = std::move(model);
  j.request.prefer = std::move(prefer);
  return j;
}

std::vector<std::string> order(const std::vector<worker_status>& ws, const infer_job& j,
                               const std::string& affine = "") {
  std::vector<std::string> out;
  for (auto i : rank_workers(ws, j, affine))
    out.push_back(ws[i].info.id);
  return out;
}

} // namespace

TEST(InferenceRouter, PrefersTheAgentTypesAcceleratorWhileItHasRoom) {
  std::vector<worker_status> ws{worker("gpu0", "gpu", 8, 0), worker("npu0", "npu", 2, 1),
                                worker("cpu0", "cpu", 4, 0)};
  EXPECT_EQ(order(ws, job("", {"npu", "gpu", "cpu"})),
            (std::vector<std::string>{"npu0", "gpu0", "cpu0"}));
  ws[1].load.active = 2; // the NPU is full: the GPU with free slots goes first
  EXPECT_EQ(order(ws, job("", {"npu", "gpu", "cpu"})).front(), "gpu0");
}

TEST(InferenceRouter, LeastLoadedFirstWithoutPreference) {
  std::vector<worker_status> ws{worker("a", "gpu", 4, 3), worker("b", "gpu", 4, 1),
                                worker("c", "gpu", 4, 2)};
  EXPECT_EQ(order(ws, job()), (std::vector<std::string>{"b", "c", "a"}));
}

TEST(InferenceRouter, AffinityWinsAmongEquallyPreferredWorkersWithRoom) {
  std::vector<worker_status> ws{worker("a", "gpu", 4, 0), worker("b", "gpu", 4, 2)};
  EXPECT_EQ(order(ws, job(), "b").front(), "b");
  ws[1].load.active = 4; // full: affinity yields to a free worker
  EXPECT_EQ(order(ws, job(), "b").front(), "a");
}

TEST(InferenceRouter, SkipsUnhealthyExcludedAndWrongModelWorkers) {
  std::vector<worker_status> ws{worker("sick", "gpu", 4, 0, 0, false),
                                worker("other", "gpu", 4, 0, 0, true, {"llama"}),
                                worker("tried", "gpu", 4, 0), worker("ok", "gpu", 4, 3)};
  auto j = job("qwen");
  j.exclude = {"tried"};
  EXPECT_EQ(order(ws, j), (std::vector<std::string>{"ok"}));
  EXPECT_TRUE(order({worker("sick", "gpu", 4, 0, 0, false)}, job()).empty());
}
