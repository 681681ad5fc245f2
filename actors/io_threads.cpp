#include "actors/io_threads.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <thread>
#include <vector>

namespace troupe::actors {

struct io_threads::impl {
  boost::asio::io_context ctx;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard{
      ctx.get_executor()};
  std::vector<std::thread> threads;
};

io_threads::io_threads(int threads) : impl_(std::make_unique<impl>()) {
  for (int i = 0; i < threads; ++i)
    impl_->threads.emplace_back([this] { impl_->ctx.run(); });
}

io_threads::~io_threads() {
  stop();
}

boost::asio::io_context& io_threads::context() {
  return impl_->ctx;
}

void io_threads::stop() {
  impl_->guard.reset();
  impl_->ctx.stop();
  for (auto& t : impl_->threads)
    if (t.joinable()) t.join();
  impl_->threads.clear();
}

} // namespace troupe::actors
