#include "actors/backend.hpp"
#include "actors/io_threads.hpp"
#include "runtime/http_url.hpp"
#include "runtime/log.hpp"
#include "runtime/openai_codec.hpp"
#include "runtime/sse_parser.hpp"
#include "runtime/tool_call_accumulator.hpp"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <mutex>
#include <optional>
#include <vector>

namespace troupe::actors {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using runtime::errc;

namespace {

/// Idle keep-alive connections to one server. Bounded: beyond `max_idle`
/// a returned connection is closed.
class connection_pool {
public:
  std::optional<beast::tcp_stream> take() {
    std::lock_guard<std::mutex> guard{mutex_};
    if (idle_.empty()) return std::nullopt;
    auto s = std::move(idle_.back());
    idle_.pop_back();
    return s;
  }

  void give(beast::tcp_stream&& s) {
    std::lock_guard<std::mutex> guard{mutex_};
    if (idle_.size() < max_idle) idle_.push_back(std::move(s));
  }

  static constexpr size_t max_idle = 256;

private:
  std::mutex mutex_;
  std::vector<beast::tcp_stream> idle_;
};

struct backend_shared {
  backend_shared(runtime::backend_config c, net::io_context& x, bool lem)
      : cfg(std::move(c)), ep(runtime::http_url::parse(cfg.url)), ctx(x), lemonade(lem) {}
  /// A whole `POST /chat/completions` carrying `body`: one buffer, written
  /// without Beast's serializer.
  std::string request(std::string_view body) const {
    std::string r;
    r.reserve(fixed_head.size() + 32 + body.size());
    r += fixed_head;
    r += "Content-Length: ";
    r += std::to_string(body.size());
    r += "\r\n\r\n";
    r += body;
    return r;
  }

  runtime::backend_config cfg;
  runtime::http_url ep;
  net::io_context& ctx;
  connection_pool pool;
  bool lemonade = false;

private:
  /// Header values come from the config; a CR or LF in one would end the
  /// header early, so they are dropped.
  static std::string header_value(std::string v) {
    std::erase_if(v, [](char c) { return c == '\r' || c == '\n'; });
    return v;
  }

  std::string fixed_head = [this] {
    std::string h = "POST " + ep.path + "/chat/completions HTTP/1.1\r\nHost: " + ep.authority() +
                    "\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n"
                    "User-Agent: troupe\r\n";
    if (!cfg.api_key.empty()) h += "Authorization: Bearer " + header_value(cfg.api_key) + "\r\n";
    return h;
  }();
};

/// One streamed `POST /chat/completions`. Everything runs on `strand_`.
class openai_call final : public stream_handle, public std::enable_shared_from_this<openai_call> {
public:
  openai_call(std::shared_ptr<backend_shared> be, std::string_view body, stream_callbacks cb)
      : be_(std::move(be)), strand_(net::make_strand(be_->ctx)), resolver_(strand_),
        request_(be_->request(body)), cb_(std::move(cb)),
        sse_([this](runtime::sse_event&& ev) { on_event(std::move(ev)); }) {}

  /// Starts the call. On a pooled connection the request leaves from the
  /// caller's thread: the connection is this call's alone until its first
  /// operation is posted, and waking the I/O thread first would put its
  /// wake-up (tens of microseconds on a VM) before the model server sees
  /// the request. What does not fit the socket's buffer goes on from the
  /// I/O thread.
  void run() {
    auto pooled = be_->pool.take();
    if (!pooled) {
      net::post(strand_, [self = shared_from_this()] { self->do_resolve(); });
      return;
    }
    stream_.emplace(std::move(*pooled));
    reused_ = true;
    beast::error_code ec;
    auto& socket = stream_->socket();
    socket.non_blocking(true, ec);
    size_t sent = ec ? 0 : socket.send(net::buffer(request_), 0, ec);
    if (ec == net::error::would_block) ec = {};
    net::post(strand_, [self = shared_from_this(), sent, ec] {
      if (ec) return self->on_write(ec);
      self->sent_ = sent;
      self->do_write();
    });
  }

