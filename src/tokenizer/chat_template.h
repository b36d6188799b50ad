#pragma once
// The chat templates of Qwen2.5 (text, with tools) and Qwen2.5-VL, rendered byte for byte as the
// Jinja `chat_template` in those models' tokenizer_config.json renders them under transformers'
// apply_chat_template. Written out in C++ rather than interpreted, so each branch of the Jinja
// source appears here once (see docs/tokenizer.md); where Jinja would raise, we throw Error.
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace vlmforge::tokenizer {

enum class ChatTemplateKind {
  kQwen2_5,    // Qwen2.5-*-Instruct: default system "You are Qwen, created by Alibaba Cloud. ..."
  kQwen2_5Vl,  // Qwen2.5-VL-*-Instruct: default system "You are a helpful assistant."
};

// "qwen2.5" or "qwen2.5-vl"; throws UsageError otherwise.
ChatTemplateKind parse_chat_template_kind(std::string_view name);

struct ChatRequest {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();  // Hugging Face message form
  nlohmann::ordered_json tools;                                       // null or an array of schemas
};

struct ChatOptions {
  bool add_generation_prompt = false;
  bool add_vision_id = false;  // Qwen2.5-VL: "Picture N: " before each image
};

// Accepts a message array, or an object {"messages": [...], "tools": [...]}, or ms-swift's form:
// string contents with <image> / <video> tags plus top-level "images" / "videos" lists. Swift's
// tags become content parts ({"type": "image", "image": ...}) in order; as in swift, when no
// message has a tag, the tags are put at the start of the first user message.
ChatRequest parse_chat_request(const nlohmann::ordered_json& request);

std::string render_chat(ChatTemplateKind kind, const ChatRequest& request, const ChatOptions& options);

}  // namespace vlmforge::tokenizer
