// Deterministic actor tests: CAF's test coordinator runs every message on
// the test thread (`sched.run()`), and the backend is a fake right next to
// the worker under test, so nothing sleeps and nothing races.

#include "actors/atoms.hpp"
#include "actors/backend.hpp"
#include "actors/inference_router.hpp"
#include "actors/inference_worker.hpp"
#include "actors/messages.hpp"

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <gtest/gtest.h>

#include <map>

using namespace troupe;
using namespace troupe::actors;
using runtime::errc;

namespace {

/// A backend whose streams the test drives by hand.
class fake_backend final : public backend {
public:
  struct stream final : stream_handle {
    stream_callbacks cb;
    bool cancelled = false;
    void cancel() override {
      if (!cancelled) {
        cancelled = true;
        cb.on_error(errc::cancelled, "cancelled", false);
      }
    }
  };

  std::shared_ptr<stream_handle> start(runtime::chat_request, stream_callbacks cb) override {
    auto s = std::make_shared<stream>();
    s->cb = std::move(cb);
    streams.push_back(s);
    return s;
  }
  void check_health(std::function<void(bool, std::string)> cb) override {
    cb(healthy, healthy ? "ok" : "down");
  }
  std::string describe() const override { return "fake"; }

  bool healthy = true;
  std::vector<std::shared_ptr<stream>> streams;
};

struct worker_fixture : ::testing::Test {
  worker_fixture()
      : sys(make_cfg()), sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())),
        self(sys) {}

  caf::actor_system_config& make_cfg() {
    cfg.set("scheduler.policy", caf::atom("testing"));
    return cfg;
  }

  caf::actor start_worker(int64_t slots, int64_t max_queue) {
    runtime::accelerator_config acc;
    acc.id = "w0";
    acc.kind = "gpu";
    acc.slots = slots;
    acc.max_queue = max_queue;
    router = spawn_inference_router(sys);
    auto w = spawn_inference_worker(sys, acc, be, router);
    sched.run();
    return w;
  }

  /// Sends one job and returns the worker's answer: its id or the error.
  std::variant<std::string, runtime::failure> submit(const caf::actor& worker, uint64_t job) {
    infer_job j{job, {}, caf::actor_cast<caf::actor>(self), {}};
    auto h = self->request(worker, caf::infinite, infer_atom::value, std::move(j));
    sched.run();
    std::variant<std::string, runtime::failure> out = runtime::failure{errc::internal, "no reply"};
    h.receive([&](std::string& id) { out = id; }, [&](caf::error& err) { out = to_failure(err); });
    return out;
  }

  /// Every (fail_atom ...) the sink has received so far.
  std::vector<std::pair<uint64_t, runtime::failure>> failures() {
    std::vector<std::pair<uint64_t, runtime::failure>> out;
    bool more = true;
    while (more)
      self->receive([&](fail_atom, uint64_t job, runtime::failure& f, bool,
                        std::string&) { out.emplace_back(job, f); },
                    [&](token_atom, uint64_t, std::string&) {},
                    [&](done_atom, uint64_t, runtime::chat_result&) {},
                    caf::after(std::chrono::seconds(0)) >> [&] { more = false; });
    return out;
  }

  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scheduler::test_coordinator& sched;
  caf::scoped_actor self;
  std::shared_ptr<fake_backend> be = std::make_shared<fake_backend>();
  caf::actor router;
};

} // namespace

TEST_F(worker_fixture, a_full_worker_answers_overloaded) {
  auto w = start_worker(1, 1);
  EXPECT_EQ(std::get<std::string>(submit(w, 1)), "w0");
  EXPECT_EQ(std::get<std::string>(submit(w, 2)), "w0"); // queued
  auto third = submit(w, 3);
  ASSERT_TRUE(std::holds_alternative<runtime::failure>(third));
  EXPECT_EQ(std::get<runtime::failure>(third).code, errc::overloaded);
  EXPECT_EQ(be->streams.size(), 1u);
  self->send_exit(w, caf::exit_reason::user_shutdown);
  sched.run();
}

