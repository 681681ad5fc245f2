#include "runtime/response_cache.hpp"

#include <gtest/gtest.h>

using namespace troupe::runtime;
using namespace std::chrono_literals;

namespace {

response_cache::answer answer_of(const std::string& text) {
  response_cache::answer a;
  a.tokens = {text.substr(0, text.size() / 2), text.substr(text.size() / 2)};
  a.result.content = text;
  a.result.finish_reason = "stop";
  return a;
}

const auto t0 = response_cache::clock::time_point{} + 1h;

} // namespace

TEST(ResponseCache, AnIdenticalRequestGetsTheStoredAnswerAndADifferentOneNothing) {
  response_cache c{{}};
  c.put("request-a", answer_of("hello there"), t0);
  auto* a = c.find("request-a", t0 + 1s);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->result.content, "hello there");
  EXPECT_EQ(a->tokens, (std::vector<std::string>{"hello", " there"}));
  EXPECT_EQ(c.find("request-b", t0), nullptr);
  EXPECT_EQ(c.find("request-", t0), nullptr); // exact match only
}

TEST(ResponseCache, AnswersOlderThanTheTtlAreGone) {
  response_cache c{{10, 1 << 20, 10s}};
  c.put("k", answer_of("x"), t0);
  EXPECT_NE(c.find("k", t0 + 10s), nullptr);
  EXPECT_EQ(c.find("k", t0 + 11s), nullptr);
  EXPECT_EQ(c.size(), 0u);
  EXPECT_EQ(c.bytes(), 0u);
}

TEST(ResponseCache, TheLeastRecentlyUsedGoFirstPastTheEntryLimit) {
  response_cache c{{2, 1 << 20, 1h}};
  c.put("a", answer_of("1"), t0);
  c.put("b", answer_of("2"), t0);
  ASSERT_NE(c.find("a", t0), nullptr); // a is now the most recent
  c.put("c", answer_of("3"), t0);
  EXPECT_NE(c.find("a", t0), nullptr);
  EXPECT_EQ(c.find("b", t0), nullptr);
  EXPECT_NE(c.find("c", t0), nullptr);
  EXPECT_EQ(c.size(), 2u);
}

TEST(ResponseCache, TheByteLimitHoldsAndAnOversizedAnswerIsNotKept) {
  response_cache c{{1000, 4096, 1h}};
  for (int i = 0; i < 100; ++i)
    c.put("key-" + std::to_string(i), answer_of(std::string(300, 'x')), t0);
  EXPECT_LE(c.bytes(), 4096u);
  EXPECT_GT(c.size(), 0u);
  EXPECT_NE(c.find("key-99", t0), nullptr); // the newest stays
  EXPECT_EQ(c.find("key-0", t0), nullptr);
  c.put("huge", answer_of(std::string(10000, 'y')), t0);
  EXPECT_EQ(c.find("huge", t0), nullptr);
  EXPECT_LE(c.bytes(), 4096u);
}

TEST(ResponseCache, StoringAKeyAgainReplacesItsAnswer) {
  response_cache c{{}};
  c.put("k", answer_of("old"), t0);
  c.put("k", answer_of("new answer"), t0);
  EXPECT_EQ(c.size(), 1u);
  EXPECT_EQ(c.find("k", t0)->result.content, "new answer");
}
