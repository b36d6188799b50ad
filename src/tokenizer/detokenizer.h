#pragma once
// Streaming decode: ids arrive one at a time (from generation) and text leaves as soon as it is
// complete UTF-8. A character split across tokens is held back until its last byte arrives, so
// no output chunk ever ends in a broken sequence; bytes that can never become valid are replaced
// by U+FFFD at once. The concatenated chunks equal Tokenizer::decode of all the ids.
#include <string>

#include "tokenizer/tokenizer.h"

namespace vlmforge::tokenizer {

class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive this object.
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = false)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

  // Text completed by `id` (possibly empty). Throws Error for ids outside the vocabulary.
  std::string push(TokenId id);
  // Flushes held-back bytes (an unfinished character becomes U+FFFD) and resets the stream.
  std::string finish();
  // Bytes currently held back waiting for the rest of a character.
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;
};

}  // namespace vlmforge::tokenizer
