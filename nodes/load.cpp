#include "nodes/load.hpp"
#include "nodes/client_tls.hpp"
#include "nodes/http_call.hpp"
#include "runtime/http_url.hpp"
#include "runtime/config.hpp"
#include "runtime/sse_parser.hpp"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <condition_variable>
#include <map>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <thread>

namespace troupe::gateway {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using nlohmann::json;
using steady = std::chrono::steady_clock;

const char* load_usage =
    "usage: troupe load [--gateway URL | --direct URL] [options]\n"
    "  --gateway URL      a troupe gateway (default $TROUPE_GATEWAY or http://127.0.0.1:7800)\n"
    "  --direct URL       an OpenAI-compatible server instead (e.g. http://127.0.0.1:8080/v1):\n"
    "                     the same load without troupe, as a baseline; each client sends\n"
    "                     its whole conversation every turn, as an agent does (up to the\n"
    "                     last 200 messages, an agent's default history)\n"
    "  --connections N    concurrent clients (default 10)\n"
    "  --rate R           conversations started per second over all clients\n"
    "                     (default 0: each client starts its next as soon as one ends)\n"
    "  --duration D       how long to start conversations (default 10s)\n"
    "  --type T           agent type (default chat)\n"
    "  --message TEXT     what each conversation sends (default \"count to 20\")\n"
    "  --model M          model for --direct (default: none)\n"
    "  --system TEXT      system prompt --direct sends first (the agent type's, to compare)\n"
    "  --key KEY          API key (default $TROUPE_API_KEY)\n"
    "  --cacert FILE      also trust FILE for an https:// gateway (default $TROUPE_CA_FILE)\n"
    "  --threads N        client I/O threads (default 1)\n"
    "  --json             print the report as JSON\n"
    "  --quiet            no progress line\n";

struct options {
  std::string gateway;
  std::string direct;
  int connections = 10;
  double rate = 0;
  std::chrono::milliseconds duration{10000};
  std::string type = "chat";
  std::string message = "count to 20";
  std::string model;
  std::string system;
  std::string key;
  int threads = 1;
  bool json = false;
  bool quiet = false;
};

/// Everything measured, shared by all clients. Samples are kept whole (in
/// microseconds) up to a bound, so percentiles are exact for any run that
/// fits in it.
class stats {
public:
  static constexpr size_t max_samples = 20'000'000;

  void first_token(double us) { add(ttft_, us); }
  void next_token(double us) { add(itl_, us); }
  void token() { tokens_.fetch_add(1, std::memory_order_relaxed); }
  void done(double us) {
    ok_.fetch_add(1, std::memory_order_relaxed);
    add(turn_, us);
  }
  void error(const std::string& code) {
    errors_.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> guard{mutex_};
    ++codes_[code];
  }
  void connected() { open_.fetch_add(1, std::memory_order_relaxed); }
  void disconnected() { open_.fetch_sub(1, std::memory_order_relaxed); }

  uint64_t ok() const { return ok_.load(); }
  uint64_t errors() const { return errors_.load(); }
  uint64_t tokens() const { return tokens_.load(); }
  int64_t open() const { return open_.load(); }

  /// p-th percentiles in ms of `which` ("ttft", "itl", "turn"), over the
  /// last `recent` samples (0 = all); -1 if empty.
  std::vector<double> percentiles(const char* which, std::initializer_list<double> ps,
                                  size_t recent = 0) {
    std::vector<double> v;
    {
      std::lock_guard<std::mutex> guard{mutex_};
      auto& all = std::string{which} == "ttft" ? ttft_ : std::string{which} == "itl" ? itl_ : turn_;
      auto from = recent == 0 || all.size() <= recent ? 0 : all.size() - recent;
      v.assign(all.begin() + static_cast<std::ptrdiff_t>(from), all.end());
    }
    std::sort(v.begin(), v.end());
    std::vector<double> out;
    for (auto p : ps) {
      if (v.empty()) {
        out.push_back(-1);
        continue;
      }
      auto i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
      out.push_back(v[std::min(i, v.size() - 1)] / 1000.0);
    }
    return out;
  }

