#include "nodes/sim_llm.hpp"
#include "actors/io_threads.hpp"
#include "nodes/http_server.hpp"
#include "runtime/log.hpp"
#include "runtime/openai_codec.hpp"
#include "runtime/simulated_model.hpp"
#include "runtime/token_pacer.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>

namespace troupe::gateway {

namespace net = boost::asio;
using nlohmann::json;
using namespace std::chrono;

namespace {

/// Admission like a real server's scheduler: `slots` requests generate at
/// once, the rest wait in FIFO order, beyond `max_queue` they get 429.
class slot_pool {
public:
  slot_pool(int64_t slots, int64_t max_queue) : free_(slots), max_queue_(max_queue) {}

  /// Runs `start` when a slot is free; false if the queue is full.
  bool acquire(std::function<void()> start) {
    std::unique_lock<std::mutex> lock{mutex_};
    if (free_ > 0) {
      --free_;
      lock.unlock();
      start();
      return true;
    }
    if (static_cast<int64_t>(waiting_.size()) >= max_queue_) return false;
    waiting_.push_back(std::move(start));
    return true;
  }

  void release() {
    std::unique_lock<std::mutex> lock{mutex_};
    if (waiting_.empty()) {
      ++free_;
      return;
    }
    auto next = std::move(waiting_.front());
    waiting_.pop_front();
    lock.unlock();
    next();
  }

private:
  std::mutex mutex_;
  int64_t free_;
  int64_t max_queue_;
  std::deque<std::function<void()>> waiting_;
};

/// Streams one planned answer as OpenAI chunks on a timer.
class sse_generator : public std::enable_shared_from_this<sse_generator> {
public:
  sse_generator(net::io_context& ctx, std::shared_ptr<http_exchange> ex,
                runtime::simulated_plan plan, const sim_llm_options& opts,
                std::shared_ptr<slot_pool> slots, std::string model)
      : strand_(net::make_strand(ctx)), timer_(strand_), ex_(std::move(ex)), plan_(std::move(plan)),
        pacer_(milliseconds{opts.ttft_ms}, opts.tokens_per_s, plan_.tokens.size()),
        slots_(std::move(slots)), model_(std::move(model)) {}

  void run() {
    ex_->start_stream(200, "text/event-stream");
    pacer_.start();
    timer_.expires_at(pacer_.wake_at());
    timer_.async_wait([self = shared_from_this()](auto ec) { self->tick(ec); });
  }

private:
  void send(const runtime::chat_chunk& c) {
    ex_->write_chunk(std::make_shared<const std::string>(
        "data: " + runtime::encode_chat_chunk("chatcmpl-sim", model_, c) + "\n\n"));
  }

  void tick(boost::system::error_code ec) {
    if (ec) return finish();
    if (ex_->client_gone()) return finish();
    auto first = pacer_.next();
    auto due = pacer_.release(steady_clock::now());
    for (size_t i = first; i < first + due; ++i) {
      runtime::chat_chunk c;
      c.content = plan_.tokens[i];
      send(c);
    }
    if (!pacer_.done()) {
      timer_.expires_at(pacer_.wake_at());
      timer_.async_wait([self = shared_from_this()](auto ec) { self->tick(ec); });
      return;
    }
    // Tool calls go out in fragments, as real servers send them: id and
    // name first, then the arguments in two pieces.
    for (size_t i = 0; i < plan_.tool_calls.size(); ++i) {
      auto& call = plan_.tool_calls[i];
      auto idx = static_cast<int>(i);
      auto half = call.arguments.size() / 2;
      runtime::chat_chunk head;
      head.tool_calls.push_back({idx, call.id, call.name, ""});
      send(head);
      runtime::chat_chunk a;
      a.tool_calls.push_back({idx, "", "", call.arguments.substr(0, half)});
      send(a);
      runtime::chat_chunk b;
      b.tool_calls.push_back({idx, "", "", call.arguments.substr(half)});
      send(b);
    }
    runtime::chat_chunk fin;
    fin.finish_reason = plan_.finish_reason;
    send(fin);
    runtime::chat_chunk usage;
    usage.has_usage = true;
    usage.tokens = plan_.tokens_used;
    send(usage);
    ex_->write_chunk(std::make_shared<const std::string>("data: [DONE]\n\n"));
    ex_->end_stream();
    finish();
  }

  void finish() {
    if (!released_) {
      released_ = true;
      slots_->release();
    }
  }

