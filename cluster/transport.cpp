#include "cluster/transport.hpp"
#include "cluster/atoms.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>
#include <unordered_map>

namespace troupe::cluster {

using clock = std::chrono::steady_clock;

namespace {

/// Frames bigger than this are refused by ZeroMQ itself (the sender is
/// disconnected), so a hostile peer cannot make us buffer gigabytes.
constexpr int64_t max_frame_bytes = 64ll << 20;

runtime::counter& dropped(const char* reason) {
  return runtime::metrics_registry::global().get_counter("troupe_cluster_dropped_frames_total",
                                                         "Node-to-node frames dropped, by reason",
                                                         std::string{"reason=\""} + reason + "\"");
}

runtime::counter& frames(const char* direction) {
  return runtime::metrics_registry::global().get_counter(
      "troupe_cluster_frames_total", "Node-to-node frames",
      std::string{"direction=\""} + direction + "\"");
}

struct outgoing {
  std::string node;
  std::string env;
  std::string payload;
};

struct peer {
  std::string endpoint;
  uint64_t incarnation = 0;
  std::unique_ptr<zmq::socket_t> dealer;
  std::deque<outgoing> pending;
  clock::time_point last_seen;
  /// It answered us, so it knows us as a member: until then our frames
  /// wait here (it would drop them) and only pings go out.
  bool ready = false;
};

std::string fence_key(const std::string& node, uint64_t inc) {
  return node + ":" + std::to_string(inc);
}

} // namespace

struct transport::impl {
  options opts;
  frame_handler on_frame;
  down_handler on_down;
  zmq::context_t ctx{1};
  zmq::socket_t router{ctx, zmq::socket_type::router};
  zmq::socket_t zap{ctx, zmq::socket_type::rep}; // Curve's gatekeeper; bound only with Curve
  int wake_fd = -1;

  // -- shared with other threads, under `mutex` ------------------------------
  std::mutex mutex;
  std::vector<outgoing> outbox;
  std::unordered_map<std::string, size_t> queued; // bytes per peer
  std::optional<std::map<std::string, peer_address>> new_peers;
  std::vector<std::string> fenced_out;
  bool stopping = false;

  // -- I/O thread only --------------------------------------------------------
  std::unordered_map<std::string, peer> peers;
  std::set<std::string> fenced;
  std::set<std::string> logged; // sources already logged as dropped
  /// Frames read while the consumer had no credit, delivered in order once
  /// it has; bounded by `max_parked_bytes`.
  std::deque<std::pair<envelope, std::string>> parked;
  size_t parked_bytes = 0;
  static constexpr size_t max_parked_bytes = 64u << 20;

  clock::time_point last_tick; // the last ping round, to notice our own pauses

  bool credit() const { return !opts.can_deliver || opts.can_deliver(); }
  runtime::counter& frames_in = frames("in");
  runtime::counter& frames_out = frames("out");
  std::thread thread;

  impl(options o, frame_handler f, down_handler d)
      : opts(std::move(o)), on_frame(std::move(f)), on_down(std::move(d)) {
    router.set(zmq::sockopt::linger, 0);
    router.set(zmq::sockopt::maxmsgsize, max_frame_bytes);
    router.set(zmq::sockopt::rcvhwm, 100000);
    if (opts.curve.enabled()) {
      // The ZAP handler must be bound before the first handshake can start.
      zap.bind("inproc://zeromq.zap.01");
      router.set(zmq::sockopt::zap_domain, "troupe");
      router.set(zmq::sockopt::curve_server, true);
      router.set(zmq::sockopt::curve_secretkey, opts.curve.secret_key);
    }
    try {
      router.bind(opts.bind);
    } catch (const zmq::error_t& e) {
      throw std::runtime_error("cannot bind cluster endpoint " + opts.bind + ": " + e.what());
    }
    wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd < 0) throw std::runtime_error("eventfd failed");
    thread = std::thread([this] { run(); });
  }

  ~impl() {
    close();
    ::close(wake_fd);
  }

  void close() {
    {
      std::lock_guard<std::mutex> guard{mutex};
      if (stopping) return;
      stopping = true;
    }
    wake();
    thread.join();
  }

