// Node-to-node messaging through Troupe's cluster transport against raw
// cppzmq DEALER -> ROUTER on the same machine, in the same run.
//
// For each payload size (64 B, 1 KiB, 16 KiB), three rounds (the round with
// the median ratio is printed):
//   one-way: messages/s for a burst of N frames from one endpoint to another;
//   round trip: median and p99 time for a frame to go out and an answer to
//   come back, one at a time.
// The baseline is two plain ZeroMQ sockets per direction with nothing on top;
// Troupe's figure includes its envelope encoding and decoding, membership
// checks, bounded queues and the I/O thread hand-off (not the CAF actors
// above it). Prints one line per figure: name, troupe, raw, ratio.
//
// usage: troupe_cluster_bench [--messages N] [--round-trips N] [--size BYTES]
//   (--size: only that payload size, e.g. to profile one case)
#include "cluster/transport.hpp"
#include "cluster/wire.hpp"
#include "tests/support/free_port.hpp"
#include "tests/support/median_round.hpp"

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace troupe::cluster;
using clk = std::chrono::steady_clock;

namespace {

using troupe::test::free_port;

std::string endpoint() {
  return "tcp://127.0.0.1:" + std::to_string(free_port());
}

struct latency {
  double p50_us = 0;
  double p99_us = 0;
};

latency percentiles(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  return {us[us.size() / 2], us[std::min(us.size() - 1, us.size() * 99 / 100)]};
}

// -- raw ZeroMQ ---------------------------------------------------------------

double raw_one_way(size_t size, int n) {
  zmq::context_t ctx{1};
  zmq::socket_t router{ctx, zmq::socket_type::router};
  zmq::socket_t dealer{ctx, zmq::socket_type::dealer};
  auto ep = endpoint();
  router.set(zmq::sockopt::rcvhwm, 0);
  dealer.set(zmq::sockopt::sndhwm, 0);
  router.bind(ep);
  dealer.connect(ep);
  std::string payload(size, 'x');
  std::thread receiver([&] {
    for (int i = 0; i < n; ++i) {
      std::vector<zmq::message_t> parts;
      (void)zmq::recv_multipart(router, std::back_inserter(parts));
    }
  });
  auto t0 = clk::now();
  for (int i = 0; i < n; ++i)
    dealer.send(zmq::buffer(payload), zmq::send_flags::none);
  receiver.join();
  return n / std::chrono::duration<double>(clk::now() - t0).count();
}

latency raw_round_trip(size_t size, int n) {
  zmq::context_t ctx{1};
  // One ROUTER per side and one DEALER per direction, as the nodes use them.
  zmq::socket_t a_router{ctx, zmq::socket_type::router}, b_router{ctx, zmq::socket_type::router};
  zmq::socket_t a_to_b{ctx, zmq::socket_type::dealer}, b_to_a{ctx, zmq::socket_type::dealer};
  auto a_ep = endpoint(), b_ep = endpoint();
  a_router.bind(a_ep);
  b_router.bind(b_ep);
  a_to_b.connect(b_ep);
  b_to_a.connect(a_ep);
  std::string payload(size, 'x');
  std::atomic<bool> stop{false};
  std::thread echo([&] {
    for (int i = 0; i < n; ++i) {
      std::vector<zmq::message_t> parts;
      (void)zmq::recv_multipart(b_router, std::back_inserter(parts));
      b_to_a.send(parts.back(), zmq::send_flags::none);
    }
  });
  std::vector<double> us;
  for (int i = 0; i < n; ++i) {
    auto t0 = clk::now();
    a_to_b.send(zmq::buffer(payload), zmq::send_flags::none);
    std::vector<zmq::message_t> parts;
    (void)zmq::recv_multipart(a_router, std::back_inserter(parts));
    us.push_back(std::chrono::duration<double, std::micro>(clk::now() - t0).count());
  }
  echo.join();
  return percentiles(std::move(us));
}

// -- Troupe's transport ---------------------------------------------------------

struct endpoint_pair {
  std::mutex m;
  std::condition_variable cv;
  std::atomic<int> received{0};
  std::unique_ptr<transport> a, b;
  std::string a_ep = endpoint(), b_ep = endpoint();
  bool echo = false;
  std::atomic<int> a_received{0};
  std::atomic<int> warm_a{0}, warm_b{0};

