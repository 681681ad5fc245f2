#include "runtime/sse_parser.hpp"

#include <gtest/gtest.h>

#include <vector>

using namespace troupe::runtime;

namespace {

std::vector<sse_event> parse_in_pieces(const std::string& stream, size_t piece) {
  std::vector<sse_event> out;
  sse_parser p{[&](sse_event&& ev) { out.push_back(std::move(ev)); }};
  for (size_t i = 0; i < stream.size(); i += piece)
    p.feed(std::string_view{stream}.substr(i, piece));
  return out;
}

} // namespace

TEST(SseParser, SameEventsWhateverTheSplit) {
  std::string stream = ": keep-alive\r\n\r\n"
                       "data: {\"a\":1}\r\n\r\n"
                       "event: update\ndata: line1\ndata: line2\nid: 7\n\n"
                       "data:nospace\r\r"
                       "data: [DONE]\n\n";
  for (size_t piece = 1; piece <= stream.size(); ++piece) {
    auto events = parse_in_pieces(stream, piece);
    ASSERT_EQ(events.size(), 4u) << "piece size " << piece;
    EXPECT_EQ(events[0].data, "{\"a\":1}");
    EXPECT_EQ(events[1].event, "update");
    EXPECT_EQ(events[1].data, "line1\nline2");
    EXPECT_EQ(events[1].id, "7");
    EXPECT_EQ(events[2].data, "nospace");
    EXPECT_EQ(events[3].data, "[DONE]");
  }
}

TEST(SseParser, CommentsAndEmptyEventsDispatchNothing) {
  auto events = parse_in_pieces(": ping\n\n\n: another\n\nevent: x\n\n", 3);
  EXPECT_TRUE(events.empty());
}

TEST(SseParser, IncompleteEventIsHeldUntilBlankLine) {
  std::vector<sse_event> out;
  sse_parser p{[&](sse_event&& ev) { out.push_back(std::move(ev)); }};
  p.feed("data: par");
  EXPECT_TRUE(out.empty());
  p.feed("tial\n");
  EXPECT_TRUE(out.empty());
  p.feed("\n");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "partial");
}

TEST(SseParser, OverlongLineStopsTheParser) {
  std::vector<sse_event> out;
  sse_parser p{[&](sse_event&& ev) { out.push_back(std::move(ev)); }, 16};
  EXPECT_FALSE(p.feed("data: " + std::string(100, 'x')));
  EXPECT_TRUE(p.overflowed());
  EXPECT_FALSE(p.feed("\n\n"));
  EXPECT_TRUE(out.empty());
}
