// The local message path: an agent's model call through the inference
// router and worker (request, reply, then tokens streamed from an I/O
// thread to the agent), against the same exchange between plain CAF actors
// in the same run. The backend answers at once from an I/O thread, so the
// figures are the runtime's cost, not a model's.
//
// usage: troupe_local_path_bench [CALLS] [TOKENS]   (defaults 20000 100)
// Prints one line per figure: name, troupe, raw CAF, ratio (the median of
// seven rounds).
#include "actors/atoms.hpp"
#include "actors/backend.hpp"
#include "actors/deadline_clock.hpp"
#include "actors/inference_router.hpp"
#include "actors/inference_worker.hpp"
#include "actors/io_threads.hpp"
#include "actors/messages.hpp"
#include "runtime/log.hpp"
#include "tests/support/median_round.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <caf/all.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

using namespace troupe;
using namespace troupe::actors;
using steady = std::chrono::steady_clock;

namespace {

using go_atom = caf::atom_constant<caf::atom("go")>;
using ping_atom = caf::atom_constant<caf::atom("ping")>;

/// A model server that streams `tokens` tokens at once, from an I/O thread
/// as a real backend's callbacks come.
class instant_backend final : public backend {
public:
  instant_backend(io_threads& io, int tokens) : io_(io), tokens_(tokens) {}

  std::shared_ptr<stream_handle> start(runtime::chat_request, stream_callbacks cb) override {
    boost::asio::post(io_.context(), [cb = std::move(cb), n = tokens_] {
      for (int i = 0; i < n; ++i)
        cb.on_token("t");
      runtime::chat_result r;
      r.content = std::string(static_cast<size_t>(n), 't');
      r.finish_reason = "stop";
      cb.on_done(std::move(r));
    });
    struct none final : stream_handle {
      void cancel() override {}
    };
    return std::make_shared<none>();
  }
  void check_health(std::function<void(bool, std::string)> cb) override { cb(true, "ok"); }
  std::string describe() const override { return "instant"; }

private:
  io_threads& io_;
  int tokens_;
};

/// What a driver counts; read by main once the driver says it is done.
struct tally {
  uint64_t calls = 0;
  uint64_t tokens = 0;
};

/// The same exchange between plain actors: a request and its reply, then
/// `tokens` messages and an end from an I/O thread.
caf::behavior raw_server(caf::event_based_actor*, io_threads* io, int tokens) {
  return {[=](ping_atom, caf::actor& sink, uint64_t n) {
    boost::asio::post(io->context(), [sink, n, tokens] {
      for (int i = 0; i < tokens; ++i)
        caf::anon_send(sink, token_atom::value, n, std::string{"t"});
      caf::anon_send(sink, done_atom::value, n, runtime::chat_result{});
    });
    return n;
  }};
}

/// Plays the agent: `calls` model calls in a row, each through the router
/// (`via_router`) or as a request to a plain server actor; counts what
/// comes back.
caf::behavior driver(caf::event_based_actor* self, bool via_router, caf::actor target,
                     uint64_t calls, tally* t, caf::actor done_to) {
  auto next = std::make_shared<std::function<void()>>();
  *next = [=] {
    if (t->calls == calls) {
      self->send(done_to, go_atom::value);
      self->quit();
      return;
    }
    auto me = caf::actor_cast<caf::actor>(self);
    // Through the router as the agent asks it (its timeout on the deadline
    // clock); the plain exchange at its cheapest, with no timeout at all.
    if (via_router)
      request_with_deadline(self, std::chrono::seconds(10), target, infer_atom::value,
                            infer_job{t->calls + 1, {}, me, {}})
          .then([](caf::actor&, std::string&) {}, [](caf::error&) {});
    else
      self->request(target, caf::infinite, ping_atom::value, me, t->calls + 1)
          .then([](uint64_t) {}, [](caf::error&) {});
  };
  self->send(self, go_atom::value);
  return {
      [=](go_atom) { (*next)(); },
      [=](token_atom, uint64_t, std::string&) { ++t->tokens; },
      [=](done_atom, uint64_t, runtime::chat_result&) {
        ++t->calls;
        (*next)();
      },
      [=](fail_atom, uint64_t, runtime::failure& f, bool, std::string&) {
        std::fprintf(stderr, "call failed: %s\n", f.message.c_str());
        self->quit();
      },
  };
}

struct result {
  double calls_per_s;
  double tokens_per_s;
};

template <class Spawn> result run(caf::actor_system& sys, Spawn spawn) {
  tally t;
  caf::scoped_actor waiter{sys};
  auto t0 = steady::now();
  spawn(&t, caf::actor{waiter});
  waiter->receive([](go_atom) {});
  double secs = std::chrono::duration<double>(steady::now() - t0).count();
  return {static_cast<double>(t.calls) / secs, static_cast<double>(t.tokens) / secs};
}

} // namespace

