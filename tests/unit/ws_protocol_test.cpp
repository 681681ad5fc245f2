#include "runtime/ws_protocol.hpp"
#include "nodes/write_queue.hpp"

#include <gtest/gtest.h>
#include <tuple>
#include <nlohmann/json.hpp>

using namespace troupe::runtime;

namespace {

client_op op_of(std::string_view text) {
  auto r = decode_client_frame(text);
  if (auto e = std::get_if<protocol_error>(&r)) {
    ADD_FAILURE() << text << ": " << e->message;
    return {};
  }
  return std::get<client_op>(r);
}

protocol_error error_of(std::string_view text) {
  auto r = decode_client_frame(text);
  if (!std::holds_alternative<protocol_error>(r)) {
    ADD_FAILURE() << "accepted: " << text;
    return {};
  }
  return std::get<protocol_error>(r);
}

} // namespace

TEST(WsProtocol, DecodesEveryOp) {
  auto s = op_of(R"({"op":"spawn","type":"chat","key":"k1","id":"1"})");
  EXPECT_EQ(s.kind, client_op_kind::spawn);
  EXPECT_EQ(s.type, "chat");
  EXPECT_EQ(s.key, "k1");
  EXPECT_EQ(s.id, "1");
  auto m = op_of(R"({"op":"send","agent":"chat/k1","text":"hi","id":2})");
  EXPECT_EQ(m.kind, client_op_kind::send);
  EXPECT_EQ(m.id, "2");
  EXPECT_EQ(op_of(R"({"op":"cancel","id":"2"})").kind, client_op_kind::cancel);
  EXPECT_EQ(op_of(R"({"op":"attach","agent":"chat/k1"})").kind, client_op_kind::attach);
  EXPECT_EQ(op_of(R"({"op":"kill","agent":"chat/k1"})").kind, client_op_kind::kill);
  auto j = op_of(R"({"op":"attach","job":"job-1","id":"a"})");
  EXPECT_EQ(j.kind, client_op_kind::attach);
  EXPECT_EQ(j.job, "job-1");
  EXPECT_EQ(op_of(R"({"op":"list"})").kind, client_op_kind::list);
  EXPECT_EQ(op_of(R"({"op":"ping"})").kind, client_op_kind::ping);
}

TEST(WsProtocol, BadFramesAreBadRequestsWithTheirId) {
  EXPECT_EQ(error_of("{not json").message, "malformed JSON");
  EXPECT_EQ(error_of("[1,2]").message, "frame must be a JSON object");
  auto e = error_of(R"({"op":"dance","id":"9"})");
  EXPECT_EQ(e.code, errc::bad_request);
  EXPECT_EQ(e.message, "unknown op 'dance'");
  EXPECT_EQ(e.id, "9");
  EXPECT_EQ(error_of(R"({"op":"send","agent":"chat/k1","id":"3"})").message,
            "missing field 'text'");
  EXPECT_EQ(error_of(R"({"op":"send","agent":5,"text":"x"})").message,
            "field 'agent' must be a string");
  EXPECT_EQ(error_of(R"({"op":"cancel"})").code, errc::bad_request);
  EXPECT_EQ(error_of(R"({"op":"kill","job":"job-1"})").message, "missing field 'agent'");
  EXPECT_EQ(error_of(R"({"op":"attach"})").message, "missing field 'agent'");
  EXPECT_EQ(error_of(R"({"id":"1"})").message, "missing field 'op'");
  // Found by fuzz_ws_protocol: an empty agent was taken as one.
  EXPECT_EQ(error_of(R"({"op":"attach","agent":""})").message, "field 'agent' must not be empty");
  EXPECT_EQ(error_of(R"({"op":"kill","agent":"","job":"j"})").message,
            "field 'agent' must not be empty");
}

