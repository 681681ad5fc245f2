#pragma once

#include "runtime/config.hpp"
#include "runtime/errc.hpp"
#include "runtime/llm.hpp"

#include <functional>
#include <memory>
#include <string>

namespace troupe::actors {

class io_threads;

/// Where a streamed model call reports. Called on an I/O thread, in order:
/// any number of `on_token`, then exactly one of `on_done` / `on_error`.
struct stream_callbacks {
  std::function<void(std::string text)> on_token;
  std::function<void(runtime::chat_result result)> on_done;
  /// `started` tells whether any token was delivered before the failure, so
  /// the caller knows whether a retry elsewhere is still invisible.
  std::function<void(runtime::errc code, std::string reason, bool started)> on_error;
};

/// A running model call. `cancel()` aborts it from any thread; the stream then
/// ends with `on_error(cancelled)` unless it had already finished.
class stream_handle {
public:
  virtual ~stream_handle() = default;
  virtual void cancel() = 0;
};

/// One model server as a worker sees it (DESIGN.md "Backends"). Thread-safe.
class backend {
public:
  virtual ~backend() = default;

  virtual std::shared_ptr<stream_handle> start(runtime::chat_request req, stream_callbacks cb) = 0;

  /// Probes the server; `cb(healthy, detail)` runs on an I/O thread.
  virtual void check_health(std::function<void(bool healthy, std::string detail)> cb) = 0;

  /// "openai http://host:port/v1" etc., for logs and `/health`.
  virtual std::string describe() const = 0;
};

/// Builds the backend an accelerator entry asks for.
std::shared_ptr<backend> make_backend(const runtime::accelerator_config& cfg, io_threads& io);

std::shared_ptr<backend> make_simulated_backend(const runtime::backend_config& cfg, io_threads& io);
std::shared_ptr<backend> make_openai_backend(const runtime::backend_config& cfg, io_threads& io,
                                             bool lemonade);

} // namespace troupe::actors
