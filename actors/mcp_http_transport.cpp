#include "actors/io_threads.hpp"
#include "actors/mcp_transport.hpp"
#include "runtime/http_url.hpp"
#include "runtime/log.hpp"
#include "runtime/sse_parser.hpp"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <mutex>
#include <optional>

namespace troupe::actors {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

/// What every request of one HTTP transport shares: the session, the
/// negotiated version and the event sink. Thread-safe.
struct http_core {
  http_core(runtime::mcp_server_config c, net::io_context& x)
      : cfg(std::move(c)), ctx(x), url(runtime::http_url::parse(cfg.url)) {}

  runtime::mcp_server_config cfg;
  net::io_context& ctx;
  runtime::http_url url;

  std::mutex mutex;
  std::string session_id;
  std::string version;
  mcp_transport_events events;
  bool closed = false;

  void deliver(std::string message) {
    std::lock_guard<std::mutex> guard{mutex};
    if (!closed && events.on_message) events.on_message(std::move(message));
  }

  void fail(const std::string& reason) {
    std::function<void(std::string)> cb;
    {
      std::lock_guard<std::mutex> guard{mutex};
      if (closed) return;
      closed = true;
      cb = std::move(events.on_closed);
      events = {};
    }
    if (cb) cb(reason);
  }

  bool is_closed() {
    std::lock_guard<std::mutex> guard{mutex};
    return closed;
  }
};

/// One HTTP request of the transport: a POST carrying a message (its
/// answer is JSON or an SSE stream of messages), the GET stream, or the
/// closing DELETE. Everything runs on `strand_`.
class exchange : public std::enable_shared_from_this<exchange> {
public:
  enum class kind { post, stream, end_session };

  exchange(std::shared_ptr<http_core> core, kind k, std::string body, nlohmann::json id,
           std::chrono::milliseconds timeout)
      : core_(std::move(core)), kind_(k), strand_(net::make_strand(core_->ctx)), resolver_(strand_),
        stream_(strand_), body_(std::move(body)), id_(std::move(id)), timeout_(timeout),
        sse_([this](runtime::sse_event&& ev) { on_event(std::move(ev)); }, max_mcp_message_bytes) {}

  template <class F> auto on_strand(F f) { return net::bind_executor(strand_, std::move(f)); }

  void run() {
    net::post(strand_, [self = shared_from_this()] {
      self->resolver_.async_resolve(
          self->core_->url.host, self->core_->url.port,
          self->on_strand([self](beast::error_code ec, tcp::resolver::results_type r) {
            if (ec) return self->unreachable("cannot resolve " + self->core_->url.host, ec);
            self->stream_.expires_after(std::chrono::seconds(5));
            self->stream_.async_connect(r, self->on_strand([self](beast::error_code ec, auto) {
              if (ec) return self->unreachable("cannot connect to " + self->core_->cfg.url, ec);
              self->do_write();
            }));
          }));
    });
  }

  void cancel() {
    net::post(strand_, [self = shared_from_this()] {
      self->done_ = true;
      beast::error_code ignored;
      self->stream_.socket().close(ignored);
    });
  }

private:
  void do_write() {
    req_.method(kind_ == kind::post     ? http::verb::post
                : kind_ == kind::stream ? http::verb::get
                                        : http::verb::delete_);
    req_.target(core_->url.path.empty() ? "/" : core_->url.path);
    req_.version(11);
    req_.set(http::field::host, core_->url.authority());
    req_.set(http::field::user_agent, "troupe");
    req_.set(http::field::accept,
             kind_ == kind::stream ? "text/event-stream" : "application/json, text/event-stream");
    {
      std::lock_guard<std::mutex> guard{core_->mutex};
      if (!core_->session_id.empty()) req_.set("Mcp-Session-Id", core_->session_id);
      if (!core_->version.empty()) req_.set("MCP-Protocol-Version", core_->version);
    }
    for (auto& [k, v] : core_->cfg.headers)
      req_.set(k, v);
    if (kind_ == kind::post) {
      req_.set(http::field::content_type, "application/json");
      req_.body() = std::move(body_);
    }
    req_.prepare_payload();
    stream_.expires_after(timeout_);
    http::async_write(stream_, req_, on_strand([self = shared_from_this()](auto ec, auto) {
                        if (ec)
                          return self->unreachable("cannot send to " + self->core_->cfg.url, ec);
                        self->parser_.emplace();
                        self->parser_->body_limit(boost::none);
                        if (self->kind_ == kind::stream) self->stream_.expires_never();
                        http::async_read_header(
                            self->stream_, self->buffer_, *self->parser_,
                            self->on_strand([self](auto ec, auto) { self->on_header(ec); }));
                      }));
  }

