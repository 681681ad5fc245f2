#include "runtime/simulated_model.hpp"
#include "runtime/token_pacer.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using namespace troupe::runtime;

namespace {

chat_request user_says(const std::string& text, std::vector<std::string> tools = {}) {
  chat_request req;
  req.messages = {{"system", "sys", {}, {}, {}}, {"user", text, {}, {}, {}}};
  for (auto& t : tools)
    req.tools.push_back({t, "", "{}"});
  return req;
}

std::string joined(const simulated_plan& p) {
  std::string s;
  for (auto& t : p.tokens)
    s += t;
  return s;
}

} // namespace

TEST(SimulatedModel, EchoesPlainText) {
  auto p = plan_simulated_response(user_says("hello there"));
  EXPECT_EQ(joined(p), "You said: hello there");
  EXPECT_EQ(p.finish_reason, "stop");
  EXPECT_EQ(p.tokens.size(), 4u);
  EXPECT_EQ(p.tokens_used.completion_tokens, 4);
}

TEST(SimulatedModel, CountsInOrder) {
  auto p = plan_simulated_response(user_says("please count to 5"));
  EXPECT_EQ(joined(p), "1 2 3 4 5");
  EXPECT_EQ(p.tokens.size(), 5u);
}

TEST(SimulatedModel, CallsCalculatorOnlyWhenOffered) {
  auto p = plan_simulated_response(user_says("what is (2+3)*4?", {"calculator"}));
  ASSERT_EQ(p.tool_calls.size(), 1u);
  EXPECT_EQ(p.finish_reason, "tool_calls");
  EXPECT_EQ(p.tool_calls[0].name, "calculator");
  EXPECT_EQ(nlohmann::json::parse(p.tool_calls[0].arguments)["expression"], "(2+3)*4");
  EXPECT_TRUE(plan_simulated_response(user_says("what is 2+3?")).tool_calls.empty());
}

TEST(SimulatedModel, CallsClockAndAgent) {
  EXPECT_EQ(plan_simulated_response(user_says("What time is it?", {"clock"})).tool_calls.at(0).name,
            "clock");
  auto p = plan_simulated_response(user_says("ask chat/k2: what is 1+1", {"agent"}));
  ASSERT_EQ(p.tool_calls.size(), 1u);
  auto args = nlohmann::json::parse(p.tool_calls[0].arguments);
  EXPECT_EQ(args["agent"], "chat/k2");
  EXPECT_EQ(args["message"], "what is 1+1");
}

TEST(SimulatedModel, AnswersFromToolResults) {
  auto req = user_says("what is 6*7", {"calculator"});
  req.messages.push_back({"assistant", "", {{"c", "calculator", "{}"}}, {}, {}});
  req.messages.push_back({"tool", "42", {}, "c", "calculator"});
  EXPECT_EQ(joined(plan_simulated_response(req)), "The result is 42.");
}

TEST(TokenPacer, ReleasesWhatFellDueTogether) {
  token_pacer pacer{std::chrono::milliseconds(0), 10, 5}; // one every 100 ms
  pacer.start();
  auto t0 = token_pacer::clock::now();
  EXPECT_EQ(pacer.release(t0 - std::chrono::seconds(1)), 0u); // before the first token
  EXPECT_EQ(pacer.release(t0 + std::chrono::milliseconds(250)), 3u);
  EXPECT_EQ(pacer.next(), 3u);
  EXPECT_FALSE(pacer.done());
  EXPECT_EQ(pacer.release(t0 + std::chrono::seconds(1)), 2u);
  EXPECT_TRUE(pacer.done());
}
