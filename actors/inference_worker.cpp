#include "actors/inference_worker.hpp"
#include "actors/atoms.hpp"
#include "actors/backend.hpp"
#include "actors/messages.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"

#include <caf/all.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <unordered_map>

namespace troupe::actors {

using runtime::errc;
using std::chrono::steady_clock;

namespace {

using slot_free_atom = caf::atom_constant<caf::atom("slotfree")>;

struct running_job {
  infer_job job;
  std::shared_ptr<stream_handle> handle;
};

struct worker_metrics {
  explicit worker_metrics(const std::string& id)
      : labels("worker=\"" + id + "\""),
        active(reg().get_gauge("troupe_worker_active_requests", "Model calls running", labels)),
        queued(
            reg().get_gauge("troupe_worker_queue_depth", "Model calls waiting for a slot", labels)),
        ttft(reg().get_histogram("troupe_worker_ttft_seconds", "Time from dispatch to first token",
                                 labels)),
        ok(reg().get_counter("troupe_inference_requests_total", "Model calls by outcome",
                             labels + ",outcome=\"ok\"")),
        failed(reg().get_counter("troupe_inference_requests_total", "Model calls by outcome",
                                 labels + ",outcome=\"error\"")),
        rejected(reg().get_counter("troupe_inference_requests_total", "Model calls by outcome",
                                   labels + ",outcome=\"rejected\"")),
        tokens(reg().get_counter("troupe_tokens_total", "Tokens streamed from model servers",
                                 labels)) {}
  static runtime::metrics_registry& reg() { return runtime::metrics_registry::global(); }
  std::string labels;
  runtime::gauge& active;
  runtime::gauge& queued;
  runtime::histogram& ttft;
  runtime::counter& ok;
  runtime::counter& failed;
  runtime::counter& rejected;
  runtime::counter& tokens;
  /// When the backend last streamed a token (steady clock, ns): a server
  /// that streams is alive, whatever a late health probe says.
  std::atomic<int64_t> last_token_ns{0};
};

struct worker_state {
  runtime::accelerator_config cfg;
  std::shared_ptr<backend> be;
  caf::actor router;
  std::unordered_map<uint64_t, running_job> active; // by local sequence
  std::deque<infer_job> queue;
  uint64_t next_seq = 1;
  bool healthy = true;
  std::string health_detail = "not checked yet";
  /// Circuit breaker over real requests: `failure_threshold` failures in a
  /// row open it (no routing); the next good health probe half-opens it
  /// (one request admitted); that request's outcome closes or reopens it.
  enum class breaker { closed, open, half_open } brk = breaker::closed;
  int consecutive_failures = 0;
  static constexpr int failure_threshold = 3;
  /// A single probe that times out on a busy server is weak evidence: the
  /// worker leaves routing after this many failed probes in a row.
  int failed_probes = 0;
  static constexpr int probe_failure_threshold = 2;
  uint64_t served = 0;
  uint64_t failed = 0;
  /// Shared with the streams' callbacks, which may outlive a crashed worker.
  std::shared_ptr<worker_metrics> metrics;