  void on_header(beast::error_code ec) {
    if (ec) return unreachable("no answer from " + core_->cfg.url, ec);
    auto& res = parser_->get();
    status_ = res.result_int();
    if (auto sid = res.find("Mcp-Session-Id"); sid != res.end()) {
      std::lock_guard<std::mutex> guard{core_->mutex};
      if (core_->session_id.empty()) core_->session_id = std::string{sid->value()};
    }
    auto type = res[http::field::content_type];
    sse_mode_ = type.find("text/event-stream") != beast::string_view::npos;
    if (kind_ == kind::stream && (status_ != 200 || !sse_mode_)) {
      // The server offers no stream for server-initiated messages (405 is
      // the spec's way to say so): list_changed then arrives on POSTs only.
      return finish();
    }
    if (status_ == 404 && kind_ == kind::post && has_session()) {
      done_ = true;
      return core_->fail("session expired (HTTP 404): initializing again");
    }
    // Some servers (server-everything among them) answer an unknown session
    // with 400 instead; the body says so, and the cure is the same.
    if (status_ == 400 && kind_ == kind::post && has_session()) session_check_ = true;
    if (parser_->is_done()) return complete(); // 202 Accepted and other empty answers
    do_read_body();
  }

  bool has_session() {
    std::lock_guard<std::mutex> guard{core_->mutex};
    return !core_->session_id.empty();
  }

  void do_read_body() {
    parser_->get().body().data = buf_;
    parser_->get().body().size = sizeof buf_;
    http::async_read_some(
        stream_, buffer_, *parser_,
        on_strand([self = shared_from_this()](auto ec, auto) { self->on_body(ec); }));
  }

  void on_body(beast::error_code ec) {
    if (ec == http::error::need_buffer) ec = {};
    if (done_) return;
    if (ec) {
      if (kind_ == kind::stream) return finish(); // pings notice a dead server
      return unreachable("the answer from " + core_->cfg.url + " broke off", ec);
    }
    std::string_view bytes{buf_, sizeof buf_ - parser_->get().body().size};
    if (status_ / 100 == 2 && sse_mode_) {
      if (!sse_.feed(bytes)) {
        done_ = true;
        return core_->fail("server sent an SSE line over the size limit");
      }
    } else if (body_text_.size() + bytes.size() > max_mcp_message_bytes) {
      done_ = true;
      return core_->fail("server sent an answer over " + std::to_string(max_mcp_message_bytes) +
                         " bytes");
    } else {
      body_text_.append(bytes);
    }
    if (parser_->is_done()) return complete();
    do_read_body();
  }

  void on_event(runtime::sse_event&& ev) {
    if (!ev.data.empty() && (ev.event.empty() || ev.event == "message"))
      core_->deliver(std::move(ev.data));
  }

  void complete() {
    if (status_ / 100 == 2) {
      if (!sse_mode_ && !body_text_.empty()) {
        auto j = nlohmann::json::parse(body_text_, nullptr, false);
        if (j.is_array())
          for (auto& m : j)
            core_->deliver(m.dump());
        else if (j.is_object())
          core_->deliver(std::move(body_text_));
        else
          answer_error("server answered with malformed JSON");
      }
    } else if (session_check_ && body_text_.find("ession") != std::string::npos) {
      done_ = true;
      return core_->fail("session no longer known to the server (HTTP 400): initializing again");
    } else if (kind_ == kind::post) {
      // A JSON-RPC error in the body is the server's own answer; otherwise
      // the caller still gets one, made from the HTTP status.
      auto j = nlohmann::json::parse(body_text_, nullptr, false);
      if (j.is_object() && j.contains("error") && j.contains("id") && !j["id"].is_null())
        core_->deliver(std::move(body_text_));
      else
        answer_error("HTTP " + std::to_string(status_) + ": " + body_text_.substr(0, 500));
    }
    finish();
  }