TEST(WsProtocol, EventsEncodeAsDocumented) {
  agent_event d;
  d.kind = event_kind::done;
  d.agent = "chat/k1";
  d.id = "2";
  d.answer = "hi";
  d.tokens = {3, 4};
  d.steps = 2;
  auto j = nlohmann::json::parse(seal(d)->json);
  EXPECT_EQ(j["ev"], "done");
  EXPECT_EQ(j["usage"]["total_tokens"], 7);
  EXPECT_EQ(j["steps"], 2);

  agent_event t;
  t.kind = event_kind::tool_call;
  t.name = "calculator";
  t.arguments = R"({"expression":"1+1"})";
  j = nlohmann::json::parse(seal(t)->json);
  EXPECT_EQ(j["arguments"]["expression"], "1+1");

  j = nlohmann::json::parse(make_error_event("5", errc::overloaded, "full")->json);
  EXPECT_EQ(j["code"], "overloaded");
  EXPECT_EQ(j["id"], "5");
}

TEST(WsProtocol, TokenEventsReadAsATreeOfThemPrints) {
  // Tokens are written directly, not through a tree: the same text either way.
  for (auto [agent, id, text] : {std::tuple{"chat/k1", "2", "Hel"}, std::tuple{"", "", "\"q\"\n"},
                                 std::tuple{"a/\u00e9", "", "caf\xC3\xA9"}}) {
    agent_event t;
    t.kind = event_kind::token;
    t.agent = agent;
    t.id = id;
    t.text = text;
    nlohmann::json tree{{"ev", "token"}, {"text", text}};
    if (*agent) tree["agent"] = agent;
    if (*id) tree["id"] = id;
    EXPECT_EQ(seal(t)->json, tree.dump());
  }
}

namespace {

std::string token_frame(const std::string& agent, const std::string& id, const std::string& text) {
  agent_event ev;
  ev.kind = event_kind::token;
  ev.agent = agent;
  ev.id = id;
  ev.text = text;
  return seal(std::move(ev))->json;
}

} // namespace

TEST(CoalesceTokens, JoinsTheTextsOfOneRequest) {
  auto merged =
      coalesce_tokens(token_frame("chat/a", "7", "Hel"), token_frame("chat/a", "7", "lo \"x\"\n"));
  ASSERT_TRUE(merged);
  auto j = nlohmann::json::parse(*merged);
  EXPECT_EQ(j["ev"], "token");
  EXPECT_EQ(j["agent"], "chat/a");
  EXPECT_EQ(j["id"], "7");
  EXPECT_EQ(j["text"], "Hello \"x\"\n");
  auto again = coalesce_tokens(*merged, token_frame("chat/a", "7", "!"));
  ASSERT_TRUE(again);
  EXPECT_EQ(nlohmann::json::parse(*again)["text"], "Hello \"x\"\n!");
}

TEST(CoalesceTokens, LeavesOtherRequestsAndEventsAlone) {
  EXPECT_FALSE(coalesce_tokens(token_frame("chat/a", "7", "a"), token_frame("chat/a", "8", "b")));
  EXPECT_FALSE(coalesce_tokens(token_frame("chat/a", "7", "a"), token_frame("chat/b", "7", "b")));
  // An id that looks like the text key is escaped, so it cannot fool the match.
  EXPECT_FALSE(coalesce_tokens(token_frame("chat/a", "x\",\"text\":\"", "a"),
                               token_frame("chat/a", "x", "b")));
  auto done = make_done_event("7", "chat/a", "answer", {}, 1)->json;
  EXPECT_FALSE(coalesce_tokens(token_frame("chat/a", "7", "a"), done));
  EXPECT_FALSE(coalesce_tokens(done, token_frame("chat/a", "7", "a")));
}

TEST(WriteQueue, MergesTokensOnlyBehindTheFrameBeingWritten) {
  troupe::gateway::write_queue q{1 << 20};
  auto f = [](std::string s) { return std::make_shared<const std::string>(std::move(s)); };
  ASSERT_TRUE(q.push(f(token_frame("chat/a", "1", "A")), false));
  // The front is being written: the next token waits beside it.
  ASSERT_TRUE(q.push(f(token_frame("chat/a", "1", "B")), true));
  ASSERT_TRUE(q.push(f(token_frame("chat/a", "1", "C")), true));
  EXPECT_EQ(q.take_coalesced(), 1u);
  EXPECT_EQ(nlohmann::json::parse(q.front())["text"], "A");
  q.pop();
  EXPECT_EQ(nlohmann::json::parse(q.front())["text"], "BC");
  q.pop();
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.bytes(), 0u);
}
