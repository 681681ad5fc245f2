#include "actors/agent.hpp"
#include "actors/atoms.hpp"
#include "actors/deadline_clock.hpp"
#include "actors/mcp_catalog.hpp"
#include "actors/messages.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"
#include "runtime/turn_outcome.hpp"

#include <caf/all.hpp>

#include <chrono>
#include <algorithm>
#include <optional>

#include <variant>

namespace troupe::actors {

using runtime::errc;
using runtime::event_kind;
using std::chrono::steady_clock;

namespace {

/// A turn as it is asked for and queued.
struct turn {
  std::string id;
  std::string text;
  std::vector<caf::actor> requesters;          // send: get this turn's events
  std::vector<caf::response_promise> promises; // ask: get the result
  std::string caller;                          // ask from another agent
  bool begun = false; // written ahead to the store (a resumed turn already is)
  steady_clock::time_point received = steady_clock::now();
};

/// The running turn and what it needs while it runs, allocated when it
/// starts: an idle agent holds none of it. An idle agent's size is what
/// bounds how many a node keeps active (DESIGN: <= 2 KB each).
struct running_turn : turn {
  explicit running_turn(turn&& t) : turn(std::move(t)) {}
  scoped_deadline deadline; // the turn's time limit, gone with it
  int64_t step = 0;
  runtime::usage used;
  uint64_t job = 0;  // current model call; 0 = none
  caf::actor worker; // monitored while it runs our call: a crash must not hang the turn
  std::string worker_id;
  bool streamed = false; // the current call delivered a token
  std::vector<std::string> exclude;
  runtime::failure last_failure{errc::success, {}};
  std::vector<runtime::tool_call> calls;
  std::vector<std::optional<runtime::tool_outcome>> outcomes;
  size_t outstanding = 0;
  /// MCP calls in flight (client, call key): told to cancel when the turn ends.
  std::vector<std::pair<caf::actor, std::string>> mcp_calls;
};

struct agent_metrics {
  static runtime::metrics_registry& reg() { return runtime::metrics_registry::global(); }
  runtime::counter& ok =
      reg().get_counter("troupe_turns_total", "Agent turns by outcome", "outcome=\"done\"");
  runtime::counter& failed =
      reg().get_counter("troupe_turns_total", "Agent turns by outcome", "outcome=\"error\"");
  runtime::histogram& seconds =
      reg().get_histogram("troupe_turn_seconds", "Agent turn latency, request to done");
  runtime::counter& tool_calls =
      reg().get_counter("troupe_tool_calls_total", "Tool calls run by agents");
  runtime::counter& retries = reg().get_counter(
      "troupe_inference_retries_total", "Model calls retried on another worker before any token");
};

agent_metrics& metrics() {
  static agent_metrics m;
  return m;
}

struct agent_state {
  explicit agent_state(caf::local_actor* self) : self(self) {}
  agent_state(const agent_state&) = delete;
  agent_state& operator=(const agent_state&) = delete;

  /// Undoes the monitors on this activation's sessions and on the worker of
  /// a call still running. CAF destroys the state when the actor ends
  /// (passivation, kill or crash alike); the monitored outlive it, and CAF
  /// 0.17 would keep the monitors, and this actor's memory, until they end.
  /// Not a monitor_set: `subscribers` already lists them, and a second
  /// list would cost every idle agent.
  ~agent_state() {
    for (auto& s : subscribers)
      self->demonitor(s);
    if (current && current->worker) self->demonitor(current->worker);
  }

