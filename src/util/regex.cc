#include "util/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "util/error.h"

namespace vlmforge {

struct Regex::Impl {
  pcre2_code* code = nullptr;
  pcre2_match_data* match_data = nullptr;
  ~Impl() {
    pcre2_match_data_free(match_data);
    pcre2_code_free(code);
  }
  bool run(std::string_view text, uint32_t options) const {
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0, options, match_data, nullptr);
    return rc >= 0;
  }
};

Regex::Regex(std::string_view pattern, std::string_view what) : impl_(std::make_unique<Impl>()) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF,
                              &error_code, &error_offset, nullptr);
  if (!impl_->code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof message);
    throw Error(std::string(what) + ": invalid regular expression '" + std::string(pattern) + "' at offset " +
                std::to_string(error_offset) + ": " + reinterpret_cast<const char*>(message));
  }
  impl_->match_data = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
}

Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

bool Regex::full_match(std::string_view text) const { return impl_->run(text, PCRE2_ANCHORED | PCRE2_ENDANCHORED); }

bool Regex::match_prefix(std::string_view text) const { return impl_->run(text, PCRE2_ANCHORED); }

}  // namespace vlmforge
