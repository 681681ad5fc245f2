#include "actors/io_threads.hpp"
#include "actors/mcp_transport.hpp"
#include "runtime/log.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <mutex>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace troupe::actors {

namespace net = boost::asio;

namespace {

/// Bytes queued to a server's stdin before it is taken for stuck.
constexpr size_t max_queued_input = 16 << 20;

/// A child process speaking newline-delimited JSON-RPC (MCP's stdio
/// transport). Everything runs on `strand_`, except `close()`'s muting.
class stdio_transport final : public mcp_transport,
                              public std::enable_shared_from_this<stdio_transport> {
public:
  stdio_transport(runtime::mcp_server_config cfg, net::io_context& ctx)
      : cfg_(std::move(cfg)), strand_(net::make_strand(ctx)), in_(strand_), out_(strand_),
        err_(strand_), reaper_(strand_), exit_wait_(strand_) {}

  ~stdio_transport() override {
    // The node is going away (its io_context dropped our handlers): never
    // leave the server running behind us.
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  void start(mcp_transport_events ev) override {
    {
      std::lock_guard<std::mutex> guard{events_mutex_};
      events_ = std::move(ev);
    }
    net::post(strand_, [self = shared_from_this()] { self->do_start(); });
  }

  void send(std::string message) override {
    message += '\n';
    net::post(strand_, [self = shared_from_this(), m = std::move(message)]() mutable {
      if (self->closed_) return;
      if (self->queued_ + m.size() > max_queued_input)
        return self->fail("server does not read its input (" + std::to_string(self->queued_) +
                          " bytes queued)");
      self->queued_ += m.size();
      self->queue_.push_back(std::move(m));
      if (self->queue_.size() == 1) self->do_write();
    });
  }

  void initialized(const std::string&) override {}

  void close() override {
    {
      std::lock_guard<std::mutex> guard{events_mutex_};
      events_ = {};
    }
    net::post(strand_, [self = shared_from_this()] {
      self->closed_ = true;
      self->terminate();
    });
  }

  std::string describe() const override {
    std::string out = "stdio";
    for (auto& a : cfg_.command)
      out += " " + a;
    return out;
  }

private:
  void do_start() {
    if (closed_) return;
    // Everything the child needs is built before fork: after it, only
    // async-signal-safe calls are allowed in a threaded process.
    std::vector<std::string> env_strings;
    bool has_path = false;
    for (auto& [k, v] : cfg_.env) {
      env_strings.push_back(k + "=" + v);
      has_path |= k == "PATH";
    }
    if (!has_path)
      if (auto path = std::getenv("PATH")) env_strings.push_back(std::string{"PATH="} + path);
    std::vector<char*> argv, envp;
    for (auto& a : cfg_.command)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (auto& e : env_strings)
      envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);

    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, status[2] = {-1, -1};
    auto close_all = [&] {
      for (int* p : {in, out, err, status})
        for (int i = 0; i < 2; ++i)
          if (p[i] >= 0) ::close(p[i]);
    };
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 ||
        ::pipe2(err, O_CLOEXEC) != 0 || ::pipe2(status, O_CLOEXEC) != 0) {
      auto e = errno;
      close_all();
      return fail(std::string{"pipe: "} + std::strerror(e));
    }
    const char* cwd = cfg_.cwd.empty() ? nullptr : cfg_.cwd.c_str();
    auto parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
      auto e = errno;
      close_all();
      return fail(std::string{"fork: "} + std::strerror(e));
    }
    if (pid == 0) {
      // The server dies with the node, even after a kill -9.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      int step = 0; // 0 = chdir, 1 = exec: which failed, for the parent's message
      if (cwd && ::chdir(cwd) != 0) {
        int report[2] = {step, errno};
        (void)!::write(status[1], report, sizeof report);
        ::_exit(127);
      }
      step = 1;
      ::signal(SIGPIPE, SIG_DFL);
      ::execvpe(argv[0], argv.data(), envp.data());
      int report[2] = {step, errno};
      (void)!::write(status[1], report, sizeof report);
      ::_exit(127);
    }
    pid_ = pid;
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    ::close(status[1]);
    // exec closes the status pipe (CLOEXEC): EOF means the server runs.
    int report[2] = {0, 0};
    ssize_t n;
    do
      n = ::read(status[0], report, sizeof report);
    while (n < 0 && errno == EINTR);
    ::close(status[0]);
    in_.assign(in[1]);
    out_.assign(out[0]);
    err_.assign(err[0]);
    if (n == static_cast<ssize_t>(sizeof report)) {
      auto what = report[0] == 0 ? "cannot enter '" + cfg_.cwd + "'"
                                 : "cannot run '" + cfg_.command.front() + "'";
      return fail(what + ": " + std::strerror(report[1]));
    }
    runtime::log::info("mcp", "server_started",
                       {{"server", cfg_.name}, {"pid", std::to_string(pid_)}});
    do_read_out();
    do_read_err();
  }

  void do_write() {
    net::async_write(in_, net::buffer(queue_.front()),
                     [self = shared_from_this()](boost::system::error_code ec, size_t) {
                       if (self->closed_) return;
                       if (ec) return self->gone("cannot write to the server: " + ec.message());
                       self->queued_ -= self->queue_.front().size();
                       self->queue_.pop_front();
                       if (!self->queue_.empty()) self->do_write();
                     });
  }

  void do_read_out() {
    out_.async_read_some(net::buffer(out_buf_),
                         [self = shared_from_this()](boost::system::error_code ec, size_t n) {
                           self->on_read_out(ec, n);
                         });
  }

  void on_read_out(boost::system::error_code ec, size_t n) {
    if (closed_) return;
    if (ec) return gone("server closed its stdout");
    std::string_view chunk{out_buf_, n};
    while (!chunk.empty()) {
      auto nl = chunk.find('\n');
      line_.append(chunk.substr(0, nl));
      if (line_.size() > max_mcp_message_bytes)
        return fail("server sent a message over " + std::to_string(max_mcp_message_bytes) +
                    " bytes");
      if (nl == std::string_view::npos) break;
      chunk.remove_prefix(nl + 1);
      if (!line_.empty() && line_.back() == '\r') line_.pop_back();
      if (!line_.empty()) deliver(std::move(line_));
      line_.clear();
    }
    do_read_out();
  }

  void do_read_err() {
    err_.async_read_some(net::buffer(err_buf_),
                         [self = shared_from_this()](boost::system::error_code ec, size_t n) {
                           if (self->closed_ || ec) return;
                           self->on_read_err(n);
                         });
  }

  void on_read_err(size_t n) {
    std::string_view chunk{err_buf_, n};
    while (!chunk.empty()) {
      auto nl = chunk.find('\n');
      if (err_line_.size() < 2000)
        err_line_.append(chunk.substr(0, std::min(nl, 2000 - err_line_.size())));
      if (nl == std::string_view::npos) break;
      chunk.remove_prefix(nl + 1);
      std::function<void(std::string)> cb;
      {
        std::lock_guard<std::mutex> guard{events_mutex_};
        cb = events_.on_stderr;
      }
      if (cb && !err_line_.empty()) cb(std::move(err_line_));
      err_line_.clear();
    }
    do_read_err();
  }

  void deliver(std::string message) {
    std::lock_guard<std::mutex> guard{events_mutex_};
    if (events_.on_message) events_.on_message(std::move(message));
  }

  /// The server's side went away: say how it ended if it has exited. Its
  /// pipes close a moment before the kernel reports the exit, so wait for
  /// that a little (200 ms) before saying only what broke.
  void gone(const std::string& what, int attempt = 0) {
    if (closed_) return;
    int status = 0;
    if (pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = 0;
      if (WIFEXITED(status))
        return fail("server exited with status " + std::to_string(WEXITSTATUS(status)));
      if (WIFSIGNALED(status))
        return fail("server killed by signal " + std::to_string(WTERMSIG(status)));
    }
    if (pid_ > 0 && attempt < 20) {
      exit_wait_.expires_after(std::chrono::milliseconds(10));
      exit_wait_.async_wait([self = shared_from_this(), what, attempt](boost::system::error_code) {
        self->gone(what, attempt + 1);
      });
      return;
    }
    fail(what);
  }

  void fail(const std::string& reason) {
    if (closed_) return;
    closed_ = true;
    terminate();
    std::function<void(std::string)> cb;
    {
      std::lock_guard<std::mutex> guard{events_mutex_};
      cb = std::move(events_.on_closed);
      events_ = {};
    }
    if (cb) cb(reason);
  }

  /// Closes the pipes (a well-behaved server exits on EOF), then TERM, then
  /// KILL after 2 s; the child is always reaped.
  void terminate() {
    boost::system::error_code ignored;
    in_.close(ignored);
    out_.close(ignored);
    err_.close(ignored);
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    reaper_.expires_after(std::chrono::milliseconds(50));
    reap(0);
  }

  void reap(int attempt) {
    reaper_.async_wait([self = shared_from_this(), attempt](boost::system::error_code) {
      if (self->pid_ <= 0) return;
      if (::waitpid(self->pid_, nullptr, WNOHANG) == self->pid_) {
        self->pid_ = 0;
        return;
      }
      if (attempt == 40) { // 2 s
        ::kill(self->pid_, SIGKILL);
        ::waitpid(self->pid_, nullptr, 0);
        self->pid_ = 0;
        return;
      }
      self->reaper_.expires_after(std::chrono::milliseconds(50));
      self->reap(attempt + 1);
    });
  }

  runtime::mcp_server_config cfg_;
  net::strand<net::io_context::executor_type> strand_;
  net::posix::stream_descriptor in_, out_, err_;
  net::steady_timer reaper_;
  net::steady_timer exit_wait_;
  std::mutex events_mutex_;
  mcp_transport_events events_;
  std::deque<std::string> queue_;
  size_t queued_ = 0;
  char out_buf_[16384];
  char err_buf_[4096];
  std::string line_;
  std::string err_line_;
  pid_t pid_ = 0;
  bool closed_ = false;
};

} // namespace

std::shared_ptr<mcp_transport> make_mcp_stdio_transport(const runtime::mcp_server_config& cfg,
                                                        io_threads& io) {
  return std::make_shared<stdio_transport>(cfg, io.context());
}

} // namespace troupe::actors
