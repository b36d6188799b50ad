#pragma once
// Token ids as users and clients write them: integers from 0 to 2^31 - 1 (TokenId's range). A
// larger or negative value is an error, never wrapped or cut to its low 32 bits.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/bpe.h"

namespace vlmforge::tokenizer {

// The id `text` spells in decimal (all of it, no sign); nullopt when it is none or out of range.
std::optional<TokenId> parse_token_id(std::string_view text);

// The id an integer JSON number holds; nullopt for other values (floats, strings) and out of range.
template <typename Json>
std::optional<TokenId> token_id_from_json(const Json& value) {
  constexpr uint64_t kMax = static_cast<uint64_t>(INT32_MAX);
  if (value.is_number_unsigned() && value.template get<uint64_t>() <= kMax)
    return static_cast<TokenId>(value.template get<uint64_t>());
  if (value.is_number_integer() && !value.is_number_unsigned()) {
    const int64_t v = value.template get<int64_t>();
    if (v >= 0 && static_cast<uint64_t>(v) <= kMax) return static_cast<TokenId>(v);
  }
  return std::nullopt;
}

// "<item> is not a token id (integers from 0 to 2147483647)", for errors.
std::string not_a_token_id(std::string_view item);

// Ids written as a JSON array ("[1, 2]") or separated by whitespace or commas ("1,2 3"). Error
// naming `source` and the item that is not an id.
std::vector<TokenId> parse_token_ids(std::string_view text, std::string_view source);

}  // namespace vlmforge::tokenizer
