#include "cluster/atoms.hpp"
#include "cluster/placement.hpp"
#include "cluster/transport.hpp"
#include "cluster/wire.hpp"
#include "runtime/metrics.hpp"
#include "tests/support/free_port.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

using namespace troupe;
using namespace troupe::cluster;

namespace {

std::string bytes(std::initializer_list<int> b) {
  std::string out;
  for (int c : b)
    out.push_back(static_cast<char>(c));
  return out;
}

// -- wire ---------------------------------------------------------------------

TEST(Wire, an_envelope_survives_encoding) {
  envelope env;
  env.type = msg_type::agent_ask;
  env.source = "gpu-1";
  env.incarnation = 1796013253542462;
  env.target = "chat/k1";
  env.corr = 42;
  auto decoded = decode_envelope(encode_envelope(env));
  ASSERT_TRUE(std::holds_alternative<envelope>(decoded));
  auto& e = std::get<envelope>(decoded);
  EXPECT_EQ(e.type, msg_type::agent_ask);
  EXPECT_EQ(e.source, "gpu-1");
  EXPECT_EQ(e.incarnation, 1796013253542462u);
  EXPECT_EQ(e.target, "chat/k1");
  EXPECT_EQ(e.corr, 42u);
}

TEST(Wire, the_envelope_is_the_same_messagepack_nlohmann_writes_and_reads) {
  for (auto& env :
       {envelope{protocol_version, msg_type::ping, "n", 0, "", 0},
        envelope{protocol_version, msg_type::token, std::string(40, 's'), 200, "w", 70000},
        envelope{protocol_version, msg_type::agent_event, "gpu-1", 1796013253542462,
                 std::string(300, 't'), 1ull << 40}}) {
    auto theirs = nlohmann::json::to_msgpack(
        nlohmann::json::array({env.version, static_cast<uint64_t>(env.type), env.source,
                               env.incarnation, env.target, env.corr}));
    auto ours = encode_envelope(env);
    EXPECT_EQ(ours, std::string(theirs.begin(), theirs.end()));
    auto back = decode_envelope(std::string(theirs.begin(), theirs.end()));
    ASSERT_TRUE(std::holds_alternative<envelope>(back));
    EXPECT_EQ(std::get<envelope>(back).target, env.target);
    EXPECT_EQ(std::get<envelope>(back).corr, env.corr);
  }
  // Trailing bytes after the array are not an envelope.
  EXPECT_TRUE(std::holds_alternative<decode_error>(decode_envelope(
      encode_envelope(envelope{protocol_version, msg_type::ping, "n", 0, "", 0}) + "x")));
}

TEST(Wire, another_protocol_version_is_refused_as_such) {
  // [99, 10, "x", 1, "y", 0]
  auto d = decode_envelope(bytes({0x96, 0x63, 0x0a, 0xa1, 'x', 0x01, 0xa1, 'y', 0x00}));
  ASSERT_TRUE(std::holds_alternative<decode_error>(d));
  EXPECT_EQ(std::get<decode_error>(d), decode_error::version);
}

TEST(Wire, garbage_truncation_wrong_types_and_unknown_types_are_malformed) {
  auto good = encode_envelope(envelope{protocol_version, msg_type::token, "n", 1, "w", 1});
  for (auto& bad : std::vector<std::string>{
           "", "\xff\x00garbage", good.substr(0, good.size() - 3),
           bytes({0x96, 0x02, 0xa1, 'x', 0xa1, 'n', 0x01, 0xa1, 'y', 0x00}), // type is a string
           bytes({0x96, 0x02, 0x63, 0xa1, 'n', 0x01, 0xa1, 'y', 0x00}),      // type 99
           bytes({0x96, 0x02, 0x0a, 0xa0, 0x01, 0xa1, 'y', 0x00}),           // empty source
           bytes({0x93, 0x02, 0x0a, 0xa1, 'n'}),                             // too short
           bytes({0x81, 0xa1, 'v', 0x01})}) {                                // a map
    auto d = decode_envelope(bad);
    ASSERT_TRUE(std::holds_alternative<decode_error>(d)) << nlohmann::json(bad).dump();
    EXPECT_EQ(std::get<decode_error>(d), decode_error::malformed);
  }
}

TEST(Wire, a_frame_is_the_envelope_then_the_payload) {
  envelope env{protocol_version, msg_type::infer, "gpu-1", 7, "gpu0", 42};
  auto payload = encode_payload({{"job", 7}});
  auto frame = encode_envelope(env) + payload;
  auto d = decode_frame(frame);
  ASSERT_TRUE(std::holds_alternative<frame_view>(d));
  auto& f = std::get<frame_view>(d);
  EXPECT_EQ(f.env.type, msg_type::infer);
  EXPECT_EQ(f.env.source, "gpu-1");
  EXPECT_EQ(f.env.target, "gpu0");
  EXPECT_EQ(f.env.corr, 42u);
  EXPECT_EQ(f.payload, payload);
  EXPECT_EQ(decode_payload(f.payload).value()["job"], 7);
  // A ping is an envelope and nothing after it.
  auto ping =
      decode_frame(encode_envelope(envelope{protocol_version, msg_type::ping, "n", 1, "", 0}));
  ASSERT_TRUE(std::holds_alternative<frame_view>(ping));
  EXPECT_TRUE(std::get<frame_view>(ping).payload.empty());
  // A version 1 envelope is refused as such, whatever follows it.
  auto old = decode_frame(bytes({0x96, 0x01, 0x0a, 0xa1, 'n', 0x01, 0xa1, 'y', 0x00, 0x80}));
  ASSERT_TRUE(std::holds_alternative<decode_error>(old));
  EXPECT_EQ(std::get<decode_error>(old), decode_error::version);
}

TEST(Wire, a_payload_must_be_a_map) {
  EXPECT_FALSE(decode_payload(bytes({0x93, 0x01, 0x02, 0x03})));
  EXPECT_FALSE(decode_payload("\xc1"));
  auto p = decode_payload(encode_payload({{"text", "hi"}}));
  ASSERT_TRUE(p);
  EXPECT_EQ((*p)["text"], "hi");
}

TEST(Wire, a_payload_with_mistyped_fields_is_dropped_as_malformed_not_thrown) {
  auto dropped = [] {
    auto text = troupe::runtime::metrics_registry::global().render();
    auto at = text.find("troupe_cluster_dropped_frames_total{reason=\"malformed\"} ");
    return at == std::string::npos ? 0 : std::stoll(text.substr(text.find('}', at) + 2));
  };
  auto before = dropped();
  peer_frame f;
  f.env.source = "peer";
  f.payload = encode_payload({{"text", 42}});
  bool after_throw = false;
  EXPECT_NO_THROW(guarded(f, [&] {
    auto body = decode_payload(f.payload).value();
    (void)body.value("text", std::string{}); // throws: 42 is no string
    after_throw = true;
  }));
  EXPECT_FALSE(after_throw);
  EXPECT_EQ(dropped(), before + 1);
}

TEST(Wire, a_chat_request_crosses_with_its_tools_and_routing_hints) {
  runtime::chat_request req;
  req.model = "qwen";
  req.messages = {{"system", "be brief", {}, "", ""},
                  {"assistant", "", {{"c1", "clock", "{}"}}, "", ""},
                  {"tool", "12:00", {}, "c1", "clock"}};
  req.tools = {{"clock", "time", R"({"type":"object"})"}};
  req.temperature = 0.2;
  req.max_tokens = 99;
  req.affinity_key = "chat/k1";
  req.prefer = {"npu", "gpu"};
  auto back = chat_request_from(to_json(req));
  EXPECT_EQ(back.model, "qwen");
  ASSERT_EQ(back.messages.size(), 3u);
  EXPECT_EQ(back.messages[1].tool_calls.at(0).name, "clock");
  EXPECT_EQ(back.messages[2].tool_call_id, "c1");
  EXPECT_EQ(back.tools.at(0).parameters_json, R"({"type":"object"})");
  EXPECT_DOUBLE_EQ(back.temperature, 0.2);
  EXPECT_EQ(back.max_tokens, 99);
  EXPECT_EQ(back.affinity_key, "chat/k1");
  EXPECT_EQ(back.prefer, (std::vector<std::string>{"npu", "gpu"}));
}

TEST(Wire, results_failures_and_events_cross_unchanged) {
  runtime::chat_result r{"hi", {{"c", "calculator", "{\"expression\":\"1+1\"}"}}, {3, 4}, "stop"};
  auto rb = chat_result_from(to_json(r));
  EXPECT_EQ(rb.content, "hi");
  EXPECT_EQ(rb.tool_calls.at(0).arguments, "{\"expression\":\"1+1\"}");
  EXPECT_EQ(rb.tokens.completion_tokens, 4);
  auto f = failure_from(to_json(runtime::failure{runtime::errc::overloaded, "full"}));
  EXPECT_EQ(f.code, runtime::errc::overloaded);
  EXPECT_EQ(f.message, "full");
  EXPECT_EQ(failure_from(nlohmann::json(3)).code, runtime::errc::internal);
  auto ev = runtime::make_done_event("7", "chat/k1", "ok", {1, 2}, 1);
  auto eb = event_from(to_json(*ev), "chat/k1");
  ASSERT_TRUE(eb);
  EXPECT_EQ(eb->kind, runtime::event_kind::done);
  EXPECT_EQ(eb->id, "7");
  EXPECT_EQ(eb->json, ev->json); // forwarded as encoded, not re-encoded
  EXPECT_FALSE(event_from({{"kind", 99}, {"json", "{}"}}, "a"));
}

// -- placement ----------------------------------------------------------------

TEST(Rendezvous, every_node_gets_its_share_and_a_new_node_takes_only_what_it_wins) {
  std::vector<std::pair<std::string, double>> three{{"a", 1}, {"b", 1}, {"c", 1}};
  auto four = three;
  four.push_back({"d", 1});
  std::map<std::string, int> share;
  int moved = 0;
  for (int i = 0; i < 3000; ++i) {
    auto agent = "chat/" + std::to_string(i);
    auto before = rendezvous(agent, three);
    EXPECT_EQ(before, rendezvous(agent, three)); // stable
    ++share[before];
    auto after = rendezvous(agent, four);
    if (after != before) {
      EXPECT_EQ(after, "d") << agent << " moved between old nodes";
      ++moved;
    }
  }
  for (auto& [node, n] : share) {
    EXPECT_GT(n, 800) << node;
    EXPECT_LT(n, 1200) << node;
  }
  EXPECT_GT(moved, 550); // about a quarter
  EXPECT_LT(moved, 950);
  EXPECT_EQ(rendezvous("chat/x", {}), "");
}

TEST(Rendezvous, a_node_of_double_weight_gets_about_twice_the_agents) {
  std::map<std::string, int> share;
  for (int i = 0; i < 3000; ++i)
    ++share[rendezvous("chat/" + std::to_string(i), {{"big", 2}, {"small", 1}})];
  EXPECT_GT(share["big"], 1800);
  EXPECT_LT(share["big"], 2200);
}

// -- transport ----------------------------------------------------------------

using troupe::test::free_port;

/// What one transport's handlers saw.
struct inbox {
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::pair<envelope, std::string>> frames;
  std::vector<std::string> down;

