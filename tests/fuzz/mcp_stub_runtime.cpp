// A node_runtime for the MCP fuzzer: the members the MCP server calls,
// answering at once on the caller's thread instead of running a turn on
// actors. Linked instead of actors/node_runtime.cpp and io_threads.cpp.
#include "actors/io_threads.hpp"
#include "actors/node_runtime.hpp"

namespace troupe::actors {

// No threads: nothing here does I/O.
struct io_threads::impl {};
io_threads::io_threads(int) {}
io_threads::~io_threads() = default;

struct node_runtime::impl {};

node_runtime::node_runtime(const runtime::node_config&,
                           std::shared_ptr<const runtime::agent_type_registry>,
                           std::shared_ptr<runtime::state_store>, io_threads&,
                           std::shared_ptr<cluster_hooks>) {}

node_runtime::~node_runtime() = default;

std::vector<std::pair<std::string, std::string>> node_runtime::agent_types() const {
  // Names that are valid MCP tool names and some that must be rewritten.
  return {{"chat", "You are a helpful assistant."},
          {"weather agent.v2", "Reports the weather."},
          {std::string(80, 'x'), "A name longer than MCP allows."}};
}

void node_runtime::execute(std::string type, std::string key, std::string message,
                           std::function<void(execute_result)> cb, const runtime::principal& who) {
  execute_streaming(std::move(type), std::move(key), std::move(message), nullptr, std::move(cb),
                    who);
}

void node_runtime::execute_streaming(std::string type, std::string key, std::string message,
                                     std::function<void(std::string)> on_token,
                                     std::function<void(execute_result)> cb,
                                     const runtime::principal&) {
  execute_result r;
  r.agent = type + "/" + (key.empty() ? "auto-1" : key);
  // A message starting with "fail" makes the turn fail, so failed turns
  // are encoded too.
  if (message.rfind("fail", 0) == 0) {
    r.error = runtime::failure{runtime::errc::backend_unavailable, message};
    return cb(std::move(r));
  }
  if (on_token)
    for (size_t i = 0; i < message.size(); i += 4)
      on_token(message.substr(i, 4));
  r.answer = std::move(message);
  r.steps = 1;
  r.tokens = {static_cast<int64_t>(r.answer.size()), 1};
  cb(std::move(r));
}

} // namespace troupe::actors
