#include "actors/job_runner.hpp"
#include "actors/atoms.hpp"
#include "actors/messages.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"
#include "runtime/turn_outcome.hpp"

#include <caf/all.hpp>

#include <map>
#include <tuple>
#include <vector>

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::runtime::job_record)

namespace troupe::actors {

namespace {

constexpr auto poll_interval = std::chrono::milliseconds(250);

struct runner_state {
  std::shared_ptr<runtime::state_store> store;
  caf::actor directory;
  std::string node;
  size_t max_running = 8;
  std::chrono::milliseconds visibility{0};
  size_t running = 0;
  /// Outcomes the store did not take yet (it was down); retried each poll.
  std::vector<std::tuple<std::string, runtime::job_state, std::string>> unfinished;
  std::map<std::string, int> transient_retries; // by job id
  bool store_down = false;
  static inline const char* name = "job_runner";
};

using runner_actor = caf::stateful_actor<runner_state>;

runtime::counter& jobs_counter(const char* outcome) {
  return runtime::metrics_registry::global().get_counter(
      "troupe_jobs_total", "Async jobs finished by outcome",
      std::string{"outcome=\""} + outcome + "\"");
}

void finish(runner_actor* self, const runtime::job_record& job, runtime::job_state state,
            std::string text) {
  auto& st = self->state;
  st.transient_retries.erase(job.id);

  try {
    st.store->finish_job(job.id, state, text);
  } catch (const runtime::store_error& e) {
    // Keep the outcome and record it once the store is back.
    runtime::log::warn("jobs", "finish_deferred", {{"job", job.id}, {"reason", e.what()}});
    st.unfinished.emplace_back(job.id, state, std::move(text));
  }
  jobs_counter(state == runtime::job_state::done ? "done" : "failed").inc();
  --st.running;
  self->send(self, tick_atom::value);
}

void run(runner_actor* self, runtime::job_record job);

/// An `internal` failure (the store was down, the agent kept crashing) says
/// nothing about the job itself: try again shortly, for up to a minute,
/// instead of failing an acknowledged job. The job keeps its slot.
bool retry_later(runner_actor* self, const runtime::job_record& job, const runtime::failure& f) {
  if (f.code != runtime::errc::internal || ++self->state.transient_retries[job.id] > 60)
    return false;
  runtime::log::info("jobs", "job_retry", {{"job", job.id}, {"reason", f.message}});
  --self->state.running;
  self->delayed_send(self, std::chrono::seconds(1), job);
  return true;
}

void run(runner_actor* self, runtime::job_record job) {
  auto& st = self->state;
  ++st.running;
  auto agent = job.agent.str();
  // Creating the agent is idempotent; then one turn, keyed by the job id.
  self->request(st.directory, std::chrono::seconds(10), spawn_atom::value, job.agent.type,
                job.agent.key)
      .then(
          [=](std::string&, std::string&) {
            self->request(self->state.directory, self->state.visibility, ask_atom::value, agent,
                          job.message, std::string{}, job.id)
                .then(
                    [=](turn_result& r) {
                      finish(self, job, runtime::job_state::done,
                             runtime::encode_outcome(
                                 runtime::turn_outcome{r.answer, r.tokens, r.steps}));
                    },
                    [=](caf::error& err) {
                      auto f = to_failure(err);
                      if (retry_later(self, job, f)) return;
                      finish(self, job, runtime::job_state::failed, runtime::encode_outcome(f));
                    });
          },
          [=](caf::error& err) {
            auto f = to_failure(err);
            if (retry_later(self, job, f)) return;
            finish(self, job, runtime::job_state::failed, runtime::encode_outcome(f));
          });
}

void pump(runner_actor* self) {
  auto& st = self->state;
  for (auto it = st.unfinished.begin(); it != st.unfinished.end();) {
    try {
      st.store->finish_job(std::get<0>(*it), std::get<1>(*it), std::get<2>(*it));
      it = st.unfinished.erase(it);
    } catch (const runtime::store_error&) {
      break;
    }
  }
  while (st.running < st.max_running) {
    std::optional<runtime::job_record> job;
    try {
      job = st.store->claim_job(st.node, st.visibility);
      if (st.store_down) {
        st.store_down = false;
        runtime::log::info("jobs", "store_recovered");
      }
    } catch (const runtime::store_error& e) {
      if (!st.store_down) // once per outage, not once per poll
        runtime::log::error("jobs", "store_unavailable", {{"reason", e.what()}});
      st.store_down = true;
      return;
    }
    if (!job) return;
    runtime::log::info("jobs", "job_started",
                       {{"job", job->id},
                        {"agent", job->agent.str()},
                        {"attempt", std::to_string(job->attempts)}});
    run(self, std::move(*job));
  }
}

caf::behavior runner_impl(runner_actor* self, std::shared_ptr<runtime::state_store> store,
                          caf::actor directory, std::string node, size_t max_running,
                          std::chrono::milliseconds visibility) {
  auto& st = self->state;
  st.store = std::move(store);
  st.directory = std::move(directory);
  st.node = std::move(node);
  st.max_running = max_running;
  st.visibility = visibility;
  self->set_exception_handler(
      [](caf::scheduled_actor*, std::exception_ptr& eptr) { return exception_to_error(eptr); });
  if (auto n = st.store->requeue_jobs_of(st.node); n > 0)
    runtime::log::info("jobs", "jobs_requeued", {{"count", std::to_string(n)}});
  self->send(self, tick_atom::value);
  self->delayed_send(self, poll_interval, timeout_atom::value);
  return {
      [=](tick_atom) { pump(self); },
      [=](crash_atom) {
        if (fault_injection_enabled()) throw std::runtime_error("injected crash of the job runner");
      },
      [=](runtime::job_record& job) { run(self, std::move(job)); }, // a retry falls due
      [=](timeout_atom) {
        // Polling also finds jobs whose claims lapsed on another node.
        pump(self);
        self->delayed_send(self, poll_interval, timeout_atom::value);
      },
  };
}

} // namespace

caf::actor spawn_job_runner(caf::actor_system& sys, std::shared_ptr<runtime::state_store> store,
                            caf::actor directory, std::string node, size_t max_running,
                            std::chrono::milliseconds visibility) {
  return sys.spawn(runner_impl, std::move(store), std::move(directory), std::move(node),
                   max_running, visibility);
}

} // namespace troupe::actors