  void cancel() override {
    net::post(strand_, [self = shared_from_this()] {
      if (self->finished_) return;
      self->finish_error(errc::cancelled, "cancelled");
    });
  }

private:
  template <class F> auto on_strand(F f) { return net::bind_executor(strand_, std::move(f)); }

  void do_resolve() {
    reused_ = false;
    stream_.emplace(strand_);
    resolver_.async_resolve(be_->ep.host, be_->ep.port,
                            on_strand([self = shared_from_this()](auto ec, auto results) {
                              self->on_resolve(ec, results);
                            }));
  }

  void on_resolve(beast::error_code ec, tcp::resolver::results_type results) {
    if (finished_) return;
    if (ec)
      return finish_error(errc::backend_unavailable,
                          "cannot resolve " + be_->ep.host + ": " + ec.message());
    stream_->expires_after(be_->cfg.connect_timeout);
    stream_->async_connect(
        results, on_strand([self = shared_from_this()](auto ec, auto) { self->on_connect(ec); }));
  }

  void on_connect(beast::error_code ec) {
    if (finished_) return;
    if (ec)
      return finish_error(errc::backend_unavailable,
                          "cannot connect to " + be_->cfg.url + ": " + ec.message());
    // A request longer than a segment must not wait for the server's ACK.
    stream_->socket().set_option(tcp::no_delay(true), ec);
    do_write();
  }

  /// Writes what of the request has not left yet (all of it on a fresh
  /// connection).
  void do_write() {
    stream_->expires_after(be_->cfg.connect_timeout);
    if (sent_ == request_.size()) return on_write({});
    net::async_write(*stream_, net::buffer(request_.data() + sent_, request_.size() - sent_),
                     on_strand([self = shared_from_this()](auto ec, auto) { self->on_write(ec); }));
  }

  /// A pooled connection the server closed meanwhile fails on first use;
  /// that is no reason to fail the request, so retry once on a fresh one.
  bool retry_stale(beast::error_code ec) {
    if (!reused_ || received_any_) return false;
    (void)ec;
    beast::error_code ignored;
    stream_->socket().close(ignored);
    sent_ = 0;
    do_resolve();
    return true;
  }

  void on_write(beast::error_code ec) {
    if (finished_) return;
    if (ec) {
      if (retry_stale(ec)) return;
      return finish_error(errc::backend_unavailable, "cannot send request: " + ec.message());
    }
    parser_.emplace();
    parser_->body_limit(boost::none);
    stream_->expires_after(be_->cfg.first_token_timeout);
    http::async_read_header(
        *stream_, buffer_, *parser_,
        on_strand([self = shared_from_this()](auto ec, auto) { self->on_header(ec); }));
  }

  void on_header(beast::error_code ec) {
    if (finished_) return;
    if (ec) {
      if (retry_stale(ec)) return;
      if (ec == beast::error::timeout)
        return finish_error(errc::timeout,
                            "no response from model server within " +
                                std::to_string(be_->cfg.first_token_timeout.count()) + " ms");
      return finish_error(errc::backend_unavailable, "model server closed: " + ec.message());
    }
    received_any_ = true;
    status_ = parser_->get().result_int();
    do_read_body();
  }

  void do_read_body() {
    parser_->get().body().data = buf_;
    parser_->get().body().size = sizeof buf_;
    http::async_read_some(
        *stream_, buffer_, *parser_,
        on_strand([self = shared_from_this()](auto ec, auto) { self->on_body(ec); }));
  }

