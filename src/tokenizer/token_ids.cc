#include "tokenizer/token_ids.h"

#include <algorithm>
#include <charconv>

#include "io/json_file.h"
#include "util/error.h"

namespace vlmforge::tokenizer {

std::optional<TokenId> parse_token_id(std::string_view text) {
  if (text.empty() || text[0] == '-') return std::nullopt;
  TokenId id = 0;
  // from_chars reports values over INT32_MAX as out of range, never wraps them.
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return id;
}

std::string not_a_token_id(std::string_view item) {
  return std::string(item) + " is not a token id (integers from 0 to " + std::to_string(INT32_MAX) + ")";
}

std::vector<TokenId> parse_token_ids(std::string_view text, std::string_view source) {
  std::vector<TokenId> ids;
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && text[first] == '[') {
    const nlohmann::json json = parse_json(text, source);
    for (const auto& v : json) {
      const std::optional<TokenId> id = token_id_from_json(v);
      if (!id) throw Error(std::string(source) + ": " + not_a_token_id(v.dump()));
      ids.push_back(*id);
    }
    return ids;
  }
  for (size_t pos = text.find_first_not_of(" \t\r\n,"); pos != std::string_view::npos;
       pos = text.find_first_not_of(" \t\r\n,", pos)) {
    const size_t end = std::min(text.find_first_of(" \t\r\n,", pos), text.size());
    const std::string_view word = text.substr(pos, end - pos);
    const std::optional<TokenId> id = parse_token_id(word);
    if (!id) throw Error(std::string(source) + ": " + not_a_token_id("\"" + std::string(word) + "\""));
    ids.push_back(*id);
    pos = end;
  }
  return ids;
}

}  // namespace vlmforge::tokenizer