int main(int argc, char** argv) {
  uint64_t calls = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 20000;
  int tokens = argc > 2 ? std::atoi(argv[2]) : 100;
  runtime::log::set_level(runtime::log::level::warn);
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", size_t{2});
  caf::actor_system sys{cfg};
  io_threads io{1};

  runtime::accelerator_config acc;
  acc.id = "w0";
  acc.kind = "gpu";
  acc.slots = 64;
  auto router = spawn_inference_router(sys);
  auto be0 = std::make_shared<instant_backend>(io, 0);
  auto beN = std::make_shared<instant_backend>(io, tokens);
  auto worker0 = spawn_inference_worker(sys, acc, be0, router);
  acc.id = "wN";
  auto router_n = spawn_inference_router(sys);
  auto workerN = spawn_inference_worker(sys, acc, beN, router_n);
  // Both workers register with their routers before the runs start.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  auto raw0 = sys.spawn(raw_server, &io, 0);
  auto rawN = sys.spawn(raw_server, &io, tokens);
  auto rr = [&](caf::actor server, uint64_t n) {
    return run(sys, [&](tally* t, caf::actor w) { sys.spawn(driver, false, server, n, t, w); });
  };
  auto tr = [&](caf::actor r, uint64_t n) {
    return run(sys, [&](tally* t, caf::actor w) { sys.spawn(driver, true, r, n, t, w); });
  };
  rr(raw0, calls / 10); // warm up both paths
  tr(router, calls / 10);
  // Seven rounds, each path right after the other; the round with the
  // median ratio is reported. On a 2-vCPU VM either path's rate swings by 2x
  // from round to round (how often a thread must be woken from sleep), so
  // three rounds left the median at the mercy of one or two of them.
  std::vector<std::pair<double, double>> by_calls, by_tokens; // (troupe, raw)
  for (int round = 0; round < 7; ++round) {
    auto raw_calls = rr(raw0, calls).calls_per_s;
    by_calls.emplace_back(tr(router, calls).calls_per_s, raw_calls);
    auto raw_tokens = rr(rawN, calls / 10).tokens_per_s;
    by_tokens.emplace_back(tr(router_n, calls / 10).tokens_per_s, raw_tokens);
  }
  auto [troupe_calls, raw_calls] = troupe::test::median_round(by_calls);
  auto [troupe_tokens, raw_tokens] = troupe::test::median_round(by_tokens);

  std::printf("%-52s %12s %12s %8s\n", "figure", "troupe", "raw CAF", "ratio");
  std::printf("%-52s %11.0f/s %11.0f/s %8.2f\n", "model calls/s, no tokens (agent->router->worker)",
              troupe_calls, raw_calls, troupe_calls / raw_calls);
  std::printf("%-52s %11.0f/s %11.0f/s %8.2f\n", "tokens/s forwarded to the agent", troupe_tokens,
              raw_tokens, troupe_tokens / raw_tokens);
  for (auto& a : {worker0, workerN, router, router_n, raw0, rawN})
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  return 0;
}
