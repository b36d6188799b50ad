#include "cli/infer_session.h"

#include <sys/resource.h>

#include "io/json_file.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace vlmforge::cli {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void add_ids(const json& value, std::vector<int32_t>& out) {
  if (value.is_number_integer()) out.push_back(value.get<int32_t>());
  else if (value.is_array())
    for (const auto& v : value)
      if (v.is_number_integer()) out.push_back(v.get<int32_t>());
}

}  // namespace

InferSession::InferSession(const fs::path& model_dir, size_t threads, const std::vector<fs::path>& adapter_dirs)
    : model(std::make_unique<Qwen2Model>(model_dir, threads, adapter_dirs)),
      tokenizer([&] {
        if (!fs::exists(model_dir / "tokenizer.json"))
          throw Error(model_dir.string() + ": no tokenizer.json (copy the base model's tokenizer files next to the weights)");
        return tokenizer::Tokenizer::load(model_dir / "tokenizer.json");
      }()),
      chat_kind(model->config().is_vision_language() ? tokenizer::ChatTemplateKind::kQwen2_5Vl
                                                     : tokenizer::ChatTemplateKind::kQwen2_5) {
  defaults.stop_ids.push_back(model->config().eos_token_id);
  // transformers' GenerationConfig defaults: greedy unless do_sample.
  if (fs::exists(model_dir / "generation_config.json")) {
    const json g = read_json_file(model_dir / "generation_config.json");
    if (g.value("do_sample", false)) {
      defaults.sampling.temperature = g.value("temperature", 1.0f);
      defaults.sampling.top_k = g.value("top_k", 50);
      defaults.sampling.top_p = g.value("top_p", 1.0f);
    }
    defaults.sampling.repetition_penalty = g.value("repetition_penalty", 1.0f);
    if (g.contains("eos_token_id")) add_ids(g["eos_token_id"], defaults.stop_ids);
  }
  for (const char* special : {"<|im_end|>", "<|endoftext|>"})
    if (const auto id = tokenizer.token_id(special)) defaults.stop_ids.push_back(*id);
}

std::vector<int32_t> InferSession::encode_chat(const nlohmann::ordered_json& request) const {
  tokenizer::ChatOptions options;
  options.add_generation_prompt = true;
  const std::string prompt = tokenizer::render_chat(chat_kind, tokenizer::parse_chat_request(request), options);
  return tokenizer.encode(prompt);
}

json openai_logprobs(const tokenizer::Tokenizer& tokenizer, const std::vector<TokenLogprob>& logprobs) {
  auto entry = [&](int32_t id, double logprob) {
    // As OpenAI: the token's text (a partial UTF-8 character shows as U+FFFD) and its exact bytes.
    const std::string_view raw = generated_token_bytes(tokenizer, id);
    json bytes = json::array();
    for (unsigned char c : raw) bytes.push_back(c);
    return json{{"token", display_text(raw)}, {"logprob", logprob}, {"bytes", bytes}};
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

std::string display_text(std::string_view bytes) {
  std::string out;
  tokenizer::append_replacing_invalid_utf8(bytes, out, false);
  return out;
}

uint64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<uint64_t>(usage.ru_maxrss) * 1024;
}

}  // namespace vlmforge::cli