  net::strand<net::io_context::executor_type> strand_;
  net::steady_timer timer_;
  std::shared_ptr<http_exchange> ex_;
  runtime::simulated_plan plan_;
  runtime::token_pacer pacer_;
  std::shared_ptr<slot_pool> slots_;
  std::string model_;
  bool released_ = false;
};

http_response json_reply(int status, const json& j) {
  return {status, "application/json", j.dump(), {}};
}

volatile std::sig_atomic_t stop_requested = 0;

} // namespace

int run_sim_llm(const sim_llm_options& opts) {
  actors::io_threads io{1};
  auto slots = std::make_shared<slot_pool>(opts.slots, opts.max_queue);
  auto* ctx = &io.context();
  // Completions asked for and the messages they carried, for tests that
  // check what reached the server.
  auto completions = std::make_shared<std::atomic<uint64_t>>(0);
  auto messages = std::make_shared<std::atomic<uint64_t>>(0);
  http_server_options server_opts;
  server_opts.host = opts.host;
  server_opts.port = opts.port;
  server_opts.max_body_bytes = 64 << 20;
  server_opts.max_outbound_bytes = 64 << 20;
  server_opts.max_connections = 100000;
  server_opts.server_name = "troupe-sim-llm";
  http_server server{
      io, server_opts,
      [&opts, slots, ctx, completions, messages](http_request req,
                                                 std::shared_ptr<http_exchange> ex) {
        auto path = req.path;
        if (path.rfind("/api/v1", 0) == 0) path = "/v1" + path.substr(7); // Lemonade's prefix
        if (req.method == "GET" && (path == "/health" || path == "/v1/health"))
          return ex->reply(json_reply(200, {{"status", "ok"}, {"model_loaded", opts.model}}));
        if (req.method == "GET" && path == "/v1/models")
          return ex->reply(json_reply(
              200, {{"object", "list"},
                    {"data", json::array({{{"id", opts.model}, {"object", "model"}}})}}));
        if (req.method == "GET" && path == "/stats")
          return ex->reply(json_reply(
              200, {{"chat_completions", completions->load()}, {"messages", messages->load()}}));
        if (req.method == "POST" && path == "/v1/load")
          return ex->reply(json_reply(200, {{"status", "success"}}));
        if (req.method == "POST" && path == "/v1/chat/completions") {
          completions->fetch_add(1);
          bool stream = false;
          std::string err;
          auto creq = runtime::decode_chat_request(req.body, stream, err);
          if (!creq)
            return ex->reply(json_reply(
                400, {{"error", {{"message", err}, {"type", "invalid_request_error"}}}}));
          messages->fetch_add(creq->messages.size());
          auto plan = runtime::plan_simulated_response(*creq);
          auto model = creq->model.empty() ? opts.model : creq->model;
          if (!stream) {
            // Non-streaming answers wait out the whole generation time.
            runtime::chat_result r;
            for (auto& t : plan.tokens)
              r.content += t;
            r.tool_calls = plan.tool_calls;
            r.tokens = plan.tokens_used;
            r.finish_reason = plan.finish_reason;
            auto total = milliseconds{opts.ttft_ms} +
                         duration_cast<milliseconds>(duration<double>(
                             static_cast<double>(plan.tokens.size()) / opts.tokens_per_s));
            bool ok = slots->acquire([=] {
              auto timer = std::make_shared<net::steady_timer>(*ctx, total);
              timer->async_wait([timer, ex, r, model, slots](auto) {
                ex->reply({200,
                           "application/json",
                           runtime::encode_chat_completion("chatcmpl-sim", model, r),
                           {}});
                slots->release();
              });
            });
            if (!ok) ex->reply(json_reply(429, {{"error", {{"message", "server busy"}}}}));
            return;
          }
          auto gen = std::make_shared<sse_generator>(*ctx, ex, std::move(plan), opts, slots, model);
          if (!slots->acquire([gen] { gen->run(); }))
            ex->reply(json_reply(429, {{"error", {{"message", "server busy"}}}}));
          return;
        }
        ex->reply(
            json_reply(404, {{"error", {{"message", "no route " + req.method + " " + req.path}}}}));
      }};
  try {
    server.start();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "troupe sim-llm: %s\n", e.what());
    return 2;
  }
  std::printf("troupe sim-llm listening on http://%s:%u/v1 model=%s ttft_ms=%lld tokens_per_s=%g "
              "slots=%lld\n",
              opts.host.c_str(), server.port(), opts.model.c_str(),
              static_cast<long long>(opts.ttft_ms), opts.tokens_per_s,
              static_cast<long long>(opts.slots));
  std::fflush(stdout);
  std::signal(SIGINT, [](int) { stop_requested = 1; });
  std::signal(SIGTERM, [](int) { stop_requested = 1; });
  while (!stop_requested)
    std::this_thread::sleep_for(milliseconds(100));
  server.stop_accepting();
  io.stop();
  return 0;
}

} // namespace troupe::gateway
