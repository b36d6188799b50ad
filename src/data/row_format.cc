#include "data/row_format.h"

#include <array>

namespace vlmforge::data {

namespace dom = simdjson::dom;

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

std::string_view json_type_name(dom::element value) {
  switch (value.type()) {
    case dom::element_type::OBJECT: return "object";
    case dom::element_type::ARRAY: return "array";
    case dom::element_type::STRING: return "string";
    case dom::element_type::INT64:
    case dom::element_type::UINT64:
    case dom::element_type::DOUBLE: return "number";
    case dom::element_type::BOOL: return "boolean";
    case dom::element_type::NULL_VALUE: break;
  }
  return "null";
}

namespace {

Message message(std::string_view role, std::optional<dom::element> content) {
  Message m{role, std::nullopt, "missing", {}};
  if (!content || content->is_null()) return m;
  if (content->is_string()) {
    m.text.emplace(content->get_string().value_unsafe());
  } else {
    m.content_type = json_type_name(*content);
    m.content_json = simdjson::minify(*content);
  }
  return m;
}

Message text_message(std::string_view role, std::string text) { return Message{role, std::move(text), "string", {}}; }

// The present, non-null members named in `keys`, in one pass over the object (swift treats null
// like absent). Of repeated keys the last counts, as in Python's json module that swift reads
// with (simdjson's at_key would return the first).
template <size_t N>
std::array<std::optional<dom::element>, N> find_all(dom::object object, const std::array<std::string_view, N>& keys) {
  std::array<std::optional<dom::element>, N> found;
  for (const dom::key_value_pair field : object)
    for (size_t k = 0; k < N; ++k)
      if (field.key == keys[k]) found[k] = field.value;
  for (auto& value : found)
    if (value && value->is_null()) value.reset();
  return found;
}

constexpr std::array<std::string_view, 6> kRoles{"system", "user", "assistant", "tool", "tool_call", "tool_response"};

// The static name of a messages-format role; empty when unknown.
std::string_view canonical_role(std::string_view role) {
  for (std::string_view known : kRoles)
    if (role == known) return known;
  return {};
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

void add_media(dom::element value, MediaKind kind, std::string_view key, NormalizedRow& out, std::vector<RowProblem>& problems) {
  auto add_one = [&](dom::element entry, size_t index) {
    MediaRef ref{kind, {}, false};
    dom::object object;
    std::optional<dom::element> path, bytes;
    if (entry.get_object().get(object) == simdjson::SUCCESS) {
      const auto members = find_all<2>(object, {"path", "bytes"});
      path = members[0];
      bytes = members[1];
    }
    if (entry.is_string()) {
      ref.path = entry.get_string().value_unsafe();
      ref.inline_data = ref.path.starts_with("data:") || ref.path.size() > 4096;  // base64 payloads
    } else if (path && path->is_string()) {
      ref.path = path->get_string().value_unsafe();
    } else if (bytes) {
      ref.inline_data = true;
    } else {
      problems.push_back({FindingCode::kBadMediaEntry,
                          std::string(key) + "[" + std::to_string(index) + "] is " + simdjson::minify(entry).substr(0, 80)});
      return;
    }
    if (!ref.inline_data && ref.path.empty()) {
      problems.push_back({FindingCode::kBadMediaEntry, std::string(key) + "[" + std::to_string(index) + "] is empty"});
      return;
    }
    out.media.push_back(std::move(ref));
  };
  dom::array list;
  if (value.get_array().get(list) == simdjson::SUCCESS) {
    size_t i = 0;
    for (dom::element entry : list) add_one(entry, i++);
  } else {
    add_one(value, 0);  // swift accepts a single string where a list is expected
  }
}

void normalize_messages(dom::array list, bool sharegpt, NormalizedRow& out, std::vector<RowProblem>& problems) {
  const std::string_view role_key = sharegpt ? "from" : "role";
  const std::string_view content_key = sharegpt ? "value" : "content";
  size_t i = 0;
  for (dom::element m : list) {
    const size_t index = i++;
    dom::object object;
    if (m.get_object().get(object) != simdjson::SUCCESS) {
      problems.push_back({FindingCode::kUnknownRole, "message " + std::to_string(index) + " is not an object"});
      continue;
    }
    const auto members = find_all<2>(object, {role_key, content_key});
    const std::optional<dom::element>& role = members[0];
    if (!role || !role->is_string()) {
      problems.push_back({FindingCode::kUnknownRole, "message " + std::to_string(index) + " has no \"" + std::string(role_key) + "\""});
      continue;
    }
    const std::string_view name = role->get_string().value_unsafe();
    const std::string_view mapped = sharegpt ? sharegpt_role(name) : canonical_role(name);
    if (mapped.empty()) {
      problems.push_back({FindingCode::kUnknownRole, "message " + std::to_string(index) + (sharegpt ? " is from \"" : " has role \"") +
                                                         std::string(name) + "\""});
      continue;
    }
    // A present null content stays "missing", as an absent one.
    out.messages.push_back(message(mapped, members[1]));
  }
}

}  // namespace

// The members normalize_row reads, looked up together.
enum RowKey { kMessagesKey, kConversationsKey, kQueryKey, kResponseKey, kHistoryKey, kSystemKey, kInstructionKey,
              kInputKey, kOutputKey, kImagesKey, kImageKey, kVideosKey, kAudiosKey, kRowKeyCount };
constexpr std::array<std::string_view, kRowKeyCount> kRowKeys{"messages", "conversations", "query", "response", "history",
                                                              "system", "instruction", "input", "output", "images", "image",
                                                              "videos", "audios"};

NormalizedRow normalize_row(dom::object object, std::vector<RowProblem>& problems) {
  const auto row = find_all(object, kRowKeys);
  NormalizedRow out;
  if (row[kMessagesKey]) {
    out.format = RowFormat::kMessages;
  } else if (row[kConversationsKey]) {
    out.format = RowFormat::kSharegpt;
  } else if (row[kQueryKey] || row[kResponseKey]) {
    out.format = RowFormat::kQueryResponse;
  } else if (row[kInstructionKey] || row[kOutputKey]) {
    out.format = RowFormat::kAlpaca;
  }
  switch (out.format) {
    case RowFormat::kMessages:
    case RowFormat::kSharegpt: {
      const bool sharegpt = out.format == RowFormat::kSharegpt;
      dom::array list;
      if (row[sharegpt ? kConversationsKey : kMessagesKey]->get_array().get(list) != simdjson::SUCCESS) {
        problems.push_back({FindingCode::kMissingMessages,
                            std::string(sharegpt ? "\"conversations\"" : "\"messages\"") + " is not a list"});
        break;
      }
      normalize_messages(list, sharegpt, out, problems);
      break;
    }
    case RowFormat::kQueryResponse: {
      if (const auto system = row[kSystemKey]) out.messages.push_back(message("system", system));
      if (const auto history = row[kHistoryKey]) {
        dom::array pairs;
        if (history->get_array().get(pairs) != simdjson::SUCCESS) {
          problems.push_back({FindingCode::kMissingMessages, "\"history\" is not a list of [query, response] pairs"});
        } else {
          for (dom::element entry : pairs) {
            dom::array pair;
            if (entry.get_array().get(pair) != simdjson::SUCCESS || pair.size() != 2) {
              problems.push_back({FindingCode::kMissingMessages, "a \"history\" entry is not a [query, response] pair"});
              continue;
            }
            out.messages.push_back(message("user", pair.at(0).value_unsafe()));
            out.messages.push_back(message("assistant", pair.at(1).value_unsafe()));
          }
        }
      }
      if (const auto query = row[kQueryKey]) out.messages.push_back(message("user", query));
      if (const auto response = row[kResponseKey]) out.messages.push_back(message("assistant", response));
      break;
    }
    case RowFormat::kAlpaca: {
      if (const auto system = row[kSystemKey]) out.messages.push_back(message("system", system));
      const auto instruction = row[kInstructionKey];
      const auto input = row[kInputKey];
      // swift joins instruction and input with a newline into the user turn.
      if (instruction && input && instruction->is_string() && input->is_string()) {
        const std::string_view a = instruction->get_string().value_unsafe();
        const std::string_view b = input->get_string().value_unsafe();
        out.messages.push_back(text_message("user", a.empty() ? std::string(b) : b.empty() ? std::string(a) : std::string(a) + "\n" + std::string(b)));
      } else if (instruction || input) {
        out.messages.push_back(message("user", instruction ? instruction : input));
      }
      if (const auto output = row[kOutputKey]) out.messages.push_back(message("assistant", output));
      break;
    }
    case RowFormat::kUnknown:
      problems.push_back({FindingCode::kMissingMessages,
                          "no \"messages\", \"conversations\", \"query\"/\"response\" or \"instruction\"/\"output\""});
      break;
  }
  if (const auto images = row[kImagesKey]) add_media(*images, MediaKind::kImage, "images", out, problems);
  if (const auto image = row[kImageKey]) {
    out.singular_image_key = true;
    add_media(*image, MediaKind::kImage, "image", out, problems);
  }
  if (const auto videos = row[kVideosKey]) add_media(*videos, MediaKind::kVideo, "videos", out, problems);
  if (const auto audios = row[kAudiosKey]) add_media(*audios, MediaKind::kAudio, "audios", out, problems);
  return out;
}

}  // namespace vlmforge::data
