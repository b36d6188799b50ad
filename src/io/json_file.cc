#include "io/json_file.h"

#include <fstream>
#include <sstream>

#include "util/error.h"

namespace vlmforge {

std::pair<uint64_t, uint64_t> text_position(std::string_view text, size_t offset, uint64_t line, uint64_t column) {
  offset = std::min(offset, text.size());
  for (size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return {line, column};
}

std::string line_column(std::string_view text, size_t offset) {
  const auto [line, column] = text_position(text, offset);
  return std::to_string(line) + ":" + std::to_string(column);
}

nlohmann::json parse_json(std::string_view text, std::string_view source) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte is 1-based and points just past the offending character.
    const size_t offset = e.byte > 0 ? e.byte - 1 : 0;
    std::string reason = e.what();
    if (const auto pos = reason.find("syntax error"); pos != std::string::npos) reason = reason.substr(pos);
    throw Error(std::string(source) + ":" + line_column(text, offset) + ": invalid JSON: " + reason);
  } catch (const nlohmann::json::exception& e) {
    // e.g. a number too large for any JSON number type
    throw Error(std::string(source) + ": invalid JSON: " + e.what());
  }
}

std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open for reading");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw Error(path.string() + ": read error");
  return std::move(buffer).str();
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  return parse_json(read_text_file(path), path.string());
}

bool json_nesting_exceeds(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false, escape = false;
  for (const char c : text) {
    if (in_string) {
      if (escape) escape = false;
      else if (c == '\\') escape = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

}  // namespace vlmforge
