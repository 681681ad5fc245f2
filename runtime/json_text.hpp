#pragma once

#include <string>
#include <string_view>

namespace troupe::runtime {

/// Appends `s` to `out` as a JSON string literal (quotes included), escaped
/// as nlohmann's `dump()` escapes it. Invalid UTF-8 becomes U+FFFD rather
/// than an exception: text from models and tools is not ours to reject.
///
/// For the hot encoders (model requests, token events), which write JSON
/// text directly instead of building a `nlohmann::json` tree per call: the
/// tree cost a tenth of a millisecond on the path to a first token.
void append_json_string(std::string& out, std::string_view s);

} // namespace troupe::runtime
