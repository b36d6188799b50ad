#pragma once
// A Hugging Face byte-level BPE tokenizer (Qwen2 / Qwen2.5 / Qwen2.5-VL), loaded from
// tokenizer.json. Encoding follows tokenizers' pipeline: added tokens are split out of the raw
// text, the rest is normalized (NFC), split by the pre-tokenizer regex, and each piece BPE-encoded.
// No special tokens are added around the result (Qwen's post-processor adds none either).
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer_json.h"

namespace vlmforge::tokenizer {

struct EncodeScratch;  // per-call buffers, defined in tokenizer.cc

// What to do with input that is not valid UTF-8.
enum class InvalidUtf8 {
  kReplace,  // each ill-formed subsequence becomes U+FFFD, as when Python decodes with "replace"
  kError,    // throw Error naming the byte offset
};

class Tokenizer {
 public:
  // `path` is a tokenizer.json or a directory holding one.
  static Tokenizer load(const std::filesystem::path& path);
  // `source` names the text in error messages.
  static Tokenizer from_json(std::string_view json_text, std::string_view source);

  std::vector<TokenId> encode(std::string_view text, InvalidUtf8 invalid = InvalidUtf8::kReplace) const;
  void encode_append(std::string_view text, std::vector<TokenId>& out,
                     InvalidUtf8 invalid = InvalidUtf8::kReplace) const;
  // encode() with an early exit, for text that may be far too long: once more than `max_tokens`
  // ids are known, stops without pre-tokenizing or BPE-encoding the rest and returns what it has,
  // a prefix of encode(text) longer than max_tokens. Otherwise exactly encode(text).
  std::vector<TokenId> encode(std::string_view text, size_t max_tokens,
                              InvalidUtf8 invalid = InvalidUtf8::kReplace) const;

  // Bytes of the ids, joined; ill-formed UTF-8 (a sequence cut between ids) becomes U+FFFD.
  // Throws Error for an id outside the vocabulary.
  std::string decode(std::span<const TokenId> ids, bool skip_special_tokens = false) const;

  // Raw bytes an id stands for (added tokens: their content). Throws Error for unknown ids.
  std::string_view token_bytes(TokenId id) const;
  // The token as tokenizer.json spells it (byte-level form, e.g. "Ġworld"; added tokens as is).
  std::string token_text(TokenId id) const;
  // Looks a token up by that spelling.
  std::optional<TokenId> token_id(std::string_view token_text) const;
  bool is_special(TokenId id) const;
  bool is_added(TokenId id) const;
  // One more than the largest id.
  size_t vocab_size() const { return decoded_.size(); }

  // Offset just after the last position in `text` where the encoding of the whole text is
  // guaranteed to split into encode(text[0, cut)) + encode(rest): after a "\n" that is followed by
  // an ASCII character other than whitespace. 0 when there is none (or the added tokens make such
  // cuts unsafe). Lets callers encode an unbounded stream chunk by chunk with the same ids.
  size_t safe_split_point(std::string_view text) const;

 private:
  Tokenizer(TokenizerSpec spec, std::string_view source);
  // These append to `out` and stop once out.size() > limit (SIZE_MAX: never). `offset`: where
  // `text` starts in the caller's input, for error messages.
  void encode_append(std::string_view text, std::vector<TokenId>& out, InvalidUtf8 invalid, size_t limit,
                     size_t offset) const;
  void encode_valid(std::string_view text, std::vector<TokenId>& out, size_t limit) const;
  void encode_segment(std::string_view text, std::vector<TokenId>& out, EncodeScratch& scratch, size_t limit) const;
  void encode_normalized(std::string_view text, std::vector<TokenId>& out, EncodeScratch& scratch, size_t limit) const;
  // BPE-encodes scratch.pieces onto `out`.
  void encode_pieces(EncodeScratch& scratch, std::vector<TokenId>& out) const;

  Normalization normalization_;
  bool add_prefix_space_;
  RegexSplitter splitter_;
  BpeModel bpe_;
  AddedTokenMatcher raw_added_;         // added tokens matched in the raw input
  AddedTokenMatcher normalized_added_;  // added tokens with normalized=true, matched after NFC
  std::vector<std::string> decoded_;    // id -> bytes, model and added tokens
  std::vector<uint8_t> kind_;           // id -> TokenKind
  std::map<TokenId, std::string> added_content_;
  bool splittable_;                     // see safe_split_point
};

}  // namespace vlmforge::tokenizer
