#include "nodes/http_server.hpp"
#include "nodes/write_queue.hpp"
#include "actors/io_threads.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/core/detect_ssl.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

namespace troupe::gateway {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
namespace ssl = net::ssl;
// asio's stream, not beast::ssl_stream: Boost 1.81's beast wrapper rejects the
// buffered handshake the TLS detector needs (its constraint has the wrong signature).
using tls_stream = net::ssl::stream<beast::tcp_stream>;

namespace {

runtime::counter& counter_of(const char* name, const char* help, const std::string& labels = "") {
  return runtime::metrics_registry::global().get_counter(name, help, labels);
}

bool quiet(beast::error_code ec) {
  return ec == net::error::operation_aborted || ec == websocket::error::closed ||
         ec == http::error::end_of_stream || ec == net::error::eof ||
         ec == net::error::connection_reset || ec == net::error::broken_pipe ||
         ec == beast::error::timeout;
}

void fail(beast::error_code ec, const char* what) {
  if (quiet(ec)) return;
  runtime::log::debug("gateway", "socket_error", {{"op", what}, {"error", ec.message()}});
}

/// A server TLS context from PEM files: TLS 1.2 and later only. Throws
/// std::runtime_error naming the file that could not be used.
std::shared_ptr<ssl::context> make_tls_context(const std::string& cert, const std::string& key) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                   ssl::context::single_dh_use);
  beast::error_code ec;
  ctx->use_certificate_chain_file(cert, ec);
  if (ec) throw std::runtime_error("gateway.tls.cert '" + cert + "': " + ec.message());
  ctx->use_private_key_file(key, ssl::context::pem, ec);
  if (ec) throw std::runtime_error("gateway.tls.key '" + key + "': " + ec.message());
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
    throw std::runtime_error("gateway.tls.key '" + key + "' does not match the certificate '" +
                             cert + "'");
  return ctx;
}

struct connection_token;

} // namespace

struct http_server::impl : std::enable_shared_from_this<http_server::impl> {
  impl(actors::io_threads& io, http_server_options o, http_handler h)
      : ctx(io.context()), opts(std::move(o)), handler(std::move(h)),
        acceptor(net::make_strand(ctx)) {}

  net::io_context& ctx;
  http_server_options opts;
  http_handler handler;
  tcp::acceptor acceptor;
  std::atomic<uint64_t> connections{0};
  std::atomic<bool> accepting{false};
  uint16_t bound_port = 0;
  std::mutex ws_mutex;
  std::unordered_map<actors::frame_sink*, std::weak_ptr<actors::frame_sink>> ws_sessions;
  std::mutex tls_mutex;
  std::shared_ptr<ssl::context> tls; // null = plain HTTP only; swapped on reload

  std::shared_ptr<ssl::context> tls_context() {
    std::lock_guard<std::mutex> guard{tls_mutex};
    return tls;
  }
  runtime::gauge& open_gauge = runtime::metrics_registry::global().get_gauge(
      "troupe_connections_open", "Open client connections (HTTP and WebSocket)");

  void do_accept();
  void on_accept(beast::error_code ec, tcp::socket socket);
  void start_session(beast::tcp_stream stream, std::shared_ptr<connection_token> token,
                     beast::flat_buffer buffer, bool is_tls);
};

namespace {

/// Counts a TCP connection from accept to close, whichever object owns it.
struct connection_token {
  explicit connection_token(std::shared_ptr<http_server::impl> s) : srv(std::move(s)) {
    srv->open_gauge.set(static_cast<int64_t>(++srv->connections));
  }
  ~connection_token() { srv->open_gauge.set(static_cast<int64_t>(--srv->connections)); }
  std::shared_ptr<http_server::impl> srv;
};

} // namespace

// -- WebSocket session --------------------------------------------------------

