#include "runtime/tool_call_accumulator.hpp"

#include <gtest/gtest.h>

using namespace troupe::runtime;

TEST(ToolCallAccumulator, JoinsFragmentsByIndex) {
  tool_call_accumulator acc;
  acc.add({0, "call_a", "calculator", ""});
  acc.add({1, "call_b", "clock", ""});
  acc.add({0, "", "", "{\"expre"});
  acc.add({1, "", "", "{}"});
  acc.add({0, "", "", "ssion\":\"2+2\"}"});
  auto calls = acc.take();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].id, "call_a");
  EXPECT_EQ(calls[0].name, "calculator");
  EXPECT_EQ(calls[0].arguments, "{\"expression\":\"2+2\"}");
  EXPECT_EQ(calls[1].name, "clock");
  EXPECT_TRUE(acc.empty());
}

TEST(ToolCallAccumulator, FillsMissingIdAndArguments) {
  tool_call_accumulator acc;
  acc.add({3, "", "clock", ""});
  acc.add({4, "x", "", "{}"}); // never named: dropped
  auto calls = acc.take();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].id, "call_3");
  EXPECT_EQ(calls[0].arguments, "{}");
}
