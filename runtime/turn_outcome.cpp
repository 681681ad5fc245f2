#include "runtime/turn_outcome.hpp"

#include <nlohmann/json.hpp>

namespace troupe::runtime {

using nlohmann::json;

std::string encode_outcome(const turn_outcome& done) {
  json j{{"answer", done.answer},
         {"usage",
          {{"prompt_tokens", done.tokens.prompt_tokens},
           {"completion_tokens", done.tokens.completion_tokens}}},
         {"steps", done.steps}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string encode_outcome(const failure& failed) {
  json j{{"code", to_string(failed.code)}, {"message", failed.message}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<std::variant<turn_outcome, failure>> decode_outcome(bool done,
                                                                  const std::string& text) {
  auto j = json::parse(text, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  if (!done) return failure{errc_from_string(j.value("code", "internal")), j.value("message", "")};
  turn_outcome out;
  out.answer = j.value("answer", "");
  if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
    out.tokens.prompt_tokens = u->value("prompt_tokens", int64_t{0});
    out.tokens.completion_tokens = u->value("completion_tokens", int64_t{0});
  }
  out.steps = j.value("steps", int64_t{0});
  return out;
}

} // namespace troupe::runtime
