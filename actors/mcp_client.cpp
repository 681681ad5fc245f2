#include "actors/mcp_client.hpp"
#include "actors/atoms.hpp"
#include "actors/io_threads.hpp"
#include "actors/mcp_catalog.hpp"
#include "actors/mcp_transport.hpp"
#include "actors/messages.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"

#include <caf/all.hpp>

#include <nlohmann/json.hpp>

#include <map>

namespace troupe::actors {

using nlohmann::json;
using runtime::errc;
using runtime::tool_outcome;

namespace {

/// The versions this client accepts from `initialize`; the first it asks for.
constexpr const char* accepted_versions[] = {"2025-06-18", "2025-11-25", "2025-03-26"};

/// Calls that may wait for a starting server before they are refused.
constexpr size_t max_waiting_calls = 1024;

/// Longest tool result handed to a model; the rest is cut with a note.
constexpr size_t max_result_bytes = 256 * 1024;

/// Tools and pages accepted from one `tools/list`: a server cannot make the
/// node hold an unbounded catalog.
constexpr size_t max_tools = 4096;
constexpr int max_pages = 100;

using message_atom = caf::atom_constant<caf::atom("mcpmsg")>;
using closed_atom = caf::atom_constant<caf::atom("mcpclosed")>;

struct open_request {
  enum class kind { initialize, list, call, ping } what;
  caf::response_promise promise; // a call's caller
  std::string key;               // a call's cancellation key
  std::string tool;
  json arguments;
  bool sent = false; // calls wait unsent until the server is ready
};

struct mcp_client_state {
  runtime::mcp_server_config cfg;
  std::shared_ptr<mcp_catalog> catalog;
  std::shared_ptr<mcp_transport> transport;
  int64_t next_id = 0;
  std::map<int64_t, open_request> open;
  size_t waiting = 0; // calls not yet sent
  bool ready = false;
  bool listing = false;
  bool relist = false; // tools changed while listing: list again after
  int pages = 0;
  std::vector<runtime::mcp_tool> listed;
  std::string version;

  ~mcp_client_state() {
    // The net under every exit path: nobody waits on a call forever.
    fail_all("MCP server '" + cfg.name + "' client stopped");
    if (transport) transport->close();
  }

  void fail_all(const std::string& why) {
    for (auto& [id, r] : open)
      if (r.what == open_request::kind::call && r.promise.pending())
        r.promise.deliver(tool_outcome{why, true});
    open.clear();
    waiting = 0;
  }