  endpoint_pair(bool echo_back) : echo(echo_back) {
    transport::options oa, ob;
    oa.node = std::string{"node-a"};
    oa.incarnation = 1;
    oa.bind = a_ep;
    ob.node = std::string{"node-b"};
    ob.incarnation = 2;
    ob.bind = b_ep;
    oa.max_queued_bytes = ob.max_queued_bytes = size_t{1} << 31;
    a = std::make_unique<transport>(
        oa,
        [this](envelope env, std::string) {
          if (env.target == "warmup") {
            warm_a.fetch_add(1);
            return;
          }
          a_received.fetch_add(1);
          std::lock_guard<std::mutex> guard{m};
          cv.notify_all();
        },
        [](const std::string&, uint64_t, bool) {});
    b = std::make_unique<transport>(
        ob,
        [this](envelope env, std::string payload) {
          if (env.target == "warmup") {
            warm_b.fetch_add(1);
            return;
          }
          if (echo) {
            b->send("node-a",
                    envelope{protocol_version, msg_type::done, "", 0, env.target, env.corr},
                    std::move(payload));
            return;
          }
          if (received.fetch_add(1) + 1 >= target) {
            std::lock_guard<std::mutex> guard{m};
            cv.notify_all();
          }
        },
        [](const std::string&, uint64_t, bool) {});
    a->set_peers({{"node-b", {b_ep, 2, {}}}});
    b->set_peers({{"node-a", {a_ep, 1, {}}}});
    // Wait until both have heard each other (a peer gets frames only then).
    auto ping = encode_payload({});
    for (int i = 0; i < 200; ++i) {
      a->send("node-b", envelope{protocol_version, msg_type::cancel, "", 0, "warmup", 0}, ping);
      b->send("node-a", envelope{protocol_version, msg_type::cancel, "", 0, "warmup", 0}, ping);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (warm_a > 0 && warm_b > 0) break;
    }
  }
  int target = 0;
};

double troupe_one_way(size_t size, int n) {
  endpoint_pair p{false};
  p.target = n;
  std::string payload(size, 'x');
  auto t0 = clk::now();
  for (int i = 0; i < n; ++i)
    while (!p.a->send(
        "node-b", envelope{protocol_version, msg_type::token, "", 0, "w", static_cast<uint64_t>(i)},
        payload))
      std::this_thread::yield(); // bounded queue full: back off, as a caller would
  std::unique_lock<std::mutex> lock{p.m};
  p.cv.wait(lock, [&] { return p.received >= n; });
  return n / std::chrono::duration<double>(clk::now() - t0).count();
}

latency troupe_round_trip(size_t size, int n) {
  endpoint_pair p{true};
  std::string payload(size, 'x');
  std::vector<double> us;
  for (int i = 0; i < n; ++i) {
    auto t0 = clk::now();
    p.a->send("node-b",
              envelope{protocol_version, msg_type::token, "", 0, "w", static_cast<uint64_t>(i)},
              payload);
    std::unique_lock<std::mutex> lock{p.m};
    p.cv.wait(lock, [&] { return p.a_received > i; });
    us.push_back(std::chrono::duration<double, std::micro>(clk::now() - t0).count());
  }
  return percentiles(std::move(us));
}

} // namespace

int main(int argc, char** argv) {
  int messages = 200000;
  int round_trips = 5000;
  std::vector<size_t> sizes{64, 1024, 16384};
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--messages")
      messages = std::atoi(argv[i + 1]);
    else if (a == "--round-trips")
      round_trips = std::atoi(argv[i + 1]);
    else if (a == "--size")
      sizes = {static_cast<size_t>(std::atoll(argv[i + 1]))};
  }
  std::printf("%-40s %14s %14s %8s\n", "figure", "troupe", "raw zeromq", "ratio");
  auto label = [](const char* what, size_t size) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s, %zu B", what, size);
    return std::string{buf};
  };
  // Three rounds per size, each ours right after raw; the round with the
  // median ratio is reported (a shared machine's hiccup hits one round).
  for (size_t size : sizes) {
    int n = size >= 16384 ? messages / 10 : messages;
    std::vector<std::pair<double, double>> one_way, p50, p99;
    for (int round = 0; round < 3; ++round) {
      auto raw = raw_one_way(size, n);
      one_way.emplace_back(troupe_one_way(size, n), raw);
      auto raw_rt = raw_round_trip(size, round_trips);
      auto our_rt = troupe_round_trip(size, round_trips);
      p50.emplace_back(our_rt.p50_us, raw_rt.p50_us);
      p99.emplace_back(our_rt.p99_us, raw_rt.p99_us);
    }
    auto [ours, raw] = troupe::test::median_round(one_way);
    std::printf("%-40s %12.0f/s %12.0f/s %8.2f\n", label("one-way msgs/s", size).c_str(), ours, raw,
                ours / raw);
    for (auto [what, v] : {std::pair{"round trip p50", &p50}, std::pair{"round trip p99", &p99}}) {
      auto [o, r] = troupe::test::median_round(*v);
      std::printf("%-40s %12.1fus %12.1fus %8.2f\n", label(what, size).c_str(), o, r, o / r);
    }
    std::fflush(stdout);
  }
  return 0;
}
