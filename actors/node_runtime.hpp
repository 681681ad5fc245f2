#pragma once

#include "actors/frame_sink.hpp"
#include "actors/supervision.hpp"
#include "actors/worker_status.hpp"
#include "runtime/config.hpp"
#include "runtime/errc.hpp"
#include "runtime/llm.hpp"
#include "runtime/mcp_tools.hpp"
#include "runtime/principal.hpp"
#include "runtime/state_store.hpp"
#include "runtime/tool.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <variant>
#include <string>
#include <vector>

namespace troupe::runtime {
class key_quotas;
}

namespace troupe::actors {

class io_threads;
class cluster_hooks;

/// The gateway's handle on one WebSocket's session actor. Methods post
/// messages; they never block. Destroying it does not stop the session:
/// call `closed()` when the socket is gone.
class session_handle {
public:
  virtual ~session_handle() = default;
  virtual void on_text(std::string frame) = 0;
  virtual void on_binary() = 0;
  virtual void closed() = 0;
};

/// Answer of a REST `execute`.
struct execute_result {
  std::optional<runtime::failure> error;
  std::string agent;
  std::string answer;
  runtime::usage tokens;
  int64_t steps = 0;
};

/// One node's actor system with its router, workers and agent directory.
/// This is the gateway's whole view of the actors, with no CAF types in it,
/// so the HTTP code compiles without CAF. Callbacks run on actor threads and
/// must not block.
class node_runtime {
public:
  /// `cluster`: the cluster layer when the config has `cluster:` (see
  /// `cluster_hooks`); null on a single node.
  node_runtime(const runtime::node_config& cfg,
               std::shared_ptr<const runtime::agent_type_registry> types,
               std::shared_ptr<runtime::state_store> store, io_threads& io,
               std::shared_ptr<cluster_hooks> cluster = nullptr);
  ~node_runtime();

  const runtime::node_config& config() const;
  bool has_type(const std::string& type) const;
  /// Every agent type as (name, system prompt), for MCP's `tools/list`.
  std::vector<std::pair<std::string, std::string>> agent_types() const;

  /// The configured MCP servers: state, session and tools (`GET /api/mcp`).
  std::vector<runtime::mcp_server_view> mcp_servers() const;

  /// Every call below acts for `who`: agents it spawns are its own, and a
  /// scoped principal reaches only those (`runtime::principal`). The
  /// default principal sees everything (auth off). `quotas`: the per-key
  /// limits a session enforces on its ops and turns (null = none).
  std::unique_ptr<session_handle> open_session(std::shared_ptr<frame_sink> sink,
                                               std::string fixed_type, runtime::principal who = {},
                                               std::shared_ptr<runtime::key_quotas> quotas = {});

  void execute(std::string type, std::string key, std::string message,
               std::function<void(execute_result)> cb, const runtime::principal& who = {});
  /// `execute` that also reports the turn's tokens as they stream: each
  /// token's text to `on_token` (an actor thread; must not block; null =
  /// none, which is `execute`), then `cb`.
  void execute_streaming(std::string type, std::string key, std::string message,
                         std::function<void(std::string)> on_token,
                         std::function<void(execute_result)> cb,
                         const runtime::principal& who = {});
  void spawn_agent(std::string type, std::string key,
                   std::function<void(std::optional<runtime::failure>, std::string agent)> cb,
                   const runtime::principal& who = {});
  void kill_agent(std::string agent, std::function<void(std::optional<runtime::failure>)> cb,
                  const runtime::principal& who = {});
  void list_agents(std::function<void(std::vector<std::string>)> cb,
                   const runtime::principal& who = {});
  void workers(std::function<void(std::vector<worker_status>)> cb);

  /// Queues an async job: one turn of agent `type/key` (a fresh key if
  /// empty). Returns the stored job, or the failure (unknown type, store).
  std::variant<runtime::job_record, runtime::failure>
  submit_job(const std::string& type, std::string key, std::string message,
             const runtime::principal& who = {});
  /// Nothing when there is no such job or it is another key's.
  std::optional<runtime::job_record> find_job(const std::string& id,
                                              const runtime::principal& who = {});

  /// The supervision tree's restarts and escalations, for `/health`.
  const supervision_status& supervision() const;

  /// Fault injection (TROUPE_FAULT_INJECTION=1 only): crashes worker `id`.
  void crash_worker(const std::string& id);
  /// Fault injection: crashes `router`, `directory` or `jobs`. False if
  /// there is no such part or fault injection is off.
  bool crash(const std::string& part);

  /// One model call routed over the node's workers (`/v1/chat/completions`):
  /// tokens to `on_token`, then `on_end` once.
  void complete(runtime::chat_request req, std::function<void(std::string)> on_token,
                std::function<void(std::optional<runtime::failure>, runtime::chat_result)> on_end);

  /// Cluster drain: every local agent finishes its turns and passivates
  /// (peers host it from then on), then the local workers finish what they
  /// run. Blocks up to `timeout`; false if work was still running then.
  bool drain(std::chrono::milliseconds timeout);

  /// Graceful stop: sessions cancel their open requests and close, then
  /// agents and workers stop (each open turn ends in `error`). Blocks up to
  /// a few seconds.
  void shutdown();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace troupe::actors
