#include "data/token_counter.h"

#include "io/json_file.h"
#include "util/error.h"

namespace vlmforge::data {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

TokenCounter TokenCounter::load(const fs::path& model_dir) {
  const fs::path tokenizer_json = model_dir / "tokenizer.json";
  if (!fs::exists(tokenizer_json)) throw UsageError("--model: no tokenizer.json in " + model_dir.string());
  auto kind = tokenizer::ChatTemplateKind::kQwen2_5;
  const fs::path config = model_dir / "config.json";
  if (fs::exists(config)) {
    const std::string type = read_json_file(config).value("model_type", "");
    if (type == "qwen2_5_vl" || type == "qwen2_vl") kind = tokenizer::ChatTemplateKind::kQwen2_5Vl;
  }
  return TokenCounter(tokenizer::Tokenizer::load(tokenizer_json), kind);
}

namespace {

size_t count(std::string_view text, std::string_view token) {
  size_t n = 0;
  for (size_t at = text.find(token); at != std::string_view::npos; at = text.find(token, at + token.size())) ++n;
  return n;
}

}  // namespace

std::optional<size_t> TokenCounter::text_tokens(const NormalizedRow& row) const {
  ordered_json messages = ordered_json::array();
  for (const Message& m : row.messages) {
    ordered_json content = m.text                  ? ordered_json(*m.text)
                           : m.content_json.empty() ? ordered_json()
                                                    : ordered_json::parse(m.content_json);
    messages.push_back({{"role", m.role}, {"content", std::move(content)}});
  }
  ordered_json request = ordered_json::object();
  request["messages"] = std::move(messages);
  ordered_json images = ordered_json::array(), videos = ordered_json::array();
  for (const MediaRef& m : row.media) {
    if (m.kind == MediaKind::kImage) images.push_back(m.path);
    if (m.kind == MediaKind::kVideo) videos.push_back(m.path);
  }
  request["images"] = images;
  request["videos"] = videos;
  try {
    const std::string text = tokenizer::render_chat(kind_, tokenizer::parse_chat_request(request), {});
    const size_t tokens = tokenizer_.encode(text).size();
    const size_t placeholders = count(text, "<|image_pad|>") + count(text, "<|video_pad|>");
    return tokens - std::min(tokens, placeholders);
  } catch (const Error&) {  // rows the template rejects are reported by the row checks
    return std::nullopt;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

}  // namespace vlmforge::data