  static inline const char* name = "mcp_client";
};

using client_actor = caf::stateful_actor<mcp_client_state>;

struct client_metrics {
  static runtime::metrics_registry& reg() { return runtime::metrics_registry::global(); }
  runtime::counter& calls_ok =
      reg().get_counter("troupe_mcp_calls_total", "MCP tool calls by outcome", "outcome=\"ok\"");
  runtime::counter& calls_error =
      reg().get_counter("troupe_mcp_calls_total", "MCP tool calls by outcome", "outcome=\"error\"");
  runtime::counter& bad_messages = reg().get_counter(
      "troupe_mcp_bad_messages_total", "Unparseable messages from MCP servers, ignored");
};

client_metrics& metrics() {
  static client_metrics m;
  return m;
}

void send_json(client_actor* self, const json& msg) {
  self->state.transport->send(msg.dump(-1, ' ', false, json::error_handler_t::replace));
}

int64_t request(client_actor* self, open_request r, const std::string& method, json params,
                std::chrono::milliseconds timeout) {
  auto& st = self->state;
  auto id = ++st.next_id;
  json msg{{"jsonrpc", "2.0"}, {"id", id}, {"method", method}};
  if (!params.is_null()) msg["params"] = std::move(params);
  r.sent = true;
  st.open.emplace(id, std::move(r));
  send_json(self, msg);
  self->delayed_send(self, timeout, timeout_atom::value, id);
  return id;
}

/// Stops this incarnation: every open call gets `why` as a tool error; the
/// supervisor starts the next one.
void give_up(client_actor* self, const std::string& why) {
  auto& st = self->state;
  runtime::log::warn("mcp", "server_failed", {{"server", st.cfg.name}, {"reason", why}});
  st.catalog->set_state(st.cfg.name, "restarting", why);
  st.fail_all("MCP server '" + st.cfg.name + "' failed: " + why);
  self->quit(make_error(errc::backend_unavailable, "MCP server '" + st.cfg.name + "': " + why));
}

void send_call(client_actor* self, int64_t id, open_request& r) {
  r.sent = true;
  json msg{{"jsonrpc", "2.0"},
           {"id", id},
           {"method", "tools/call"},
           {"params", {{"name", r.tool}, {"arguments", r.arguments}}}};
  send_json(self, msg);
}

void list_tools(client_actor* self, const std::string& cursor) {
  auto& st = self->state;
  if (cursor.empty()) {
    st.listing = true;
    st.relist = false;
    st.pages = 0;
    st.listed.clear();
  }
  json params = json::object();
  if (!cursor.empty()) params["cursor"] = cursor;
  request(self, {open_request::kind::list, {}, {}, {}, {}}, "tools/list", std::move(params),
          st.cfg.startup_timeout);
}

void listed(client_actor* self, const json& result) {
  auto& st = self->state;
  if (auto tools = result.find("tools"); tools != result.end() && tools->is_array())
    for (auto& t : *tools) {
      if (!t.is_object() || !t.contains("name") || !t["name"].is_string()) continue;
      if (st.listed.size() >= max_tools) break;
      runtime::mcp_tool tool;
      tool.server = st.cfg.name;
      tool.name = t["name"].get<std::string>();
      if (auto d = t.find("description"); d != t.end() && d->is_string())
        tool.description = d->get<std::string>();
      auto schema = t.value("inputSchema", json::object());
      if (!schema.is_object()) schema = json::object();
      if (!schema.contains("type")) schema["type"] = "object";
      tool.input_schema = schema.dump();
      st.listed.push_back(std::move(tool));
    }
  auto cursor = result.value("nextCursor", json{});
  if (cursor.is_string() && !cursor.get<std::string>().empty() && ++st.pages < max_pages &&
      st.listed.size() < max_tools)
    return list_tools(self, cursor.get<std::string>());

  std::vector<std::string> names;
  for (auto& t : st.listed)
    names.push_back(t.name);
  auto exposed = runtime::expose_mcp_tool_names(st.cfg.name, names);
  for (size_t i = 0; i < st.listed.size(); ++i)
    st.listed[i].exposed = exposed[i];
  st.catalog->set_tools(st.cfg.name, st.listed);
  st.listing = false;
  if (!st.ready) {
    st.ready = true;
    st.catalog->set_state(st.cfg.name, "ready");
    runtime::log::info("mcp", "server_ready",
                       {{"server", st.cfg.name},
                        {"tools", std::to_string(st.listed.size())},
                        {"protocol", st.version}});
    for (auto& [id, r] : st.open)
      if (!r.sent) send_call(self, id, r);
    st.waiting = 0;
  }
  if (st.relist) list_tools(self, {});
}

void initialized(client_actor* self, const json& result) {
  auto& st = self->state;
  auto version = result.value("protocolVersion", std::string{});
  bool ok = false;
  for (auto v : accepted_versions)
    ok |= version == v;
  if (!ok)
    return give_up(self, "server speaks protocol '" + version +
                             "'; troupe speaks 2025-06-18, 2025-11-25 and 2025-03-26");
  st.version = version;
  std::string info;
  if (auto si = result.find("serverInfo"); si != result.end() && si->is_object())
    info = si->value("name", std::string{}) + " " + si->value("version", std::string{});
  st.catalog->set_session(st.cfg.name, version, info);
  send_json(self, {{"jsonrpc", "2.0"}, {"method", "notifications/initialized"}});
  st.transport->initialized(version);
  auto caps = result.value("capabilities", json::object());
  if (caps.is_object() && caps.contains("tools"))
    list_tools(self, {});
  else
    listed(self, json::object()); // a server without tools is ready at once
  self->delayed_send(self, st.cfg.ping_interval, tick_atom::value);
}

/// A tools/call result as the model will read it: text content joined;
/// other content named; structured content when there is no text.
tool_outcome to_outcome(const json& result) {
  tool_outcome out;
  out.is_error = result.value("isError", false);
  if (auto content = result.find("content"); content != result.end() && content->is_array())
    for (auto& c : *content) {
      if (!c.is_object()) continue;
      auto type = c.value("type", std::string{});
      std::string piece;
      if (type == "text")
        piece = c.value("text", std::string{});
      else if (type == "resource" && c.contains("resource") && c["resource"].is_object())
        piece = c["resource"].value("text", "[resource " + c["resource"].value("uri", "") + "]");
      else if (type == "resource_link")
        piece = "[resource " + c.value("uri", std::string{}) + "]";
      else
        piece = "[" + type + " " + c.value("mimeType", std::string{}) + "]";
      if (!out.result.empty()) out.result += '\n';
      out.result += piece;
    }
  if (out.result.empty() && result.contains("structuredContent"))
    out.result = result["structuredContent"].dump();
  if (out.result.size() > max_result_bytes) {
    out.result.resize(max_result_bytes);
    out.result += "\n[truncated: the tool returned more than 256 KiB]";
  }
  return out;
}

void answered(client_actor* self, int64_t id, const json& msg) {
  auto& st = self->state;
  auto it = st.open.find(id);
  if (it == st.open.end()) return; // timed out or cancelled meanwhile
  auto r = std::move(it->second);
  st.open.erase(it);
  const json* error = msg.contains("error") ? &msg["error"] : nullptr;
  std::string error_text;
  if (error)
    error_text = error->is_object() ? error->value("message", error->dump()) + " (code " +
                                          error->value("code", json{0}).dump() + ")"
                                    : error->dump();
  auto result = msg.value("result", json::object());
  switch (r.what) {
  case open_request::kind::initialize:
    if (error) return give_up(self, "initialize failed: " + error_text);
    return initialized(self, result);
  case open_request::kind::list:
    if (error) return give_up(self, "tools/list failed: " + error_text);
    return listed(self, result);
  case open_request::kind::ping:
    return; // any answer, even an error, shows the server is alive
  case open_request::kind::call: {
    auto out = error ? tool_outcome{error_text, true} : to_outcome(result);
    (out.is_error ? metrics().calls_error : metrics().calls_ok).inc();
    r.promise.deliver(std::move(out));
    return;
  }
  }
}

void handle_message(client_actor* self, const std::string& text);

/// A message whose fields have the wrong types (nlohmann throws on reading
/// them) is the server's bug: count it and go on, rather than end this
/// actor and restart a server that mostly works.
void on_message(client_actor* self, const std::string& text) {
  try {
    handle_message(self, text);
  } catch (const json::exception& e) {
    metrics().bad_messages.inc();
    runtime::log::warn(
        "mcp", "bad_message",
        {{"server", self->state.cfg.name}, {"reason", e.what()}, {"message", text.substr(0, 200)}});
  }
}

void handle_message(client_actor* self, const std::string& text) {
  auto& st = self->state;
  auto msg = json::parse(text, nullptr, false);
  if (!msg.is_object()) {
    // Servers that print logs to stdout are common; skip the line, keep going.
    metrics().bad_messages.inc();
    runtime::log::warn("mcp", "bad_message",
                       {{"server", st.cfg.name}, {"message", text.substr(0, 200)}});
    return;
  }
  auto method = msg.value("method", std::string{});
  if (!method.empty() && msg.contains("id")) {
    // A request from the server. We offer no client capabilities (sampling,
    // roots, elicitation), so only ping is answered with a result.
    json reply{{"jsonrpc", "2.0"}, {"id", msg["id"]}};
    if (method == "ping")
      reply["result"] = json::object();
    else
      reply["error"] = {{"code", -32601}, {"message", "method not found: " + method}};
    send_json(self, reply);
    return;
  }
  if (!method.empty()) {
    if (method == "notifications/tools/list_changed" && st.ready) {
      if (st.listing)
        st.relist = true;
      else
        list_tools(self, {});
    } else if (method == "notifications/message") {
      auto params = msg.value("params", json::object());
      runtime::log::info("mcp", "server_log",
                         {{"server", st.cfg.name},
                          {"level", params.value("level", std::string{})},
                          {"data", params.value("data", json{}).dump()}});
    }
    return;
  }
  if (auto id = msg.find("id"); id != msg.end() && id->is_number_integer())
    answered(self, id->get<int64_t>(), msg);
}

caf::behavior mcp_client_impl(client_actor* self, runtime::mcp_server_config cfg,
                              std::shared_ptr<mcp_catalog> catalog, io_threads* io) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.catalog = std::move(catalog);
  st.catalog->starting(st.cfg.name);
  st.transport = st.cfg.url.empty() ? make_mcp_stdio_transport(st.cfg, *io)
                                    : make_mcp_http_transport(st.cfg, *io);
  auto weak = caf::actor_cast<caf::weak_actor_ptr>(self);
  auto tell = [weak](auto... xs) {
    if (auto strong = weak.lock()) caf::anon_send(caf::actor_cast<caf::actor>(strong), xs...);
  };
  std::string name = st.cfg.name;
  st.transport->start(
      {[tell](std::string m) { tell(message_atom::value, std::move(m)); },
       [tell](std::string why) { tell(closed_atom::value, std::move(why)); },
       [name](std::string line) {
         runtime::log::info("mcp", "server_stderr", {{"server", name}, {"line", line}});
       }});
  request(self, {open_request::kind::initialize, {}, {}, {}, {}}, "initialize",
          {{"protocolVersion", accepted_versions[0]},
           {"capabilities", json::object()},
           {"clientInfo", {{"name", "troupe"}, {"version", "0.1.0"}}}},
          st.cfg.startup_timeout);