TEST_F(worker_fixture, a_queued_job_starts_when_a_slot_frees) {
  auto w = start_worker(1, 4);
  submit(w, 1);
  submit(w, 2);
  ASSERT_EQ(be->streams.size(), 1u);
  be->streams[0]->cb.on_done({});
  sched.run();
  EXPECT_EQ(be->streams.size(), 2u);
  self->send_exit(w, caf::exit_reason::user_shutdown);
  sched.run();
}

TEST_F(worker_fixture, cancel_aborts_the_running_stream) {
  auto w = start_worker(2, 2);
  submit(w, 7);
  self->send(w, cancel_atom::value, uint64_t{7});
  sched.run();
  ASSERT_EQ(be->streams.size(), 1u);
  EXPECT_TRUE(be->streams[0]->cancelled);
  auto fs = failures();
  ASSERT_EQ(fs.size(), 1u);
  EXPECT_EQ(fs[0].first, 7u);
  EXPECT_EQ(fs[0].second.code, errc::cancelled);
  self->send_exit(w, caf::exit_reason::user_shutdown);
  sched.run();
}

TEST_F(worker_fixture, one_failed_probe_is_not_enough_but_two_in_a_row_take_the_worker_out) {
  be->healthy = false;
  auto w = start_worker(2, 2);
  auto r = submit(w, 1); // the first probe failed: a busy server may just be slow
  ASSERT_TRUE(std::holds_alternative<std::string>(r));
  sched.trigger_timeouts(); // the next probe fails too
  sched.run();
  r = submit(w, 2);
  ASSERT_TRUE(std::holds_alternative<runtime::failure>(r));
  EXPECT_EQ(std::get<runtime::failure>(r).code, errc::backend_unavailable);
  EXPECT_EQ(be->streams.size(), 1u); // only the first call reached the backend
  self->send_exit(w, caf::exit_reason::user_shutdown);
  sched.run();
}

TEST_F(worker_fixture, failed_probes_while_tokens_stream_do_not_take_a_busy_worker_out) {
  auto w = start_worker(2, 2);
  ASSERT_TRUE(std::holds_alternative<std::string>(submit(w, 1)));
  be->streams[0]->cb.on_token("busy"); // the server streams...
  be->healthy = false;                 // ...but answers its probes late
  for (int i = 0; i < 3; ++i) {
    sched.trigger_timeouts();
    sched.run();
  }
  EXPECT_TRUE(std::holds_alternative<std::string>(submit(w, 2)));
  self->send_exit(w, caf::exit_reason::user_shutdown);
  sched.run();
}

TEST_F(worker_fixture, stopping_the_worker_fails_queued_jobs_and_cancels_running_ones) {
  auto w = start_worker(1, 4);
  submit(w, 1);
  submit(w, 2);
  self->send_exit(w, caf::exit_reason::user_shutdown);
  sched.run();
  EXPECT_TRUE(be->streams[0]->cancelled); // the backend request is aborted
  // Each waiting sink hears "worker stopped" first, running or queued; the
  // aborted stream's own `cancelled` comes after and is for a job it gave up.
  std::map<uint64_t, errc> first;
  for (auto& [job, f] : failures())
    first.emplace(job, f.code);
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[1], errc::backend_unavailable);
  EXPECT_EQ(first[2], errc::backend_unavailable);
}