  void answer_error(const std::string& message) {
    if (id_.is_null()) {
      runtime::log::warn("mcp", "http_error", {{"server", core_->cfg.name}, {"reason", message}});
      return;
    }
    nlohmann::json e{
        {"jsonrpc", "2.0"}, {"id", id_}, {"error", {{"code", -32000}, {"message", message}}}};
    core_->deliver(e.dump());
  }

  /// The server cannot be reached or broke the exchange: the session is
  /// unusable, so the client starts over (its supervisor backs off).
  void unreachable(const std::string& what, beast::error_code ec) {
    if (done_) return;
    done_ = true;
    if (kind_ == kind::end_session) return;
    if (kind_ == kind::stream) return finish();
    if (ec == beast::error::timeout) return answer_error(what + ": timed out");
    core_->fail(what + ": " + ec.message());
  }

  void finish() {
    done_ = true;
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }

  std::shared_ptr<http_core> core_;
  kind kind_;
  net::strand<net::io_context::executor_type> strand_;
  tcp::resolver resolver_;
  beast::tcp_stream stream_;
  std::string body_;
  nlohmann::json id_;
  std::chrono::milliseconds timeout_;
  http::request<http::string_body> req_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  char buf_[16384];
  runtime::sse_parser sse_;
  std::string body_text_;
  int status_ = 0;
  bool sse_mode_ = false;
  bool session_check_ = false;
  bool done_ = false;
};

/// MCP's Streamable HTTP transport (2025-06-18), client side: every message
/// is a POST; answers come as JSON or as an SSE stream; an optional GET
/// stream carries what the server starts on its own.
class http_transport final : public mcp_transport {
public:
  http_transport(runtime::mcp_server_config cfg, net::io_context& ctx)
      : core_(std::make_shared<http_core>(std::move(cfg), ctx)) {}

  ~http_transport() override { close(); }

  void start(mcp_transport_events ev) override {
    std::lock_guard<std::mutex> guard{core_->mutex};
    core_->events = std::move(ev);
  }

  void send(std::string message) override {
    if (core_->is_closed()) return;
    auto j = nlohmann::json::parse(message, nullptr, false);
    nlohmann::json id = j.is_object() && j.contains("id") ? j["id"] : nlohmann::json{};
    // An exchange never outlives the longest call it may carry.
    auto timeout = core_->cfg.call_timeout + core_->cfg.startup_timeout;
    launch(exchange::kind::post, std::move(message), std::move(id), timeout);
  }

  void initialized(const std::string& version) override {
    {
      std::lock_guard<std::mutex> guard{core_->mutex};
      core_->version = version;
    }
    launch(exchange::kind::stream, {}, {}, std::chrono::seconds(5)); // then open-ended
  }

  void close() override {
    std::vector<std::shared_ptr<exchange>> live;
    bool had_session = false;
    {
      std::lock_guard<std::mutex> guard{core_->mutex};
      if (core_->closed && ended_) return;
      core_->closed = true;
      core_->events = {};
      had_session = !core_->session_id.empty();
    }
    ended_ = true;
    {
      std::lock_guard<std::mutex> guard{live_mutex_};
      for (auto& w : live_)
        if (auto x = w.lock()) live.push_back(std::move(x));
      live_.clear();
    }
    for (auto& x : live)
      x->cancel();
    // Tell the server the session is over (best effort, it may be gone).
    if (had_session)
      std::make_shared<exchange>(core_, exchange::kind::end_session, "", nlohmann::json{},
                                 std::chrono::seconds(2))
          ->run();
  }

  std::string describe() const override { return "http " + core_->cfg.url; }

private:
  void launch(exchange::kind k, std::string body, nlohmann::json id,
              std::chrono::milliseconds timeout) {
    auto x = std::make_shared<exchange>(core_, k, std::move(body), std::move(id), timeout);
    {
      std::lock_guard<std::mutex> guard{live_mutex_};
      std::erase_if(live_, [](auto& w) { return w.expired(); });
      live_.push_back(x);
    }
    x->run();
  }

  std::shared_ptr<http_core> core_;
  std::mutex live_mutex_;
  std::vector<std::weak_ptr<exchange>> live_;
  bool ended_ = false;
};

} // namespace

std::shared_ptr<mcp_transport> make_mcp_http_transport(const runtime::mcp_server_config& cfg,
                                                       io_threads& io) {
  return std::make_shared<http_transport>(cfg, io.context());
}

} // namespace troupe::actors
