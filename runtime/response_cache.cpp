#include "runtime/response_cache.hpp"

namespace troupe::runtime {

namespace {

size_t size_of(const std::string& key, const response_cache::answer& a) {
  size_t n = key.size() + a.result.content.size() + a.result.finish_reason.size() + 128;
  for (auto& t : a.tokens)
    n += t.size() + sizeof(std::string);
  for (auto& c : a.result.tool_calls)
    n += c.id.size() + c.name.size() + c.arguments.size() + 3 * sizeof(std::string);
  return n;
}

} // namespace

const response_cache::answer* response_cache::find(const std::string& key, clock::time_point now) {
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  if (now - it->second->stored > limits_.ttl) {
    erase(it->second);
    return nullptr;
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  return &it->second->value;
}

void response_cache::put(const std::string& key, answer a, clock::time_point now) {
  if (auto it = index_.find(key); it != index_.end()) erase(it->second);
  auto bytes = size_of(key, a);
  if (bytes > limits_.max_bytes || limits_.max_entries == 0) return;
  lru_.push_front({key, std::move(a), now, bytes});
  index_.emplace(lru_.front().key, lru_.begin());
  bytes_ += bytes;
  while (bytes_ > limits_.max_bytes || index_.size() > limits_.max_entries)
    erase(std::prev(lru_.end()));
}

void response_cache::erase(std::list<entry>::iterator it) {
  bytes_ -= it->bytes;
  index_.erase(it->key);
  lru_.erase(it);
}

} // namespace troupe::runtime
