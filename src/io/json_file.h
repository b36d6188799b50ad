#pragma once
// Reading JSON documents with errors that name the file, line and column.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace vlmforge {

// "line:column" (1-based) of byte `offset` in `text`, for error messages.
std::string line_column(std::string_view text, size_t offset);

// Parses `text`; on failure throws Error "<source>:<line>:<column>: invalid JSON: <reason>".
nlohmann::json parse_json(std::string_view text, std::string_view source);

nlohmann::json read_json_file(const std::filesystem::path& path);

std::string read_text_file(const std::filesystem::path& path);

}  // namespace vlmforge
