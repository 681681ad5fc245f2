#include "runtime/config.hpp"

#include <gtest/gtest.h>

using namespace troupe::runtime;

namespace {

node_config ok(const std::string& yaml) {
  auto r = load_config_text(yaml, "t.yaml");
  if (auto err = std::get_if<config_error>(&r)) {
    ADD_FAILURE() << err->what;
    return {};
  }
  return std::get<node_config>(r);
}

std::string bad(const std::string& yaml) {
  auto r = load_config_text(yaml, "t.yaml");
  if (auto err = std::get_if<config_error>(&r)) return err->what;
  ADD_FAILURE() << "config was accepted:\n" << yaml;
  return {};
}

} // namespace

TEST(Config, ReadsTheDesignExample) {
  auto cfg = ok(R"(
node:
  id: gpu-1
  roles: [gateway, agents, inference]
gateway:
  listen: 127.0.0.1:7801
  auth: none
limits: {max_frame_bytes: 2048, max_connections: 10}
inference:
  accelerators:
    - id: gpu0
      kind: gpu
      slots: 8
      backend: {type: openai, url: "http://127.0.0.1:8080/v1", model: qwen2.5-7b-instruct}
    - id: npu0
      kind: npu
      slots: 2
      backend: {type: lemonade, model: Qwen2.5-0.5B-Instruct-Hybrid}
agents:
  idle_timeout: 10m
  types:
    chat:
      system: You are a helpful assistant.
      model: qwen2.5-7b-instruct
      prefer: [npu, gpu, cpu]
      tools: [calculator, clock]
      max_steps: 8
)");
  EXPECT_EQ(cfg.id, "gpu-1");
  EXPECT_EQ(cfg.gateway.port, 7801);
  EXPECT_EQ(cfg.limits.max_frame_bytes, 2048u);
  ASSERT_EQ(cfg.accelerators.size(), 2u);
  EXPECT_EQ(cfg.accelerators[0].backend.models.at(0), "qwen2.5-7b-instruct");
  EXPECT_EQ(cfg.accelerators[1].backend.url, "http://localhost:8000/api/v1");
  EXPECT_FALSE(cfg.simulated_default);
  EXPECT_EQ(cfg.idle_timeout, std::chrono::minutes(10));
  EXPECT_EQ(cfg.agent_types.at("chat").prefer.size(), 3u);
}

TEST(Config, EmptyConfigFallsBackToTheSimulator) {
  auto cfg = ok("");
  ASSERT_EQ(cfg.accelerators.size(), 1u);
  EXPECT_EQ(cfg.accelerators[0].backend.type, "simulated");
  EXPECT_TRUE(cfg.simulated_default);
  EXPECT_TRUE(cfg.agent_types.contains("chat"));
}

TEST(Config, UnknownKeyIsNamedWithFileAndLine) {
  auto err = bad("gateway:\n  listen: 127.0.0.1:1\n  lisen: 2\n");
  EXPECT_EQ(err, "t.yaml:3:3: unknown key 'gateway.lisen'");
  err = bad("node: {id: a}\nfoo: 1\n");
  EXPECT_EQ(err, "t.yaml:2:1: unknown key 'foo'");
}

TEST(Config, WrongTypeIsNamed) {
  auto err = bad("inference:\n  accelerators:\n    - id: g\n      slots: many\n"
                 "      backend: {type: simulated}\n");
  EXPECT_NE(err.find("t.yaml:4:14"), std::string::npos) << err;
  EXPECT_NE(err.find("'inference.accelerators[0].slots' must be an integer"), std::string::npos);
}

TEST(Config, MissingRequiredFieldIsNamed) {
  auto err = bad("inference:\n  accelerators:\n    - id: g\n");
  EXPECT_NE(err.find("missing required key 'inference.accelerators[0].backend'"), std::string::npos)
      << err;
  err = bad("inference:\n  accelerators:\n    - id: g\n      backend: {type: openai}\n");
  EXPECT_NE(err.find("url"), std::string::npos) << err;
}

TEST(Config, BadValuesAreRejected) {
  EXPECT_NE(bad("gateway: {listen: nowhere}").find("HOST:PORT"), std::string::npos);
  EXPECT_NE(bad("agents: {idle_timeout: soon}").find("duration"), std::string::npos);
  EXPECT_NE(bad("node: {roles: [gateway, chef]}").find("must be one of"), std::string::npos);
  EXPECT_NE(bad("inference: {accelerators: [{id: a, kind: tpu, backend: {type: simulated}}]}")
                .find("kind"),
            std::string::npos);
  EXPECT_NE(bad("key: [unclosed").find("t.yaml:"), std::string::npos);
}

TEST(Config, DurationsParse) {
  EXPECT_EQ(parse_duration("500ms"), std::chrono::milliseconds(500));
  EXPECT_EQ(parse_duration("30s"), std::chrono::seconds(30));
  EXPECT_EQ(parse_duration("2"), std::chrono::seconds(2));
  EXPECT_EQ(parse_duration("1h"), std::chrono::hours(1));
  EXPECT_FALSE(parse_duration("x"));
  EXPECT_FALSE(parse_duration("5 parsecs"));
}

// Found by fuzz_config: a duration beyond int64 milliseconds was cast
// anyway (undefined behaviour); one beyond ten years is now refused.
TEST(Config, ADurationTooLongForTimersIsRefused) {
  EXPECT_EQ(parse_duration("87600h"), std::chrono::hours(87600));
  EXPECT_FALSE(parse_duration("87601h"));
  EXPECT_FALSE(parse_duration("99999999999999999999999"));
  EXPECT_NE(bad("cluster: {bind: 'tcp://127.0.0.1:7400', redis: 'redis://r/0', heartbeat: "
                "166666666666666666666666666666666666666666666666600ms}")
                .find("'cluster.heartbeat' must be a duration"),
            std::string::npos);
}