  void wake() {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof one);
  }

  std::string make_env(msg_type type) const {
    envelope env;
    env.type = type;
    env.source = opts.node;
    env.incarnation = opts.incarnation;
    return encode_envelope(env);
  }

  /// `bytes` queued for `node` have left (sent or dropped): senders may
  /// queue that much again.
  void release(const std::string& node, size_t bytes) {
    std::lock_guard<std::mutex> guard{mutex};
    auto& q = queued[node];
    q -= std::min(q, bytes);
  }
  void release(const outgoing& f) { release(f.node, f.env.size() + f.payload.size()); }

  void drop_source(const envelope& env, const char* reason) {
    dropped(reason).inc();
    if (!logged.insert(env.source + ":" + std::to_string(env.incarnation)).second) return;
    std::initializer_list<runtime::log::field> fields{
        {"from", env.source}, {"incarnation", std::to_string(env.incarnation)}, {"reason", reason}};
    // A node that just joined pings before our next heartbeat lists it: normal.
    if (std::string_view{reason} == "not_member")
      runtime::log::info("cluster", "frame_dropped", fields);
    else
      runtime::log::warn("cluster", "frame_dropped", fields);
  }

  // -- membership --------------------------------------------------------------

  void apply_peers(std::map<std::string, peer_address> next) {
    for (auto it = peers.begin(); it != peers.end();) {
      auto n = next.find(it->first);
      if (n == next.end() || n->second.incarnation != it->second.incarnation ||
          n->second.endpoint != it->second.endpoint) {
        for (auto& f : it->second.pending)
          release(f);
        it = peers.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& [node, addr] : next) {
      if (node == opts.node || peers.contains(node)) continue;
      if (fenced.contains(fence_key(node, addr.incarnation))) continue;
      peer p;
      p.endpoint = addr.endpoint;
      p.incarnation = addr.incarnation;
      p.dealer = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::dealer);
      p.dealer->set(zmq::sockopt::linger, 200);
      // Queue only on a completed connection: a dead peer's frames then wait
      // in our bounded queue instead of in an unbounded ZeroMQ pipe.
      p.dealer->set(zmq::sockopt::immediate, 1);
      p.dealer->set(zmq::sockopt::sndhwm, 10000);
      if (opts.curve.enabled()) {
        // The membership view holds only allowed keys; this is the last check.
        if (!opts.curve.allowed.contains(addr.curve_key)) continue;
        p.dealer->set(zmq::sockopt::curve_serverkey, addr.curve_key);
        p.dealer->set(zmq::sockopt::curve_publickey, opts.curve.public_key);
        p.dealer->set(zmq::sockopt::curve_secretkey, opts.curve.secret_key);
      }
      p.dealer->connect(addr.endpoint);
      p.last_seen = clock::now();
      peers.emplace(node, std::move(p));
      runtime::log::info("cluster", "peer_added",
                         {{"peer", node},
                          {"endpoint", addr.endpoint},
                          {"incarnation", std::to_string(addr.incarnation)}});
    }
  }

  void declare_dead(const std::string& node, bool left) {
    auto it = peers.find(node);
    if (it == peers.end()) return;
    auto inc = it->second.incarnation;
    for (auto& f : it->second.pending)
      release(f);
    peers.erase(it);
    fenced.insert(fence_key(node, inc));
    if (!left) {
      std::lock_guard<std::mutex> guard{mutex};
      fenced_out.push_back(fence_key(node, inc));
    }
    runtime::log::warn("cluster", left ? "peer_left" : "peer_dead",
                       {{"peer", node}, {"incarnation", std::to_string(inc)}});
    on_down(node, inc, left);
  }

  // -- I/O ---------------------------------------------------------------------

  /// Answers the ZAP requests ZeroMQ made for Curve handshakes on the
  /// ROUTER (RFC 27): 200 for an allowed client key, 400 for any other.
  void authenticate_all() {
    for (;;) {
      std::vector<zmq::message_t> req;
      if (!zmq::recv_multipart(zap, std::back_inserter(req), zmq::recv_flags::dontwait)) return;
      bool ok = req.size() == 7 && req[0].to_string_view() == "1.0" &&
                req[5].to_string_view() == "CURVE" && req[6].size() == 32 &&
                opts.curve.allowed.contains(z85_key(req[6].data()));
      if (!ok) {
        static runtime::counter& denied = runtime::metrics_registry::global().get_counter(
            "troupe_cluster_auth_denied_total",
            "Cluster connections refused: their CurveZMQ key is not allowed");
        denied.inc();
        auto key = req.size() == 7 && req[6].size() == 32 ? z85_key(req[6].data()) : "?";
        if (logged.insert("zap:" + key).second) // once per key: a refused peer retries
          runtime::log::warn(
              "cluster", "peer_key_refused",
              {{"key", key}, {"address", req.size() > 3 ? req[3].to_string() : "?"}});
      }
      std::array<zmq::const_buffer, 6> reply{
          zmq::str_buffer("1.0"),
          req.size() > 1 ? zmq::buffer(req[1].data(), req[1].size()) : zmq::str_buffer(""),
          zmq::buffer(std::string_view{ok ? "200" : "400"}),
          zmq::buffer(std::string_view{ok ? "OK" : "key not allowed"}),
          zmq::str_buffer(""),
          zmq::str_buffer("")};
      (void)zmq::send_multipart(zap, reply, zmq::send_flags::dontwait);
    }
  }

  /// Hands one frame to ZeroMQ without blocking; false if it would block.
  /// The parts of a multipart message go or fail together.
  static bool send_now(peer& p, std::string_view env, std::string_view payload) {
    // One ZeroMQ message, envelope then payload: a part costs ZeroMQ as
    // much as a message, and the envelope says where it ends.
    zmq::message_t msg{env.size() + payload.size()};
    auto* out = static_cast<char*>(msg.data());
    std::memcpy(out, env.data(), env.size());
    if (!payload.empty()) std::memcpy(out + env.size(), payload.data(), payload.size());
    return p.dealer->send(msg, zmq::send_flags::dontwait).has_value();
  }

  /// Hands queued frames to ZeroMQ until it would block.
  void flush(const std::string& node, peer& p) {
    size_t bytes = 0, sent_frames = 0;
    while (p.ready && !p.pending.empty()) {
      auto& f = p.pending.front();
      if (!send_now(p, f.env, f.payload)) break; // HWM or not connected: wait for POLLOUT
      bytes += f.env.size() + f.payload.size();
      ++sent_frames;
      p.pending.pop_front();
    }
    if (sent_frames == 0) return;
    frames_out.inc(sent_frames);
    release(node, bytes); // once per batch, not per frame
  }

  void receive_all() {
    zmq::message_t id, body;
    for (int n = 0; n < 1024 && parked_bytes < max_parked_bytes; ++n) {
      if (!router.recv(id, zmq::recv_flags::dontwait)) return;
      frames_in.inc();
      if (!id.more()) { // the ROUTER's routing id and nothing after it
        dropped("malformed").inc();
        continue;
      }
      (void)router.recv(body); // a message's parts arrive together
      auto decoded = decode_frame(body.to_string_view());
      auto* err = std::get_if<decode_error>(&decoded);
      if (err || body.more()) { // [routing id][frame] only; version 1 sent two parts
        dropped(err && *err == decode_error::version ? "version" : "malformed").inc();
        while (body.more())
          (void)router.recv(body);
        continue;
      }
      auto& env = std::get<frame_view>(decoded).env;
      auto payload = std::get<frame_view>(decoded).payload;
      auto it = peers.find(env.source);
      if (it == peers.end() || it->second.incarnation != env.incarnation) {
        drop_source(env, fenced.contains(fence_key(env.source, env.incarnation)) ? "fenced"
                                                                                 : "not_member");
        continue;
      }
      it->second.last_seen = clock::now();
      it->second.ready = true;
      switch (env.type) {
      case msg_type::ping:
        it->second.pending.push_back({env.source, make_env(msg_type::pong), {}});
        break;
      case msg_type::pong:
        break;
      case msg_type::bye:
        declare_dead(env.source, true);
        break;
      default:
        if (parked.empty() && credit()) {
          on_frame(std::move(env), std::string{payload});
        } else { // no credit: keep reading (pings must be answered), park the rest
          parked_bytes += payload.size();
          parked.emplace_back(std::move(env), std::string{payload});
        }
      }
    }
  }

  void run() {
    auto next_ping = clock::now();
    last_tick = next_ping;
    while (true) {
      std::vector<outgoing> batch;
      std::optional<std::map<std::string, peer_address>> np;
      bool stop;
      {
        std::lock_guard<std::mutex> guard{mutex};
        batch.swap(outbox);
        np.swap(new_peers);
        stop = stopping;
      }
      if (np) apply_peers(std::move(*np));
      // A frame for a ready peer with nothing waiting goes to ZeroMQ at once;
      // the rest queue behind what waits. Bytes sent are released per run of
      // frames to one peer, not per frame.
      auto it = peers.end();
      size_t sent_bytes = 0, sent_frames = 0;
      auto settle = [&] {
        if (sent_frames == 0) return;
        frames_out.inc(sent_frames);
        release(it->first, sent_bytes);
        sent_bytes = sent_frames = 0;
      };
      for (auto& f : batch) {
        if (it == peers.end() || it->first != f.node) {
          settle();
          it = peers.find(f.node);
        }
        if (it == peers.end()) {
          dropped("no_peer").inc();
          release(f);
          continue;
        }
        auto& p = it->second;
        if (p.ready && p.pending.empty() && send_now(p, f.env, f.payload)) {
          sent_bytes += f.env.size() + f.payload.size();
          ++sent_frames;
          continue;
        }
        p.pending.push_back(std::move(f));
      }
      settle();
      if (stop) break;
      auto now = clock::now();
      if (now >= next_ping) {
        // This thread did not run for a long while (the process was paused
        // or starved): the silence we see is ours, not the peers'.
        if (now - last_tick > std::max(opts.suspect_after / 2, 3 * opts.ping_interval)) {
          runtime::log::warn(
              "cluster", "paused",
              {{"ms", std::to_string(
                          std::chrono::duration_cast<std::chrono::milliseconds>(now - last_tick)
                              .count())}});
          for (auto& [node, p] : peers)
            p.last_seen = now;
        }
        last_tick = now;
        next_ping = now + opts.ping_interval;
        std::vector<std::string> silent;
        auto ping = make_env(msg_type::ping);
        for (auto& [node, p] : peers) {
          if (now - p.last_seen > opts.suspect_after) {
            silent.push_back(node);
          } else {
            send_now(p, ping, {}); // a lost ping is only a missed beat
          }
        }
        for (auto& node : silent)
          declare_dead(node, false);
      }
      for (auto& [node, p] : peers)
        flush(node, p);

      while (!parked.empty() && credit()) {
        parked_bytes -= parked.front().second.size();
        on_frame(std::move(parked.front().first), std::move(parked.front().second));
        parked.pop_front();
      }
      // Past the parking bound we stop reading: frames wait in ZeroMQ, then
      // in the senders' bounded queues, and their calls fail `overloaded`.
      bool reading = parked_bytes < max_parked_bytes;
      std::vector<zmq::pollitem_t> items;
      items.push_back({router.handle(), 0, static_cast<short>(reading ? ZMQ_POLLIN : 0), 0});
      items.push_back({nullptr, wake_fd, ZMQ_POLLIN, 0});
      if (opts.curve.enabled()) items.push_back({zap.handle(), 0, ZMQ_POLLIN, 0});
      for (auto& [node, p] : peers)
        if (p.ready && !p.pending.empty()) items.push_back({p.dealer->handle(), 0, ZMQ_POLLOUT, 0});
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_ping - clock::now());
      if (!parked.empty()) wait = std::min(wait, std::chrono::milliseconds{2}); // credit back?
      zmq::poll(items.data(), items.size(), std::max(wait, std::chrono::milliseconds{0}));
      if (items[1].revents & ZMQ_POLLIN) {
        uint64_t v;
        [[maybe_unused]] auto n = ::read(wake_fd, &v, sizeof v);
      }
      if (items[0].revents & ZMQ_POLLIN) receive_all();
      if (opts.curve.enabled() && (items[2].revents & ZMQ_POLLIN)) authenticate_all();
    }
    // Leaving on purpose: tell the peers, so they do not wait to suspect us.
    auto bye = make_env(msg_type::bye);
    for (auto& [node, p] : peers)
      send_now(p, bye, {});
    peers.clear();
  }
};