  void on_body(beast::error_code ec) {
    if (ec == http::error::need_buffer) ec = {};
    if (finished_ && !draining_) return;
    if (ec) {
      if (finished_) return close_stream();
      if (ec == beast::error::timeout)
        return finish_error(errc::timeout, started_ ? "model server stalled mid-stream"
                                                    : "no first token in time");
      return finish_error(
          errc::backend_unavailable,
          std::string{started_ ? "model server died mid-stream: " : "model server closed: "} +
              ec.message());
    }
    size_t n = sizeof buf_ - parser_->get().body().size;
    std::string_view bytes{buf_, n};
    if (status_ != 200) {
      if (error_body_.size() < 4096) error_body_.append(bytes.substr(0, 4096 - error_body_.size()));
    } else if (!finished_ && !sse_.feed(bytes)) {
      return finish_error(errc::backend_unavailable, "model server sent an over-long SSE line");
    }
    if (parser_->is_done()) {
      if (status_ != 200) {
        auto code = status_ == 429 ? errc::overloaded : errc::backend_unavailable;
        finish_error(code,
                     "model server answered HTTP " + std::to_string(status_) + ": " + error_body_);
        return;
      }
      if (!finished_) {
        if (!finish_reason_.empty())
          finish_ok();
        else
          return finish_error(errc::backend_unavailable, "stream ended before [DONE]");
      }
      if (parser_->keep_alive()) {
        stream_->expires_never();
        be_->pool.give(std::move(*stream_));
        stream_.reset();
      } else {
        close_stream();
      }
      return;
    }
    stream_->expires_after(started_ || finished_ ? be_->cfg.idle_timeout
                                                 : be_->cfg.first_token_timeout);
    do_read_body();
  }

  void on_event(runtime::sse_event&& ev) {
    if (finished_) return;
    if (ev.data == "[DONE]") {
      finish_ok();
      return;
    }
    std::string err;
    auto chunk = runtime::decode_chat_chunk(ev.data, err);
    if (!chunk) {
      finish_error(errc::backend_unavailable, "model server error: " + err);
      return;
    }
    if (chunk->has_usage) usage_ = chunk->tokens;
    if (!chunk->finish_reason.empty()) finish_reason_ = chunk->finish_reason;
    for (auto& f : chunk->tool_calls)
      calls_.add(f);
    if (!chunk->content.empty()) {
      started_ = true;
      content_ += chunk->content;
      cb_.on_token(std::move(chunk->content));
    }
  }

  void finish_ok() {
    finished_ = true;
    draining_ = true; // read the rest of the body so the connection can be reused
    runtime::chat_result result;
    result.content = std::move(content_);
    result.tool_calls = calls_.take();
    result.tokens = usage_;
    result.finish_reason = finish_reason_.empty() ? "stop" : finish_reason_;
    cb_.on_done(std::move(result));
  }

  void finish_error(errc code, std::string reason) {
    finished_ = true;
    draining_ = false;
    close_stream();
    cb_.on_error(code, std::move(reason), started_);
  }

  void close_stream() {
    if (!stream_) return;
    beast::error_code ignored;
    stream_->socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_->socket().close(ignored);
  }

  std::shared_ptr<backend_shared> be_;
  net::strand<net::io_context::executor_type> strand_;
  tcp::resolver resolver_;
  std::optional<beast::tcp_stream> stream_;
  std::string request_; // the whole HTTP request, head and body
  size_t sent_ = 0;     // bytes of it written
  stream_callbacks cb_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  char buf_[8192];
  runtime::sse_parser sse_;
  runtime::tool_call_accumulator calls_;
  runtime::usage usage_;
  std::string content_;
  std::string finish_reason_;
  std::string error_body_;
  int status_ = 0;
  bool reused_ = false;
  bool received_any_ = false;
  bool started_ = false;
  bool finished_ = false;
  bool draining_ = false;
};

/// A short non-streaming request (health, model load) with one deadline.
class simple_request : public std::enable_shared_from_this<simple_request> {
public:
  using handler = std::function<void(std::string error, int status, std::string body)>;

  simple_request(std::shared_ptr<backend_shared> be, http::verb method, std::string target,
                 std::string body, std::chrono::milliseconds timeout, handler cb)
      : be_(std::move(be)), resolver_(be_->ctx), stream_(be_->ctx), timeout_(timeout),
        cb_(std::move(cb)) {
    req_.method(method);
    req_.target(be_->ep.path + target);
    req_.version(11);
    req_.set(http::field::host, be_->ep.authority());
    req_.set(http::field::connection, "close");
    if (!body.empty()) {
      req_.set(http::field::content_type, "application/json");
      req_.body() = std::move(body);
    }
    if (!be_->cfg.api_key.empty())
      req_.set(http::field::authorization, "Bearer " + be_->cfg.api_key);
    req_.prepare_payload();
  }

