#pragma once

#include "runtime/llm.hpp"

#include <string>

namespace troupe::runtime {

/// How the stores write one history message: a compact JSON object
/// (role, content, tool_calls, tool_call_id, name). Shared by every store
/// so a history moves between them unchanged.
std::string encode_stored_message(const chat_message& m);

/// The inverse; a malformed entry decodes to an empty message rather than
/// failing the whole history.
chat_message decode_stored_message(const std::string& text);

} // namespace troupe::runtime
