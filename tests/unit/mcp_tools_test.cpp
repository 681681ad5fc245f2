#include "runtime/mcp_tools.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <regex>
#include <set>

using namespace troupe::runtime;

TEST(McpToolNames, AreServerDoubleUnderscoreTool) {
  auto names = expose_mcp_tool_names("everything", {"echo", "get-sum"});
  EXPECT_EQ(names, (std::vector<std::string>{"everything__echo", "everything__get-sum"}));
}

TEST(McpToolNames, FollowOpenAiFunctionNameRules) {
  std::string long_name(100, 'x');
  auto names = expose_mcp_tool_names("fs", {"read file", "ünïcode.tool", long_name});
  std::regex rule{"^[A-Za-z0-9_-]{1,64}$"};
  for (auto& n : names)
    EXPECT_TRUE(std::regex_match(n, rule)) << n;
  EXPECT_EQ(names[0], "fs__read_file");
  EXPECT_EQ(names[2].size(), 64u);
}

TEST(McpToolNames, CollisionsAreNumberedTheSameWhateverTheListingOrder) {
  auto a = expose_mcp_tool_names("s", {"a.b", "a b", "a_b"});
  auto b = expose_mcp_tool_names("s", {"a_b", "a b", "a.b"});
  EXPECT_EQ(std::set<std::string>(a.begin(), a.end()).size(), 3u);
  // Each tool keeps its name when the server lists them in another order.
  EXPECT_EQ(a[0], b[2]);
  EXPECT_EQ(a[1], b[1]);
  EXPECT_EQ(a[2], b[0]);
  EXPECT_EQ(a[1], "s__a_b"); // "a b" sorts first
}

TEST(McpToolNames, LongNamesThatShareAPrefixStayDistinct) {
  std::string prefix(80, 'p');
  auto names = expose_mcp_tool_names("s", {prefix + "1", prefix + "2"});
  EXPECT_NE(names[0], names[1]);
  EXPECT_LE(names[0].size(), 64u);
  EXPECT_LE(names[1].size(), 64u);
}

TEST(McpSelector, ParsesServerWildcardsAndSingleTools) {
  auto all = mcp_selector::parse("mcp:fs/*");
  ASSERT_TRUE(all);
  EXPECT_TRUE(all->matches("fs", "read"));
  EXPECT_FALSE(all->matches("other", "read"));
  auto one = mcp_selector::parse("mcp:everything/echo");
  ASSERT_TRUE(one);
  EXPECT_TRUE(one->matches("everything", "echo"));
  EXPECT_FALSE(one->matches("everything", "get-sum"));
  EXPECT_FALSE(mcp_selector::parse("mcp:fs"));
  EXPECT_FALSE(mcp_selector::parse("mcp:/x"));
  EXPECT_FALSE(mcp_selector::parse("calculator"));
}
