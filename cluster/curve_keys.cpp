#include "cluster/curve_keys.hpp"

#include <zmq.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace troupe::cluster {

namespace {

std::string trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

bool is_key(const std::string& z85) {
  uint8_t bin[32];
  return z85.size() == 40 && zmq_z85_decode(bin, z85.c_str()) != nullptr;
}

/// The key lines of `path`, each checked, with their line numbers.
template <class F> void each_key_line(const std::string& path, const char* what, F&& f) {
  std::ifstream in{path};
  if (!in) throw std::runtime_error(std::string{what} + " '" + path + "': " + std::strerror(errno));
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    auto t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    if (!is_key(t))
      throw std::runtime_error(path + ":" + std::to_string(n) +
                               ": not a CurveZMQ key (40 characters of Z85, as troupe keygen "
                               "writes)");
    if (!f(t)) return;
  }
}

bool write_new(const std::string& path, const std::string& text, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    std::fprintf(stderr, "troupe keygen: cannot create %s: %s\n", path.c_str(),
                 std::strerror(errno));
    return false;
  }
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ok = ::close(fd) == 0 && ok;
  if (!ok) std::fprintf(stderr, "troupe keygen: cannot write %s\n", path.c_str());
  return ok;
}

} // namespace

curve_keys generate_curve_keys() {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0)
    throw std::runtime_error(std::string{"zmq_curve_keypair: "} + zmq_strerror(zmq_errno()));
  curve_keys k;
  k.public_key = pub;
  k.secret_key = sec;
  return k;
}

curve_keys load_curve_keys(const std::string& secret_key_file,
                           const std::string& allowed_keys_file) {
  curve_keys k;
  each_key_line(secret_key_file, "cluster.curve.secret_key_file", [&](const std::string& key) {
    k.secret_key = key;
    return false; // the first key line
  });
  if (k.secret_key.empty()) throw std::runtime_error(secret_key_file + ": holds no key");
  char pub[41];
  if (zmq_curve_public(pub, k.secret_key.c_str()) != 0)
    throw std::runtime_error(secret_key_file + ": not a CurveZMQ secret key");
  k.public_key = pub;
  each_key_line(allowed_keys_file, "cluster.curve.allowed_keys_file",
                [&](const std::string& key) { return k.allowed.insert(key), true; });
  if (!k.allowed.contains(k.public_key))
    throw std::runtime_error(allowed_keys_file + ": does not list this node's own public key " +
                             k.public_key + " (every node's key goes in the one list)");
  return k;
}

std::string z85_key(const void* binary32) {
  char out[41];
  zmq_z85_encode(out, static_cast<const uint8_t*>(binary32), 32);
  return out;
}

int keygen_command(int argc, char** argv) {
  std::string prefix = "troupe-node";
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--out" && i + 1 < argc)
      prefix = argv[++i];
    else {
      std::fprintf(stderr, "usage: troupe keygen [--out PREFIX]   (writes PREFIX.key and "
                           "PREFIX.pub)\n");
      return 2;
    }
  }
  auto k = generate_curve_keys();
  std::string secret = "# Troupe node secret key (CurveZMQ, Z85): keep it private.\n"
                       "# Its public key: " +
                       k.public_key + "\n" + k.secret_key + "\n";
  // The secret file is created 0600 and written in one go: never readable
  // by others, not even for a moment.
  if (!write_new(prefix + ".key", secret, 0600)) return 1;
  if (!write_new(prefix + ".pub", k.public_key + "\n", 0644)) return 1;
  std::printf("wrote %s.key (secret) and %s.pub\npublic key: %s\nadd the public key to every "
              "node's cluster.curve.allowed_keys_file\n",
              prefix.c_str(), prefix.c_str(), k.public_key.c_str());
  return 0;
}

} // namespace troupe::cluster