  void run() {
    stream_.expires_after(timeout_);
    resolver_.async_resolve(be_->ep.host, be_->ep.port,
                            [self = shared_from_this()](auto ec, auto results) {
                              if (ec) return self->cb_(ec.message(), 0, "");
                              self->stream_.async_connect(results, [self](auto ec, auto) {
                                if (ec) return self->cb_(ec.message(), 0, "");
                                self->do_write();
                              });
                            });
  }

private:
  void do_write() {
    http::async_write(stream_, req_, [self = shared_from_this()](auto ec, auto) {
      if (ec) return self->cb_(ec.message(), 0, "");
      self->parser_.body_limit(1 << 20);
      http::async_read(self->stream_, self->buffer_, self->parser_, [self](auto ec, auto) {
        if (ec) return self->cb_(ec.message(), 0, "");
        beast::error_code ignored;
        self->stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
        self->cb_("", self->parser_.get().result_int(), self->parser_.get().body());
      });
    });
  }

  std::shared_ptr<backend_shared> be_;
  tcp::resolver resolver_;
  beast::tcp_stream stream_;
  std::chrono::milliseconds timeout_;
  handler cb_;
  http::request<http::string_body> req_;
  beast::flat_buffer buffer_;
  http::response_parser<http::string_body> parser_;
};

class openai_backend final : public backend {
public:
  openai_backend(const runtime::backend_config& cfg, io_threads& io, bool lemonade)
      : shared_(std::make_shared<backend_shared>(cfg, io.context(), lemonade)) {}

  std::shared_ptr<stream_handle> start(runtime::chat_request req, stream_callbacks cb) override {
    if (req.model.empty() && !shared_->cfg.models.empty()) req.model = shared_->cfg.models.front();
    auto call = std::make_shared<openai_call>(shared_, runtime::encode_chat_request(req, true),
                                              std::move(cb));
    call->run();
    return call;
  }

  void check_health(std::function<void(bool, std::string)> cb) override {
    auto timeout = std::min(shared_->cfg.connect_timeout * 2, std::chrono::milliseconds{5000});
    auto be = shared_;
    // Lemonade has its own health route reporting the loaded model; plain
    // OpenAI servers answer `GET /models`.
    auto target = be->lemonade ? "/health" : "/models";
    auto req = std::make_shared<simple_request>(
        be, http::verb::get, target, "", timeout,
        [be, cb, timeout](std::string err, int status, std::string body) {
          if (!err.empty()) return cb(false, "unreachable: " + err);
          if (status != 200)
            return cb(false, "health route answered HTTP " + std::to_string(status));
          if (be->lemonade && !be->cfg.models.empty()) {
            auto j = nlohmann::json::parse(body, nullptr, false);
            auto loaded = j.is_object() ? j.value("model_loaded", std::string{}) : std::string{};
            if (loaded != be->cfg.models.front()) {
              // Ask Lemonade to load our model; healthy once it reports it.
              nlohmann::json load{{"model_name", be->cfg.models.front()}};
              std::make_shared<simple_request>(be, http::verb::post, "/load", load.dump(),
                                               std::chrono::minutes(10),
                                               [](std::string, int, std::string) {})
                  ->run();
              return cb(false, "loading model " + be->cfg.models.front());
            }
          }
          cb(true, "ok");
        });
    req->run();
  }

  std::string describe() const override {
    return std::string{shared_->lemonade ? "lemonade " : "openai "} + shared_->cfg.url;
  }

private:
  std::shared_ptr<backend_shared> shared_;
};

} // namespace

std::shared_ptr<backend> make_openai_backend(const runtime::backend_config& cfg, io_threads& io,
                                             bool lemonade) {
  return std::make_shared<openai_backend>(cfg, io, lemonade);
}

} // namespace troupe::actors