  caf::local_actor* self;
  runtime::agent_id id;
  std::string id_str;
  std::shared_ptr<const runtime::agent_type> type;
  std::shared_ptr<const agent_context> ctx; // shared by every agent of the node
  std::vector<runtime::chat_message> history;
  // A vector, not a set: an empty std::set is 48 bytes in every idle agent,
  // and subscribers are few (the sessions attached to this agent).
  std::vector<caf::actor> subscribers;
  // A vector, not a deque: libstdc++'s empty deque allocates ~600 bytes,
  // a third of an idle agent; the queue is short (max_pending_turns).
  std::vector<turn> pending;
  std::unique_ptr<running_turn> current;
  uint64_t turn_seq = 0;
  uint64_t ask_seq = 0;
  uint64_t job_seq = 0;
  // -- lifecycle ---------------------------------------------------------------
  steady_clock::time_point last_activity = steady_clock::now();
  scoped_deadline idle_check; // when to look whether to passivate
  bool passivating = false;
  bool draining = false;      // the node drains: passivate once the queued turns are done
  bool node_stopping = false; // open turns stay "running" in the store and resume at restart
  static inline const char* name = "agent";
};

/// An agent activation. Its handlers are one behavior shared by every
/// agent of the process: CAF 0.17 otherwise builds the handler table per
/// actor (12 handlers, ~560 B of every idle agent, a quarter of it). The
/// shared handlers capture nothing and reach their actor through
/// `current()`, set while this actor consumes a message.
class agent_actor : public caf::stateful_actor<agent_state> {
public:
  agent_actor(caf::actor_config& cfg, runtime::agent_id id,
              std::shared_ptr<const runtime::agent_type> type,
              std::vector<runtime::chat_message> history,
              std::vector<runtime::request_entry> resume, std::shared_ptr<const agent_context> ctx);

  caf::behavior make_behavior() override;

  caf::invoke_message_result consume(caf::mailbox_element& x) override {
    struct scope { // restored even when a handler throws
      agent_actor* outer = current_;
      explicit scope(agent_actor* self) { current_ = self; }
      ~scope() { current_ = outer; }
    } in{this};
    return stateful_actor::consume(x);
  }