TEST_F(worker_fixture, the_router_falls_back_to_another_worker_when_one_is_full) {
  runtime::accelerator_config a;
  a.id = "small";
  a.kind = "npu";
  a.slots = 1;
  a.max_queue = 0;
  auto b = a;
  b.id = "big";
  b.kind = "gpu";
  b.slots = 4;
  router = spawn_inference_router(sys);
  auto w1 = spawn_inference_worker(sys, a, be, router);
  auto w2 = spawn_inference_worker(sys, b, be, router);
  sched.run();
  std::vector<std::string> placed;
  for (uint64_t job = 1; job <= 3; ++job) {
    infer_job j{job, {}, caf::actor_cast<caf::actor>(self), {}};
    j.request.prefer = {"npu", "gpu"};
    auto h = self->request(router, caf::infinite, infer_atom::value, std::move(j));
    sched.run();
    h.receive([&](caf::actor&, std::string& id) { placed.push_back(id); },
              [&](caf::error& err) { placed.push_back("error: " + to_failure(err).message); });
  }
  EXPECT_EQ(placed, (std::vector<std::string>{"small", "big", "big"}));
  self->send_exit(w1, caf::exit_reason::user_shutdown);
  self->send_exit(w2, caf::exit_reason::user_shutdown);
  self->send_exit(router, caf::exit_reason::user_shutdown);
  sched.run();
}

TEST_F(worker_fixture, repeated_backend_failures_open_the_circuit_until_a_probe_succeeds) {
  auto w = start_worker(4, 4);
  for (uint64_t job = 1; job <= 3; ++job) {
    ASSERT_TRUE(std::holds_alternative<std::string>(submit(w, job)));
    be->streams.back()->cb.on_error(errc::backend_unavailable, "HTTP 500", false);
    sched.run();
  }
  auto refused = submit(w, 4);
  ASSERT_TRUE(std::holds_alternative<runtime::failure>(refused));
  EXPECT_NE(std::get<runtime::failure>(refused).message.find("circuit open"), std::string::npos);
  // A good health probe half-opens it: exactly one request is let through.
  self->send(w, health_atom::value, true, std::string{"ok"});
  sched.run();
  EXPECT_TRUE(std::holds_alternative<std::string>(submit(w, 5)));
  EXPECT_TRUE(std::holds_alternative<runtime::failure>(submit(w, 6)));
  be->streams.back()->cb.on_done({});
  sched.run();
  // The probe succeeded: closed again, full capacity.
  EXPECT_TRUE(std::holds_alternative<std::string>(submit(w, 7)));
  EXPECT_TRUE(std::holds_alternative<std::string>(submit(w, 8)));
  failures(); // drain the sink
  self->send_exit(w, caf::exit_reason::user_shutdown);
  sched.run();
}

namespace {

infer_job cacheable(uint64_t job, const caf::scoped_actor& sink, std::string text = "hi") {
  infer_job j{job, {}, caf::actor_cast<caf::actor>(sink), {}};
  j.request.temperature = 0;
  j.request.cacheable = true;
  j.request.messages.push_back({"user", std::move(text), {}, {}, {}});
  return j;
}

/// What `sink` received for model calls: "job:token" and "job:done:content" lines.
std::vector<std::string> stream_of(caf::scoped_actor& sink) {
  std::vector<std::string> out;
  bool more = true;
  while (more)
    sink->receive([&](token_atom, uint64_t job,
                      std::string& t) { out.push_back(std::to_string(job) + ":" + t); },
                  [&](done_atom, uint64_t job, runtime::chat_result& r) {
                    out.push_back(std::to_string(job) + ":done:" + r.content);
                  },
                  [&](fail_atom, uint64_t job, runtime::failure& f, bool started, std::string&) {
                    out.push_back(std::to_string(job) +
                                  ":fail:" + std::string{runtime::to_string(f.code)} +
                                  (started ? ":started" : ""));
                  },
                  caf::after(std::chrono::seconds(0)) >> [&] { more = false; });
  return out;
}

} // namespace

