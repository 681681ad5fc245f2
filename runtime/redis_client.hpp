#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

struct redisContext;
struct redisReply;

namespace troupe::runtime {

/// A Redis connection failed or a command was refused.
struct redis_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// One blocking connection to `redis://host:port/db` (hiredis). Not
/// thread-safe: its owner serialises calls. A broken connection is re-made
/// once per call, so every caller's commands must be safe to repeat.
class redis_client {
public:
  struct reply_deleter {
    void operator()(redisReply* r) const;
  };
  using reply = std::unique_ptr<redisReply, reply_deleter>;
  using command = std::vector<std::string>;

  /// Connects; unreachable -> `redis_error` naming the URL and the reason.
  /// `timeout_ms` bounds connecting and every reply.
  explicit redis_client(std::string url, int timeout_ms = 5000);
  ~redis_client();
  redis_client(const redis_client&) = delete;
  redis_client& operator=(const redis_client&) = delete;

  const std::string& url() const { return url_; }

  /// Sends the commands pipelined and returns the last reply, which may be
  /// a Redis error reply.
  reply send(const std::vector<command>& cmds);
  /// One command; an error reply throws.
  reply run(const command& c);
  /// MULTI ... EXEC: all or nothing. Returns EXEC's array of replies.
  reply transaction(const std::vector<command>& cmds);

  /// The text of a string/status reply ("" otherwise).
  static std::string str(const redisReply* r);
  static std::string error_text(const redisReply* r);

private:
  void connect();

  std::string url_;
  std::string host_;
  int port_ = 6379;
  int db_ = 0;
  int timeout_ms_;
  redisContext* ctx_ = nullptr;
};

} // namespace troupe::runtime
