#include "actors/inference_router.hpp"
#include "actors/atoms.hpp"
#include "actors/deadline_clock.hpp"
#include "actors/shared_call.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"
#include "runtime/openai_codec.hpp"
#include "runtime/response_cache.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <memory>
#include <string_view>
#include <tuple>
#include <unordered_map>

namespace troupe::actors {

using runtime::errc;

namespace {

bool serves(const worker_info& w, const std::string& model) {
  if (model.empty() || w.models.empty()) return true;
  return std::find(w.models.begin(), w.models.end(), model) != w.models.end();
}

} // namespace

std::vector<size_t> rank_workers(const std::vector<worker_status>& ws, const infer_job& job,
                                 const std::string& affinity_worker) {
  auto& prefer = job.request.prefer;
  // Ties go to the lower id, so the order never depends on registration order.
  using key = std::tuple<int, size_t, int, double, std::string_view>;
  std::vector<std::pair<key, size_t>> ranked;
  for (size_t i = 0; i < ws.size(); ++i) {
    auto& w = ws[i];
    if (!w.load.healthy || !serves(w.info, job.request.model)) continue;
    if (std::find(job.exclude.begin(), job.exclude.end(), w.info.id) != job.exclude.end()) continue;
    int64_t busy = w.load.active + w.load.queued;
    bool has_free_slot = busy < w.info.slots;
    size_t pref = std::find(prefer.begin(), prefer.end(), w.info.kind) - prefer.begin();
    bool affine = w.info.id == affinity_worker;
    double load =
        static_cast<double>(busy) / static_cast<double>(std::max<int64_t>(1, w.info.slots));
    // A free slot beats preference: a busy NPU should not queue work while
    // a GPU idles. Among free workers, preference, then affinity, then load.
    ranked.push_back({key{has_free_slot ? 0 : 1, pref, affine ? 0 : 1, load, w.info.id}, i});
  }
  std::sort(ranked.begin(), ranked.end());
  std::vector<size_t> out;
  for (auto& [k, i] : ranked)
    out.push_back(i);
  return out;
}

namespace {

/// The workers in two parallel vectors: `rank_workers` reads `status`
/// in place, so routing a request copies nothing but the chosen order.
struct router_state {
  std::vector<worker_status> status;
  std::vector<caf::actor> hdl;
  size_t max_affinity = 0;
  /// affinity key -> worker id; bounded, cleared when it grows too big.
  std::unordered_map<std::string, std::string> affinity;
  /// Cacheable requests (see `chat_request::cacheable`): answers kept, and
  /// the call in flight for each request, which identical ones join.
  runtime::response_cache cache{{}};
  std::unordered_map<std::string, caf::actor> in_flight;
  uint64_t shared_jobs = 0;
  static inline const char* name = "inference_router";

