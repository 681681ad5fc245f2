#include "nodes/api_keys.hpp"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cctype>
#include <sstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace troupe::gateway {

namespace {

std::string digest(std::string_view text) {
  std::string out(SHA256_DIGEST_LENGTH, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(),
         reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

std::string hex_of(const std::string& raw) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

bool valid_name(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (unsigned char c : n)
    if (!std::isalnum(c) && c != '.' && c != '_' && c != '-') return false;
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

} // namespace

/// The file's bytes in a buffer this code wipes (a stream's own buffer
/// would keep the keys in freed memory).
std::string read_file(const std::string& path, bool& ok) {
  std::string text;
  ok = false;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return text;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size >= 0 && st.st_size <= (16 << 20)) {
    text.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < text.size()) {
      auto n = ::read(fd, text.data() + got, text.size() - got);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    text.resize(got);
    ok = true;
  }
  ::close(fd);
  return text;
}

std::string api_keys::load(const std::string& path) {
  bool ok = false;
  auto text = read_file(path, ok);
  if (!ok) return "cannot read keys file '" + path + "'";
  auto next = std::make_shared<digest_set>();
  std::string line;
  line.reserve(256);
  size_t number = 0;
  std::string error;
  for (size_t pos = 0; pos < text.size();) {
    auto nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    OPENSSL_cleanse(line.data(), line.size());
    line.assign(text, pos, nl - pos);
    pos = nl + 1;
    ++number;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.pop_back();
    if (!line.empty() && line.front() != '#' && error.empty()) {
      auto where = path + ":" + std::to_string(number) + ": ";
      // KEY [name=NAME] [admin]: the key is the first word.
      auto end = line.find_first_of(" \t");
      auto key = std::string_view{line}.substr(0, end);
      std::string raw;
      if (key.rfind("sha256:", 0) == 0) {
        auto hex = key.substr(7);
        for (size_t i = 0; hex.size() == 64 && i < 64; i += 2) {
          int hi = hex_value(hex[i]), lo = hex_value(hex[i + 1]);
          if (hi < 0 || lo < 0) break;
          raw += static_cast<char>(hi * 16 + lo);
        }
        if (raw.size() != SHA256_DIGEST_LENGTH) error = where + "'sha256:' needs 64 hex digits";
      } else {
        raw = digest(key);
      }
      runtime::principal who;
      who.all_agents = false;
      std::istringstream attrs{end == std::string::npos ? std::string{} : line.substr(end)};
      for (std::string a; error.empty() && attrs >> a;) {
        if (a == "admin")
          who.all_agents = true;
        else if (a.rfind("name=", 0) == 0 && valid_name(a.substr(5)))
          who.name = a.substr(5);
        else
          error = where + "'" + a +
                  "' is not 'name=NAME' (letters, digits, . _ -; at most 64) or 'admin'";
      }
      if (who.name.empty()) who.name = "key-" + hex_of(raw).substr(0, 12);
      if (error.empty()) (*next)[std::move(raw)] = std::move(who);
    }
  }
  // The keys' text goes no further than these buffers.
  OPENSSL_cleanse(line.data(), line.capacity());
  OPENSSL_cleanse(text.data(), text.size());
  if (error.empty() && next->empty()) error = "keys file '" + path + "' holds no keys";
  if (!error.empty()) return error;
  std::lock_guard<std::mutex> guard{mutex_};
  keys_ = std::move(next);
  return {};
}

std::optional<runtime::principal> api_keys::check(std::string_view key) const {
  if (key.empty()) return std::nullopt;
  std::shared_ptr<const digest_set> keys;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    keys = keys_;
  }
  auto it = keys->find(digest(key));
  if (it == keys->end()) return std::nullopt;
  return it->second;
}

size_t api_keys::size() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return keys_->size();
}

} // namespace troupe::gateway