  std::map<std::string, uint64_t> codes() const {
    std::lock_guard<std::mutex> guard{mutex_};
    return codes_;
  }

private:
  void add(std::vector<double>& v, double us) {
    std::lock_guard<std::mutex> guard{mutex_};
    if (v.size() < max_samples) v.push_back(us);
  }

  mutable std::mutex mutex_;
  std::vector<double> ttft_, itl_, turn_;
  std::map<std::string, uint64_t> codes_;
  std::atomic<uint64_t> ok_{0}, errors_{0}, tokens_{0};
  std::atomic<int64_t> open_{0};
};

/// When conversations start: closed loop (a client starts its next when
/// one ends) or open loop at `rate` per second, spread over the clients.
class schedule {
public:
  /// Before it, `next()` says the run is over; call once, before `go()`.
  void begin(double rate, steady::time_point start, steady::time_point end) {
    rate_ = rate;
    start_ = start;
    end_ = end;
  }

  /// When the caller's next conversation starts, or nothing when the run is
  /// over. A client left without one (open loop, more clients than the rate
  /// needs) is told to wait for the end: it stays connected, as idle clients
  /// of a real gateway do.
  std::optional<steady::time_point> next(bool& idle) {
    auto now = steady::now();
    idle = false;
    if (now >= end_) return std::nullopt;
    if (rate_ <= 0) return now;
    auto k = next_.fetch_add(1);
    auto at = start_ + std::chrono::duration_cast<steady::duration>(
                           std::chrono::duration<double>(static_cast<double>(k) / rate_));
    if (at < end_) return at;
    idle = true;
    return end_;
  }

private:
  double rate_ = 0;
  steady::time_point start_, end_;
  std::atomic<uint64_t> next_{0};
};

/// Agent keys and request ids differ per run: the gateway treats a repeated
/// request id as a retry and answers from its log without running it.
const std::string& run_nonce() {
  static const std::string nonce = [] {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%llx",
                  static_cast<unsigned long long>(
                      std::chrono::system_clock::now().time_since_epoch().count()));
    return std::string{buf};
  }();
  return nonce;
}