  /// Index of worker `id`, or `status.size()`.
  size_t find(const std::string& id) const {
    size_t i = 0;
    while (i < status.size() && status[i].info.id != id)
      ++i;
    return i;
  }
};

using router_actor = caf::stateful_actor<router_state>;

/// Offers the job to the workers in `order` until one takes it. The job is
/// shared by the attempts: each message carries one copy, nothing more.
/// With `shared` (a coalesced call, the job's sink) the requester gets
/// `shared` as its worker, and `shared` learns the real one.
void try_next(router_actor* self, caf::response_promise rp, std::shared_ptr<const infer_job> job,
              std::vector<std::string> order, size_t pos, std::string last_error,
              caf::actor shared = {}) {
  if (pos >= order.size()) {
    auto err = make_error(errc::overloaded,
                          last_error.empty() ? "every worker for this model is full" : last_error);
    if (shared) self->send(shared, fail_atom::value, to_failure(err));
    rp.deliver(std::move(err));
    return;
  }
  auto& st = self->state;
  auto i = st.find(order[pos]);
  if (i == st.status.size())
    return try_next(self, std::move(rp), std::move(job), std::move(order), pos + 1, last_error,
                    std::move(shared));
  auto hdl = st.hdl[i];
  // Count it now: the worker's own load report arrives later, and a burst
  // of requests must not all pick the same worker meanwhile.
  st.status[i].load.queued += 1;
  request_with_deadline(self, std::chrono::seconds(10), hdl, infer_atom::value, *job)
      .then(
          [=](std::string& worker_id) mutable {
            if (!job->request.affinity_key.empty()) {
              auto& aff = self->state.affinity;
              if (aff.size() >= self->state.max_affinity) aff.clear();
              aff[job->request.affinity_key] = worker_id;
            }
            if (shared) {
              self->send(shared, worker_atom::value, hdl);
              rp.deliver(shared, std::move(worker_id));
            } else {
              rp.deliver(hdl, std::move(worker_id));
            }
          },
          [=](caf::error& err) mutable {
            auto f = to_failure(err);
            try_next(self, std::move(rp), std::move(job), std::move(order), pos + 1, f.message,
                     std::move(shared));
          });
}

struct cache_metrics {
  static runtime::metrics_registry& reg() { return runtime::metrics_registry::global(); }
  runtime::counter& hits =
      reg().get_counter("troupe_response_cache_total",
                        "Cacheable model calls by how they were answered", "result=\"hit\"");
  runtime::counter& joined =
      reg().get_counter("troupe_response_cache_total",
                        "Cacheable model calls by how they were answered", "result=\"coalesced\"");
  runtime::counter& misses =
      reg().get_counter("troupe_response_cache_total",
                        "Cacheable model calls by how they were answered", "result=\"miss\"");
  runtime::gauge& bytes =
      reg().get_gauge("troupe_response_cache_bytes", "Bytes held by the response cache");
};

cache_metrics& metrics() {
  static cache_metrics m;
  return m;
}

/// A cacheable request: the stored answer, replayed as if streamed; or the
/// identical call in flight, joined; or a new shared call, dispatched.
void share(router_actor* self, infer_job& job, const std::vector<std::string>& order) {
  auto& st = self->state;
  auto key = runtime::encode_chat_request(job.request, true);
  if (auto* a = st.cache.find(key, runtime::response_cache::clock::now())) {
    metrics().hits.inc();
    auto rp = self->make_response_promise();
    // The reply first, then the answer: one sender, one order.
    rp.deliver(caf::actor_cast<caf::actor>(self), std::string{"cache"});
    for (auto& t : a->tokens)
      self->send(job.sink, token_atom::value, job.job, t);
    self->send(job.sink, done_atom::value, job.job, a->result);
    return;
  }
  if (auto it = st.in_flight.find(key); it != st.in_flight.end()) {
    metrics().joined.inc();
    self->send(it->second, join_atom::value, job.sink, job.job);
    auto rp = self->make_response_promise();
    rp.deliver(it->second, std::string{"shared"});
    return;
  }
  metrics().misses.inc();
  auto id = ++st.shared_jobs;
  auto call = spawn_shared_call(self->system(), caf::actor_cast<caf::actor>(self), key, id);
  st.in_flight.emplace(std::move(key), call);
  self->send(call, join_atom::value, job.sink, job.job);
  job.sink = call;
  job.job = id;
  try_next(self, self->make_response_promise(), std::make_shared<const infer_job>(std::move(job)),
           order, 0, {}, call);
}

/// The shared call that sent this no longer takes joiners (a newer call for
/// the same request, if any, stays).
void forget_call(router_actor* self, const std::string& key) {
  auto& in_flight = self->state.in_flight;
  if (auto it = in_flight.find(key);
      it != in_flight.end() && it->second.address() == self->current_sender())
    in_flight.erase(it);
}

caf::behavior router_impl(router_actor* self, size_t max_affinity,
                          runtime::response_cache_limits cache_limits) {
  self->state.max_affinity = max_affinity;
  self->state.cache = runtime::response_cache{cache_limits};
  self->set_exception_handler(
      [](caf::scheduled_actor*, std::exception_ptr& eptr) { return exception_to_error(eptr); });
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    for (size_t i = 0; i < st.hdl.size(); ++i)
      if (st.hdl[i].address() == dm.source) {
        runtime::log::warn("inference", "worker_down", {{"worker", st.status[i].info.id}});
        st.hdl.erase(st.hdl.begin() + static_cast<std::ptrdiff_t>(i));
        st.status.erase(st.status.begin() + static_cast<std::ptrdiff_t>(i));
        return;
      }
  });
  return {
      [=](register_atom, worker_info& info) {
        auto& st = self->state;
        auto hdl = caf::actor_cast<caf::actor>(self->current_sender());
        self->monitor(hdl);
        worker_status ws{std::move(info), {}};
        ws.load.id = ws.info.id;
        auto i = st.find(ws.info.id);
        if (i == st.status.size()) {
          st.status.push_back(std::move(ws));
          st.hdl.push_back(hdl);
        } else { // a restarted worker replaces its predecessor
          st.status[i] = std::move(ws);
          st.hdl[i] = hdl;
        }
      },
      [=](load_atom, worker_load& load) {
        auto& st = self->state;
        if (auto i = st.find(load.id); i < st.status.size())
          st.status[i].load = std::move(load);
        else // a restarted router: ask the worker who it is
          self->send(caf::actor_cast<caf::actor>(self->current_sender()), register_atom::value);
      },
      [=](crash_atom) {
        if (fault_injection_enabled()) throw std::runtime_error("injected crash of the router");
      },
      [=](infer_atom, infer_job& job) -> caf::result<caf::actor, std::string> {
        auto& st = self->state;
        std::string affine;
        if (auto it = st.affinity.find(job.request.affinity_key); it != st.affinity.end())
          affine = it->second;
        auto ranked = rank_workers(st.status, job, affine);
        if (ranked.empty()) {
          std::string why = "no healthy worker serves model '" +
                            (job.request.model.empty() ? std::string{"(any)"} : job.request.model) +
                            "'";
          for (auto& w : st.status)
            if (!w.load.healthy) why += "; " + w.info.id + ": " + w.load.health_detail;
          return make_error(errc::backend_unavailable, why);
        }
        std::vector<std::string> order;
        for (auto i : ranked)
          order.push_back(st.status[i].info.id);
        // Only now take the promise: returning an error after taking it would
        // leave the requester waiting for its timeout.
        if (job.request.cacheable) {
          share(self, job, order);
          return caf::delegated<caf::actor, std::string>{};
        }
        auto rp = self->make_response_promise();
        try_next(self, rp, std::make_shared<const infer_job>(std::move(job)), std::move(order), 0,
                 {});
        return caf::delegated<caf::actor, std::string>{};
      },
      [=](crash_atom, std::string& worker) {
        // Fault injection (tests): the worker decides whether to obey.
        auto& st = self->state;
        if (auto i = st.find(worker); i < st.status.size())
          self->send(st.hdl[i], crash_atom::value);
      },
      [=](lookup_atom, std::string& id) -> caf::result<caf::actor> {
        // A peer's request for one of this node's workers (cluster).
        auto& st = self->state;
        auto i = st.find(id);
        if (i == st.status.size() || !st.status[i].info.node.empty())
          return make_error(errc::backend_unavailable, "no worker '" + id + "' on this node");
        return st.hdl[i];
      },
      [=](done_atom, std::string& key, std::vector<std::string>& tokens, runtime::chat_result& r) {
        // A shared call ended well: identical requests from now on get it,
        // and the call, which answered whoever joined meanwhile, can go.
        auto& st = self->state;
        forget_call(self, key);
        self->send_exit(caf::actor_cast<caf::actor>(self->current_sender()),
                        caf::exit_reason::user_shutdown);
        st.cache.put(key, {std::move(tokens), std::move(r)}, runtime::response_cache::clock::now());
        metrics().bytes.set(static_cast<int64_t>(st.cache.bytes()));
      },
      [=](forget_atom, std::string& key) { forget_call(self, key); },
      [=](cancel_atom, uint64_t) {
        // An agent cancelling an answer the cache already gave: nothing runs.
      },
      [=](stats_atom) {
        auto out = self->state.status;
        std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.info.id < b.info.id; });
        return out;
      },
  };
}

} // namespace

caf::actor spawn_inference_router(caf::actor_system& sys, size_t max_affinity_entries,
                                  runtime::response_cache_limits cache) {
  return sys.spawn(router_impl, max_affinity_entries, cache);
}

} // namespace troupe::actors
