#pragma once
// Python-compatible regular expressions (PCRE2), for patterns users wrote for Python's `re`:
// PEFT's target_modules, rank_pattern and alpha_pattern.
#include <memory>
#include <string>
#include <string_view>

namespace vlmforge {

class Regex {
 public:
  // Throws Error naming `what` and the offset when the pattern does not compile.
  Regex(std::string_view pattern, std::string_view what);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  // Like Python's re.fullmatch.
  bool full_match(std::string_view text) const;
  // Like Python's re.match: anchored at the start only.
  bool match_prefix(std::string_view text) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vlmforge