TEST(Config, ReadsMcpServersOverStdioAndHttp) {
  auto cfg = ok(R"(
mcp:
  servers:
    fs:
      command: [npx, -y, "@modelcontextprotocol/server-filesystem", ./data]
      env: {HOME: /tmp}
      cwd: /srv
      call_timeout: 5s
    remote: {url: "http://127.0.0.1:3001/mcp", headers: {Authorization: Bearer x}}
agents:
  types:
    chat: {tools: [calculator, "mcp:fs/*", "mcp:remote/echo"]}
)");
  ASSERT_EQ(cfg.mcp_servers.size(), 2u);
  auto& fs = cfg.mcp_servers[0];
  EXPECT_EQ(fs.name, "fs");
  EXPECT_EQ(fs.command.size(), 4u);
  EXPECT_EQ(fs.env.at("HOME"), "/tmp");
  EXPECT_EQ(fs.cwd, "/srv");
  EXPECT_EQ(fs.call_timeout, std::chrono::seconds(5));
  EXPECT_EQ(cfg.mcp_servers[1].url, "http://127.0.0.1:3001/mcp");
  EXPECT_EQ(cfg.mcp_servers[1].headers.at("Authorization"), "Bearer x");
}

TEST(Config, McpMistakesAreNamedWithFileAndLine) {
  EXPECT_NE(bad("mcp:\n  servers:\n    a__b: {command: [x]}\n").find("t.yaml:3:5"),
            std::string::npos);
  EXPECT_NE(bad("mcp:\n  servers:\n    s: {}\n").find("exactly one of 'command'"),
            std::string::npos);
  EXPECT_NE(bad("mcp:\n  servers:\n    s: {url: 'http://h/mcp', env: {A: b}}\n")
                .find("'env' and 'cwd' apply to a 'command' server only"),
            std::string::npos);
  auto unknown = bad("agents:\n  types:\n    t: {tools: ['mcp:ghost/*']}\n");
  EXPECT_NE(unknown.find("t.yaml:3:17"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("names server 'ghost'"), std::string::npos) << unknown;
}

TEST(Config, InAClusterAnMcpServerMayLiveOnAnotherNode) {
  auto cfg = ok(R"(
cluster: {bind: "tcp://127.0.0.1:7400", redis: "redis://127.0.0.1:6379/0"}
state: {redis: "redis://127.0.0.1:6379/1"}
agents:
  types:
    t: {tools: ["mcp:elsewhere/*"]}
)");
  EXPECT_TRUE(cfg.mcp_servers.empty());
}

TEST(Config, ReadsTheResponseCacheAndItsAgentTypes) {
  auto c = ok("inference:\n  response_cache: {max_entries: 5, max_bytes: 1000, ttl: 2s}\n"
              "agents:\n  types:\n    faq: {temperature: 0, response_cache: true}\n"
              "    chat: {}\n");
  EXPECT_EQ(c.response_cache.max_entries, 5u);
  EXPECT_EQ(c.response_cache.max_bytes, 1000u);
  EXPECT_EQ(c.response_cache.ttl, std::chrono::seconds(2));
  EXPECT_TRUE(c.agent_types.at("faq").response_cache);
  EXPECT_FALSE(c.agent_types.at("chat").response_cache);
  EXPECT_EQ(ok("").response_cache.max_entries, 10000u); // the default
  EXPECT_EQ(bad("inference: {response_cache: {size: 1}}"),
            "t.yaml:1:30: unknown key 'inference.response_cache.size'");
  EXPECT_NE(
      bad("agents: {types: {faq: {temperature: 0, response_cache: maybe}}}").find("must be one of"),
      std::string::npos);
  EXPECT_NE(bad("agents: {types: {faq: {response_cache: true}}}").find("needs 'temperature: 0'"),
            std::string::npos);
}

TEST(Config, IoThreadsDefaultToOnePerEightCoresAndCanBeSet) {
  auto d = ok("");
  EXPECT_EQ(d.gateway.io_threads, default_io_threads());
  EXPECT_EQ(d.backend_io_threads, default_io_threads());
  EXPECT_GE(default_io_threads(), 1);
  auto cfg = ok("gateway: {listen: 127.0.0.1:1, io_threads: 3}\ninference: {io_threads: 2}\n");
  EXPECT_EQ(cfg.gateway.io_threads, 3);
  EXPECT_EQ(cfg.backend_io_threads, 2);
  auto err = bad("gateway:\n  io_threads: 0\n");
  EXPECT_NE(err.find("t.yaml:2:15"), std::string::npos) << err;
  EXPECT_NE(err.find("gateway.io_threads"), std::string::npos) << err;
}

TEST(Config, FinishedRequestsAreKeptADayByDefaultOrAsLongAsSaid) {
  EXPECT_EQ(ok("").request_retention, std::chrono::hours(24));
  EXPECT_EQ(ok("state: {request_retention: 2h}\n").request_retention, std::chrono::hours(2));
  EXPECT_EQ(ok("state: {request_retention: 0}\n").request_retention.count(), 0); // for ever
  auto err = bad("state:\n  request_retention: 10ms\n");
  EXPECT_NE(err.find("t.yaml:2:22"), std::string::npos) << err;
  EXPECT_NE(err.find("state.request_retention"), std::string::npos) << err;
  err = bad("state: {request_retention: soon}\n");
  EXPECT_NE(err.find("state.request_retention"), std::string::npos) << err;
}
