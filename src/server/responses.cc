// The response side of protocol.h: OpenAI's response, chunk, usage and logprobs objects.
#include "engine/token_text.h"
#include "server/protocol.h"

namespace vlmforge::server {
using nlohmann::json;

json usage_json(size_t prompt_tokens, size_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

json chat_logprobs(const tokenizer::Tokenizer& tokenizer, std::span<const TokenLogprob> logprobs, bool with_token_ids) {
  auto entry = [&](int32_t id, double logprob) {
    // As OpenAI: the token's text (a partial UTF-8 character shows as U+FFFD) and its exact bytes.
    const std::string_view raw = generated_token_bytes(tokenizer, id);
    json bytes = json::array();
    for (unsigned char c : raw) bytes.push_back(c);
    json out{{"token", display_text(raw)}, {"logprob", logprob}, {"bytes", bytes}};
    if (with_token_ids) out["id"] = id;
    return out;
  };
  json content = json::array();
  for (const auto& lp : logprobs) {
    json item = entry(lp.id, lp.logprob);
    json top = json::array();
    for (const auto& [id, logprob] : lp.top) top.push_back(entry(id, logprob));
    item["top_logprobs"] = top;
    content.push_back(item);
  }
  return {{"content", content}};
}

json completion_logprobs(const tokenizer::Tokenizer& tokenizer, std::span<const TokenLogprob> logprobs,
                         size_t text_offset) {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
  for (const auto& lp : logprobs) {
    const std::string text = display_text(generated_token_bytes(tokenizer, lp.id));
    tokens.push_back(text);
    token_logprobs.push_back(lp.logprob);
    json alternatives = json::object();
    for (const auto& [id, logprob] : lp.top) alternatives[display_text(generated_token_bytes(tokenizer, id))] = logprob;
    top.push_back(alternatives);
    offsets.push_back(text_offset);
    text_offset += text.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
}

namespace {

json base_object(const CompletionRequest& request, const ResponseMeta& meta, bool chunk) {
  const bool chat = request.endpoint == Endpoint::kChatCompletions;
  return {{"id", meta.id},
          {"object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
          {"created", meta.created},
          {"model", meta.model}};
}

json finish_value(const std::string& reason) { return reason.empty() ? json(nullptr) : json(reason); }

}  // namespace

json final_response(const CompletionRequest& request, const ResponseMeta& meta, const tokenizer::Tokenizer& tokenizer,
                    const GenerationResult& result) {
  json out = base_object(request, meta, false);
  json choice = {{"index", 0}};
  if (request.endpoint == Endpoint::kChatCompletions) {
    choice["message"] = {{"role", "assistant"}, {"content", result.text}};
    choice["logprobs"] = request.logprobs ? chat_logprobs(tokenizer, result.logprobs) : json(nullptr);
  } else {
    choice["text"] = result.text;
    choice["logprobs"] = request.logprobs ? completion_logprobs(tokenizer, result.logprobs, 0) : json(nullptr);
  }
  choice["finish_reason"] = finish_value(result.finish_reason);
  out["choices"] = json::array({choice});
  out["usage"] = usage_json(result.prompt_tokens, result.tokens.size());
  return out;
}

json stream_chunk(const CompletionRequest& request, const ResponseMeta& meta, const tokenizer::Tokenizer& tokenizer,
                  bool first, std::string_view text, std::span<const TokenLogprob> logprobs, size_t text_offset,
                  const std::string& finish_reason) {
  json out = base_object(request, meta, true);
  json choice = {{"index", 0}};
  if (request.endpoint == Endpoint::kChatCompletions) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (first || !text.empty()) delta["content"] = std::string(text);
    choice["delta"] = delta;
    choice["logprobs"] = request.logprobs && !logprobs.empty() ? chat_logprobs(tokenizer, logprobs) : json(nullptr);
  } else {
    choice["text"] = std::string(text);
    choice["logprobs"] =
        request.logprobs && !logprobs.empty() ? completion_logprobs(tokenizer, logprobs, text_offset) : json(nullptr);
  }
  choice["finish_reason"] = finish_value(finish_reason);
  out["choices"] = json::array({choice});
  if (request.include_usage) out["usage"] = nullptr;
  return out;
}

json usage_chunk(const CompletionRequest& request, const ResponseMeta& meta, size_t prompt_tokens,
                 size_t completion_tokens) {
  json out = base_object(request, meta, true);
  out["choices"] = json::array();
  out["usage"] = usage_json(prompt_tokens, completion_tokens);
  return out;
}

std::string sse_event(const json& data) {
  return "data: " + data.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

}  // namespace vlmforge::server