  worker_state() = default;
  worker_state(const worker_state&) = delete;
  worker_state& operator=(const worker_state&) = delete;
  /// Runs however the worker ends, a crash included: abort what it started.
  ~worker_state() {
    runtime::failure stopped{errc::backend_unavailable, "inference worker " + cfg.id + " stopped"};
    for (auto& [seq, r] : active) {
      // The sink hears it from us first; the stream's own `cancelled`
      // report that follows is for a job it no longer waits on.
      caf::anon_send(r.job.sink, fail_atom::value, r.job.job, stopped, false, cfg.id);
      if (r.handle) r.handle->cancel();
    }
    for (auto& job : queue)
      caf::anon_send(job.sink, fail_atom::value, job.job, stopped, false, cfg.id);
  }
  static inline const char* name = "inference_worker";
};

using worker_actor = caf::stateful_actor<worker_state>;

/// What the worker tells the router about itself when it registers.
worker_info info_of(const worker_state& st) {
  return {st.cfg.id,        st.cfg.kind, st.cfg.backend.models, st.be->describe(), st.cfg.slots,
          st.cfg.max_queue, {}};
}

void report(worker_actor* self) {
  auto& st = self->state;
  st.metrics->active.set(static_cast<int64_t>(st.active.size()));
  st.metrics->queued.set(static_cast<int64_t>(st.queue.size()));
  worker_load load{st.cfg.id,
                   static_cast<int64_t>(st.active.size()),
                   static_cast<int64_t>(st.queue.size()),
                   st.healthy,
                   st.health_detail,
                   st.served,
                   st.failed};
  self->send(st.router, load_atom::value, std::move(load));
}

void start_job(worker_actor* self, infer_job job) {
  auto& st = self->state;
  auto seq = st.next_seq++;
  auto weak = caf::actor_cast<caf::weak_actor_ptr>(self);
  auto sink = job.sink;
  auto job_no = job.job;
  auto t0 = steady_clock::now();
  auto m = st.metrics;
  auto first = std::make_shared<bool>(true);
  auto notify_worker = [weak, seq](errc code, std::string reason) {
    if (auto strong = weak.lock())
      caf::anon_send(caf::actor_cast<caf::actor>(strong), slot_free_atom::value, seq, code,
                     std::move(reason));
  };
  stream_callbacks cb;
  // Tokens go straight from the I/O thread to the agent: the worker only
  // needs to hear when a slot frees up.
  cb.on_token = [sink, job_no, t0, m, first](std::string text) {
    if (*first) {
      *first = false;
      m->ttft.observe(std::chrono::duration<double>(steady_clock::now() - t0).count());
    }
    m->tokens.inc();
    m->last_token_ns.store(steady_clock::now().time_since_epoch().count(),
                           std::memory_order_relaxed);
    caf::anon_send(sink, token_atom::value, job_no, std::move(text));
  };
  // The end of a call goes through the worker, which frees the slot and
  // passes it on: one wake-up of a CAF thread from the I/O thread per call
  // instead of two (model calls/s on the local path: +20-40%). Its tokens
  // are in the sink's mailbox before, so the order holds. A worker that is
  // gone cannot pass it on: then it goes straight to the sink.
  cb.on_done = [sink, job_no, weak, seq](runtime::chat_result result) {
    if (auto strong = weak.lock())
      caf::anon_send(caf::actor_cast<caf::actor>(strong), done_atom::value, seq, sink, job_no,
                     std::move(result));
    else
      caf::anon_send(sink, done_atom::value, job_no, std::move(result));
  };
  cb.on_error = [sink, job_no, notify_worker, id = st.cfg.id](errc code, std::string reason,
                                                              bool started) {
    notify_worker(code, reason);
    caf::anon_send(sink, fail_atom::value, job_no, runtime::failure{code, std::move(reason)},
                   started, id);
  };
  auto handle = st.be->start(std::move(job.request), std::move(cb));
  job.request = {}; // the backend has its own copy; keep only what cancel needs
  st.active.emplace(seq, running_job{std::move(job), std::move(handle)});
}

void pump(worker_actor* self) {
  auto& st = self->state;
  while (!st.queue.empty() && static_cast<int64_t>(st.active.size()) < st.cfg.slots) {
    auto job = std::move(st.queue.front());
    st.queue.pop_front();
    start_job(self, std::move(job));
  }
}

/// Call `seq` ended with `code`: its slot takes the next queued call, and
/// the circuit breaker counts the outcome.
void free_slot(worker_actor* self, uint64_t seq, errc code, const std::string& reason) {
  auto& st = self->state;
  if (st.active.erase(seq) == 0) return;
  using breaker = worker_state::breaker;
  if (code == errc::success) {
    ++st.served;
    st.metrics->ok.inc();
    st.consecutive_failures = 0;
    if (st.brk == breaker::half_open) {
      st.brk = breaker::closed;
      runtime::log::info("inference", "circuit_closed", {{"worker", st.cfg.id}});
    }
  } else {
    ++st.failed;
    st.metrics->failed.inc();
    // Only the backend's own failures count; a cancel says nothing about it.
    bool backend_fault = code == errc::backend_unavailable || code == errc::timeout;
    if (backend_fault &&
        (++st.consecutive_failures >= worker_state::failure_threshold ||
         st.brk == breaker::half_open) &&
        st.brk != breaker::open) {
      st.brk = breaker::open;
      st.healthy = false;
      st.health_detail = "circuit open after " + std::to_string(st.consecutive_failures) +
                         " failed request(s): " + reason;
      runtime::metrics_registry::global()
          .get_counter("troupe_worker_circuit_opened_total",
                       "Times a worker stopped taking work after failed requests",
                       st.metrics->labels)
          .inc();
      runtime::log::warn("inference", "circuit_open", {{"worker", st.cfg.id}, {"reason", reason}});
    }
  }
  pump(self);
  report(self);
}

void check_health(worker_actor* self) {
  auto weak = caf::actor_cast<caf::weak_actor_ptr>(self);
  self->state.be->check_health([weak](bool ok, std::string detail) {
    if (auto strong = weak.lock())
      caf::anon_send(caf::actor_cast<caf::actor>(strong), health_atom::value, ok,
                     std::move(detail));
  });
}

caf::behavior worker_impl(worker_actor* self, runtime::accelerator_config cfg,
                          std::shared_ptr<backend> be, caf::actor router) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.be = std::move(be);
  st.router = std::move(router);
  st.metrics = std::make_shared<worker_metrics>(st.cfg.id);
  self->send(st.router, register_atom::value, info_of(st));
  self->delayed_send(self, std::chrono::seconds(1), load_atom::value);
  check_health(self);
  runtime::log::info("inference", "worker_started",
                     {{"worker", st.cfg.id},
                      {"kind", st.cfg.kind},
                      {"backend", st.be->describe()},
                      {"slots", std::to_string(st.cfg.slots)}});

  self->set_exception_handler(
      [](caf::scheduled_actor*, std::exception_ptr& eptr) { return exception_to_error(eptr); });
  // Stopping on purpose or by crash, the state's destructor fails whatever
  // waits, so no caller hangs.
  self->set_exit_handler([self](caf::exit_msg& msg) { self->quit(msg.reason); });