double micros(steady::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

/// One conversation at a time over one connection; shared by both modes.
class client_base {
public:
  client_base(stats& s, schedule& sch, net::io_context& ioc)
      : stats_(s), schedule_(sch), strand_(net::make_strand(ioc)), timer_(strand_) {}
  virtual ~client_base() = default;

  virtual void start(std::function<void()> on_open) = 0;
  virtual bool running() const = 0;

  /// Every client is open: conversations start.
  void go() {
    net::post(strand_, [this] {
      if (ready()) next_conversation();
    });
  }

protected:
  virtual bool ready() const = 0;

  /// Waits for the schedule, then `begin()`; at the end of the run `finish()`.
  void next_conversation() {
    bool idle = false;
    auto at = schedule_.next(idle);
    if (!at) return finish();
    timer_.expires_at(*at);
    timer_.async_wait(net::bind_executor(strand_, [this, idle](beast::error_code ec) {
      if (ec || idle) return finish();
      sent_ = steady::now();
      last_token_.reset();
      begin();
    }));
  }

  void on_token() {
    auto now = steady::now();
    stats_.token();
    if (!last_token_)
      stats_.first_token(micros(now - sent_));
    else
      stats_.next_token(micros(now - *last_token_));
    last_token_ = now;
  }

  void on_done() {
    stats_.done(micros(steady::now() - sent_));
    next_conversation();
  }

  virtual void begin() = 0;
  virtual void finish() = 0;

  stats& stats_;
  schedule& schedule_;
  net::strand<net::io_context::executor_type> strand_;
  net::steady_timer timer_;
  steady::time_point sent_;
  std::optional<steady::time_point> last_token_;
};

using tls_stream = beast::ssl_stream<beast::tcp_stream>;

/// A WebSocket client of the gateway: spawns its own agent, then sends one
/// message per conversation and reads events up to `done` or `error`.
/// `Stream` is `beast::tcp_stream` (ws://) or `tls_stream` (wss://).
template <class Stream> class ws_client final : public client_base {
public:
  /// `tls` is used for wss:// only (and must outlive the client).
  ws_client(stats& s, schedule& sch, net::io_context& ioc, const options& o,
            const tcp::resolver::results_type& addrs, const runtime::http_url& ep, int index,
            net::ssl::context& tls)
      : client_base(s, sch, ioc), ws_(make_stream(strand_, tls)), opt_(o), addrs_(addrs), ep_(ep),
        agent_(o.type + "/load-" + run_nonce() + "-" + std::to_string(index)) {}

  void start(std::function<void()> on_open) override {
    on_open_ = std::move(on_open);
    beast::get_lowest_layer(ws_).expires_after(std::chrono::seconds(10));
    beast::get_lowest_layer(ws_).async_connect(
        addrs_, net::bind_executor(strand_, [this](beast::error_code ec, auto) {
          if (ec) return fail("connect: " + ec.message());
          if constexpr (std::is_same_v<Stream, tls_stream>) {
            verify_host(ws_.next_layer(), ep_.host);
            ws_.next_layer().async_handshake(
                net::ssl::stream_base::client,
                net::bind_executor(strand_, [this](beast::error_code ec) {
                  if (ec) return fail("tls: " + ec.message());
                  upgrade();
                }));
          } else {
            upgrade();
          }
        }));
  }

  bool running() const override { return !finished_; }

private:
  static Stream make_stream(net::strand<net::io_context::executor_type>& strand,
                            net::ssl::context& tls) {
    if constexpr (std::is_same_v<Stream, tls_stream>)
      return Stream{strand, tls};
    else
      return Stream{strand};
  }

  void upgrade() {
    beast::get_lowest_layer(ws_).expires_never();
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
    auto key = opt_.key;
    ws_.set_option(websocket::stream_base::decorator([key](websocket::request_type& req) {
      req.set(http::field::user_agent, "troupe-load");
      if (!key.empty()) req.set(http::field::authorization, "Bearer " + key);
    }));
    ws_.async_handshake(
        ep_.authority(), ep_.path + "/ws",
        net::bind_executor(strand_, [this](beast::error_code ec) {
          if (ec) return fail("handshake: " + ec.message());
          stats_.connected();
          open_ = true;
          auto key = agent_.substr(agent_.find('/') + 1);
          write(json{{"op", "spawn"}, {"type", opt_.type}, {"key", key}, {"id", "spawn"}}.dump());
          do_read();
        }));
  }

  bool ready() const override { return started_ && !finished_; }

  void begin() override {
    ++seq_;
    write(json{
        {"op", "send"}, {"agent", agent_}, {"text", opt_.message}, {"id", std::to_string(seq_)}}
              .dump());
  }

  void finish() override {
    if (finished_) return;
    finished_ = true;
    if (open_) {
      stats_.disconnected();
      ws_.async_close(websocket::close_code::normal,
                      net::bind_executor(strand_, [](beast::error_code) {}));
    }
    if (on_open_) std::exchange(on_open_, nullptr)();
  }

  void fail(const std::string& why) {
    if (finished_) return;
    stats_.error(why.substr(0, why.find(':')));
    if (!quiet_fail_) {
      std::fprintf(stderr, "troupe load: %s: %s\n", agent_.c_str(), why.c_str());
      quiet_fail_ = true;
    }
    finished_ = true;
    if (open_) stats_.disconnected();
    open_ = false;
    if (on_open_) std::exchange(on_open_, nullptr)();
  }

  void write(std::string text) {
    out_ = std::move(text);
    ws_.text(true);
    ws_.async_write(net::buffer(out_),
                    net::bind_executor(strand_, [this](beast::error_code ec, size_t) {
                      if (ec && !finished_) fail("write: " + ec.message());
                    }));
  }

  void do_read() {
    ws_.async_read(in_, net::bind_executor(strand_, [this](beast::error_code ec, size_t) {
                     if (ec) {
                       if (!finished_) fail("read: " + ec.message());
                       return;
                     }
                     auto frame = beast::buffers_to_string(in_.data());
                     in_.consume(in_.size());
                     on_frame(frame);
                     if (!finished_) do_read();
                   }));
  }

  void on_frame(const std::string& frame) {
    // Tokens are most frames: recognise them without a full parse.
    if (std::string_view{frame}.substr(0, 400).find("\"ev\":\"token\"") != std::string_view::npos) {
      if (started_) on_token();
      return;
    }
    auto j = json::parse(frame, nullptr, false);
    if (!j.is_object()) return fail("bad frame");
    auto ev = j.value("ev", "");
    if (ev == "spawned" && !started_) {
      started_ = true;
      if (on_open_) std::exchange(on_open_, nullptr)(); // conversations start at go()
      return;
    }
    if (ev == "done") return on_done();
    if (ev == "error") {
      stats_.error(j.value("code", "error"));
      if (!started_) return fail("spawn refused: " + j.value("message", ""));
      return next_conversation();
    }
  }

  websocket::stream<Stream> ws_;
  const options& opt_;
  const tcp::resolver::results_type& addrs_;
  const runtime::http_url& ep_;
  std::string agent_;
  std::function<void()> on_open_;
  beast::flat_buffer in_;
  std::string out_;
  uint64_t seq_ = 0;
  bool open_ = false;
  bool started_ = false;
  // Read by the main thread's progress loop (`running()`), written on the strand.
  std::atomic<bool> finished_{false};
  bool quiet_fail_ = false;
};

/// A streaming HTTP client of an OpenAI-compatible server (keep-alive):
/// the same conversations without troupe, for the baseline.
class sse_client final : public client_base {
public:
  sse_client(stats& s, schedule& sch, net::io_context& ioc, const options& o,
             const tcp::resolver::results_type& addrs, const runtime::http_url& ep)
      : client_base(s, sch, ioc), stream_(strand_), opt_(o), addrs_(addrs), ep_(ep),
        sse_([this](runtime::sse_event&& ev) { on_event(ev); }) {}

  void start(std::function<void()> on_open) override {
    on_open_ = std::move(on_open);
    stream_.expires_after(std::chrono::seconds(10));
    stream_.async_connect(addrs_, net::bind_executor(strand_, [this](beast::error_code ec, auto) {
                            if (ec) return fail("connect: " + ec.message());
                            stream_.socket().set_option(tcp::no_delay(true));
                            stream_.expires_never();
                            stats_.connected();
                            open_ = true;
                            if (on_open_) std::exchange(on_open_, nullptr)();
                          }));
  }

  bool running() const override { return !finished_; }

private:
  bool ready() const override { return open_ && !finished_; }

  void begin() override {
    req_ = {http::verb::post, ep_.path + "/chat/completions", 11};
    req_.set(http::field::host, ep_.authority());
    req_.set(http::field::content_type, "application/json");
    req_.set(http::field::accept, "text/event-stream");
    if (!opt_.key.empty()) req_.set(http::field::authorization, "Bearer " + opt_.key);
    // The conversation so far, as an agent keeps it: whole turns, oldest
    // dropped first, so both sides of a comparison send the model the same.
    conversation_.push_back({{"role", "user"}, {"content", opt_.message}});
    while (conversation_.size() > max_history)
      conversation_.erase(conversation_.begin(), conversation_.begin() + 2);
    json messages = json::array();
    if (!opt_.system.empty()) messages.push_back({{"role", "system"}, {"content", opt_.system}});
    messages.insert(messages.end(), conversation_.begin(), conversation_.end());
    json body{{"stream", true}, {"messages", std::move(messages)}};
    if (!opt_.model.empty()) body["model"] = opt_.model;
    req_.body() = body.dump();
    req_.prepare_payload();
    answer_.clear();
    ended_ = false;
    http::async_write(stream_, req_,
                      net::bind_executor(strand_, [this](beast::error_code ec, size_t) {
                        if (ec) return fail("write: " + ec.message());
                        parser_.emplace();
                        parser_->body_limit(boost::none);
                        http::async_read_header(
                            stream_, buffer_, *parser_,
                            net::bind_executor(strand_, [this](beast::error_code ec, size_t) {
                              if (ec) return fail("read: " + ec.message());
                              if (parser_->get().result_int() != 200)
                                return fail("http_" + std::to_string(parser_->get().result_int()));
                              do_read();
                            }));
                      }));
  }

  void do_read() {
    parser_->get().body().data = buf_;
    parser_->get().body().size = sizeof buf_;
    http::async_read_some(stream_, buffer_, *parser_,
                          net::bind_executor(strand_, [this](beast::error_code ec, size_t) {
                            if (ec == http::error::need_buffer) ec = {};
                            if (ec) return fail("read: " + ec.message());
                            sse_.feed({buf_, sizeof buf_ - parser_->get().body().size});
                            if (!parser_->is_done()) return do_read();
                            if (!ended_) stats_.error("stream ended early");
                            if (!parser_->keep_alive()) return fail("server closed");
                            next_conversation();
                          }));
  }

  void on_event(const runtime::sse_event& ev) {
    if (ev.data == "[DONE]") {
      conversation_.push_back({{"role", "assistant"}, {"content", std::move(answer_)}});
      ended_ = true;
      stats_.done(micros(steady::now() - sent_));
      return;
    }
    if (ev.data.find("\"content\"") == std::string::npos) return;
    auto j = json::parse(ev.data, nullptr, false);
    if (!j.is_object() || !j.contains("choices") || j["choices"].empty()) return;
    auto& delta = j["choices"][0]["delta"];
    if (!delta.is_object() || !delta.contains("content") || !delta["content"].is_string()) return;
    auto& text = delta["content"].get_ref<const std::string&>();
    if (text.empty()) return;
    answer_ += text;
    on_token();
  }

  void finish() override {
    if (finished_) return;
    finished_ = true;
    if (open_) stats_.disconnected();
    open_ = false;
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    if (on_open_) std::exchange(on_open_, nullptr)();
  }

  void fail(const std::string& why) {
    if (finished_) return;
    stats_.error(why.substr(0, why.find(':')));
    std::fprintf(stderr, "troupe load: %s\n", why.c_str());
    finish();
  }

  beast::tcp_stream stream_;
  const options& opt_;
  const tcp::resolver::results_type& addrs_;
  const runtime::http_url& ep_;
  /// An agent's default `limits.max_history_messages`.
  const size_t max_history = runtime::limits_config{}.max_history_messages;

  std::function<void()> on_open_;
  json conversation_ = json::array();
  std::string answer_;
  http::request<http::string_body> req_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  char buf_[16384];
  runtime::sse_parser sse_;
  bool ended_ = false;
  bool open_ = false;
  // Read by the main thread's progress loop (`running()`), written on the strand.
  std::atomic<bool> finished_{false};
};

/// The gateway's resident memory from its `/metrics`, in bytes; -1 if unknown.
int64_t gateway_rss(const options& o) {
  try {
    auto body = http_call(o.gateway, o.key, "GET", "/metrics", "troupe-load").body;
    auto pos = body.find("\nprocess_resident_memory_bytes ");
    if (pos == std::string::npos) return -1;
    return std::strtoll(body.c_str() + pos + 31, nullptr, 10);
  } catch (const std::exception&) {
    return -1;
  }
}

std::optional<options> parse_args(const std::vector<std::string>& args) {
  options o;
  if (auto g = std::getenv("TROUPE_GATEWAY")) o.gateway = g;
  if (auto k = std::getenv("TROUPE_API_KEY")) o.key = k;
  for (size_t i = 0; i < args.size(); ++i) {
    auto& a = args[i];
    auto value = [&]() -> std::optional<std::string> {
      if (i + 1 >= args.size()) return std::nullopt;
      return args[++i];
    };
    auto number = [&](double lo, double hi) -> std::optional<double> {
      auto v = value();
      if (!v) return std::nullopt;
      char* end = nullptr;
      double d = std::strtod(v->c_str(), &end);
      if (v->empty() || *end != '\0' || d < lo || d > hi) return std::nullopt;
      return d;
    };
    std::optional<std::string> s;
    std::optional<double> n;
    if (a == "--json") {
      o.json = true;
    } else if (a == "--quiet") {
      o.quiet = true;
    } else if (a == "--gateway" && (s = value())) {
      o.gateway = *s;
    } else if (a == "--direct" && (s = value())) {
      o.direct = *s;
    } else if (a == "--connections" && (n = number(1, 1000000))) {
      o.connections = static_cast<int>(*n);
    } else if (a == "--rate" && (n = number(0, 1e9))) {
      o.rate = *n;
    } else if (a == "--duration" && (s = value()) && runtime::parse_duration(*s)) {
      o.duration = *runtime::parse_duration(*s);
    } else if (a == "--type" && (s = value())) {
      o.type = *s;
    } else if (a == "--message" && (s = value())) {
      o.message = *s;
    } else if (a == "--system" && (s = value())) {
      o.system = *s;
    } else if (a == "--model" && (s = value())) {
      o.model = *s;
    } else if (a == "--key" && (s = value())) {
      o.key = *s;
    } else if (a == "--cacert" && (s = value())) {
      ::setenv("TROUPE_CA_FILE", s->c_str(), 1); // what client_tls_context reads
    } else if (a == "--threads" && (n = number(1, 64))) {
      o.threads = static_cast<int>(*n);
    } else {
      std::fprintf(stderr, "troupe load: bad or incomplete option '%s'\n%s", a.c_str(), load_usage);
      return std::nullopt;
    }
  }
  if (o.gateway.empty()) o.gateway = "http://127.0.0.1:7800";
  return o;
}

} // namespace