  /// The agent whose message this thread is handling.
  static agent_actor* current() { return current_; }

private:
  static thread_local agent_actor* current_;
};

thread_local agent_actor* agent_actor::current_ = nullptr;

void start_next(agent_actor* self);
void run_step(agent_actor* self);

/// Sends one sealed event to every subscriber and to the turn's requesters.
void deliver(agent_actor* self, const turn* t, const runtime::event_ptr& sealed) {
  auto& st = self->state;
  for (auto& s : st.subscribers)
    self->send(s, event_atom::value, sealed);
  if (t)
    for (auto& r : t->requesters)
      if (r && std::find(st.subscribers.begin(), st.subscribers.end(), r) == st.subscribers.end())
        self->send(r, event_atom::value, sealed);
}

void write_ahead(agent_actor* self);

void emit(agent_actor* self, runtime::agent_event ev) {
  write_ahead(self);
  auto& st = self->state;
  ev.agent = st.id_str;
  if (st.current) ev.id = st.current->id;
  deliver(self, st.current.get(), runtime::seal(std::move(ev)));
}

void release_worker(agent_actor* self) {
  auto& st = self->state;
  if (!st.current) return;
  if (st.current->worker) self->demonitor(st.current->worker);
  st.current->worker = nullptr;
}

/// Whether model call `job` is the running turn's current one (a reply for
/// an earlier call, or one after its turn ended, is stale).
bool is_current_job(const agent_state& st, uint64_t job) {
  return st.current && st.current->job == job && job != 0;
}

/// Tells the worker running the turn's model call that nobody waits.
void cancel_model_call(agent_actor* self) {
  auto& st = self->state;
  if (st.current && st.current->worker && st.current->job != 0)
    self->send(st.current->worker, cancel_atom::value, st.current->job);
}

/// Tells the MCP servers still running this turn's calls that nobody waits.
void cancel_tool_calls(agent_actor* self) {
  auto& st = self->state;
  if (!st.current) return;
  for (auto& [client, key] : st.current->mcp_calls)
    self->send(client, cancel_atom::value, key);
  st.current->mcp_calls.clear();
}

void end_turn(agent_actor* self) {
  auto& st = self->state;
  cancel_model_call(self);
  cancel_tool_calls(self);
  release_worker(self);
  st.current.reset();
  st.last_activity = steady_clock::now();
  start_next(self);
}

void finish_ok(agent_actor* self, std::string answer) {
  write_ahead(self);
  auto& st = self->state;
  auto& t = *st.current;
  metrics().ok.inc();
  metrics().seconds.observe(
      std::chrono::duration<double>(steady_clock::now() - t.received).count());
  auto steps = st.current->step + 1;
  st.ctx->store->finish_turn(
      st.id, t.id, runtime::request_state::done,
      runtime::encode_outcome(runtime::turn_outcome{answer, st.current->used, steps}));
  deliver(self, &t, runtime::make_done_event(t.id, st.id_str, answer, st.current->used, steps));
  for (auto& p : t.promises)
    p.deliver(turn_result{st.id_str, answer, st.current->used, steps});
  st.current->job = 0; // the call is complete: nothing to cancel
  end_turn(self);
}

void fail_turn(agent_actor* self, turn& t, errc code, const std::string& message) {
  metrics().failed.inc();
  auto& st = self->state;
  if (&t == st.current.get()) write_ahead(self); // a retry of its id replays this failure
  runtime::log::info("agent", "turn_failed",
                     {{"agent", st.id_str},
                      {"id", t.id},
                      {"code", std::string{runtime::to_string(code)}},
                      {"reason", message}});
  if (t.begun && !st.node_stopping) {
    st.ctx->store->finish_turn(st.id, t.id, runtime::request_state::failed,
                               runtime::encode_outcome(runtime::failure{code, message}));
  }
  deliver(self, &t, runtime::make_error_event(t.id, code, message, st.id_str));
  for (auto& p : t.promises)
    p.deliver(make_error(code, message));
}

void finish_error(agent_actor* self, errc code, const std::string& message) {
  fail_turn(self, *self->state.current, code, message);
  end_turn(self);
}

/// Keeps the history within `limits.max_history_messages` by dropping the
/// oldest whole turns (a turn starts at a user message), so the model never
/// sees a tool result without its call. The running turn is never cut, even
/// when it alone is longer. The store keeps the full log.
void trim_history(agent_actor* self) {
  auto& st = self->state;
  auto& h = st.history;
  auto limit = static_cast<size_t>(st.ctx->limits.max_history_messages);
  if (h.size() <= limit) return;
  size_t last_user = h.size();
  while (last_user > 0 && h[last_user - 1].role != "user")
    --last_user;
  size_t cut = h.size() - limit; // drop at least this many...
  while (cut < h.size() && h[cut].role != "user")
    ++cut; // ...up to the next turn's start
  cut = std::min(cut, last_user == 0 ? size_t{0} : last_user - 1);
  if (cut > 0) h.erase(h.begin(), h.begin() + static_cast<std::ptrdiff_t>(cut));
}

void append(agent_actor* self, runtime::chat_message msg) {
  write_ahead(self);
  auto& st = self->state;
  st.ctx->store->append(st.id, msg);
  st.history.push_back(std::move(msg));
  trim_history(self);
}

void continue_turn(agent_actor* self);

void start_next(agent_actor* self) {
  auto& st = self->state;
  if (st.current || st.pending.empty()) return;
  st.current = std::make_unique<running_turn>(std::move(st.pending.front()));
  st.pending.erase(st.pending.begin());
  ++st.turn_seq;
  auto& t = *st.current;
  t.deadline.set(deadline_clock::clock::now() + st.ctx->limits.turn_timeout, self->ctrl(),
                 caf::make_message(timeout_atom::value, st.turn_seq));
  if (t.begun) return continue_turn(self);
  // A fresh turn: its model call goes out before the write-ahead (see
  // `write_ahead`).
  st.history.push_back({"user", t.text, {}, {}, {}});
  trim_history(self);
  continue_turn(self);
}

/// Writes a fresh turn's start (its user message and request-log entry) to
/// the store, once. It waits until the turn's model call is on its way (the
/// router answered) or until anything of the turn is about to reach a
/// client or the store, whichever comes first: written at the turn's start,
/// it would run before the model call left, since CAF runs the router and
/// the worker on this thread after this handler. Nothing of the turn is seen
/// before the write, so a crash in between loses only a turn nobody saw
/// begin, and the client's retry with the same id runs it.
void write_ahead(agent_actor* self) {
  auto& st = self->state;
  if (!st.current || st.current->begun) return;
  st.current->begun = true;
  st.ctx->store->begin_turn(st.id, st.current->id, st.current->text);
}

void run_step(agent_actor* self) {
  auto& st = self->state;
  auto& cfg = st.type->cfg;
  runtime::chat_request req;
  req.model = cfg.model;
  req.temperature = cfg.temperature;
  req.cacheable = cfg.response_cache;
  req.max_tokens = cfg.max_tokens;
  req.affinity_key = st.id_str;
  req.prefer = cfg.prefer;
  req.messages.reserve(st.history.size() + 1);
  req.messages.push_back({"system", cfg.system, {}, {}, {}});
  req.messages.insert(req.messages.end(), st.history.begin(), st.history.end());
  // The last allowed step offers no tools, so the model has to answer.
  if (st.current->step + 1 < cfg.max_steps) {
    req.tools = st.type->specs;
    if (!st.type->mcp.empty() && st.ctx->mcp) {
      auto more = st.ctx->mcp->specs_for(st.type->mcp);
      req.tools.insert(req.tools.end(), std::make_move_iterator(more.begin()),
                       std::make_move_iterator(more.end()));
    }
  }
  auto job = ++st.job_seq;
  st.current->job = job;
  release_worker(self);
  st.current->worker_id.clear();
  st.current->streamed = false;
  infer_job j{job, std::move(req), caf::actor_cast<caf::actor>(self), st.current->exclude};
  // A timeout of its own, though the turn has one: a router that crashes
  // holding the call never answers (CAF 0.17 drops its promise silently).
  // Kept by the deadline clock, as the turn's: CAF's own timers cost the
  // call two cross-core wake-ups before the model server sees it.
  request_with_deadline(self, std::chrono::seconds(30), st.ctx->router, infer_atom::value,
                        std::move(j))
      .then(
          [=](caf::actor& worker, std::string& worker_id) {
            auto& st = self->state;
            write_ahead(self);
            if (!is_current_job(st, job)) { // cancelled meanwhile: release the slot
              self->send(worker, cancel_atom::value, job);
              return;
            }
            st.current->worker = std::move(worker);
            st.current->worker_id = std::move(worker_id);
            self->monitor(st.current->worker);
          },
          [=](caf::error& err) {
            auto& st = self->state;
            if (!is_current_job(st, job)) return;
            auto f = to_failure(err);
            // After a retry, the first worker's failure is the real story.
            if (!st.current->exclude.empty() && st.current->last_failure.code != errc::success)
              f = {st.current->last_failure.code,
                   st.current->last_failure.message +
                       " (no other worker could take it: " + f.message + ")"};
            finish_error(self, f.code, f.message);
          });
}

void run_tools(agent_actor* self);

/// A tool result as the model gets it: at most `limits.max_tool_output_bytes`
/// (cut on a UTF-8 boundary, with a note saying so). Every kind of tool
/// (built-in, MCP, another agent) passes here.
std::string bounded_tool_output(std::string text, size_t limit) {
  if (text.size() <= limit) return text;
  auto cut = limit;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80)
    --cut; // not inside a multi-byte character
  text.resize(cut);
  text += "\n[truncated: the tool returned more than " + std::to_string(limit) +
          " bytes (limits.max_tool_output_bytes)]";
  return text;
}

void after_tools(agent_actor* self) {
  auto& st = self->state;
  for (size_t i = 0; i < st.current->calls.size(); ++i) {
    auto& out = *st.current->outcomes[i];
    append(self, {"tool",
                  bounded_tool_output(out.is_error ? "error: " + out.result : out.result,
                                      st.ctx->limits.max_tool_output_bytes),
                  {},
                  st.current->calls[i].id,
                  st.current->calls[i].name});
  }
  st.current->calls.clear();
  st.current->outcomes.clear();
  ++st.current->step;
  run_step(self);
}

void tool_finished(agent_actor* self, size_t index, runtime::tool_outcome out) {
  auto& st = self->state;
  runtime::agent_event ev;
  ev.kind = event_kind::tool_result;
  ev.name = st.current->calls[index].name;
  ev.result = out.result;
  ev.is_error = out.is_error;
  emit(self, std::move(ev));
  st.current->outcomes[index] = std::move(out);
  if (--st.current->outstanding == 0) after_tools(self);
}

void run_tools(agent_actor* self) {
  auto& st = self->state;
  st.current->outcomes.assign(st.current->calls.size(), std::nullopt);
  st.current->outstanding = st.current->calls.size();
  for (auto& call : st.current->calls) {
    runtime::agent_event ev;
    ev.kind = event_kind::tool_call;
    ev.name = call.name;
    ev.arguments = call.arguments;
    emit(self, std::move(ev));
  }
  auto seq = st.turn_seq;
  auto calls = st.current->calls; // tool_finished may end the turn and clear st.current->calls
  for (size_t i = 0; i < calls.size(); ++i) {
    metrics().tool_calls.inc();
    auto& call = calls[i];
    if (call.name == "agent" && st.type->can_ask_agents) {
      auto args = nlohmann::json::parse(call.arguments, nullptr, false);
      std::string target, message;
      if (args.is_object()) {
        target = args.value("agent", "");
        message = args.value("message", "");
      }
      if (target.empty() || !runtime::agent_id::parse(target)) {
        tool_finished(self, i, {"'agent' must be type/key, got '" + target + "'", true});
        continue;
      }
      if (target == st.id_str) {
        tool_finished(self, i, {"an agent cannot ask itself", true});
        continue;
      }
      // Half the turn budget, so the asking turn can still answer when the
      // other agent times out.
      self->request(st.ctx->directory, st.ctx->limits.turn_timeout / 2, ask_atom::value, target,
                    message, st.id_str, st.id_str + ":" + st.current->id + ":" + call.id)
          .then(
              [=](turn_result& r) {
                if (self->state.turn_seq == seq && self->state.current)
                  tool_finished(self, i, {r.answer, false});
              },
              [=](caf::error& err) {
                if (self->state.turn_seq == seq && self->state.current)
                  tool_finished(self, i, {to_failure(err).message, true});
              });
      continue;
    }
    auto it = st.type->tools.find(call.name);
    if (it == st.type->tools.end() && !st.type->mcp.empty() && st.ctx->mcp) {
      if (auto route = st.ctx->mcp->resolve(call.name, st.type->mcp)) {
        auto key = st.id_str + ":" + st.current->id + ":" + call.id;
        st.current->mcp_calls.emplace_back(route->client, key);
        auto done = [=](runtime::tool_outcome out) {
          auto& st = self->state;
          if (st.turn_seq != seq || !st.current) return;
          std::erase_if(st.current->mcp_calls, [&](auto& c) { return c.second == key; });
          tool_finished(self, i, std::move(out));
        };
        // The client answers within the call timeout; the margin covers a
        // client that is itself restarting.
        self->request(route->client, route->timeout + std::chrono::seconds(5), tool_atom::value,
                      route->tool, call.arguments, key)
            .then([=](runtime::tool_outcome& out) { done(std::move(out)); },
                  [=](caf::error& err) {
                    done({"MCP server '" + route->server +
                              "' did not answer: " + to_failure(err).message,
                          true});
                  });
        continue;
      }
    }
    if (it == st.type->tools.end())
      tool_finished(self, i, {"unknown tool '" + call.name + "'", true});
    else
      tool_finished(self, i, runtime::run_tool(it->second, call.arguments));
    if (st.turn_seq != seq || !st.current) return;
  }
}

/// A finished request's stored outcome, or nothing if it is still running.
std::optional<std::variant<turn_result, runtime::failure>>
stored_outcome(const runtime::request_entry& e) {
  if (e.state == runtime::request_state::running) return std::nullopt;
  auto past = runtime::decode_outcome(e.state == runtime::request_state::done, e.outcome);
  if (!past) return std::nullopt;
  if (auto f = std::get_if<runtime::failure>(&*past)) return *f;
  auto& done = std::get<runtime::turn_outcome>(*past);
  return turn_result{{}, std::move(done.answer), done.tokens, done.steps};
}

/// Picks the turn up from the end of the history: a fresh turn ends in its
/// user message; a turn resumed after a crash may end in a model answer, in
/// tool calls some of whose results are missing, or in tool results.
void continue_turn(agent_actor* self) {
  auto& st = self->state;
  auto& h = st.history;
  size_t user = h.size();
  while (user > 0 && h[user - 1].role != "user")
    --user;
  int64_t assistants = 0;
  size_t last_assistant = h.size();
  for (size_t i = user; i < h.size(); ++i)
    if (h[i].role == "assistant") {
      ++assistants;
      last_assistant = i;
    }
  if (last_assistant == h.size()) {
    st.current->step = 0;
    return run_step(self);
  }
  auto& a = h[last_assistant];
  if (a.tool_calls.empty() && last_assistant + 1 == h.size()) {
    st.current->step = assistants - 1;
    return finish_ok(self, a.content); // answered, but the outcome was not recorded
  }
  std::vector<runtime::tool_call> missing;
  for (auto& call : a.tool_calls) {
    bool answered = false;
    for (size_t i = last_assistant + 1; i < h.size(); ++i)
      answered |= h[i].role == "tool" && h[i].tool_call_id == call.id;
    if (!answered) missing.push_back(call);
  }
  if (missing.empty()) {
    st.current->step = assistants;
    return run_step(self);
  }
  st.current->step = assistants - 1;
  st.current->calls = std::move(missing);
  run_tools(self);
}

/// Ends the running and every queued turn with `cancelled`, aborting the
/// model call; the activation is about to stop.
void cancel_all_turns(agent_actor* self, const std::string& why) {
  auto& st = self->state;
  cancel_tool_calls(self);
  if (st.current) {
    cancel_model_call(self);
    fail_turn(self, *st.current, errc::cancelled, why);
    st.current.reset();
  }
  for (auto& t : st.pending)
    fail_turn(self, t, errc::cancelled, why);
  st.pending.clear();
}

/// The current model call failed. Before any token the client has seen
/// nothing, so another worker gets it; after, the turn ends in `error`.
void model_call_failed(agent_actor* self, const runtime::failure& f, bool started,
                       const std::string& worker_id) {
  auto& st = self->state;
  st.current->job = 0;
  release_worker(self);
  bool retryable = f.code == errc::backend_unavailable || f.code == errc::overloaded;
  // The failure names its worker: it may arrive before the router's reply
  // that would have told us.
  if (!started && retryable && st.current->exclude.size() < 3) {
    metrics().retries.inc();
    runtime::log::info("agent", "retry_inference",
                       {{"agent", st.id_str}, {"worker", worker_id}, {"reason", f.message}});
    st.current->exclude.push_back(worker_id);
    st.current->last_failure = f;
    run_step(self);
    return;
  }
  finish_error(self, f.code, f.message);
}

agent_actor::agent_actor(caf::actor_config& cfg, runtime::agent_id id,
                         std::shared_ptr<const runtime::agent_type> type,
                         std::vector<runtime::chat_message> history,
                         std::vector<runtime::request_entry> resume,
                         std::shared_ptr<const agent_context> ctx)
    : stateful_actor(cfg) {
  auto& st = state;
  st.id = std::move(id);
  st.id_str = st.id.str();
  st.type = std::move(type);
  st.ctx = std::move(ctx);
  st.history = std::move(history);
  trim_history(this);
  for (auto& r : resume) {
    runtime::log::info("agent", "resuming_turn", {{"agent", st.id_str}, {"id", r.id}});
    turn t{r.id, r.text, {}, {}, {}, true};
    st.pending.push_back(std::move(t));
  }
}

bool enqueue(agent_actor* self, turn t) {
  auto& st = self->state;
  if (st.pending.size() >= st.ctx->limits.max_pending_turns) return false;
  st.pending.push_back(std::move(t));
  start_next(self);
  return true;
}

const caf::behavior& shared_behavior();

caf::behavior agent_actor::make_behavior() {
  auto* self = this;
  auto& st = state;
  if (st.ctx->idle_timeout.count() > 0)
    st.idle_check.set(steady_clock::now() + st.ctx->idle_timeout, self->ctrl(),
                      caf::make_message(idle_atom::value));
  start_next(self); // resumed turns run at once, before anyone asks

  // No monitor on the directory: CAF 0.17 would keep one on it per
  // activation ever made, the agent long gone. A directory that ends tells
  // its activations itself, with the down message a monitor would send.
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source == st.ctx->directory.address()) {
      // The directory crashed: its next incarnation knows nothing of this
      // activation, so stop quietly. Open turns stay open in the store; the
      // sessions watching us send them again and the new activation resumes
      // them (request ids keep that exactly-once).
      st.node_stopping = true;
      cancel_model_call(self);
      self->quit(make_error(errc::internal, "agent directory restarted"));
      return;
    }
    if (st.current && st.current->worker && st.current->worker.address() == dm.source &&
        st.current->job != 0) {
      // The worker died holding our call; its own failure message never comes.
      model_call_failed(
          self,
          {errc::backend_unavailable, "inference worker " + st.current->worker_id + " stopped"},
          st.current->streamed, st.current->worker_id);
      return;
    }
    auto& subs = st.subscribers;
    for (auto it = subs.begin(); it != subs.end(); ++it)
      if (it->address() == dm.source) {
        subs.erase(it);
        return;
      }
  });
  // A store failure or a bug ends this activation with its reason; the
  // directory reactivates the agent from the store on its next message.
  self->set_exception_handler(
      [](caf::scheduled_actor*, std::exception_ptr& eptr) { return exception_to_error(eptr); });
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto why = msg.reason == caf::exit_reason::user_shutdown
                   ? "agent stopped"
                   : "agent stopped: " + caf::to_string(msg.reason);
    cancel_all_turns(self, why);
    self->quit(msg.reason);
  });
  return shared_behavior();
}

