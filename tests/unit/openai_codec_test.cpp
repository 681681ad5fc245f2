#include "runtime/openai_codec.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <climits>

using namespace troupe::runtime;
using nlohmann::json;

TEST(OpenAiCodec, RequestCarriesStreamUsageAndTools) {
  chat_request req;
  req.model = "m";
  req.messages = {{"system", "be brief", {}, {}, {}},
                  {"assistant", "", {{"c1", "clock", "{}"}}, {}, {}},
                  {"tool", "12:00", {}, "c1", "clock"}};
  req.tools = {{"clock", "current time", R"({"type":"object","properties":{}})"}};
  auto j = json::parse(encode_chat_request(req, true));
  EXPECT_TRUE(j["stream"].get<bool>());
  EXPECT_TRUE(j["stream_options"]["include_usage"].get<bool>());
  EXPECT_EQ(j["tools"][0]["function"]["name"], "clock");
  EXPECT_EQ(j["tools"][0]["function"]["parameters"]["type"], "object");
  EXPECT_TRUE(j["messages"][1]["content"].is_null());
  EXPECT_EQ(j["messages"][1]["tool_calls"][0]["function"]["name"], "clock");
  EXPECT_EQ(j["messages"][2]["tool_call_id"], "c1");

  bool stream = false;
  std::string err;
  auto back = decode_chat_request(encode_chat_request(req, true), stream, err);
  ASSERT_TRUE(back) << err;
  EXPECT_TRUE(stream);
  EXPECT_EQ(back->messages.size(), 3u);
  EXPECT_EQ(back->messages[1].tool_calls[0].name, "clock");
  EXPECT_EQ(back->tools[0].name, "clock");
}

TEST(OpenAiCodec, ToolsAreEscapedAndAnEmptySchemaIsAnyObject) {
  chat_request req;
  req.messages = {{"user", "hi", {}, {}, {}}};
  req.tools = {{"a\"b", "says \"x\"\n", ""},
               {"sum", "adds", R"({"type":"object","properties":{"a":{"type":"number"}}})"}};
  auto j = json::parse(encode_chat_request(req, false));
  ASSERT_EQ(j["tools"].size(), 2u);
  EXPECT_EQ(j["tools"][0]["type"], "function");
  EXPECT_EQ(j["tools"][0]["function"]["name"], "a\"b");
  EXPECT_EQ(j["tools"][0]["function"]["description"], "says \"x\"\n");
  EXPECT_EQ(j["tools"][0]["function"]["parameters"], json({{"type", "object"}}));
  EXPECT_EQ(j["tools"][1]["function"]["parameters"]["properties"]["a"]["type"], "number");
  EXPECT_FALSE(j.contains("stream"));
}

TEST(OpenAiCodec, ChunkWithContentToolCallsAndUsage) {
  std::string err;
  auto c = decode_chat_chunk(
      R"({"choices":[{"index":0,"delta":{"content":"Hi","tool_calls":[{"index":1,"id":"x","function":{"name":"clock","arguments":"{"}}]},"finish_reason":null}]})",
      err);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->content, "Hi");
  ASSERT_EQ(c->tool_calls.size(), 1u);
  EXPECT_EQ(c->tool_calls[0].index, 1);
  EXPECT_EQ(c->tool_calls[0].arguments, "{");
  EXPECT_FALSE(c->has_usage);
}

TEST(OpenAiCodec, UsageOnlyChunkWithEmptyOrNullChoices) {
  std::string err;
  for (auto body : {R"({"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}})",
                    R"({"choices":null,"usage":{"prompt_tokens":3,"completion_tokens":5}})"}) {
    auto c = decode_chat_chunk(body, err);
    ASSERT_TRUE(c) << err;
    EXPECT_TRUE(c->has_usage);
    EXPECT_EQ(c->tokens.total_tokens(), 8);
    EXPECT_TRUE(c->content.empty());
  }
}

TEST(OpenAiCodec, ErrorsInTheStreamAreReported) {
  std::string err;
  EXPECT_FALSE(decode_chat_chunk("not json", err));
  EXPECT_FALSE(decode_chat_chunk(R"({"error":{"message":"model not loaded"}})", err));
  EXPECT_EQ(err, "model not loaded");
}