int run_load(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(load_usage, stdout);
    return 0;
  }
  auto parsed = parse_args(args);
  if (!parsed) return 2;
  auto& o = *parsed;
  bool direct = !o.direct.empty();
  auto ep = runtime::http_url::parse(direct ? o.direct : o.gateway);
  if (direct && ep.tls) {
    std::fprintf(stderr, "troupe load: --direct speaks plain http only\n");
    return 2;
  }
  std::optional<net::ssl::context> tls_context;
  try {
    tls_context.emplace(client_tls_context());
  } catch (const std::exception& e) { // an unreadable --cacert
    std::fprintf(stderr, "troupe load: TLS: %s\n", e.what());
    return 2;
  }
  auto& tls = *tls_context;

  net::io_context ioc;
  tcp::resolver::results_type addrs;
  try {
    addrs = tcp::resolver{ioc}.resolve(ep.host, ep.port);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "troupe load: cannot resolve %s: %s\n", ep.host.c_str(), e.what());
    return 1;
  }
  int64_t rss_before = direct ? -1 : gateway_rss(o);

  stats st;
  // Connections open first (their setup is not measured); conversations
  // start when every client is open (or after 60 s, with those that are).
  schedule sch;
  std::atomic<int> opening{o.connections};
  std::mutex gate_mutex;
  std::condition_variable gate;
  auto opened = [&] {
    if (opening.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> guard{gate_mutex};
      gate.notify_all();
    }
  };
  std::vector<std::unique_ptr<client_base>> clients;
  auto work = net::make_work_guard(ioc);
  std::vector<std::thread> threads;
  for (int i = 0; i < o.threads; ++i)
    threads.emplace_back([&] { ioc.run(); });
  auto connect_start = steady::now();
  for (int i = 0; i < o.connections; ++i) {
    if (direct) {
      auto c = std::make_unique<sse_client>(st, sch, ioc, o, addrs, ep);
      c->start(opened);
      clients.push_back(std::move(c));
    } else {
      std::unique_ptr<client_base> c;
      if (ep.tls)
        c = std::make_unique<ws_client<tls_stream>>(st, sch, ioc, o, addrs, ep, i, tls);
      else
        c = std::make_unique<ws_client<beast::tcp_stream>>(st, sch, ioc, o, addrs, ep, i, tls);
      c->start(opened);
      clients.push_back(std::move(c));
    }
    // In waves: thousands of handshakes at once would overrun the backlog.
    if (i % 200 == 199) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  {
    std::unique_lock<std::mutex> lock{gate_mutex};
    gate.wait_for(lock, std::chrono::seconds(60), [&] { return opening.load() <= 0; });
  }
  auto start = steady::now();
  auto connect_seconds = std::chrono::duration<double>(start - connect_start).count();
  int64_t rss_open = direct ? -1 : gateway_rss(o);
  auto end = start + o.duration;
  sch.begin(o.rate, start, end);
  for (auto& c : clients)
    c->go();

  auto running = [&] {
    for (auto& c : clients)
      if (c->running()) return true;
    return false;
  };
  auto last_print = steady::now();
  while (running()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto now = steady::now();
    if (now > end + std::chrono::seconds(30)) break; // conversations that never end
    if (!o.quiet && now - last_print >= std::chrono::seconds(1)) {
      last_print = now;
      double secs = std::chrono::duration<double>(now - start).count();
      auto ttft = st.percentiles("ttft", {50}, 1000);
      std::fprintf(
          stderr, "\r[%5.1fs] open %lld  done %llu  errors %llu  %.0f tok/s  ttft p50 %.1f ms   ",
          secs, static_cast<long long>(st.open()), static_cast<unsigned long long>(st.ok()),
          static_cast<unsigned long long>(st.errors()),
          static_cast<double>(st.tokens()) / std::max(secs, 1e-3), ttft[0]);
    }
  }
  auto finished = steady::now();
  if (!o.quiet) std::fputc('\n', stderr);
  int64_t rss_end = direct ? -1 : gateway_rss(o);
  work.reset();
  ioc.stop();
  for (auto& t : threads)
    t.join();

  double secs = std::chrono::duration<double>(finished - start).count();
  auto ttft = st.percentiles("ttft", {50, 90, 99, 100});
  auto itl = st.percentiles("itl", {50, 90, 99, 100});
  auto turn = st.percentiles("turn", {50, 90, 99, 100});
  json report{{"target", direct ? o.direct : o.gateway},
              {"mode", direct ? "direct" : "gateway"},
              {"connections", o.connections},
              {"rate", o.rate},
              {"seconds", secs},
              {"connect_seconds", connect_seconds},
              {"conversations", st.ok()},
              {"errors", st.errors()},
              {"error_codes", st.codes()},
              {"tokens", st.tokens()},
              {"tokens_per_s", static_cast<double>(st.tokens()) / secs},
              {"conversations_per_s", static_cast<double>(st.ok()) / secs},
              {"ttft_ms", {{"p50", ttft[0]}, {"p90", ttft[1]}, {"p99", ttft[2]}, {"max", ttft[3]}}},
              {"itl_ms", {{"p50", itl[0]}, {"p90", itl[1]}, {"p99", itl[2]}, {"max", itl[3]}}},
              {"turn_ms", {{"p50", turn[0]}, {"p90", turn[1]}, {"p99", turn[2]}, {"max", turn[3]}}},
              {"gateway_rss_bytes",
               {{"before", rss_before}, {"connections_open", rss_open}, {"end", rss_end}}}};
  if (o.json) {
    std::printf("%s\n", report.dump(2).c_str());
  } else {
    std::printf("troupe load: %s %s, %d connections, %s, %.1f s\n", direct ? "direct" : "gateway",
                (direct ? o.direct : o.gateway).c_str(), o.connections,
                o.rate > 0 ? ("rate " + std::to_string(o.rate) + "/s").c_str() : "closed loop",
                secs);
    std::printf("  conversations %llu done, %llu errors, %.1f/s\n",
                static_cast<unsigned long long>(st.ok()),
                static_cast<unsigned long long>(st.errors()), static_cast<double>(st.ok()) / secs);
    for (auto& [code, n] : st.codes())
      std::printf("    %s: %llu\n", code.c_str(), static_cast<unsigned long long>(n));
    std::printf("  tokens        %llu, %.0f/s\n", static_cast<unsigned long long>(st.tokens()),
                static_cast<double>(st.tokens()) / secs);
    auto row = [](const char* name, const std::vector<double>& p) {
      std::printf("  %-13s p50 %.2f  p90 %.2f  p99 %.2f  max %.2f ms\n", name, p[0], p[1], p[2],
                  p[3]);
    };
    row("ttft", ttft);
    row("inter-token", itl);
    row("turn", turn);
    if (rss_before >= 0 && rss_open >= 0)
      std::printf("  gateway rss   %.1f MiB before, %.1f MiB with %d open (%.1f KiB each), %.1f "
                  "MiB at the end\n",
                  static_cast<double>(rss_before) / 1048576.0,
                  static_cast<double>(rss_open) / 1048576.0, o.connections,
                  static_cast<double>(rss_open - rss_before) / 1024.0 / o.connections,
                  static_cast<double>(rss_end) / 1048576.0);
  }
  return st.ok() > 0 ? 0 : 1; // errors under load are results, not a failure of the tool
}

} // namespace troupe::gateway
