#pragma once

#include "runtime/llm.hpp"

#include <nlohmann/json_fwd.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace troupe::runtime {

/// OpenAI's usage object: prompt, completion and total tokens.
nlohmann::json usage_to_json(const usage& u);

/// Encodes a request body for `POST /chat/completions`, with `stream: true`
/// and `stream_options.include_usage` when `stream` is set.
std::string encode_chat_request(const chat_request& req, bool stream);

/// Parses a request body received by an OpenAI-compatible server (the
/// simulator, the gateway's `/v1/chat/completions`). Sets `error` on failure.
std::optional<chat_request> decode_chat_request(std::string_view body, bool& stream,
                                                std::string& error);

/// Parses the JSON of one `data:` line of a streaming response. Tolerates
/// `choices` null or empty (usage-only final chunk). Sets `error` on failure.
std::optional<chat_chunk> decode_chat_chunk(std::string_view data, std::string& error);

/// Encodes one streaming chunk (server side).
std::string encode_chat_chunk(const std::string& id, const std::string& model,
                              const chat_chunk& chunk);

/// Encodes a non-streaming `chat.completion` response body.
std::string encode_chat_completion(const std::string& id, const std::string& model,
                                   const chat_result& result);

/// Parses a non-streaming `chat.completion` body.
std::optional<chat_result> decode_chat_completion(std::string_view body, std::string& error);

} // namespace troupe::runtime