TEST(OpenAiCodec, ServerChunksRoundTrip) {
  chat_chunk c;
  c.content = "tok";
  c.tool_calls = {{0, "id1", "calculator", "{\"e\":1}"}};
  std::string err;
  auto back = decode_chat_chunk(encode_chat_chunk("cmpl-1", "m", c), err);
  ASSERT_TRUE(back) << err;
  EXPECT_EQ(back->content, "tok");
  EXPECT_EQ(back->tool_calls[0].name, "calculator");
  chat_chunk u;
  u.has_usage = true;
  u.tokens = {1, 2};
  back = decode_chat_chunk(encode_chat_chunk("cmpl-1", "m", u), err);
  ASSERT_TRUE(back);
  EXPECT_TRUE(back->has_usage);
  EXPECT_EQ(back->tokens.completion_tokens, 2);
}

// Found by fuzz_sse_parser: `value("index", 0)` threw on a string index
// (uncaught on the backend's I/O thread) and overflowed on a huge float.
TEST(OpenAiCodec, AToolCallIndexThatIsNoIntegerReadsAsZero) {
  std::string err;
  for (auto index : {R"("function")", "1e300", "-5", "null"}) {
    auto c = decode_chat_chunk(std::string{R"({"choices":[{"delta":{"tool_calls":[{"index":)"} +
                                   index + R"(,"function":{"name":"clock"}}]}}]})",
                               err);
    ASSERT_TRUE(c) << err;
    ASSERT_EQ(c->tool_calls.size(), 1u);
    EXPECT_EQ(c->tool_calls[0].index, 0) << index;
    EXPECT_EQ(c->tool_calls[0].name, "clock");
  }
  auto c =
      decode_chat_chunk(R"({"choices":[{"delta":{"tool_calls":[{"index":99999999999}]}}]})", err);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->tool_calls[0].index, INT_MAX);
}

// Flagged by fuzz_sse_parser (UBSan): a reported count near INT64_MAX overflowed the
// total a turn reports.
TEST(OpenAiCodec, ImpossibleTokenCountsReadAsZero) {
  std::string err;
  auto c = decode_chat_chunk(
      R"({"choices":[],"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":1}})", err);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->tokens.prompt_tokens, 0);
  EXPECT_EQ(c->tokens.total_tokens(), 1);
  c = decode_chat_chunk(R"({"choices":[],"usage":{"prompt_tokens":-3,"completion_tokens":7}})",
                        err);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->tokens.total_tokens(), 7);
}

TEST(OpenAiCodec, RequestTextIsWhatAJsonTreeOfItPrints) {
  // The encoder writes text directly; a tree of the same request, printed by
  // nlohmann, must read the same byte for byte (the response cache keys on it).
  chat_request req;
  req.model = "qwen \"7b\"";
  req.temperature = 0.25;
  req.max_tokens = 64;
  req.messages = {
      {"system", "be brief\n", {}, {}, {}},
      {"user", "caf\xC3\xA9 \x01", {}, {}, {}},
      {"assistant", "", {{"c1", "clock", "{\"tz\":\"UTC\"}"}, {"c2", "sum", "{}"}}, {}, {}},
      {"assistant", "thinking", {{"c3", "clock", "{}"}}, {}, {}},
      {"tool", "12:00", {}, "c1", "clock"},
      {"tool", "3", {}, "c2", ""}};
  // The schema text is spliced in as is: written here in the order a tree prints.
  req.tools = {{"clock", "current time", R"({"properties":{},"type":"object"})"},
               {"any", "takes anything", ""}};
  json tree{{"model", req.model},
            {"temperature", req.temperature},
            {"max_tokens", 64},
            {"stream", true},
            {"stream_options", {{"include_usage", true}}}};
  tree["messages"] = json::array();
  for (auto& m : req.messages) {
    json j{{"role", m.role}};
    if (m.role == "assistant" && !m.tool_calls.empty()) {
      j["content"] = m.content.empty() ? json(nullptr) : json(m.content);
      for (auto& c : m.tool_calls)
        j["tool_calls"].push_back({{"id", c.id},
                                   {"type", "function"},
                                   {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
    } else {
      j["content"] = m.content;
    }
    if (m.role == "tool") {
      j["tool_call_id"] = m.tool_call_id;
      if (!m.name.empty()) j["name"] = m.name;
    }
    tree["messages"].push_back(j);
  }
  for (auto& t : req.tools)
    tree["tools"].push_back(
        {{"type", "function"},
         {"function",
          {{"name", t.name},
           {"description", t.description},
           {"parameters", t.parameters_json.empty() ? json{{"type", "object"}}
                                                    : json::parse(t.parameters_json)}}}});
  EXPECT_EQ(encode_chat_request(req, true), tree.dump());
  req.max_tokens = 0;
  tree.erase("max_tokens");
  tree.erase("stream");
  tree.erase("stream_options");
  EXPECT_EQ(encode_chat_request(req, false), tree.dump());
}