  self->set_exit_handler([self](caf::exit_msg& msg) {
    self->state.fail_all("node stopping");
    self->quit(msg.reason);
  });

  return {
      [=](tool_atom, std::string& tool, std::string& arguments,
          std::string& key) -> caf::result<tool_outcome> {
        auto& st = self->state;
        auto args = json::parse(arguments.empty() ? "{}" : arguments, nullptr, false);
        if (!args.is_object())
          return tool_outcome{"arguments are not a JSON object: " + arguments, true};
        if (!st.ready && st.waiting >= max_waiting_calls)
          return tool_outcome{"MCP server '" + st.cfg.name + "' is starting; too many calls wait",
                              true};
        auto id = ++st.next_id;
        open_request r{open_request::kind::call, self->make_response_promise(), std::move(key),
                       std::move(tool), std::move(args)};
        auto& placed = st.open.emplace(id, std::move(r)).first->second;
        if (st.ready)
          send_call(self, id, placed);
        else
          ++st.waiting;
        self->delayed_send(self, st.cfg.call_timeout, timeout_atom::value, id);
        return caf::delegated<tool_outcome>{};
      },
      [=](cancel_atom, std::string& key) {
        auto& st = self->state;
        for (auto it = st.open.begin(); it != st.open.end(); ++it) {
          if (it->second.what != open_request::kind::call || it->second.key != key) continue;
          if (it->second.sent)
            send_json(self, {{"jsonrpc", "2.0"},
                             {"method", "notifications/cancelled"},
                             {"params", {{"requestId", it->first}, {"reason", "turn ended"}}}});
          else
            --st.waiting;
          it->second.promise.deliver(tool_outcome{"cancelled", true});
          st.open.erase(it);
          return;
        }
      },
      [=](message_atom, std::string& text) { on_message(self, text); },
      [=](closed_atom, std::string& why) { give_up(self, why); },
      [=](timeout_atom, int64_t id) {
        auto& st = self->state;
        auto it = st.open.find(id);
        if (it == st.open.end()) return;
        auto ms = [](std::chrono::milliseconds d) { return std::to_string(d.count()) + " ms"; };
        switch (it->second.what) {
        case open_request::kind::initialize:
          return give_up(self, "no answer to initialize within " + ms(st.cfg.startup_timeout));
        case open_request::kind::list:
          return give_up(self, "no answer to tools/list within " + ms(st.cfg.startup_timeout));
        case open_request::kind::ping:
          return give_up(self, "no answer to ping within " + ms(st.cfg.ping_interval));
        case open_request::kind::call: {
          auto r = std::move(it->second);
          st.open.erase(it);
          if (r.sent)
            send_json(self, {{"jsonrpc", "2.0"},
                             {"method", "notifications/cancelled"},
                             {"params", {{"requestId", id}, {"reason", "timed out"}}}});
          else
            --st.waiting;
          metrics().calls_error.inc();
          r.promise.deliver(tool_outcome{
              "MCP tool '" + r.tool + "' gave no answer within " + ms(st.cfg.call_timeout), true});
          return;
        }
        }
      },
      [=](tick_atom) {
        auto& st = self->state;
        request(self, {open_request::kind::ping, {}, {}, {}, {}}, "ping", json{},
                st.cfg.ping_interval);
        self->delayed_send(self, st.cfg.ping_interval, tick_atom::value);
      },
  };
}

} // namespace

caf::actor spawn_mcp_client(caf::actor_system& sys, runtime::mcp_server_config cfg,
                            std::shared_ptr<mcp_catalog> catalog, io_threads& io) {
  return sys.spawn(mcp_client_impl, std::move(cfg), std::move(catalog), &io);
}

} // namespace troupe::actors
