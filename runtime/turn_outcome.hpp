#pragma once

#include "runtime/errc.hpp"
#include "runtime/llm.hpp"

#include <optional>
#include <string>
#include <variant>

namespace troupe::runtime {

/// How a finished turn ends up in the request log and the job queue: the
/// answer, usage and step count, or the failure. One codec for every writer
/// (agents, the job runner) and reader (replays, job attach, REST).
struct turn_outcome {
  std::string answer;
  usage tokens;
  int64_t steps = 0;
};

/// `{"answer","usage":{"prompt_tokens","completion_tokens"},"steps"}`.
std::string encode_outcome(const turn_outcome& done);
/// `{"code","message"}`.
std::string encode_outcome(const failure& failed);

/// Reads what `encode_outcome` wrote; `done` says which of the two it is.
/// Nothing if the text is not a JSON object.
std::optional<std::variant<turn_outcome, failure>> decode_outcome(bool done,
                                                                  const std::string& text);

} // namespace troupe::runtime
