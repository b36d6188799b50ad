#pragma once
// swift dataset rows as chat requests (infer --val_dataset, verify-merge).
#include <optional>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

namespace vlmforge {

// A swift dataset row ("messages", or "query" / "response" / "history" / "system") as a chat request
// without its final assistant turn, and that turn's text when there is one. `where` ("file:line")
// prefixes errors.
std::pair<nlohmann::ordered_json, std::optional<std::string>> dataset_row(const nlohmann::ordered_json& row,
                                                                     const std::string& where);

}  // namespace vlmforge
