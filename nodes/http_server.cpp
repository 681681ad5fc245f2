#include "nodes/http_server.hpp"
#include "nodes/write_queue.hpp"
#include "actors/io_threads.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

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

} // namespace

class ws_session;

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
  std::unordered_map<ws_session*, std::weak_ptr<ws_session>> ws_sessions;
  runtime::gauge& open_gauge = runtime::metrics_registry::global().get_gauge(
      "troupe_connections_open", "Open client connections (HTTP and WebSocket)");

  void do_accept();
  void on_accept(beast::error_code ec, tcp::socket socket);
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

class ws_session final : public actors::frame_sink,
                         public std::enable_shared_from_this<ws_session> {
public:
  ws_session(beast::tcp_stream&& stream, std::shared_ptr<connection_token> token)
      : ws_(std::move(stream)), token_(std::move(token)),
        queue_(token_->srv->opts.max_outbound_bytes) {}

  void run(http::request<http::string_body> req, std::shared_ptr<ws_handler> handler) {
    handler_ = std::move(handler);
    auto& opts = token_->srv->opts;
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
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

  websocket::stream<beast::tcp_stream> ws_;
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

class http_session final : public http_exchange, public std::enable_shared_from_this<http_session> {
public:
  http_session(tcp::socket&& socket, std::shared_ptr<connection_token> token)
      : stream_(std::move(socket)), token_(std::move(token)),
        queue_(token_->srv->opts.max_outbound_bytes) {}

  void run() {
    net::dispatch(stream_.get_executor(),
                  beast::bind_front_handler(&http_session::do_read, shared_from_this()));
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
      std::make_shared<ws_session>(std::move(self->stream_), self->token_)
          ->run(std::move(self->req_), handler);
    });
  }

private:
  void do_read() {
    parser_.emplace();
    parser_->body_limit(token_->srv->opts.max_body_bytes);
    parser_->header_limit(64 * 1024);
    stream_.expires_after(std::chrono::seconds(60));
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
    stream_.expires_never();

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
    auto ep = stream_.socket().remote_endpoint(ignored);
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
      stream_.socket().close(ignored);
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
    dead_ = true;
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  beast::tcp_stream stream_;
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
    std::make_shared<http_session>(std::move(socket), std::move(token))->run();
  }
  do_accept();
}

http_server::http_server(actors::io_threads& io, http_server_options opts, http_handler handler)
    : impl_(std::make_shared<impl>(io, std::move(opts), std::move(handler))) {}

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
  std::vector<std::shared_ptr<ws_session>> live;
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
