#pragma once
// The Split pre-tokenizer with "Isolated" behaviour: every regex match is a piece, and so is every
// stretch of text between matches. The pattern is compiled by PCRE2 with UTF and UCP (so \p{L},
// \s and friends follow Unicode, as in the Oniguruma engine Hugging Face tokenizers uses) and JIT.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace vlmforge::tokenizer {

class RegexSplitter {
 public:
  // Throws Error naming `source` and the offset of the problem when the pattern does not compile.
  RegexSplitter(std::string_view pattern, std::string_view source);
  ~RegexSplitter();
  RegexSplitter(RegexSplitter&&) noexcept;
  RegexSplitter& operator=(RegexSplitter&&) noexcept;

  // Appends the pieces of `text` (valid UTF-8) from offset `from` to `pieces`; they point into
  // `text`. Stops early, after a match, once `max_pieces` pieces were appended, and returns where
  // it stopped (text.size() when done): splitting again from there continues the same pieces, as
  // the regex still sees the text before the offset.
  size_t split(std::string_view text, std::vector<std::string_view>& pieces, size_t from = 0,
               size_t max_pieces = SIZE_MAX) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Compiled;
  std::string pattern_;
  std::unique_ptr<Compiled> compiled_;
  bool qwen2_pattern_;  // pieces are matched by hand where that is certain to agree with PCRE2
};

// The split regex of Qwen2 / Qwen2.5 / Qwen2.5-VL tokenizer.json.
inline constexpr std::string_view kQwen2SplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The regex GPT-2's ByteLevel pre-tokenizer applies when its "use_regex" is true.
inline constexpr std::string_view kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace vlmforge::tokenizer
