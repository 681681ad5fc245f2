#include "cluster/remote_mcp.hpp"
#include "actors/atoms.hpp"
#include "actors/messages.hpp"
#include "actors/monitor.hpp"
#include "cluster/atoms.hpp"
#include "cluster/transport.hpp"

#include <caf/all.hpp>

#include <unordered_map>

namespace troupe::cluster {

using namespace troupe::actors;
using runtime::tool_outcome;

namespace {

struct open_call {
  caf::response_promise rp;
  std::string key;
};

struct remote_mcp_state {
  std::shared_ptr<transport> net;
  std::string node;
  std::string server;
  std::unordered_map<uint64_t, open_call> calls;
  uint64_t next = 0;
  caf::actor_addr hub;

  /// However the proxy ends, nobody is left waiting.
  ~remote_mcp_state() { fail_all("node " + node + " is gone"); }

  void fail_all(const std::string& why) {
    for (auto& [corr, c] : calls)
      if (c.rp.pending()) c.rp.deliver(tool_outcome{"MCP server '" + server + "' on " + why, true});
    calls.clear();
  }
  static inline const char* name = "remote_mcp";
};

using proxy_actor = caf::stateful_actor<remote_mcp_state>;

void end(proxy_actor* self, const std::string& why) {
  self->state.fail_all(why);
  self->quit(make_error(runtime::errc::backend_unavailable, why));
}

caf::behavior remote_mcp_impl(proxy_actor* self, std::shared_ptr<transport> net, std::string node,
                              std::string server) {
  auto& st = self->state;
  st.net = std::move(net);
  st.node = std::move(node);
  st.server = std::move(server);
  self->set_down_handler([self](caf::down_msg& dm) {
    if (dm.source == self->state.hub) end(self, "cluster hub restarted");
  });
  return {
      [=](tool_atom, std::string& tool, std::string& arguments,
          std::string& key) -> caf::result<tool_outcome> {
        auto& st = self->state;
        auto args = nlohmann::json::parse(arguments.empty() ? "{}" : arguments, nullptr, false);
        if (!args.is_object())
          return tool_outcome{"arguments are not a JSON object: " + arguments, true};
        auto corr = ++st.next;
        if (!st.net->send(st.node, msg_type::mcp_call, st.server, corr,
                          {{"tool", tool}, {"arguments", std::move(args)}, {"key", key}}))
          return tool_outcome{"link to node " + st.node + " is full", true};
        auto rp = self->make_response_promise();
        st.calls[corr] = {rp, std::move(key)};
        return caf::delegated<tool_outcome>{};
      },
      [=](cancel_atom, std::string& key) {
        auto& st = self->state;
        for (auto it = st.calls.begin(); it != st.calls.end(); ++it)
          if (it->second.key == key) {
            st.net->send(st.node, msg_type::mcp_cancel, st.server, it->first, {{"key", key}});
            it->second.rp.deliver(tool_outcome{"cancelled", true});
            st.calls.erase(it);
            return;
          }
      },
      [=](peer_frame_atom, peer_frame& f) {
        auto& st = self->state;
        auto it = st.calls.find(f.env.corr);
        if (f.env.type != msg_type::mcp_result || it == st.calls.end()) return;
        guarded(f, [&] {
          auto body = decode_payload(f.payload).value_or(nlohmann::json::object());
          it->second.rp.deliver(
              tool_outcome{body.value("result", std::string{}), body.value("is_error", true)});
          st.calls.erase(it);
        });
      },
      [=](peer_down_atom) { end(self, "node " + self->state.node + " is gone"); },
      [=](watch_atom, caf::actor& hub) {
        self->state.hub = hub.address();
        monitor_while_alive(self, hub);
      },
  };
}

} // namespace

caf::actor spawn_remote_mcp(caf::actor_system& sys, std::shared_ptr<transport> net,
                            std::string node, std::string server) {
  return sys.spawn(remote_mcp_impl, std::move(net), std::move(node), std::move(server));
}

} // namespace troupe::cluster
