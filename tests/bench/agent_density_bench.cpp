// Agent density: how many agents a node knows, how fast it activates them,
// and what an idle active agent costs, against raw CAF in the same run
// (spawning a plain event-based actor that waits for a message).
//
// usage: troupe_agent_density_bench [KNOWN] [ACTIVE]   (defaults 1000000 100000)
// Prints one line per figure: name, troupe, baseline, ratio.
#include "actors/io_threads.hpp"
#include "actors/node_runtime.hpp"
#include "runtime/config.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"
#include "runtime/state_store.hpp"
#include "runtime/tool.hpp"

#include <caf/all.hpp>

#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

using namespace troupe;
using steady = std::chrono::steady_clock;

namespace {

std::string key_of(size_t i) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "a%zu", i);
  return buf;
}

/// Resident memory once the allocator has returned what it merely caches
/// (jemalloc's dirty pages, freed but kept for reuse), so a figure counts
/// what the actors hold, not when the allocator last purged.
size_t settled_memory_bytes() {
  using mallctl_fn = int (*)(const char*, void*, size_t*, void*, size_t);
  if (auto mallctl = reinterpret_cast<mallctl_fn>(dlsym(RTLD_DEFAULT, "mallctl")))
    mallctl("arena.4096.purge", nullptr, nullptr, nullptr, 0); // 4096: MALLCTL_ARENAS_ALL
  return runtime::resident_memory_bytes();
}

double seconds_since(steady::time_point t) {
  return std::chrono::duration<double>(steady::now() - t).count();
}

/// Runs `start(i, done)` for i in [0, n) with at most `window` in flight.
/// The caller refills the window when half of it has finished, not after
/// every completion: waking it once per activation would measure this
/// harness's futex round trips, not the runtime.
template <class Start> void windowed(size_t n, size_t window, Start start) {
  std::mutex m;
  std::condition_variable cv;
  size_t in_flight = 0, finished = 0;
  for (size_t i = 0; i < n; ++i) {
    {
      std::unique_lock<std::mutex> lock{m};
      if (in_flight >= window) cv.wait(lock, [&] { return in_flight <= window / 2; });
      ++in_flight;
    }
    start(i, [&] {
      std::lock_guard<std::mutex> guard{m};
      --in_flight;
      ++finished;
      if (in_flight == window / 2 || finished == n) cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock{m};
  cv.wait(lock, [&] { return finished == n; });
}

/// Raw CAF: spawn `n` idle actors, each answering one message, as the
/// baseline for an activation and its memory.
std::pair<double, double> raw_caf(size_t n) {
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", size_t{2});
  caf::actor_system sys{cfg};
  std::vector<caf::actor> keep;
  keep.reserve(n);
  auto before = settled_memory_bytes();
  auto t0 = steady::now();
  for (size_t i = 0; i < n; ++i)
    keep.push_back(sys.spawn(
        [](caf::event_based_actor*) -> caf::behavior { return {[](int x) { return x; }}; }));
  double rate = static_cast<double>(n) / seconds_since(t0);
  double per = static_cast<double>(settled_memory_bytes() - before) / static_cast<double>(n);
  for (auto& a : keep)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  keep.clear();
  return {rate, per};
}

} // namespace

int main(int argc, char** argv) {
  size_t known = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1000000;
  size_t active = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 100000;
  runtime::log::set_level(runtime::log::level::warn);

  auto [raw_rate, raw_bytes] = raw_caf(active);

  auto loaded = runtime::load_config_text("node: {id: bench, roles: [agents]}\n"
                                          "agents: {idle_timeout: 0s}\n",
                                          "bench.yaml");
  auto cfg = std::get<runtime::node_config>(loaded);
  auto types = std::make_shared<runtime::agent_type_registry>();
  types->finalize(cfg.agent_types);
  auto store = runtime::make_memory_state_store();

  // Known agents: records in the store, no memory in the runtime.
  auto t0 = steady::now();
  auto rss0 = settled_memory_bytes();
  for (size_t i = 0; i < known; ++i)
    store->create({"chat", key_of(i)});
  double create_rate = static_cast<double>(known) / seconds_since(t0);
  double store_bytes =
      static_cast<double>(settled_memory_bytes() - rss0) / static_cast<double>(known);

  actors::io_threads io{1};
  actors::node_runtime rt{cfg, types, store, io};
  auto before = settled_memory_bytes();
  std::atomic<size_t> failed{0};
  t0 = steady::now();
  windowed(active, 2000, [&](size_t i, auto done) {
    rt.spawn_agent("chat", key_of(i),
                   [&failed, done](std::optional<runtime::failure> f, std::string) {
                     if (f) ++failed;
                     done();
                   });
  });
  double rate = static_cast<double>(active) / seconds_since(t0);
  // Idle means idle: the activation calls' request timeouts (10 s, kept by
  // CAF's clock until they lapse even when answered) are gone first.
  std::this_thread::sleep_for(std::chrono::seconds(11));
  double per = static_cast<double>(settled_memory_bytes() - before) / static_cast<double>(active);

  std::printf("%-52s %12s %12s %8s\n", "figure", "troupe", "raw CAF", "ratio");
  std::printf("%-52s %11.0f/s %11.0f/s %8.2f\n", "activations/s (known agent -> active)", rate,
              raw_rate, rate / raw_rate);
  std::printf("%-52s %10.0f B %10.0f B %8.2f\n", "memory per idle active agent", per, raw_bytes,
              per / raw_bytes);
  std::printf("%-52s %11.0f/s %12s %8s\n", "agents created in the store (memory store)",
              create_rate, "-", "-");
  std::printf("%-52s %10.0f B %12s %8s\n", "memory per known, inactive agent (memory store)",
              store_bytes, "-", "-");
  std::printf("known %zu, active %zu, failed activations %zu\n", known, active, failed.load());
  rt.shutdown();
  return failed.load() == 0 ? 0 : 1;
}
