#include "runtime/redis_client.hpp"

#include <hiredis/hiredis.h>

#include <cstdlib>

namespace troupe::runtime {

void redis_client::reply_deleter::operator()(redisReply* r) const {
  freeReplyObject(r);
}

redis_client::redis_client(std::string url, int timeout_ms)
    : url_(std::move(url)), timeout_ms_(timeout_ms) {
  // redis://host:port/db
  auto scheme = url_.find("://");
  auto rest = url_.substr(scheme == std::string::npos ? 0 : scheme + 3);
  auto slash = rest.find('/');
  auto hostport = rest.substr(0, slash);
  if (slash != std::string::npos && slash + 1 < rest.size())
    db_ = std::atoi(rest.c_str() + slash + 1);
  auto colon = hostport.rfind(':');
  host_ = colon == std::string::npos ? hostport : hostport.substr(0, colon);
  port_ = colon == std::string::npos ? 6379 : std::atoi(hostport.c_str() + colon + 1);
  connect();
}

redis_client::~redis_client() {
  if (ctx_) redisFree(ctx_);
}

void redis_client::connect() {
  if (ctx_) redisFree(ctx_);
  timeval tv{timeout_ms_ / 1000, (timeout_ms_ % 1000) * 1000};
  ctx_ = redisConnectWithTimeout(host_.c_str(), port_, tv);
  if (!ctx_ || ctx_->err) {
    std::string why = ctx_ ? ctx_->errstr : "out of memory";
    if (ctx_) redisFree(ctx_);
    ctx_ = nullptr;
    throw redis_error("redis unreachable at " + url_ + ": " + why);
  }
  redisSetTimeout(ctx_, tv);
  if (db_ != 0) send({{"SELECT", std::to_string(db_)}});
}

redis_client::reply redis_client::send(const std::vector<command>& cmds) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!ctx_ || ctx_->err) {
      try {
        connect();
      } catch (const redis_error&) {
        if (attempt == 1) throw;
        continue;
      }
    }
    for (auto& c : cmds) {
      std::vector<const char*> argv;
      std::vector<size_t> lens;
      for (auto& a : c) {
        argv.push_back(a.data());
        lens.push_back(a.size());
      }
      redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data());
    }
    reply last;
    bool broken = false;
    for (size_t i = 0; i < cmds.size(); ++i) {
      void* raw = nullptr;
      if (redisGetReply(ctx_, &raw) != REDIS_OK) {
        broken = true;
        break;
      }
      last.reset(static_cast<redisReply*>(raw));
    }
    if (!broken) return last;
    redisFree(ctx_);
    ctx_ = nullptr;
  }
  throw redis_error("redis connection to " + url_ + " lost");
}

redis_client::reply redis_client::run(const command& c) {
  auto r = send({c});
  if (r->type == REDIS_REPLY_ERROR)
    throw redis_error("redis " + c.front() + " failed: " + error_text(r.get()));
  return r;
}

redis_client::reply redis_client::transaction(const std::vector<command>& cmds) {
  std::vector<command> all;
  all.reserve(cmds.size() + 2);
  all.push_back({"MULTI"});
  all.insert(all.end(), cmds.begin(), cmds.end());
  all.push_back({"EXEC"});
  auto r = send(all);
  if (r->type != REDIS_REPLY_ARRAY)
    throw redis_error("redis transaction failed: " + (r->type == REDIS_REPLY_ERROR
                                                          ? error_text(r.get())
                                                          : std::string{"aborted"}));
  return r;
}

std::string redis_client::str(const redisReply* r) {
  if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS)) return {};
  return std::string{r->str, r->len};
}

std::string redis_client::error_text(const redisReply* r) {
  return r && r->type == REDIS_REPLY_ERROR ? std::string{r->str, r->len} : std::string{};
}

} // namespace troupe::runtime
