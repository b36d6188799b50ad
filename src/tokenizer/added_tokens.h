#pragma once
// Added tokens (special or not) are found in the raw text before anything else runs, as Hugging
// Face tokenizers does by default: leftmost match first, the longest token on a tie. Their flags
// follow tokenizers: lstrip/rstrip swallow whitespace beside the token, single_word requires
// non-word characters around it.
#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/bpe.h"

namespace vlmforge::tokenizer {

struct AddedToken {
  TokenId id = 0;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;  // matched against normalized text instead of the raw input
};

struct AddedTokenMatch {
  size_t start, end;  // the span the token replaces, stripped whitespace included
  TokenId id;
};

class AddedTokenMatcher {
 public:
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);

  // The first match starting at or after `from`; a match never extends before `from`.
  std::optional<AddedTokenMatch> find(std::string_view text, size_t from) const;
  bool empty() const { return tokens_.empty(); }

 private:
  std::optional<AddedTokenMatch> match_at(std::string_view text, size_t from, size_t pos) const;

  std::vector<AddedToken> tokens_;
  // Candidates by first byte, longest first.
  std::array<std::vector<uint32_t>, 256> by_first_byte_;
};

}  // namespace vlmforge::tokenizer
