#pragma once
// Reading JSON documents with errors that name the file, line and column.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <cstdint>
#include <string>
#include <utility>
#include <string_view>

namespace vlmforge {

// Line and column of byte `offset` of `text`, when `text` starts at (line, column); 1-based.
std::pair<uint64_t, uint64_t> text_position(std::string_view text, size_t offset, uint64_t line = 1,
                                            uint64_t column = 1);
// "line:column" (1-based) of byte `offset` in `text`, for error messages.
std::string line_column(std::string_view text, size_t offset);

// Parses `text`; on failure throws Error "<source>:<line>:<column>: invalid JSON: <reason>".
nlohmann::json parse_json(std::string_view text, std::string_view source);

// Whether `text` nests arrays/objects deeper than `limit`, checked on the raw bytes before parsing:
// a DOM of millions of nested arrays would take gigabytes, and the parser and dump() recurse.
bool json_nesting_exceeds(std::string_view text, int limit);

nlohmann::json read_json_file(const std::filesystem::path& path);

std::string read_text_file(const std::filesystem::path& path);

}  // namespace vlmforge
