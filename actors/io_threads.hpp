#pragma once

#include <memory>

namespace boost::asio {
class io_context;
} // namespace boost::asio

namespace troupe::actors {

/// An Asio `io_context` with its own threads: where sockets live. Actors
/// never block on I/O; they hand work to this context and get messages back.
/// Owned by the node; must outlive every socket created on it.
class io_threads {
public:
  explicit io_threads(int threads);
  ~io_threads();

  io_threads(const io_threads&) = delete;
  io_threads& operator=(const io_threads&) = delete;

  boost::asio::io_context& context();

  /// Stops the context and joins its threads. Idempotent.
  void stop();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace troupe::actors
