#include "tokenizer/chat_template.h"

#include <algorithm>

#include "tokenizer/python_json.h"
#include "util/error.h"

namespace vlmforge::tokenizer {
namespace {

using nlohmann::ordered_json;

constexpr std::string_view kQwen2_5DefaultSystem = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
constexpr std::string_view kQwen2_5VlDefaultSystem = "You are a helpful assistant.";
constexpr std::string_view kImagePlaceholder = "<|vision_start|><|image_pad|><|vision_end|>";
constexpr std::string_view kVideoPlaceholder = "<|vision_start|><|video_pad|><|vision_end|>";

std::string where(size_t index) { return "messages[" + std::to_string(index) + "]"; }

// What Jinja's {{ value }} prints for a JSON scalar (Python's str()).
std::string jinja_text(const ordered_json& value, const std::string& what) {
  switch (value.type()) {
    case ordered_json::value_t::string: return value.get<std::string>();
    case ordered_json::value_t::boolean: return value.get<bool>() ? "True" : "False";
    case ordered_json::value_t::null: return "None";
    case ordered_json::value_t::number_float: return python_json_dumps(value);
    case ordered_json::value_t::number_integer:
    case ordered_json::value_t::number_unsigned: return value.dump();
    default: throw Error(what + ": expected text, got " + std::string(value.type_name()));
  }
}

// Jinja truthiness of a field that may be missing.
bool truthy(const ordered_json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return false;
  if (it->is_boolean()) return it->get<bool>();
  if (it->is_string()) return !it->get_ref<const std::string&>().empty();
  if (it->is_array() || it->is_object()) return !it->empty();
  return it->get<double>() != 0;
}

const std::string& role_of(const ordered_json& message, size_t index) {
  if (!message.is_object()) throw Error(where(index) + ": expected an object with \"role\" and \"content\"");
  const auto it = message.find("role");
  if (it == message.end() || !it->is_string()) throw Error(where(index) + ".role: missing or not a string");
  return it->get_ref<const std::string&>();
}

// Content joined with `+` in the Qwen2.5 template: Jinja raises unless it is a string.
const std::string& string_content(const ordered_json& message, size_t index) {
  const auto it = message.find("content");
  if (it == message.end() || !it->is_string()) {
    throw Error(where(index) + ".content: the Qwen2.5 template needs a string here (got " +
                std::string(it == message.end() ? "nothing" : it->type_name()) + ")");
  }
  return it->get_ref<const std::string&>();
}

std::string render_qwen2_5(const ChatRequest& request, const ChatOptions& options) {
  const ordered_json& messages = request.messages;
  if (messages.empty()) throw Error("messages: the Qwen2.5 template needs at least one message");
  const bool first_is_system = role_of(messages[0], 0) == "system";
  std::string out;
  if (request.tools.is_array() && !request.tools.empty()) {
    out += "<|im_start|>system\n";
    out += first_is_system ? jinja_text(messages[0].value("content", ordered_json()), where(0) + ".content")
                           : std::string(kQwen2_5DefaultSystem);
    out += "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
           "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
    for (const auto& tool : request.tools) out += "\n" + python_json_dumps(tool);
    out += "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
           "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
           "<args-json-object>}\n</tool_call><|im_end|>\n";
  } else if (first_is_system) {
    out += "<|im_start|>system\n" + string_content(messages[0], 0) + "<|im_end|>\n";
  } else {
    out += "<|im_start|>system\n" + std::string(kQwen2_5DefaultSystem) + "<|im_end|>\n";
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const ordered_json& message = messages[i];
    const std::string& role = role_of(message, i);
    const bool has_tool_calls = truthy(message, "tool_calls");
    if (role == "user" || (role == "system" && i > 0) || (role == "assistant" && !has_tool_calls)) {
      out += "<|im_start|>" + role + "\n" + string_content(message, i) + "<|im_end|>\n";
    } else if (role == "assistant") {
      out += "<|im_start|>assistant";
      if (truthy(message, "content")) out += "\n" + string_content(message, i);
      const ordered_json& calls = message["tool_calls"];
      if (!calls.is_array()) throw Error(where(i) + ".tool_calls: expected an array");
      for (size_t c = 0; c < calls.size(); ++c) {
        const std::string call_where = where(i) + ".tool_calls[" + std::to_string(c) + "]";
        const ordered_json* call = &calls[c];
        if (!call->is_object()) throw Error(call_where + ": expected an object");
        if (call->contains("function")) call = &(*call)["function"];
        if (!call->is_object() || !call->contains("name") || !call->contains("arguments")) {
          throw Error(call_where + ": needs \"name\" and \"arguments\" (directly or under \"function\")");
        }
        out += "\n<tool_call>\n{\"name\": \"" + jinja_text((*call)["name"], call_where + ".name") +
               "\", \"arguments\": " + python_json_dumps((*call)["arguments"]) + "}\n</tool_call>";
      }
      out += "<|im_end|>\n";
    } else if (role == "tool") {
      if (i == 0 || role_of(messages[i - 1], i - 1) != "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n" + jinja_text(message.value("content", ordered_json()), where(i) + ".content") +
             "\n</tool_response>";
      if (i + 1 == messages.size() || role_of(messages[i + 1], i + 1) != "tool") out += "<|im_end|>\n";
    }
    // Other roles are not rendered by the template.
  }
  if (options.add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

std::string render_qwen2_5_vl(const ChatRequest& request, const ChatOptions& options) {
  std::string out;
  size_t images = 0, videos = 0;
  const ordered_json& messages = request.messages;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ordered_json& message = messages[i];
    const std::string& role = role_of(message, i);
    if (i == 0 && role != "system") out += "<|im_start|>system\n" + std::string(kQwen2_5VlDefaultSystem) + "<|im_end|>\n";
    out += "<|im_start|>" + role + "\n";
    const auto content = message.find("content");
    if (content != message.end() && content->is_string()) {
      out += content->get<std::string>() + "<|im_end|>\n";
      continue;
    }
    // A missing content iterates as empty in Jinja; anything but a list of parts would raise.
    if (content != message.end() && !content->is_array()) {
      throw Error(where(i) + ".content: expected a string or a list of parts, got " + content->type_name());
    }
    if (content != message.end()) {
      for (size_t p = 0; p < content->size(); ++p) {
        const ordered_json& part = (*content)[p];
        const std::string part_where = where(i) + ".content[" + std::to_string(p) + "]";
        if (!part.is_object()) throw Error(part_where + ": expected an object such as {\"type\": \"text\", ...}");
        const std::string type = part.contains("type") && part["type"].is_string() ? part["type"].get<std::string>() : "";
        if (type == "image" || part.contains("image") || part.contains("image_url")) {
          ++images;
          if (options.add_vision_id) out += "Picture " + std::to_string(images) + ": ";
          out += kImagePlaceholder;
        } else if (type == "video" || part.contains("video")) {
          ++videos;
          if (options.add_vision_id) out += "Video " + std::to_string(videos) + ": ";
          out += kVideoPlaceholder;
        } else if (part.contains("text")) {
          out += jinja_text(part["text"], part_where + ".text");
        }
      }
    }
    out += "<|im_end|>\n";
  }
  if (options.add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

// Swift's string contents with <image>/<video> tags -> Hugging Face content parts.
void expand_swift_media_tags(ordered_json& messages, const ordered_json& images, const ordered_json& videos) {
  static constexpr std::string_view kImageTag = "<image>", kVideoTag = "<video>";
  const auto count_tags = [&](std::string_view tag) {
    size_t count = 0;
    for (const auto& message : messages) {
      if (!message.is_object() || !message.contains("content") || !message["content"].is_string()) continue;
      const std::string& text = message["content"].get_ref<const std::string&>();
      for (size_t pos = text.find(tag); pos != std::string::npos; pos = text.find(tag, pos + tag.size())) ++count;
    }
    return count;
  };
  // Like swift: media without any tag in the conversation go in front of the first user message.
  for (const auto& [tag, media] : {std::pair{kImageTag, &images}, std::pair{kVideoTag, &videos}}) {
    if (media->empty() || count_tags(tag) > 0) continue;
    for (auto& message : messages) {
      if (message.is_object() && message.value("role", "") == "user" && message["content"].is_string()) {
        std::string prefix;
        for (size_t k = 0; k < media->size(); ++k) prefix += tag;
        message["content"] = prefix + message["content"].get<std::string>();
        break;
      }
    }
  }
  const size_t image_tags = count_tags(kImageTag), video_tags = count_tags(kVideoTag);
  if (image_tags != images.size() || video_tags != videos.size()) {
    throw Error("the messages have " + std::to_string(image_tags) + " <image> and " + std::to_string(video_tags) +
                " <video> tags but the request lists " + std::to_string(images.size()) + " images and " +
                std::to_string(videos.size()) + " videos");
  }
  if (image_tags + video_tags == 0) return;
  size_t next_image = 0, next_video = 0;
  for (auto& message : messages) {
    if (!message.is_object() || !message.contains("content") || !message["content"].is_string()) continue;
    const std::string text = message["content"].get<std::string>();
    if (text.find(kImageTag) == std::string::npos && text.find(kVideoTag) == std::string::npos) continue;
    ordered_json parts = ordered_json::array();
    size_t pos = 0;
    while (pos <= text.size()) {
      const size_t image_at = text.find(kImageTag, pos), video_at = text.find(kVideoTag, pos);
      const size_t tag_at = std::min(image_at, video_at);
      const size_t text_end = tag_at == std::string::npos ? text.size() : tag_at;
      if (text_end > pos) parts.push_back({{"type", "text"}, {"text", text.substr(pos, text_end - pos)}});
      if (tag_at == std::string::npos) break;
      if (tag_at == image_at) {
        parts.push_back({{"type", "image"}, {"image", images[next_image++]}});
        pos = tag_at + kImageTag.size();
      } else {
        parts.push_back({{"type", "video"}, {"video", videos[next_video++]}});
        pos = tag_at + kVideoTag.size();
      }
    }
    message["content"] = std::move(parts);
  }
}

}  // namespace

ChatTemplateKind parse_chat_template_kind(std::string_view name) {
  if (name == "qwen2.5" || name == "qwen2_5") return ChatTemplateKind::kQwen2_5;
  if (name == "qwen2.5-vl" || name == "qwen2_5_vl") return ChatTemplateKind::kQwen2_5Vl;
  throw UsageError("unknown chat template \"" + std::string(name) + "\" (expected qwen2.5 or qwen2.5-vl)");
}

ChatRequest parse_chat_request(const ordered_json& request) {
  ChatRequest chat;
  if (request.is_array()) {
    chat.messages = request;
    return chat;
  }
  if (!request.is_object() || !request.contains("messages") || !request["messages"].is_array()) {
    throw Error("a chat request is a JSON array of messages or an object with a \"messages\" array");
  }
  chat.messages = request["messages"];
  if (request.contains("tools") && !request["tools"].is_null()) {
    if (!request["tools"].is_array()) throw Error("tools: expected an array of function schemas");
    chat.tools = request["tools"];
  }
  const auto media_list = [&](const char* key) {
    if (!request.contains(key) || request[key].is_null()) return ordered_json::array();
    if (!request[key].is_array()) throw Error(std::string(key) + ": expected an array");
    return request[key];
  };
  expand_swift_media_tags(chat.messages, media_list("images"), media_list("videos"));
  return chat;
}

std::string render_chat(ChatTemplateKind kind, const ChatRequest& request, const ChatOptions& options) {
  if (!request.messages.is_array()) throw Error("messages: expected an array");
  return kind == ChatTemplateKind::kQwen2_5 ? render_qwen2_5(request, options) : render_qwen2_5_vl(request, options);
}

}  // namespace vlmforge::tokenizer
