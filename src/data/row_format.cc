#include "data/row_format.h"

namespace vlmforge::data {

using nlohmann::ordered_json;

std::string_view row_format_name(RowFormat format) {
  switch (format) {
    case RowFormat::kMessages: return "messages";
    case RowFormat::kSharegpt: return "sharegpt";
    case RowFormat::kQueryResponse: return "query-response";
    case RowFormat::kAlpaca: return "alpaca";
    case RowFormat::kUnknown: break;
  }
  return "unknown";
}

namespace {

ordered_json message(std::string_view role, const ordered_json& content) {
  ordered_json m = ordered_json::object();
  m["role"] = role;
  m["content"] = content;
  return m;
}

const ordered_json* find(const ordered_json& row, const char* key) {
  const auto it = row.find(key);
  return it == row.end() || it->is_null() ? nullptr : &*it;
}

// sharegpt speakers, as swift maps them (human/gpt plus the role names themselves).
std::string_view sharegpt_role(std::string_view from) {
  if (from == "human" || from == "user") return "user";
  if (from == "gpt" || from == "assistant" || from == "bot") return "assistant";
  if (from == "system") return "system";
  if (from == "function_call" || from == "tool_call") return "tool_call";
  if (from == "observation" || from == "tool" || from == "tool_response") return "tool_response";
  return {};
}

void add_media(const ordered_json& value, MediaKind kind, std::string_view key, NormalizedRow& out,
               std::vector<RowProblem>& problems) {
  auto add_one = [&](const ordered_json& entry, size_t index) {
    MediaRef ref{kind, {}, false};
    if (entry.is_string()) {
      ref.path = entry.get<std::string>();
      ref.inline_data = ref.path.starts_with("data:") || ref.path.size() > 4096;  // base64 payloads
    } else if (entry.is_object() && entry.contains("path") && entry["path"].is_string()) {
      ref.path = entry["path"].get<std::string>();
    } else if (entry.is_object() && entry.contains("bytes") && !entry["bytes"].is_null()) {
      ref.inline_data = true;
    } else {
      problems.push_back({FindingCode::kBadMediaEntry,
                          std::string(key) + "[" + std::to_string(index) + "] is " + entry.dump().substr(0, 80)});
      return;
    }
    if (!ref.inline_data && ref.path.empty()) {
      problems.push_back({FindingCode::kBadMediaEntry, std::string(key) + "[" + std::to_string(index) + "] is empty"});
      return;
    }
    out.media.push_back(std::move(ref));
  };
  if (value.is_array()) {
    for (size_t i = 0; i < value.size(); ++i) add_one(value[i], i);
  } else {
    add_one(value, 0);  // swift accepts a single string where a list is expected
  }
}

void normalize_messages(const ordered_json& list, bool sharegpt, NormalizedRow& out, std::vector<RowProblem>& problems) {
  for (size_t i = 0; i < list.size(); ++i) {
    const ordered_json& m = list[i];
    const char* role_key = sharegpt ? "from" : "role";
    const char* content_key = sharegpt ? "value" : "content";
    if (!m.is_object()) {
      problems.push_back({FindingCode::kUnknownRole, "message " + std::to_string(i) + " is not an object"});
      continue;
    }
    const ordered_json* role = find(m, role_key);
    if (role == nullptr || !role->is_string()) {
      problems.push_back({FindingCode::kUnknownRole, "message " + std::to_string(i) + " has no \"" + role_key + "\""});
      continue;
    }
    std::string_view name = role->get_ref<const std::string&>();
    if (sharegpt) {
      const std::string_view mapped = sharegpt_role(name);
      if (mapped.empty()) {
        problems.push_back({FindingCode::kUnknownRole, "message " + std::to_string(i) + " is from \"" + std::string(name) + "\""});
        continue;
      }
      name = mapped;
    } else if (name != "system" && name != "user" && name != "assistant" && name != "tool" && name != "tool_call" &&
               name != "tool_response") {
      problems.push_back({FindingCode::kUnknownRole, "message " + std::to_string(i) + " has role \"" + std::string(name) + "\""});
      continue;
    }
    const auto content = m.find(content_key);
    out.messages.push_back(message(name, content == m.end() ? ordered_json() : *content));
  }
}

}  // namespace

NormalizedRow normalize_row(const ordered_json& row, std::vector<RowProblem>& problems) {
  NormalizedRow out;
  if (find(row, "messages") != nullptr) {
    out.format = RowFormat::kMessages;
  } else if (find(row, "conversations") != nullptr) {
    out.format = RowFormat::kSharegpt;
  } else if (find(row, "query") != nullptr || find(row, "response") != nullptr) {
    out.format = RowFormat::kQueryResponse;
  } else if (find(row, "instruction") != nullptr || find(row, "output") != nullptr) {
    out.format = RowFormat::kAlpaca;
  }
  switch (out.format) {
    case RowFormat::kMessages:
    case RowFormat::kSharegpt: {
      const bool sharegpt = out.format == RowFormat::kSharegpt;
      const ordered_json& list = *find(row, sharegpt ? "conversations" : "messages");
      if (!list.is_array()) {
        problems.push_back({FindingCode::kMissingMessages,
                            std::string(sharegpt ? "\"conversations\"" : "\"messages\"") + " is not a list"});
        break;
      }
      normalize_messages(list, sharegpt, out, problems);
      break;
    }
    case RowFormat::kQueryResponse: {
      if (const ordered_json* system = find(row, "system")) out.messages.push_back(message("system", *system));
      if (const ordered_json* history = find(row, "history")) {
        if (!history->is_array()) {
          problems.push_back({FindingCode::kMissingMessages, "\"history\" is not a list of [query, response] pairs"});
        } else {
          for (const auto& pair : *history) {
            if (!pair.is_array() || pair.size() != 2) {
              problems.push_back({FindingCode::kMissingMessages, "a \"history\" entry is not a [query, response] pair"});
              continue;
            }
            out.messages.push_back(message("user", pair[0]));
            out.messages.push_back(message("assistant", pair[1]));
          }
        }
      }
      if (const ordered_json* query = find(row, "query")) out.messages.push_back(message("user", *query));
      if (const ordered_json* response = find(row, "response")) out.messages.push_back(message("assistant", *response));
      break;
    }
    case RowFormat::kAlpaca: {
      if (const ordered_json* system = find(row, "system")) out.messages.push_back(message("system", *system));
      const ordered_json* instruction = find(row, "instruction");
      const ordered_json* input = find(row, "input");
      // swift joins instruction and input with a newline into the user turn.
      if (instruction != nullptr && input != nullptr && instruction->is_string() && input->is_string()) {
        const auto& a = instruction->get_ref<const std::string&>();
        const auto& b = input->get_ref<const std::string&>();
        out.messages.push_back(message("user", a.empty() ? b : b.empty() ? a : a + "\n" + b));
      } else if (instruction != nullptr || input != nullptr) {
        out.messages.push_back(message("user", instruction != nullptr ? *instruction : *input));
      }
      if (const ordered_json* output = find(row, "output")) out.messages.push_back(message("assistant", *output));
      break;
    }
    case RowFormat::kUnknown:
      problems.push_back({FindingCode::kMissingMessages,
                          "no \"messages\", \"conversations\", \"query\"/\"response\" or \"instruction\"/\"output\""});
      break;
  }
  if (const ordered_json* images = find(row, "images")) add_media(*images, MediaKind::kImage, "images", out, problems);
  if (const ordered_json* image = find(row, "image")) {
    out.singular_image_key = true;
    add_media(*image, MediaKind::kImage, "image", out, problems);
  }
  if (const ordered_json* videos = find(row, "videos")) add_media(*videos, MediaKind::kVideo, "videos", out, problems);
  if (const ordered_json* audios = find(row, "audios")) add_media(*audios, MediaKind::kAudio, "audios", out, problems);
  return out;
}

}  // namespace vlmforge::data