const caf::behavior& shared_behavior() {
  // Built once; its handlers capture nothing (see agent_actor).
  static const caf::behavior handlers{
      [](send_atom, std::string& id, std::string& text, caf::actor& requester) {
        auto self = agent_actor::current();
        auto& st = self->state;
        if (st.passivating) return; // the session sees this activation go down and sends again
        st.last_activity = steady_clock::now();
        // Idempotency: the same request again joins or replays it.
        auto join = [&](turn& t) {
          if (t.text != text) return false;
          if (std::find(t.requesters.begin(), t.requesters.end(), requester) == t.requesters.end())
            t.requesters.push_back(requester);
          return true;
        };
        if (st.current && st.current->id == id && join(*st.current)) return;
        for (auto& t : st.pending)
          if (t.id == id && join(t)) return;
        bool resumed = false;
        if (auto e = st.ctx->store->find_request(st.id, id); e && e->text == text) {
          if (auto past = stored_outcome(*e)) {
            if (auto r = std::get_if<turn_result>(&*past))
              self->send(requester, event_atom::value,
                         runtime::make_done_event(id, st.id_str, r->answer, r->tokens, r->steps));
            else
              self->send(requester, event_atom::value,
                         runtime::make_error_event(id, std::get<runtime::failure>(*past).code,
                                                   std::get<runtime::failure>(*past).message,
                                                   st.id_str));
            return;
          }
          // Logged as running but not running here: a crash cut it. Resume it.
          resumed = true;
        }
        turn t{id, std::move(text), {requester}, {}, {}, resumed};
        if (!enqueue(self, std::move(t)))
          self->send(requester, event_atom::value,
                     runtime::make_error_event(id, errc::overloaded,
                                               "agent has too many queued turns",
                                               self->state.id_str));
      },
      [](ask_atom, std::string& text, std::string& caller,
         std::string& request_id) -> caf::result<turn_result> {
        auto self = agent_actor::current();
        auto& st = self->state;
        if (st.passivating)
          return caf::make_error(caf::sec::request_receiver_down); // the directory retries
        st.last_activity = steady_clock::now();
        bool resumed = false;
        if (!request_id.empty()) {
          // Idempotent like `send`: join the running turn or answer from the log.
          auto join = [&](turn& t) { return t.id == request_id && t.text == text; };
          if (st.current && join(*st.current)) {
            auto rp = self->make_response_promise();
            st.current->promises.push_back(rp);
            return caf::delegated<turn_result>{};
          }
          for (auto& t : st.pending)
            if (join(t)) {
              auto rp = self->make_response_promise();
              t.promises.push_back(rp);
              return caf::delegated<turn_result>{};
            }
          if (auto e = st.ctx->store->find_request(st.id, request_id); e && e->text == text) {
            if (auto past = stored_outcome(*e)) {
              if (auto r = std::get_if<turn_result>(&*past)) {
                r->agent = st.id_str;
                return std::move(*r);
              }
              auto& f = std::get<runtime::failure>(*past);
              return make_error(f.code, f.message);
            }
            resumed = true;
          }
        }
        if (st.pending.size() >= st.ctx->limits.max_pending_turns)
          return make_error(errc::overloaded, "agent has too many queued turns");
        auto rp = self->make_response_promise();
        // Ask ids must stay unique across activations: they key the request log.
        auto id = request_id;
        if (id.empty())
          id = "ask-" +
               std::to_string(std::chrono::system_clock::now().time_since_epoch().count()) + "-" +
               std::to_string(++st.ask_seq);
        turn t{id, std::move(text), {}, {rp}, std::move(caller), resumed};
        enqueue(self, std::move(t));
        return caf::delegated<turn_result>{};
      },
      [](shutdown_atom) {
        auto self = agent_actor::current();
        // Node shutdown: tell everyone waiting, but keep the turns open in
        // the store; they resume when the node starts again.
        auto& st = self->state;
        st.node_stopping = true;
        auto why = "node shutting down; the turn resumes when it restarts (send the same id "
                   "again to get its outcome)";
        cancel_all_turns(self, why);
        self->quit();
      },
      [](idle_atom) {
        auto self = agent_actor::current();
        auto& st = self->state;
        auto idle = steady_clock::now() - st.last_activity;
        if (st.passivating) return;
        if (st.current || !st.pending.empty() ||
            (!st.draining && (!st.subscribers.empty() || idle < st.ctx->idle_timeout))) {
          auto wait = st.draining ? std::chrono::milliseconds(100)
                                  : std::max<std::chrono::milliseconds>(
                                        std::chrono::duration_cast<std::chrono::milliseconds>(
                                            st.ctx->idle_timeout - idle),
                                        std::chrono::milliseconds(100));
          st.idle_check.set(steady_clock::now() + wait, self->ctrl(),
                            caf::make_message(idle_atom::value));
          return;
        }
        st.passivating = true;
        self->request(st.ctx->directory, std::chrono::seconds(10), passivate_atom::value)
            .then(
                [=](bool ok) {
                  if (ok) {
                    runtime::log::debug("agent", "passivated", {{"agent", self->state.id_str}});
                    self->quit();
                  } else {
                    self->state.passivating = false;
                  }
                },
                [=](caf::error&) { self->state.passivating = false; });
      },
      [](drain_atom) {
        auto self = agent_actor::current();
        // Subscribers see this activation go down and follow the agent to
        // its next node.
        self->state.draining = true;
        self->send(self, idle_atom::value);
      },
      [](subscribe_atom, caf::actor& sub) {
        auto self = agent_actor::current();
        self->state.last_activity = steady_clock::now();
        auto& subs = self->state.subscribers;
        if (std::find(subs.begin(), subs.end(), sub) != subs.end()) return;
        subs.push_back(sub);
        self->monitor(sub);
      },
      [](unsub_atom, caf::actor& sub) {
        auto self = agent_actor::current();
        std::erase(self->state.subscribers, sub);
        self->demonitor(sub);
      },
      [](cancel_atom, std::string& id) {
        auto self = agent_actor::current();
        auto& st = self->state;
        if (st.current && st.current->id == id) {
          finish_error(self, errc::cancelled, "cancelled by client");
          return;
        }
        for (auto it = st.pending.begin(); it != st.pending.end(); ++it)
          if (it->id == id) {
            auto t = std::move(*it);
            st.pending.erase(it);
            fail_turn(self, t, errc::cancelled, "cancelled by client");
            return;
          }
      },
      [](token_atom, uint64_t job, std::string& text) {
        auto self = agent_actor::current();
        if (!is_current_job(self->state, job)) return;
        self->state.current->streamed = true;
        runtime::agent_event ev;
        ev.kind = event_kind::token;
        ev.text = std::move(text);
        emit(self, std::move(ev));
      },
      [](done_atom, uint64_t job, runtime::chat_result& result) {
        auto self = agent_actor::current();
        auto& st = self->state;
        if (!is_current_job(st, job)) return;
        st.current->job = 0;
        release_worker(self);
        st.current->used += result.tokens;
        append(self, {"assistant", result.content, result.tool_calls, {}, {}});
        if (result.tool_calls.empty()) {
          finish_ok(self, std::move(result.content));
          return;
        }
        st.current->calls = std::move(result.tool_calls);
        run_tools(self);
      },
      [](fail_atom, uint64_t job, runtime::failure& f, bool started, std::string& worker_id) {
        auto self = agent_actor::current();
        if (!is_current_job(self->state, job)) return;
        // `started` from the stream, or tokens we saw: either means the client
        // has seen part of this answer and a retry would repeat it.
        model_call_failed(self, f, started || self->state.current->streamed, worker_id);
      },
      [](timeout_atom, uint64_t seq) {
        auto self = agent_actor::current();
        auto& st = self->state;
        if (st.current && st.turn_seq == seq)
          finish_error(self, errc::timeout,
                       "turn exceeded " + std::to_string(st.ctx->limits.turn_timeout.count()) +
                           " ms");
      },
  };
  return handlers;
}

} // namespace

caf::actor spawn_agent(caf::actor_system& sys, runtime::agent_id id,
                       std::shared_ptr<const runtime::agent_type> type,
                       std::vector<runtime::chat_message> history,
                       std::vector<runtime::request_entry> resume,
                       std::shared_ptr<const agent_context> ctx) {
  return sys.spawn<agent_actor>(std::move(id), std::move(type), std::move(history),
                                std::move(resume), std::move(ctx));
}

} // namespace troupe::actors