  template <class Pred> bool wait(Pred p) {
    std::unique_lock<std::mutex> lock{m};
    return cv.wait_for(lock, std::chrono::seconds(5), [&] { return p(); });
  }
};

struct node {
  std::string id;
  std::string endpoint;
  inbox in;
  std::unique_ptr<transport> net;

  std::atomic<bool> open{true}; // the receive credit

  node(std::string name, uint64_t inc, size_t max_bytes = 64u << 20) : id(std::move(name)) {
    endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
    transport::options o;
    o.node = id;
    o.incarnation = inc;
    o.bind = endpoint;
    o.ping_interval = std::chrono::milliseconds(20);
    o.suspect_after = std::chrono::milliseconds(300);
    o.max_queued_bytes = max_bytes;
    o.can_deliver = [this] { return open.load(); };
    net = std::make_unique<transport>(
        o,
        [this](envelope env, std::string payload) {
          std::lock_guard<std::mutex> guard{in.m};
          in.frames.emplace_back(std::move(env), std::move(payload));
          in.cv.notify_all();
        },
        [this](const std::string& peer, uint64_t, bool left) {
          std::lock_guard<std::mutex> guard{in.m};
          in.down.push_back(peer + (left ? ":left" : ":dead"));
          in.cv.notify_all();
        });
  }
};

void meet(node& a, node& b) {
  a.net->set_peers({{b.id, {b.endpoint, 2, {}}}});
  b.net->set_peers({{a.id, {a.endpoint, 1, {}}}});
}

TEST(Transport, frames_between_members_arrive_in_order_with_their_source) {
  node a{"a", 1}, b{"b", 2};
  meet(a, b);
  for (uint64_t i = 1; i <= 100; ++i)
    ASSERT_TRUE(a.net->send("b", envelope{protocol_version, msg_type::token, "", 0, "w", i},
                            encode_payload({{"i", i}})));
  ASSERT_TRUE(b.in.wait([&] { return b.in.frames.size() == 100; }));
  for (uint64_t i = 1; i <= 100; ++i) {
    auto& [env, payload] = b.in.frames[i - 1];
    EXPECT_EQ(env.source, "a");
    EXPECT_EQ(env.incarnation, 1u);
    EXPECT_EQ(env.corr, i);
    EXPECT_EQ((*decode_payload(payload))["i"], i);
  }
}

TEST(Transport, without_credit_frames_wait_and_arrive_in_order_once_it_returns) {
  node a{"a", 1}, b{"b", 2};
  meet(a, b);
  ASSERT_TRUE(a.net->send("b", envelope{protocol_version, msg_type::token, "", 0, "w", 1},
                          encode_payload({})));
  ASSERT_TRUE(b.in.wait([&] { return b.in.frames.size() == 1; })); // connected
  b.open = false;
  for (uint64_t i = 2; i <= 50; ++i)
    ASSERT_TRUE(a.net->send("b", envelope{protocol_version, msg_type::token, "", 0, "w", i},
                            encode_payload({})));
  // Held back longer than the failure detector's bound: still alive.
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  {
    std::lock_guard<std::mutex> guard{b.in.m};
    EXPECT_EQ(b.in.frames.size(), 1u);
  }
  {
    std::lock_guard<std::mutex> guard{a.in.m};
    EXPECT_TRUE(a.in.down.empty());
  }
  b.open = true;
  ASSERT_TRUE(b.in.wait([&] { return b.in.frames.size() == 50; }));
  for (uint64_t i = 1; i <= 50; ++i)
    EXPECT_EQ(b.in.frames[i - 1].first.corr, i);
}

TEST(Transport, a_stranger_or_a_stale_incarnation_is_not_heard) {
  node a{"a", 1}, b{"b", 2}, stranger{"s", 9};
  b.net->set_peers({{"a", {a.endpoint, 7, {}}}}); // b expects another incarnation of a
  a.net->set_peers({{"b", {b.endpoint, 2, {}}}});
  stranger.net->set_peers({{"b", {b.endpoint, 2, {}}}});
  a.net->send("b", envelope{protocol_version, msg_type::token, "", 0, "w", 1}, encode_payload({}));
  stranger.net->send("b", envelope{protocol_version, msg_type::token, "", 0, "w", 1},
                     encode_payload({}));
  std::this_thread::sleep_for(std::chrono::milliseconds(200)); // nothing may arrive
  std::lock_guard<std::mutex> guard{b.in.m};
  EXPECT_TRUE(b.in.frames.empty());
}

TEST(Transport, a_silent_peer_is_declared_dead_once_and_one_that_leaves_says_so) {
  node a{"a", 1};
  auto b = std::make_unique<node>("b", 2);
  auto c = std::make_unique<node>("c", 3);
  a.net->set_peers({{"b", {b->endpoint, 2, {}}}, {"c", {c->endpoint, 3, {}}}});
  b->net->set_peers({{"a", {a.endpoint, 1, {}}}});
  c->net->set_peers({{"a", {a.endpoint, 1, {}}}});
  // Let them connect and ping: a bye goes only over an open connection.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  c.reset(); // leaves: says bye
  ASSERT_TRUE(a.in.wait([&] { return a.in.down.size() == 1; }));
  EXPECT_EQ(a.in.down[0], "c:left");
  b->net->set_peers({}); // b stops answering a: from a's side it went silent
  ASSERT_TRUE(a.in.wait([&] { return a.in.down.size() == 2; }));
  EXPECT_EQ(a.in.down[1], "b:dead");
  EXPECT_EQ(a.net->take_fenced(), std::vector<std::string>{"b:2"});
  // The membership table may list it a while longer: it stays fenced.
  a.net->set_peers({{"b", {b->endpoint, 2, {}}}});
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  b->net->set_peers({{"a", {a.endpoint, 1, {}}}});
  b->net->send("a", envelope{protocol_version, msg_type::token, "", 0, "w", 1}, encode_payload({}));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::lock_guard<std::mutex> guard{a.in.m};
  EXPECT_TRUE(a.in.frames.empty());
  EXPECT_EQ(a.in.down.size(), 2u);
}

TEST(Transport, a_peer_that_cannot_keep_up_makes_send_refuse_instead_of_growing) {
  node a{"a", 1, 4096};
  // A member that never answers: frames wait for it, up to the bound.
  a.net->set_peers({{"b", {"tcp://127.0.0.1:" + std::to_string(free_port()), 2, {}}}});
  std::string payload(1000, 'x');
  int accepted = 0;
  while (accepted < 100 &&
         a.net->send("b", envelope{protocol_version, msg_type::token, "", 0, "w", 1}, payload))
    ++accepted;
  EXPECT_GE(accepted, 3);
  EXPECT_LE(accepted, 4);
}

} // namespace