  return {
      [=](infer_atom, infer_job& job) -> caf::result<std::string> {
        auto& st = self->state;
        bool probing =
            st.brk == worker_state::breaker::half_open && (!st.active.empty() || !st.queue.empty());
        if (!st.healthy || probing) {
          st.metrics->rejected.inc();
          return make_error(errc::backend_unavailable,
                            "worker " + st.cfg.id + " backend unhealthy: " + st.health_detail);
        }
        if (static_cast<int64_t>(st.active.size()) < st.cfg.slots) {
          start_job(self, std::move(job));
        } else if (static_cast<int64_t>(st.queue.size()) < st.cfg.max_queue) {
          st.queue.push_back(std::move(job));
        } else {
          st.metrics->rejected.inc();
          return make_error(errc::overloaded, "worker " + st.cfg.id + " is full (" +
                                                  std::to_string(st.cfg.slots) + " slots, " +
                                                  std::to_string(st.cfg.max_queue) + " queued)");
        }
        report(self);
        return st.cfg.id;
      },
      [=](cancel_atom, uint64_t job) {
        auto& st = self->state;
        auto sender = caf::actor_cast<caf::actor>(self->current_sender());
        for (auto& [seq, r] : st.active)
          if (r.job.job == job && r.job.sink == sender) {
            r.handle->cancel(); // the stream reports `cancelled` and frees the slot
            return;
          }
        for (auto it = st.queue.begin(); it != st.queue.end(); ++it)
          if (it->job == job && it->sink == sender) {
            self->send(it->sink, fail_atom::value, job,
                       runtime::failure{errc::cancelled, "cancelled"}, false, st.cfg.id);
            st.queue.erase(it);
            report(self);
            return;
          }
      },
      [=](done_atom, uint64_t seq, caf::actor& sink, uint64_t job, runtime::chat_result& r) {
        self->send(sink, done_atom::value, job, std::move(r));
        free_slot(self, seq, errc::success, {});
      },
      [=](slot_free_atom, uint64_t seq, errc code, std::string& reason) {
        free_slot(self, seq, code, reason);
      },
      [=](health_atom, bool ok, std::string& detail) {
        auto& st = self->state;
        using breaker = worker_state::breaker;
        if (st.brk == breaker::open) {
          if (!ok) {
            // Still down: keep the circuit open, with the probe's reason.
            st.health_detail = "circuit open: " + detail;
            report(self);
            self->delayed_send(self, st.cfg.backend.health_interval, tick_atom::value);
            return;
          }
          st.brk = breaker::half_open; // one request will tell
          st.consecutive_failures = 0;
          detail = "half-open: probing with one request";
        } else if (st.brk == breaker::half_open && ok) {
          detail = st.health_detail;
        }
        // Busy, not dead: a probe that fails while real calls stream tokens
        // is a loaded server answering late, not a reason to stop routing.
        auto since_token = steady_clock::now().time_since_epoch() -
                           steady_clock::duration{st.metrics->last_token_ns.load()};
        if (!ok && st.healthy && st.brk == breaker::closed &&
            since_token < std::max<steady_clock::duration>(2 * st.cfg.backend.health_interval,
                                                           std::chrono::seconds(2))) {
          self->delayed_send(self, st.cfg.backend.health_interval, tick_atom::value);
          return;
        }
        st.failed_probes = ok ? 0 : st.failed_probes + 1;
        if (!ok && st.healthy && st.failed_probes < worker_state::probe_failure_threshold) {
          runtime::log::info("inference", "health_probe_failed",
                             {{"worker", st.cfg.id}, {"detail", detail}});
          self->delayed_send(self, st.cfg.backend.health_interval, tick_atom::value);
          return;
        }
        if (ok != st.healthy || detail != st.health_detail) {
          if (ok != st.healthy)
            runtime::log::write(ok ? runtime::log::level::info : runtime::log::level::warn,
                                "inference", ok ? "backend_healthy" : "backend_unhealthy",
                                {{"worker", st.cfg.id}, {"detail", detail}});
          st.healthy = ok;
          st.health_detail = std::move(detail);
          report(self);
        }
        self->delayed_send(self, st.cfg.backend.health_interval, tick_atom::value);
      },
      [=](tick_atom) { check_health(self); },
      [=](register_atom) { // the router restarted and does not know us
        auto& st = self->state;
        self->send(st.router, register_atom::value, info_of(st));
        report(self);
      },
      [=](load_atom) {
        // A steady beat, so a restarted router relearns this worker soon.
        report(self);
        self->delayed_send(self, std::chrono::seconds(1), load_atom::value);
      },
      [=](crash_atom) {
        if (fault_injection_enabled())
          throw std::runtime_error("injected crash of worker " + self->state.cfg.id);
      },
  };
}

} // namespace

caf::actor spawn_inference_worker(caf::actor_system& sys, runtime::accelerator_config cfg,
                                  std::shared_ptr<backend> be, caf::actor router) {
  return sys.spawn(worker_impl, std::move(cfg), std::move(be), std::move(router));
}

} // namespace troupe::actors
