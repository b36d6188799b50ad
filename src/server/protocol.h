#pragma once
// The OpenAI request and response JSON of `vlmforge deploy`: requests are checked field by field
// (types, ranges, and anything we do not support is a 400 naming the parameter, never silently
// ignored), image_url parts are fetched under a safety policy, and responses are built in the
// exact shapes of OpenAI's chat.completion / chat.completion.chunk / text_completion objects.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/sequence.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "vision/image_info.h"

namespace vlmforge::server {

// An error returned to the client as {"error": {"message", "type", "param", "code"}}.
class ApiError : public Error {
 public:
  ApiError(int status, std::string message, std::string param = {}, std::string code = {});
  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  // OpenAI's error type for the status ("invalid_request_error", "authentication_error", ...).
  std::string type() const;

 private:
  int status_;
  std::string param_;
  std::string code_;
};

nlohmann::json error_body(const ApiError& error);

// Where image_url parts may come from.
struct MediaPolicy {
  std::filesystem::path allowed_local_media_path;  // empty: no file:// URLs
  size_t max_image_bytes = 20u << 20;              // per image, after base64 decoding
};

// One image of a chat request, read and checked (a known format with sane dimensions).
struct ImageInput {
  std::vector<uint8_t> bytes;
  vision::ImageInfo info;
  std::string source;  // for messages: "data: URL" or the file path
};

// data:image/...;base64,... or file:///path under the policy's directory; remote URLs are refused
// (this server does not fetch from the network). `param` names the field in error messages.
ImageInput load_image_url(std::string_view url, const MediaPolicy& policy, const std::string& param);

// Strict RFC 4648 base64 (padding required, no whitespace); nullopt on any other byte.
std::optional<std::vector<uint8_t>> decode_base64(std::string_view text);

enum class Endpoint { kChatCompletions, kCompletions };

struct CompletionRequest {
  Endpoint endpoint = Endpoint::kChatCompletions;
  std::string model;
  // chat: Hugging Face message form for the chat template; images become {"type": "image"} parts
  // and their bytes are in `images`, in order of appearance.
  nlohmann::ordered_json messages;
  std::vector<ImageInput> images;
  // completions: text, or token ids
  std::string prompt;
  std::vector<int32_t> prompt_ids;
  bool prompt_is_ids = false;

  std::optional<float> temperature, top_p, repetition_penalty;
  std::optional<int> top_k;
  std::optional<size_t> max_tokens;
  std::vector<std::string> stop;
  std::optional<uint64_t> seed;
  bool logprobs = false;
  size_t top_logprobs = 0;
  bool stream = false;
  bool include_usage = false;
};

// Throws ApiError(400) for malformed or unsupported requests.
CompletionRequest parse_request(Endpoint endpoint, const nlohmann::json& body, const MediaPolicy& policy);

// Generation settings for a request: the request's values over `defaults` (generation_config.json),
// max_tokens defaulting to what fits max_model_len. ApiError(400, context_length_exceeded) when
// the prompt plus max_tokens does not fit.
GenerationParams generation_params(const CompletionRequest& request, const GenerationParams& defaults,
                                   size_t prompt_tokens, size_t max_model_len);

// What every response object of one request carries.
struct ResponseMeta {
  std::string id;  // "chatcmpl-..." or "cmpl-..."
  int64_t created = 0;
  std::string model;
};

nlohmann::json usage_json(size_t prompt_tokens, size_t completion_tokens);
// Chat: {"content": [{token, logprob, bytes, top_logprobs}]}; completions: {tokens, token_logprobs,
// top_logprobs, text_offset}. `first` and the text offset say where this slice of tokens starts.
// `with_token_ids` adds each token's "id" (infer's --logprobs output): ids the tokenizer has no
// text for (past its vocabulary) all show as token "".
nlohmann::json chat_logprobs(const tokenizer::Tokenizer& tokenizer, std::span<const TokenLogprob> logprobs,
                             bool with_token_ids = false);
nlohmann::json completion_logprobs(const tokenizer::Tokenizer& tokenizer, std::span<const TokenLogprob> logprobs,
                                   size_t text_offset);

// A whole non-streamed response.
nlohmann::json final_response(const CompletionRequest& request, const ResponseMeta& meta,
                              const tokenizer::Tokenizer& tokenizer, const GenerationResult& result);
// One streamed chunk: text delta (chat: `role` in the first), its tokens' logprobs, and the
// finish reason on the last; usage: null when include_usage (OpenAI sends null until the end).
nlohmann::json stream_chunk(const CompletionRequest& request, const ResponseMeta& meta,
                            const tokenizer::Tokenizer& tokenizer, bool first, std::string_view text,
                            std::span<const TokenLogprob> logprobs, size_t text_offset,
                            const std::string& finish_reason);
// The include_usage chunk that ends a stream: empty choices, the usage.
nlohmann::json usage_chunk(const CompletionRequest& request, const ResponseMeta& meta, size_t prompt_tokens,
                           size_t completion_tokens);
// One server-sent event.
std::string sse_event(const nlohmann::json& data);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

}  // namespace vlmforge::server
