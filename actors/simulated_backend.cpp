#include "actors/backend.hpp"
#include "actors/io_threads.hpp"
#include "runtime/simulated_model.hpp"
#include "runtime/token_pacer.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <chrono>

namespace troupe::actors {

namespace net = boost::asio;
using namespace std::chrono;

namespace {

/// One simulated stream: waits `ttft`, then emits due tokens on a timer.
/// Tokens that fall due together are sent in one firing, so a fast
/// simulated GPU does not turn into a timer per token.
class simulated_stream final : public stream_handle,
                               public std::enable_shared_from_this<simulated_stream> {
public:
  simulated_stream(net::io_context& ctx, runtime::simulated_plan plan, stream_callbacks cb,
                   milliseconds ttft, double tokens_per_s)
      : strand_(net::make_strand(ctx)), timer_(strand_), plan_(std::move(plan)), cb_(std::move(cb)),
        pacer_(ttft, tokens_per_s, plan_.tokens.size()) {}

  void run() {
    pacer_.start();
    timer_.expires_at(pacer_.wake_at());
    timer_.async_wait([self = shared_from_this()](auto ec) { self->on_tick(ec); });
  }

  void cancel() override {
    net::post(strand_, [self = shared_from_this()] {
      if (self->finished_) return;
      self->finished_ = true;
      self->timer_.cancel();
      self->cb_.on_error(runtime::errc::cancelled, "cancelled", self->pacer_.next() > 0);
    });
  }

private:
  void on_tick(boost::system::error_code ec) {
    if (ec || finished_) return;
    auto& toks = plan_.tokens;
    auto first = pacer_.next();
    auto due = pacer_.release(steady_clock::now());
    for (size_t i = first; i < first + due; ++i)
      cb_.on_token(toks[i]);
    if (!pacer_.done()) {
      timer_.expires_at(pacer_.wake_at());
      timer_.async_wait([self = shared_from_this()](auto ec) { self->on_tick(ec); });
      return;
    }
    finished_ = true;
    runtime::chat_result result;
    for (auto& t : toks)
      result.content += t;
    result.tool_calls = std::move(plan_.tool_calls);
    result.tokens = plan_.tokens_used;
    result.finish_reason = plan_.finish_reason;
    cb_.on_done(std::move(result));
  }

  net::strand<net::io_context::executor_type> strand_;
  net::steady_timer timer_;
  runtime::simulated_plan plan_;
  stream_callbacks cb_;
  runtime::token_pacer pacer_;
  bool finished_ = false;
};

class simulated_backend final : public backend {
public:
  simulated_backend(const runtime::backend_config& cfg, io_threads& io) : cfg_(cfg), io_(io) {}

  std::shared_ptr<stream_handle> start(runtime::chat_request req, stream_callbacks cb) override {
    auto stream = std::make_shared<simulated_stream>(
        io_.context(), runtime::plan_simulated_response(req), std::move(cb),
        milliseconds{cfg_.ttft_ms}, cfg_.tokens_per_s);
    stream->run();
    return stream;
  }

  void check_health(std::function<void(bool, std::string)> cb) override {
    net::post(io_.context(), [cb = std::move(cb)] { cb(true, "simulated"); });
  }

  std::string describe() const override { return "simulated (embedded)"; }

private:
  runtime::backend_config cfg_;
  io_threads& io_;
};

} // namespace

std::shared_ptr<backend> make_simulated_backend(const runtime::backend_config& cfg,
                                                io_threads& io) {
  return std::make_shared<simulated_backend>(cfg, io);
}

std::shared_ptr<backend> make_backend(const runtime::accelerator_config& cfg, io_threads& io) {
  if (cfg.backend.type == "simulated") return make_simulated_backend(cfg.backend, io);
  return make_openai_backend(cfg.backend, io, cfg.backend.type == "lemonade");
}

} // namespace troupe::actors