TEST_F(worker_fixture, identical_cacheable_calls_share_one_stream_and_later_ones_its_answer) {
  auto w = start_worker(4, 4);
  caf::scoped_actor other{sys};
  auto lead = self->request(router, caf::infinite, infer_atom::value, cacheable(1, self));
  auto join = other->request(router, caf::infinite, infer_atom::value, cacheable(2, other));
  sched.run();
  std::string lead_worker, join_worker;
  lead.receive([&](caf::actor&, std::string& id) { lead_worker = id; }, [](caf::error&) {});
  join.receive([&](caf::actor&, std::string& id) { join_worker = id; }, [](caf::error&) {});
  EXPECT_EQ(lead_worker, "w0");
  EXPECT_EQ(join_worker, "shared");
  ASSERT_EQ(be->streams.size(), 1u); // one model call for both
  be->streams[0]->cb.on_token("hel");
  be->streams[0]->cb.on_token("lo");
  be->streams[0]->cb.on_done({"hello", {}, {}, "stop"});
  sched.run();
  EXPECT_EQ(stream_of(self), (std::vector<std::string>{"1:hel", "1:lo", "1:done:hello"}));
  EXPECT_EQ(stream_of(other), (std::vector<std::string>{"2:hel", "2:lo", "2:done:hello"}));
  // Later: the stored answer, the router standing in for the worker.
  auto later = self->request(router, caf::infinite, infer_atom::value, cacheable(3, self));
  sched.run();
  later.receive(
      [&](caf::actor& a, std::string& id) {
        EXPECT_EQ(a, router);
        EXPECT_EQ(id, "cache");
      },
      [](caf::error&) { ADD_FAILURE() << "no cached answer"; });
  EXPECT_EQ(stream_of(self), (std::vector<std::string>{"3:hel", "3:lo", "3:done:hello"}));
  EXPECT_EQ(be->streams.size(), 1u);
  // A different request is not the cached one.
  auto different =
      self->request(router, caf::infinite, infer_atom::value, cacheable(4, self, "ho"));
  sched.run();
  different.receive([](caf::actor&, std::string& id) { EXPECT_EQ(id, "w0"); },
                    [](caf::error&) { ADD_FAILURE(); });
  EXPECT_EQ(be->streams.size(), 2u);
  be->streams[1]->cb.on_done({"x", {}, {}, "stop"});
  sched.run();
  stream_of(self);
  self->send_exit(w, caf::exit_reason::user_shutdown);
  self->send_exit(router, caf::exit_reason::user_shutdown);
  sched.run();
}

TEST_F(worker_fixture,
       when_no_worker_takes_a_shared_call_the_leader_gets_the_error_and_joiners_retry) {
  auto w = start_worker(1, 0);
  ASSERT_TRUE(std::holds_alternative<std::string>(submit(w, 9))); // its only slot is taken
  caf::scoped_actor other{sys};
  auto lead = self->request(router, caf::infinite, infer_atom::value, cacheable(1, self));
  auto join = other->request(router, caf::infinite, infer_atom::value, cacheable(2, other));
  sched.run();
  std::string lead_out, join_out;
  lead.receive(
      [&](caf::actor&, std::string& id) { lead_out = id; },
      [&](caf::error& err) { lead_out = std::string{runtime::to_string(to_failure(err).code)}; });
  join.receive(
      [&](caf::actor&, std::string& id) { join_out = id; },
      [&](caf::error& err) { join_out = std::string{runtime::to_string(to_failure(err).code)}; });
  EXPECT_EQ(lead_out, "overloaded");
  EXPECT_EQ(join_out, "shared");
  // The joiner hears it as a failure before any token: it may retry.
  EXPECT_EQ(stream_of(other), (std::vector<std::string>{"2:fail:overloaded"}));
  // The failed call is forgotten: the next identical request is dispatched anew.
  auto again = other->request(router, caf::infinite, infer_atom::value, cacheable(3, other));
  sched.run();
  std::string again_out;
  again.receive(
      [&](caf::actor&, std::string& id) { again_out = id; },
      [&](caf::error& err) { again_out = std::string{runtime::to_string(to_failure(err).code)}; });
  EXPECT_EQ(again_out, "overloaded");
  failures();
  self->send_exit(w, caf::exit_reason::user_shutdown);
  self->send_exit(router, caf::exit_reason::user_shutdown);
  sched.run();
}
