#pragma once

#include "actors/frame_sink.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace troupe::actors {
class io_threads;
}

namespace troupe::gateway {

/// One HTTP request, decoded. Header names are lower-case.
struct http_request {
  std::string method;
  std::string target; // path + query as sent
  std::string path;
  std::string query;
  std::map<std::string, std::string> headers;
  std::string body;
  std::string remote;

  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string{} : it->second;
  }
};

struct http_response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

/// What a WebSocket's owner hears. Called on the connection's strand, in
/// order; `on_close` exactly once.
class ws_handler {
public:
  virtual ~ws_handler() = default;
  virtual void on_open(std::shared_ptr<actors::frame_sink> sink) = 0;
  virtual void on_text(std::string frame) = 0;
  virtual void on_binary() = 0;
  virtual void on_close() = 0;
};

/// One request in flight; the handler answers it exactly once, from any
/// thread: a whole response, a chunked stream, or a WebSocket upgrade.
class http_exchange {
public:
  virtual ~http_exchange() = default;
  virtual void reply(http_response res) = 0;
  /// Starts a chunked response (e.g. `text/event-stream`).
  virtual void start_stream(int status, std::string content_type) = 0;
  /// Writes one chunk. Bounded like a WebSocket's queue.
  virtual void write_chunk(std::shared_ptr<const std::string> data) = 0;
  virtual void end_stream() = 0;
  /// True if the request asked for a WebSocket upgrade.
  virtual bool is_upgrade() const = 0;
  virtual void upgrade(std::shared_ptr<ws_handler> handler) = 0;
  /// True once the client is gone; streaming producers may stop early.
  virtual bool client_gone() const = 0;
};

using http_handler = std::function<void(http_request, std::shared_ptr<http_exchange>)>;

struct http_server_options {
  std::string host = "127.0.0.1";
  uint16_t port = 0; // 0 = any free port
  uint64_t max_body_bytes = 1 << 20;
  uint64_t max_frame_bytes = 1 << 20;
  uint64_t max_outbound_bytes = 8 << 20;
  uint64_t max_connections = 20000;
  std::string server_name = "troupe";
  /// PEM files: when set, the port speaks TLS (https://, wss://).
  std::string tls_cert;
  std::string tls_key;
  /// With TLS: also serve plain HTTP on the same port (told apart by the
  /// first bytes). Off: a plain request gets 400 and the connection closes.
  bool allow_plain = false;
  /// Wait for a request's head and body, and for a silent WebSocket peer
  /// (pinged at half of it) before the connection is dropped.
  std::chrono::milliseconds idle_timeout{60000};
};

/// A Boost.Beast HTTP/1.1 + WebSocket server, optionally over TLS, on the
/// given I/O threads. Each
/// connection owns its socket on its own strand; writes go through a bounded
/// queue; a client that does not read is disconnected, never buffered
/// without limit.
class http_server {
public:
  http_server(actors::io_threads& io, http_server_options opts, http_handler handler);
  ~http_server();

  /// Binds and starts accepting. Throws std::runtime_error naming the
  /// address when it cannot bind.
  void start();

  /// The bound port (useful with port 0).
  uint16_t port() const;

  /// Stops accepting; open connections stay until they close.
  void stop_accepting();

  /// Closes every WebSocket with `code`/`reason` and every idle HTTP connection.
  void close_all(uint16_t code, const std::string& reason);

  uint64_t open_connections() const;

  /// Reads the certificate and key again (SIGHUP: a renewed certificate);
  /// new connections use them. On failure the ones in force stay and the
  /// reason is returned; on success, an empty string.
  std::string reload_tls();

  struct impl; // public so the connection objects in the .cpp can share it

private:
  std::shared_ptr<impl> impl_;
};

} // namespace troupe::gateway
