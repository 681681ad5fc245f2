#include "runtime/json_text.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using troupe::runtime::append_json_string;

namespace {

std::string as_json(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

} // namespace

TEST(JsonText, ValidTextIsEscapedAsNlohmannEscapesIt) {
  std::vector<std::string> samples = {"",
                                      "plain",
                                      "say \"hi\"",
                                      "back\\slash",
                                      "tab\tnew\nline\rfeed\fbell\b",
                                      "del \x7f stays",
                                      "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80",
                                      "\xF4\x8F\xBF\xBF max code point"};
  std::string controls;
  for (char c = 0; c < 0x20; ++c)
    controls += c;
  samples.push_back(controls);
  for (auto& s : samples)
    EXPECT_EQ(as_json(s), nlohmann::json(s).dump()) << s;
}

TEST(JsonText, InvalidUtf8BecomesTheReplacementCharacterAndTheRestSurvives) {
  const std::string fffd = "\xEF\xBF\xBD";
  struct sample {
    std::string in;
    std::string decoded;
  };
  std::vector<sample> samples = {
      {"a\xFF"
       "b",
       "a" + fffd + "b"},
      {"\xC0\xAF", fffd + fffd},                       // overlong '/'
      {"\xED\xA0\x80!", fffd + fffd + fffd + "!"},     // a UTF-16 surrogate
      {"x\xE2\x82", "x" + fffd + fffd},                // cut short
      {"\xF4\x90\x80\x80", fffd + fffd + fffd + fffd}, // above U+10FFFF
      {"\x80 lone continuation", fffd + " lone continuation"},
  };
  for (auto& s : samples) {
    auto text = as_json(s.in);
    auto j = nlohmann::json::parse(text, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << text;
    EXPECT_EQ(j.get<std::string>(), s.decoded);
  }
}
