#include "engine/dataset_row.h"

#include "util/error.h"

namespace vlmforge {

std::pair<nlohmann::ordered_json, std::optional<std::string>> dataset_row(const nlohmann::ordered_json& row,
                                                                     const std::string& where) {
  if (!row.is_object()) throw Error(where + ": row is not a JSON object");
  nlohmann::ordered_json request = row;
  std::optional<std::string> labels;
  if (row.contains("messages")) {
    auto& messages = request["messages"];
    if (!messages.is_array() || messages.empty()) throw Error(where + ": \"messages\" must be a non-empty array");
    if (messages.back().value("role", "") == "assistant") {
      if (messages.back()["content"].is_string()) labels = messages.back()["content"].get<std::string>();
      messages.erase(messages.end() - 1);
    }
    return {request, labels};
  }
  if (row.contains("query")) {
    nlohmann::ordered_json messages = nlohmann::ordered_json::array();
    if (row.contains("system")) messages.push_back({{"role", "system"}, {"content", row["system"]}});
    if (row.contains("history") && row["history"].is_array())
      for (const auto& turn : row["history"]) {
        messages.push_back({{"role", "user"}, {"content", turn.at(0)}});
        messages.push_back({{"role", "assistant"}, {"content", turn.at(1)}});
      }
    messages.push_back({{"role", "user"}, {"content", row["query"]}});
    if (row.contains("response") && row["response"].is_string()) labels = row["response"].get<std::string>();
    nlohmann::ordered_json out = {{"messages", messages}};
    for (const char* key : {"images", "videos"})
      if (row.contains(key)) out[key] = row[key];
    return {out, labels};
  }
  throw Error(where + ": row has neither \"messages\" nor \"query\"");
}

}  // namespace vlmforge
