#include "actors/ws_session.hpp"
#include "actors/atoms.hpp"
#include "actors/messages.hpp"
#include "actors/monitor.hpp"
#include "runtime/key_quotas.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"
#include "runtime/turn_outcome.hpp"
#include "runtime/ws_protocol.hpp"

#include <caf/all.hpp>

#include <map>
#include <unordered_map>
#include <set>

namespace troupe::actors {

using runtime::client_op;
using runtime::client_op_kind;
using runtime::errc;
using runtime::event_kind;

namespace {

constexpr auto directory_timeout = std::chrono::seconds(10);
constexpr size_t max_inflight = 256;
/// Sends of one request to successive activations before it fails.
constexpr int max_attempts = 5;
constexpr auto retry_backoff = std::chrono::milliseconds(250);

struct session_state {
  explicit session_state(caf::local_actor* self) : monitored(self) {}

  std::shared_ptr<frame_sink> sink;
  caf::actor directory;
  std::string node;
  std::string fixed_type;
  std::string fixed_agent; // `/ws/{type}`: the connection's own agent
  runtime::principal who;
  std::string scope; // who.scope(), for every directory ask
  std::shared_ptr<runtime::key_quotas> quotas;
  std::vector<std::string> early_frames; // arrived before the own agent existed
  uint64_t auto_id = 0;
  /// A `send` not yet answered with done/error. If its agent goes down
  /// (passivated, crashed), it is sent again: the request log makes that safe.
  struct request {
    caf::actor agent; // null while the lookup runs
    std::string agent_name;
    std::string text;
    int attempts = 0;
    runtime::key_quotas::lease turn; // the key's turn slot, given back with the entry
  };
  std::map<std::string, request> inflight; // by client id
  /// Activations looked up for this session's sends, by agent name, until
  /// they go down: a message to a known agent skips the directory (two
  /// actor hops and a timer on the path to its first token). Cleared past
  /// `max_known`.
  std::unordered_map<std::string, caf::actor> known;
  static constexpr size_t max_known = 1024;
  std::map<caf::actor, std::string> attached; // agent -> its name
  monitor_set monitored;              // the agents this session watches; undone when it ends
  std::set<std::string> watched_jobs; // attached jobs whose end was not seen yet
  bool shutting_down = false;
  static inline const char* name = "ws_session";
};

using session_actor = caf::stateful_actor<session_state>;

void write(session_actor* self, const runtime::event_ptr& ev) {
  // Aliasing constructor: the frame shares the event's lifetime, no copy.
  self->state.sink->send(std::shared_ptr<const std::string>(ev, &ev->json));
}

void write_error(session_actor* self, const std::string& id, errc code, std::string message) {
  runtime::metrics_registry::global()
      .get_counter("troupe_ws_errors_total", "Error events sent to WebSocket clients",
                   "code=\"" + std::string{runtime::to_string(code)} + "\"")
      .inc();
  write(self, runtime::make_error_event(id, code, std::move(message)));
}

void write_simple(session_actor* self, event_kind kind, const std::string& id,
                  const std::string& agent) {
  runtime::agent_event ev;
  ev.kind = kind;
  ev.id = id;
  ev.agent = agent;
  write(self, runtime::seal(std::move(ev)));
}

void maybe_close(session_actor* self) {
  auto& st = self->state;
  if (st.shutting_down && st.inflight.empty()) {
    st.sink->close(1001, "node shutting down");
    self->quit();
  }
}

/// Looks up an agent, then runs `f(agent)`; failures go to the client.
template <class F>
void with_agent(session_actor* self, const std::string& id, const std::string& agent, F f) {
  self->request(self->state.directory, directory_timeout, lookup_atom::value, agent,
                self->state.scope)
      .then([=](caf::actor& hdl) mutable { f(hdl); },
            [=](caf::error& err) {
              auto fl = to_failure(err);
              write_error(self, id, fl.code, fl.message);
            });
}

void watch(session_actor* self, const caf::actor& agent) {
  self->state.monitored.add(agent);
}

/// Looks the request's agent up (activating it if needed) and sends it.
void dispatch(session_actor* self, const std::string& id) {
  auto& st = self->state;
  auto it = st.inflight.find(id);
  if (it == st.inflight.end()) return;
  it->second.agent = nullptr;
  ++it->second.attempts;
  if (auto k = st.known.find(it->second.agent_name); k != st.known.end()) {
    it->second.agent = k->second;
    self->send(k->second, send_atom::value, id, it->second.text, caf::actor_cast<caf::actor>(self));
    return;
  }
  self->request(st.directory, directory_timeout, lookup_atom::value, it->second.agent_name,
                st.scope)
      .then(
          [=](caf::actor& agent) {
            auto& st = self->state;
            auto it = st.inflight.find(id);
            if (it == st.inflight.end()) return; // cancelled while looking up
            if (st.known.size() >= st.max_known) st.known.clear();
            st.known[it->second.agent_name] = agent;
            it->second.agent = agent;
            watch(self, agent);
            self->send(agent, send_atom::value, id, it->second.text,
                       caf::actor_cast<caf::actor>(self));
          },
          [=](caf::error& err) {
            if (self->state.inflight.erase(id) == 0) return;
            auto f = to_failure(err);
            write_error(self, id, f.code, f.message);
            maybe_close(self);
          });
}

/// An agent activation went away: passivated, crashed or killed. Requests it
/// had not answered go to its next activation; attachments follow it.
void on_agent_down(session_actor* self, const caf::actor_addr& who) {
  auto& st = self->state;
  st.monitored.forget(who);
  std::erase_if(st.known, [&](const auto& k) { return k.second.address() == who; });
  std::vector<std::string> resend;
  for (auto& [id, req] : st.inflight)
    if (req.agent && req.agent.address() == who) resend.push_back(id);
  for (auto& id : resend) {
    auto& req = st.inflight[id];
    if (req.attempts >= max_attempts || st.shutting_down) {
      auto name = req.agent_name;
      st.inflight.erase(id);
      write_error(self, id, errc::internal, "agent " + name + " stopped repeatedly");
      continue;
    }
    // The first retry goes at once (a passivated agent comes right back);
    // later ones wait a little, so a cluster that just lost the agent's node
    // has agreed on who hosts it next.
    req.agent = nullptr;
    if (req.attempts <= 1)
      dispatch(self, id);
    else
      self->delayed_send(self, retry_backoff * (req.attempts - 1), send_atom::value, id);
  }
  for (auto it = st.attached.begin(); it != st.attached.end();) {
    if (it->first.address() != who) {
      ++it;
      continue;
    }
    auto name = it->second;
    it = st.attached.erase(it);
    self->request(st.directory, directory_timeout, lookup_atom::value, name, st.scope)
        .then(
            [=](caf::actor& agent) {
              self->state.attached[agent] = name;
              watch(self, agent);
              self->send(agent, subscribe_atom::value, caf::actor_cast<caf::actor>(self));
            },
            [](caf::error&) {}); // killed: nothing to follow
  }
  maybe_close(self);
}

/// Writes a finished job's stored outcome as its `done` or `error` event.
void write_job_end(session_actor* self, const runtime::job_record& job) {
  bool done = job.state == runtime::job_state::done;
  auto past = runtime::decode_outcome(done, job.outcome);
  if (!past) // unreadable: still end the job for the client, with empty fields
    past = done ? decltype(past){runtime::turn_outcome{}}
                : decltype(past){runtime::failure{errc::internal, {}}};
  if (auto f = std::get_if<runtime::failure>(&*past))
    return write(self, runtime::make_error_event(job.id, f->code, f->message, job.agent.str()));
  auto& d = std::get<runtime::turn_outcome>(*past);
  write(self, runtime::make_done_event(job.id, job.agent.str(), d.answer, d.tokens, d.steps));
}

/// `attach` to a job: a finished one answers with its outcome at once; a
/// queued or running one subscribes to its agent, whose events for the job
/// carry the job id. Checked once more after subscribing, so a job that
/// ends in between is not missed.
void attach_job(session_actor* self, const std::string& op_id, const std::string& job_id,
                bool first) {
  auto& st = self->state;
  self->request(st.directory, directory_timeout, job_atom::value, job_id, st.scope)
      .then(
          [=](job_view& view) {
            auto& st = self->state;
            auto finished = !view.agent;
            if (first && !finished) {
              st.watched_jobs.insert(job_id);
              st.attached[view.agent] = view.job.agent.str();
              watch(self, view.agent);
              self->send(view.agent, subscribe_atom::value, caf::actor_cast<caf::actor>(self));
              write_simple(self, event_kind::attached, op_id, view.job.agent.str());
              return attach_job(self, op_id, job_id, false);
            }
            if (finished && (first || st.watched_jobs.erase(job_id) > 0))
              write_job_end(self, view.job);
          },
          [=](caf::error& err) {
            if (!first) return;
            auto f = to_failure(err);
            write_error(self, op_id, f.code, f.message);
          });
}

void handle_op(session_actor* self, client_op op) {
  auto& st = self->state;
  if (st.quotas && op.kind != client_op_kind::ping && !st.quotas->take_request(st.who.name))
    return write_error(self, op.id, errc::limit_exceeded, st.quotas->over_rate(st.who.name));
  switch (op.kind) {
  case client_op_kind::ping:
    write_simple(self, event_kind::pong, op.id, {});
    break;
  case client_op_kind::spawn:
    self->request(st.directory, directory_timeout, spawn_atom::value, op.type, op.key, st.who.name,
                  st.scope)
        .then(
            [=](std::string& agent, std::string& node) {
              runtime::agent_event ev;
              ev.kind = event_kind::spawned;
              ev.agent = agent;
              ev.id = op.id;
              ev.node = std::move(node);
              write(self, runtime::seal(std::move(ev)));
            },
            [=](caf::error& err) {
              auto f = to_failure(err);
              write_error(self, op.id, f.code, f.message);
            });
    break;
  case client_op_kind::send: {
    if (st.shutting_down) return write_error(self, op.id, errc::cancelled, "node shutting down");
    if (op.id.empty()) op.id = "auto-" + std::to_string(++st.auto_id);
    if (st.inflight.contains(op.id))
      return write_error(self, op.id, errc::bad_request,
                         "a request with id '" + op.id + "' is still running");
    if (st.inflight.size() >= max_inflight)
      return write_error(self, op.id, errc::overloaded, "too many requests in flight");
    runtime::key_quotas::lease turn;
    if (st.quotas && !(turn = st.quotas->begin_turn(st.who.name)))
      return write_error(self, op.id, errc::limit_exceeded, st.quotas->over_turns(st.who.name));
    st.inflight[op.id] = {nullptr, op.agent, op.text, 0, std::move(turn)};
    dispatch(self, op.id);
    break;
  }
  case client_op_kind::cancel: {
    auto it = st.inflight.find(op.id);
    if (it == st.inflight.end())
      return write_error(self, op.id, errc::bad_request,
                         "no running request with id '" + op.id + "'");
    if (it->second.agent) {
      self->send(it->second.agent, cancel_atom::value, op.id);
    } else {
      st.inflight.erase(it);
      write_error(self, op.id, errc::cancelled, "cancelled by client");
    }
    break;
  }
  case client_op_kind::attach:
    if (!op.job.empty()) return attach_job(self, op.id, op.job, true);
    with_agent(self, op.id, op.agent, [=](caf::actor& agent) {
      self->state.attached[agent] = op.agent;
      watch(self, agent);
      self->send(agent, subscribe_atom::value, caf::actor_cast<caf::actor>(self));
      write_simple(self, event_kind::attached, op.id, op.agent);
    });
    break;
  case client_op_kind::detach:
    with_agent(self, op.id, op.agent, [=](caf::actor& agent) {
      self->state.attached.erase(agent);
      self->send(agent, unsub_atom::value, caf::actor_cast<caf::actor>(self));
      write_simple(self, event_kind::detached, op.id, op.agent);
    });
    break;
  case client_op_kind::kill:
    self->request(st.directory, directory_timeout, kill_atom::value, op.agent, st.scope)
        .then([=](bool) { write_simple(self, event_kind::killed, op.id, op.agent); },
              [=](caf::error& err) {
                auto f = to_failure(err);
                write_error(self, op.id, f.code, f.message);
              });
    break;
  case client_op_kind::list:
    self->request(st.directory, directory_timeout, list_atom::value, st.scope)
        .then(
            [=](std::vector<std::string>& agents) {
              runtime::agent_event ev;
              ev.kind = event_kind::agents;
              ev.id = op.id;
              ev.agent_list = std::move(agents);
              write(self, runtime::seal(std::move(ev)));
            },
            [=](caf::error& err) {
              auto f = to_failure(err);
              write_error(self, op.id, f.code, f.message);
            });
    break;
  }
}

void handle_frame(session_actor* self, const std::string& text) {
  auto& st = self->state;
  if (!st.fixed_type.empty()) {
    if (st.fixed_agent.empty()) {
      if (st.early_frames.size() >= 64)
        return write_error(self, {}, errc::overloaded, "agent is still starting");
      st.early_frames.push_back(text);
      return;
    }
    // `/ws/{type}`: a frame that is not a protocol op is a message.
    auto decoded = runtime::decode_client_frame(text);
    if (auto op = std::get_if<client_op>(&decoded)) {
      if (op->kind == client_op_kind::send && op->agent.empty()) op->agent = st.fixed_agent;
      return handle_op(self, std::move(*op));
    }
    if (!text.empty() && text.front() == '{') {
      auto& err = std::get<runtime::protocol_error>(decoded);
      if (err.message.rfind("unknown op", 0) == 0 || err.message == "missing field 'op'" ||
          err.message == "malformed JSON")
        ; // fall through: plain text that happens to start with '{'
      else
        return write_error(self, err.id, err.code, err.message);
    }
    client_op op;
    op.kind = client_op_kind::send;
    op.agent = st.fixed_agent;
    op.text = text;
    return handle_op(self, std::move(op));
  }
  auto decoded = runtime::decode_client_frame(text);
  if (auto err = std::get_if<runtime::protocol_error>(&decoded))
    return write_error(self, err->id, err->code, err->message);
  handle_op(self, std::move(std::get<client_op>(decoded)));
}

caf::behavior session_impl(session_actor* self, std::shared_ptr<frame_sink> sink,
                           caf::actor directory, std::string node, std::string fixed_type,
                           runtime::principal who, std::shared_ptr<runtime::key_quotas> quotas) {
  auto& st = self->state;
  st.who = std::move(who);
  st.scope = st.who.scope();
  st.quotas = std::move(quotas);
  st.sink = std::move(sink);
  st.directory = std::move(directory);
  st.node = std::move(node);
  st.fixed_type = std::move(fixed_type);
  self->set_down_handler([self](caf::down_msg& dm) { on_agent_down(self, dm.source); });
  if (!st.fixed_type.empty()) {
    self->request(st.directory, directory_timeout, spawn_atom::value, st.fixed_type, std::string{},
                  st.who.name, st.scope)
        .then(
            [=](std::string& agent, std::string& node) {
              auto& st = self->state;
              st.fixed_agent = agent;
              runtime::agent_event ev;
              ev.kind = event_kind::spawned;
              ev.agent = agent;
              ev.node = std::move(node);
              write(self, runtime::seal(std::move(ev)));
              auto early = std::move(st.early_frames);
              for (auto& f : early)
                handle_frame(self, f);
            },
            [=](caf::error& err) {
              auto f = to_failure(err);
              write_error(self, {}, f.code, f.message);
              self->state.sink->close(1008, f.message);
              self->quit();
            });
  }
  return {
      [=](frame_atom, std::string& text) { handle_frame(self, text); },
      [=](send_atom, std::string& id) { dispatch(self, id); }, // a delayed retry
      [=](binary_atom) {
        write_error(self, {}, errc::bad_request,
                    "binary frames are not supported: send JSON text frames");
      },
      [=](event_atom, runtime::event_ptr& ev) {
        auto& st = self->state;
        if ((ev->kind == event_kind::done || ev->kind == event_kind::error) && !ev->id.empty()) {
          st.watched_jobs.erase(ev->id);
          auto it = st.inflight.find(ev->id);
          if (it != st.inflight.end() &&
              (!it->second.agent || it->second.agent.address() == self->current_sender()))
            st.inflight.erase(it);
        }
        write(self, ev);
        maybe_close(self);
      },
      [=](shutdown_atom) {
        auto& st = self->state;
        st.shutting_down = true;
        for (auto& [id, req] : st.inflight)
          if (req.agent) self->send(req.agent, cancel_atom::value, id);
        maybe_close(self);
        // Whatever has not ended in two seconds is dropped with the socket.
        self->delayed_send(self, std::chrono::seconds(2), timeout_atom::value);
      },
      [=](timeout_atom) {
        self->state.sink->close(1001, "node shutting down");
        self->quit();
      },
  };
}

} // namespace

caf::actor spawn_ws_session(caf::actor_system& sys, std::shared_ptr<frame_sink> sink,
                            caf::actor directory, std::string node, std::string fixed_type,
                            runtime::principal who, std::shared_ptr<runtime::key_quotas> quotas) {
  return sys.spawn(session_impl, std::move(sink), std::move(directory), std::move(node),
                   std::move(fixed_type), std::move(who), std::move(quotas));
}

} // namespace troupe::actors