transport::transport(options opts, frame_handler on_frame, down_handler on_peer_down)
    : impl_(std::make_unique<impl>(std::move(opts), std::move(on_frame), std::move(on_peer_down))) {
}

transport::~transport() = default;

void transport::close() {
  impl_->close();
}

bool transport::send(const std::string& node, envelope env, std::string payload) {
  env.version = protocol_version;
  env.source = impl_->opts.node;
  env.incarnation = impl_->opts.incarnation;
  outgoing f{node, encode_envelope(env), std::move(payload)};
  auto bytes = f.env.size() + f.payload.size();
  bool was_empty;
  {
    std::lock_guard<std::mutex> guard{impl_->mutex};
    if (impl_->stopping) return false;
    auto& q = impl_->queued[node];
    if (q + bytes > impl_->opts.max_queued_bytes) {
      dropped("overloaded").inc();
      return false;
    }
    q += bytes;
    was_empty = impl_->outbox.empty();
    impl_->outbox.push_back(std::move(f));
  }
  if (was_empty) impl_->wake();
  return true;
}

bool transport::send(const std::string& node, msg_type type, std::string target, uint64_t corr,
                     const nlohmann::json& payload) {
  envelope env;
  env.type = type;
  env.target = std::move(target);
  env.corr = corr;
  return send(node, std::move(env), encode_payload(payload));
}

void transport::set_peers(std::map<std::string, peer_address> peers) {
  {
    std::lock_guard<std::mutex> guard{impl_->mutex};
    impl_->new_peers = std::move(peers);
  }
  impl_->wake();
}

std::vector<std::string> transport::take_fenced() {
  std::lock_guard<std::mutex> guard{impl_->mutex};
  return std::exchange(impl_->fenced_out, {});
}

const transport::options& transport::opts() const {
  return impl_->opts;
}

void drop_malformed_frame(const peer_frame& f, const char* why) {
  dropped("malformed").inc();
  runtime::log::warn("cluster", "frame_dropped",
                     {{"from", f.env.source}, {"reason", "malformed"}, {"detail", why}});
}

} // namespace troupe::cluster