/// `Stream` is beast::tcp_stream (ws://) or tls_stream (wss://).
template <class Stream>
class ws_session final : public actors::frame_sink,
                         public std::enable_shared_from_this<ws_session<Stream>> {
public:
  ws_session(Stream&& stream, std::shared_ptr<connection_token> token,
             std::shared_ptr<ssl::context> tls)
      : tls_(std::move(tls)), ws_(std::move(stream)), token_(std::move(token)),
        queue_(token_->srv->opts.max_outbound_bytes) {}

  using std::enable_shared_from_this<ws_session<Stream>>::shared_from_this;
  using std::enable_shared_from_this<ws_session<Stream>>::weak_from_this;

  void run(http::request<http::string_body> req, std::shared_ptr<ws_handler> handler) {
    handler_ = std::move(handler);
    auto& opts = token_->srv->opts;
    auto timeouts = websocket::stream_base::timeout::suggested(beast::role_type::server);
    // A peer that vanished without a FIN (half-open) is found by the pings.
    timeouts.idle_timeout = opts.idle_timeout;
    timeouts.keep_alive_pings = true;
    ws_.set_option(timeouts);
    ws_.set_option(
        websocket::stream_base::decorator([name = opts.server_name](websocket::response_type& res) {
          res.set(http::field::server, name);
        }));
    ws_.read_message_max(opts.max_frame_bytes);
    ws_.async_accept(req, beast::bind_front_handler(&ws_session::on_accept, shared_from_this()));
  }

  void send(std::shared_ptr<const std::string> frame) override {
    net::post(ws_.get_executor(), [self = shared_from_this(), frame = std::move(frame)]() mutable {
      self->do_send(std::move(frame));
    });
  }

  void close(uint16_t code, std::string reason) override {
    net::post(ws_.get_executor(), [self = shared_from_this(), code, reason = std::move(reason)] {
      self->begin_close(code, reason);
    });
  }

private:
  void on_accept(beast::error_code ec) {
    if (ec) {
      fail(ec, "ws_accept");
      return;
    }
    {
      std::lock_guard<std::mutex> guard{token_->srv->ws_mutex};
      token_->srv->ws_sessions[this] = weak_from_this();
    }
    opened_ = true;
    handler_->on_open(shared_from_this());
    do_read();
  }

  void do_read() {
    ws_.async_read(buffer_, beast::bind_front_handler(&ws_session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, size_t) {
    if (ec) {
      if (ec == websocket::error::message_too_big) {
        // Beast has already answered with close code 1009 (too big).
        counter_of("troupe_ws_oversize_frames_total", "Frames over limits.max_frame_bytes").inc();
        runtime::log::info("gateway", "ws_frame_too_big",
                           {{"limit", std::to_string(token_->srv->opts.max_frame_bytes)}});
      } else {
        fail(ec, "ws_read");
      }
      return finish();
    }
    if (ws_.got_text())
      handler_->on_text(beast::buffers_to_string(buffer_.data()));
    else
      handler_->on_binary();
    buffer_.consume(buffer_.size());
    do_read();
  }

  void do_send(std::shared_ptr<const std::string> frame) {
    if (closing_ || finished_) return;
    if (!queue_.push(std::move(frame), writing_)) {
      counter_of("troupe_ws_slow_client_disconnects_total",
                 "Clients disconnected because they did not read")
          .inc();
      runtime::log::warn("gateway", "slow_client_disconnected",
                         {{"queued_bytes", std::to_string(queue_.bytes())}});
      // A client that does not read cannot take a close frame either while a
      // write is stuck: drop the TCP connection.
      if (writing_) {
        closing_ = true;
        beast::error_code ignored;
        beast::get_lowest_layer(ws_).socket().close(ignored);
      } else {
        begin_close(1008, "client too slow: outbound buffer full");
      }
      return;
    }
    if (!writing_) do_write();
  }

  void do_write() {
    writing_ = true;
    ws_.text(true);
    ws_.async_write(net::buffer(queue_.front()),
                    beast::bind_front_handler(&ws_session::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, size_t) {
    writing_ = false;
    if (ec) {
      fail(ec, "ws_write");
      queue_.clear();
      return;
    }
    queue_.pop();
    if (auto merged = queue_.take_coalesced()) {
      static runtime::counter& coalesced =
          counter_of("troupe_ws_tokens_coalesced_total",
                     "Token events merged into the one before them because the client fell behind");
      coalesced.inc(merged);
    }
    if (!queue_.empty()) return do_write();
    if (close_pending_) do_close();
  }

  void begin_close(uint16_t code, const std::string& reason) {
    if (closing_ || finished_) return;
    closing_ = true;
    close_code_ = code;
    close_reason_ = reason.substr(0, 120); // a close frame holds at most 123 bytes
    if (writing_ || !queue_.empty())
      close_pending_ = true;
    else
      do_close();
  }

  void do_close() {
    ws_.async_close(
        websocket::close_reason(static_cast<websocket::close_code>(close_code_), close_reason_),
        [self = shared_from_this()](beast::error_code ec) {
          if (ec) fail(ec, "ws_close");
        });
  }

  void finish() {
    if (finished_) return;
    finished_ = true;
    queue_.clear();
    {
      std::lock_guard<std::mutex> guard{token_->srv->ws_mutex};
      token_->srv->ws_sessions.erase(this);
    }
    if (opened_) handler_->on_close();
  }

  std::shared_ptr<ssl::context> tls_; // outlives the stream that refers to it
  websocket::stream<Stream> ws_;
  std::shared_ptr<connection_token> token_;
  beast::flat_buffer buffer_;
  std::shared_ptr<ws_handler> handler_;
  write_queue queue_;
  bool opened_ = false;
  bool writing_ = false;
  bool closing_ = false;
  bool close_pending_ = false;
  bool finished_ = false;
  uint16_t close_code_ = 1000;
  std::string close_reason_;
};

// -- HTTP session -------------------------------------------------------------

namespace {

std::string serialize_head(int status, const std::string& server,
                           const std::vector<std::pair<std::string, std::string>>& headers,
                           bool keep_alive) {
  auto reason = http::obsolete_reason(http::int_to_status(static_cast<unsigned>(status)));
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string{reason} + "\r\n";
  out += "Server: " + server + "\r\n";
  for (auto& [k, v] : headers)
    out += k + ": " + v + "\r\n";
  if (!keep_alive) out += "Connection: close\r\n";
  return out;
}

} // namespace

/// `Stream` is beast::tcp_stream (http://) or tls_stream (https://). A plain
/// session on a TLS-only gateway (`refuse_plain`) answers 400 and closes.
template <class Stream>
class http_session final : public http_exchange,
                           public std::enable_shared_from_this<http_session<Stream>> {
  static constexpr bool is_tls = std::is_same_v<Stream, tls_stream>;

public:
  http_session(Stream&& stream, std::shared_ptr<connection_token> token, beast::flat_buffer buffer,
               std::shared_ptr<ssl::context> tls, bool refuse_plain)
      : tls_(std::move(tls)), stream_(std::move(stream)), token_(std::move(token)),
        buffer_(std::move(buffer)), queue_(token_->srv->opts.max_outbound_bytes),
        refuse_plain_(refuse_plain) {}

  using std::enable_shared_from_this<http_session<Stream>>::shared_from_this;

  void run() {
    if constexpr (is_tls) {
      // The bytes the TLS detector read are the start of the handshake.
      lowest().expires_after(std::chrono::seconds(30));
      stream_.async_handshake(ssl::stream_base::server, buffer_.data(),
                              [self = shared_from_this()](beast::error_code ec, size_t used) {
                                if (ec) {
                                  tls_failures().inc();
                                  return fail(ec, "tls_handshake");
                                }
                                self->buffer_.consume(used);
                                self->do_read();
                              });
    } else {
      net::dispatch(stream_.get_executor(),
                    beast::bind_front_handler(&http_session::do_read, shared_from_this()));
    }
  }

  void reply(http_response res) override {
    net::post(stream_.get_executor(), [self = shared_from_this(), res = std::move(res)]() mutable {
      self->do_reply(std::move(res));
    });
  }

  void start_stream(int status, std::string content_type) override {
    net::post(stream_.get_executor(), [self = shared_from_this(), status, content_type] {
      if (self->answered_) return;
      self->answered_ = true;
      self->streaming_ = true;
      auto head = serialize_head(status, self->token_->srv->opts.server_name,
                                 {{"Content-Type", content_type},
                                  {"Cache-Control", "no-cache"},
                                  {"Transfer-Encoding", "chunked"}},
                                 self->keep_alive_);
      head += "\r\n";
      self->enqueue(std::make_shared<const std::string>(std::move(head)));
    });
  }

  void write_chunk(std::shared_ptr<const std::string> data) override {
    if (data->empty()) return; // an empty chunk would end the stream
    net::post(stream_.get_executor(), [self = shared_from_this(), data = std::move(data)] {
      if (!self->streaming_ || self->dead_) return;
      char size[20];
      std::snprintf(size, sizeof size, "%zx\r\n", data->size());
      auto chunk = std::make_shared<std::string>(size);
      chunk->append(*data);
      chunk->append("\r\n");
      self->enqueue(std::move(chunk));
    });
  }

  void end_stream() override {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      if (!self->streaming_ || self->dead_) return;
      self->streaming_ = false;
      self->end_after_write_ = true;
      self->enqueue(std::make_shared<const std::string>("0\r\n\r\n"));
    });
  }

  bool is_upgrade() const override { return upgrade_; }

  bool client_gone() const override { return dead_.load(std::memory_order_relaxed); }

  void upgrade(std::shared_ptr<ws_handler> handler) override {
    net::post(stream_.get_executor(), [self = shared_from_this(), handler = std::move(handler)] {
      if (self->answered_) return;
      self->answered_ = true;
      std::make_shared<ws_session<Stream>>(std::move(self->stream_), self->token_, self->tls_)
          ->run(std::move(self->req_), handler);
    });
  }

private:
  static runtime::counter& tls_failures() {
    static runtime::counter& c =
        counter_of("troupe_tls_handshake_failures_total", "TLS handshakes that failed");
    return c;
  }

  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  void do_read() {
    parser_.emplace();
    parser_->body_limit(token_->srv->opts.max_body_bytes);
    parser_->header_limit(64 * 1024);
    lowest().expires_after(token_->srv->opts.idle_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&http_session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, size_t) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout) return do_shutdown();
    if (ec == http::error::body_limit) {
      keep_alive_ = false;
      answered_ = false;
      return do_reply({413,
                       "application/json",
                       R"({"error":{"code":"bad_request","message":"request body too large"}})",
                       {}});
    }
    if (ec) {
      if (quiet(ec)) return;
      keep_alive_ = false;
      answered_ = false;
      return do_reply({400,
                       "application/json",
                       R"({"error":{"code":"bad_request","message":"malformed HTTP request"}})",
                       {}});
    }
    req_ = parser_->release();
    keep_alive_ = req_.keep_alive();
    upgrade_ = websocket::is_upgrade(req_);
    answered_ = false;
    lowest().expires_never();
    if (refuse_plain_) {
      counter_of("troupe_plain_http_refused_total",
                 "Plain-text requests refused by a TLS-only gateway")
          .inc();
      keep_alive_ = false;
      upgrade_ = false;
      return do_reply({400,
                       "application/json",
                       R"({"error":{"code":"bad_request","message":"this gateway speaks only )"
                       R"(TLS: use https:// or wss://"}})",
                       {}});
    }

    http_request r;
    r.method = std::string{req_.method_string()};
    r.target = std::string{req_.target()};
    auto q = r.target.find('?');
    r.path = r.target.substr(0, q);
    if (q != std::string::npos) r.query = r.target.substr(q + 1);
    for (auto& field : req_) {
      std::string name{field.name_string()};
      for (auto& c : name)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      r.headers[name] = std::string{field.value()};
    }
    if (!upgrade_) r.body = std::move(req_.body());
    beast::error_code ignored;
    auto ep = lowest().socket().remote_endpoint(ignored);
    if (!ignored) r.remote = ep.address().to_string();
    token_->srv->handler(std::move(r), shared_from_this());
  }

  void do_reply(http_response res) {
    if (answered_ || dead_) return;
    answered_ = true;
    res.headers.emplace_back("Content-Type", res.content_type);
    res.headers.emplace_back("Content-Length", std::to_string(res.body.size()));
    auto out = serialize_head(res.status, token_->srv->opts.server_name, res.headers, keep_alive_);
    out += "\r\n";
    out += res.body;
    end_after_write_ = true;
    enqueue(std::make_shared<const std::string>(std::move(out)));
  }

  void enqueue(std::shared_ptr<const std::string> data) {
    if (dead_) return;
    if (!queue_.push(std::move(data), writing_)) {
      counter_of("troupe_http_slow_client_disconnects_total",
                 "HTTP streams dropped because the client did not read")
          .inc();
      dead_ = true;
      beast::error_code ignored;
      lowest().socket().close(ignored);
      return;
    }
    if (!writing_) do_write();
  }

  void do_write() {
    writing_ = true;
    net::async_write(stream_, net::buffer(queue_.front()),
                     beast::bind_front_handler(&http_session::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, size_t) {
    writing_ = false;
    if (ec) {
      fail(ec, "http_write");
      dead_ = true;
      queue_.clear();
      return;
    }
    queue_.pop();
    if (!queue_.empty()) return do_write();
    if (end_after_write_) {
      end_after_write_ = false;
      if (!keep_alive_) return do_shutdown();
      do_read();
    }
  }

  void do_shutdown() {
    if (dead_.exchange(true)) return;
    if constexpr (is_tls) {
      // close_notify, bounded: a peer that never answers it is cut off.
      lowest().expires_after(std::chrono::seconds(5));
      stream_.async_shutdown([self = shared_from_this()](beast::error_code) {
        beast::error_code ignored;
        self->lowest().socket().close(ignored);
      });
    } else {
      beast::error_code ignored;
      lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
    }
  }

  std::shared_ptr<ssl::context> tls_; // outlives the stream that refers to it
  Stream stream_;
  std::shared_ptr<connection_token> token_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> req_;
  write_queue queue_;
  bool keep_alive_ = true;
  bool upgrade_ = false;
  bool answered_ = false;
  bool streaming_ = false;
  bool writing_ = false;
  bool end_after_write_ = false;
  bool refuse_plain_ = false;
  std::atomic<bool> dead_{false};
};

// -- listener -----------------------------------------------------------------

void http_server::impl::do_accept() {
  acceptor.async_accept(net::make_strand(ctx),
                        [self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
                          self->on_accept(ec, std::move(socket));
                        });
}

void http_server::impl::on_accept(beast::error_code ec, tcp::socket socket) {
  if (!accepting) return;
  if (ec) {
    fail(ec, "accept");
  } else if (connections.load() >= opts.max_connections) {
    counter_of("troupe_connections_rejected_total", "Connections refused at limits.max_connections")
        .inc();
    beast::error_code ignored;
    socket.close(ignored);
  } else {
    socket.set_option(tcp::no_delay(true));
    auto token = std::make_shared<connection_token>(shared_from_this());
    beast::tcp_stream stream{std::move(socket)};
    if (!tls_context()) {
      start_session(std::move(stream), std::move(token), {}, false);
    } else {
      // One port for both: the first bytes tell a TLS handshake from plain
      // HTTP, so a plain client gets a clear 400 instead of garbage.
      auto detected = std::make_shared<std::pair<beast::tcp_stream, beast::flat_buffer>>(
          std::move(stream), beast::flat_buffer{});
      detected->first.expires_after(std::chrono::seconds(30));
      beast::async_detect_ssl(detected->first, detected->second,
                              [self = shared_from_this(), detected,
                               token = std::move(token)](beast::error_code ec, bool is_tls) {
                                if (ec) return fail(ec, "tls_detect");
                                self->start_session(std::move(detected->first), token,
                                                    std::move(detected->second), is_tls);
                              });
    }
  }
  do_accept();
}

void http_server::impl::start_session(beast::tcp_stream stream,
                                      std::shared_ptr<connection_token> token,
                                      beast::flat_buffer buffer, bool is_tls) {
  auto ctx = tls_context();
  if (is_tls && ctx) {
    tls_stream s{std::move(stream), *ctx};
    std::make_shared<http_session<tls_stream>>(std::move(s), std::move(token), std::move(buffer),
                                               ctx, false)
        ->run();
  } else {
    bool refuse = ctx && !opts.allow_plain;
    std::make_shared<http_session<beast::tcp_stream>>(std::move(stream), std::move(token),
                                                      std::move(buffer), nullptr, refuse)
        ->run();
  }
}

http_server::http_server(actors::io_threads& io, http_server_options opts, http_handler handler)
    : impl_(std::make_shared<impl>(io, std::move(opts), std::move(handler))) {
  if (!impl_->opts.tls_cert.empty())
    impl_->tls = make_tls_context(impl_->opts.tls_cert, impl_->opts.tls_key);
}

std::string http_server::reload_tls() {
  if (impl_->opts.tls_cert.empty()) return "no TLS configured";
  try {
    auto ctx = make_tls_context(impl_->opts.tls_cert, impl_->opts.tls_key);
    std::lock_guard<std::mutex> guard{impl_->tls_mutex};
    impl_->tls = std::move(ctx);
    return {};
  } catch (const std::exception& e) {
    return e.what();
  }
}

http_server::~http_server() {
  stop_accepting();
}

void http_server::start() {
  beast::error_code ec;
  auto addr = net::ip::make_address(impl_->opts.host, ec);
  if (ec)
    throw std::runtime_error("bad listen address '" + impl_->opts.host + "': " + ec.message());
  tcp::endpoint ep{addr, impl_->opts.port};
  auto where = impl_->opts.host + ":" + std::to_string(impl_->opts.port);
  impl_->acceptor.open(ep.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(ep, ec);
  if (!ec) impl_->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("cannot listen on " + where + ": " + ec.message());
  impl_->bound_port = impl_->acceptor.local_endpoint().port();
  impl_->accepting = true;
  impl_->do_accept();
}

uint16_t http_server::port() const {
  return impl_->bound_port;
}

void http_server::stop_accepting() {
  if (!impl_->accepting.exchange(false)) return;
  auto im = impl_;
  net::post(im->acceptor.get_executor(), [im] {
    beast::error_code ignored;
    im->acceptor.close(ignored);
  });
}

void http_server::close_all(uint16_t code, const std::string& reason) {
  std::vector<std::shared_ptr<actors::frame_sink>> live;
  {
    std::lock_guard<std::mutex> guard{impl_->ws_mutex};
    for (auto& [ptr, weak] : impl_->ws_sessions)
      if (auto s = weak.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live)
    s->close(code, reason);
}

uint64_t http_server::open_connections() const {
  return impl_->connections.load();
}

} // namespace troupe::gateway
