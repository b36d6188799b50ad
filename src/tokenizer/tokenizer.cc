#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <unordered_map>

#include "io/json_file.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer_json.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace vlmforge::tokenizer {
namespace {

enum TokenKind : uint8_t { kUnused = 0, kModel = 1, kAdded = 2, kSpecial = 3 };

std::vector<AddedToken> select(const std::vector<AddedToken>& tokens, bool normalized) {
  std::vector<AddedToken> out;
  for (const AddedToken& t : tokens) {
    if (t.normalized == normalized) out.push_back(t);
  }
  return out;
}

// tokenizers' ByteLevel decoder maps each character of a token back to its byte; a token with a
// character outside the mapping (added tokens with spaces, say) is taken as its UTF-8 text.
std::string added_token_bytes(const std::string& content) {
  std::optional<std::string> bytes = byte_level_to_bytes(content);
  return bytes ? std::move(*bytes) : content;
}

}  // namespace

struct EncodeScratch {
  std::string normalized;
  std::string prefixed;
  std::vector<std::string_view> pieces;
  BpeScratch bpe;
  // Pieces repeat a lot in real text ("Ġthe", "\n", "的"): remember each short piece's ids for the
  // rest of this call. Per call, so the tokenizer itself stays immutable and thread-safe.
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, Hash, std::equal_to<>> piece_ids;
  std::vector<TokenId> cached_ids;  // piece_ids values are (offset, count) into this
};

namespace {
constexpr size_t kCachedPieceMaxBytes = 32;
constexpr size_t kCachedPieceLimit = 1 << 16;
// Encoding under a limit: the text is taken this many bytes at a time where safe_split_point
// allows (so the UTF-8 check, the added-token scan and NFC stop with the count too), and within
// that pieces are split and BPE-encoded 1024 at a time, the limit checked between them: at most
// that many pieces are spent past it.
constexpr size_t kLimitedChunkBytes = 64 << 10;
constexpr size_t kLimitedChunkPieces = 1024;
}  // namespace

Tokenizer Tokenizer::load(const std::filesystem::path& path) {
  std::filesystem::path file = path;
  if (std::filesystem::is_directory(path)) {
    file = path / "tokenizer.json";
    if (!std::filesystem::exists(file)) {
      throw Error(path.string() + ": no tokenizer.json in this directory (pass the model directory or the file)");
    }
  }
  return from_json(read_text_file(file), file.string());
}

Tokenizer Tokenizer::from_json(std::string_view json_text, std::string_view source) {
  return Tokenizer(parse_tokenizer_json(json_text, source), source);
}

Tokenizer::Tokenizer(TokenizerSpec spec, std::string_view source)
    : normalization_(spec.normalization),
      add_prefix_space_(spec.add_prefix_space),
      splitter_(spec.split_pattern, source),
      bpe_(std::move(spec.bpe), source),
      raw_added_(select(spec.added_tokens, false)),
      normalized_added_(select(spec.added_tokens, true)) {
  size_t limit = bpe_.id_limit();
  for (const AddedToken& t : spec.added_tokens) limit = std::max(limit, static_cast<size_t>(t.id) + 1);
  decoded_.resize(limit);
  kind_.assign(limit, kUnused);
  for (size_t id = 0; id < bpe_.id_limit(); ++id) {
    const std::string_view bytes = bpe_.token_bytes(static_cast<TokenId>(id));
    if (bytes.empty()) continue;
    decoded_[id] = bytes;
    kind_[id] = kModel;
  }
  // Cutting after "\n" is exact only when nothing looks across the cut: no prefix space added per
  // segment, no regex assertion that looks behind, no added token spanning or eating the newline.
  const std::string_view pattern = splitter_.pattern();
  splittable_ = !add_prefix_space_;
  for (const std::string_view look_behind : {"(?<", "\\b", "\\B", "\\G", "\\A", "\\K", "\\z", "\\Z"}) {
    if (pattern.find(look_behind) != std::string_view::npos) splittable_ = false;
  }
  // Anchors would match at the start or end of each chunk; "[^" is a negated class, not an anchor.
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '$' || (pattern[i] == '^' && (i == 0 || pattern[i - 1] != '['))) splittable_ = false;
  }
  for (const AddedToken& t : spec.added_tokens) {
    decoded_[static_cast<size_t>(t.id)] = added_token_bytes(t.content);
    added_content_[t.id] = t.content;
    kind_[static_cast<size_t>(t.id)] = t.special ? kSpecial : kAdded;
    // A token that contains a newline or swallows whitespace could straddle a "\n" cut.
    if (t.lstrip || t.rstrip || t.content.find('\n') != std::string::npos) splittable_ = false;
  }
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, InvalidUtf8 invalid) const {
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 4);
  encode_append(text, ids, invalid);
  return ids;
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, size_t max_tokens, InvalidUtf8 invalid) const {
  std::vector<TokenId> ids;
  ids.reserve(std::min(text.size() / 3, max_tokens) + 4);
  for (size_t pos = 0; pos < text.size() && ids.size() <= max_tokens;) {
    const std::string_view rest = text.substr(pos);
    const size_t cut = rest.size() > kLimitedChunkBytes ? safe_split_point(rest.substr(0, kLimitedChunkBytes)) : 0;
    const size_t take = cut == 0 ? rest.size() : cut;
    encode_append(rest.substr(0, take), ids, invalid, max_tokens, pos);
    pos += take;
  }
  return ids;
}

void Tokenizer::encode_append(std::string_view text, std::vector<TokenId>& out, InvalidUtf8 invalid) const {
  encode_append(text, out, invalid, SIZE_MAX, 0);
}

void Tokenizer::encode_append(std::string_view text, std::vector<TokenId>& out, InvalidUtf8 invalid, size_t limit,
                              size_t offset) const {
  const size_t bad = find_invalid_utf8(text);
  if (bad == std::string_view::npos) {
    encode_valid(text, out, limit);
    return;
  }
  if (invalid == InvalidUtf8::kError) {
    throw Error("input is not valid UTF-8 at byte offset " + std::to_string(offset + bad) +
                " (without --strict, ill-formed bytes are replaced by U+FFFD)");
  }
  std::string repaired;
  repaired.reserve(text.size() + 16);
  append_replacing_invalid_utf8(text, repaired, /*keep_truncated_tail=*/false);
  encode_valid(repaired, out, limit);
}

void Tokenizer::encode_valid(std::string_view text, std::vector<TokenId>& out, size_t limit) const {
  EncodeScratch scratch;
  size_t pos = 0;
  while (pos < text.size() && out.size() <= limit) {
    const std::optional<AddedTokenMatch> match = raw_added_.find(text, pos);
    const size_t segment_end = match ? match->start : text.size();
    if (segment_end > pos) encode_segment(text.substr(pos, segment_end - pos), out, scratch, limit);
    if (!match || out.size() > limit) break;
    out.push_back(match->id);
    pos = match->end;
  }
}

void Tokenizer::encode_segment(std::string_view text, std::vector<TokenId>& out, EncodeScratch& scratch,
                               size_t limit) const {
  scratch.normalized.clear();
  append_normalized(normalization_, text, scratch.normalized);
  if (normalized_added_.empty()) {
    encode_normalized(scratch.normalized, out, scratch, limit);
    return;
  }
  const std::string normalized = scratch.normalized;  // the scratch buffer is reused below
  size_t pos = 0;
  while (pos < normalized.size()) {
    const std::optional<AddedTokenMatch> match = normalized_added_.find(normalized, pos);
    const size_t end = match ? match->start : normalized.size();
    if (end > pos) encode_normalized(std::string_view(normalized).substr(pos, end - pos), out, scratch, limit);
    if (!match || out.size() > limit) break;
    out.push_back(match->id);
    pos = match->end;
  }
}

void Tokenizer::encode_normalized(std::string_view text, std::vector<TokenId>& out, EncodeScratch& scratch,
                                  size_t limit) const {
  if (add_prefix_space_ && !text.starts_with(' ')) {
    scratch.prefixed.assign(1, ' ');
    scratch.prefixed += text;
    text = scratch.prefixed;
  }
  const size_t chunk = limit == SIZE_MAX ? SIZE_MAX : kLimitedChunkPieces;
  for (size_t from = 0; from < text.size() && out.size() <= limit;) {
    scratch.pieces.clear();
    from = splitter_.split(text, scratch.pieces, from, chunk);
    encode_pieces(scratch, out);
  }
}

void Tokenizer::encode_pieces(EncodeScratch& scratch, std::vector<TokenId>& out) const {
  for (const std::string_view piece : scratch.pieces) {
    if (piece.size() == 1 || piece.size() > kCachedPieceMaxBytes) {
      bpe_.encode_piece(piece, scratch.bpe, out);
      continue;
    }
    if (const auto hit = scratch.piece_ids.find(piece); hit != scratch.piece_ids.end()) {
      const auto [offset, count] = hit->second;
      out.insert(out.end(), scratch.cached_ids.begin() + offset, scratch.cached_ids.begin() + offset + count);
      continue;
    }
    const size_t first = out.size();
    bpe_.encode_piece(piece, scratch.bpe, out);
    if (scratch.piece_ids.size() < kCachedPieceLimit) {
      const auto offset = static_cast<uint32_t>(scratch.cached_ids.size());
      scratch.cached_ids.insert(scratch.cached_ids.end(), out.begin() + static_cast<std::ptrdiff_t>(first), out.end());
      scratch.piece_ids.emplace(piece, std::pair{offset, static_cast<uint32_t>(out.size() - first)});
    }
  }
}

std::string_view Tokenizer::token_bytes(TokenId id) const {
  if (id < 0 || static_cast<size_t>(id) >= kind_.size() || kind_[static_cast<size_t>(id)] == kUnused) {
    throw Error("token id " + std::to_string(id) + " is not in the vocabulary (ids 0.." +
                std::to_string(kind_.size() - 1) + ")");
  }
  return decoded_[static_cast<size_t>(id)];
}

std::string Tokenizer::token_text(TokenId id) const {
  const std::string_view bytes = token_bytes(id);
  if (kind_[static_cast<size_t>(id)] == kModel) return bytes_to_byte_level(bytes);
  return added_content_.at(id);
}

std::optional<TokenId> Tokenizer::token_id(std::string_view text) const {
  for (const auto& [id, content] : added_content_) {
    if (content == text) return id;
  }
  const std::optional<std::string> raw = byte_level_to_bytes(text);
  if (!raw) return std::nullopt;
  if (const TokenId* id = bpe_.find(*raw)) return *id;
  return std::nullopt;
}

bool Tokenizer::is_special(TokenId id) const {
  return id >= 0 && static_cast<size_t>(id) < kind_.size() && kind_[static_cast<size_t>(id)] == kSpecial;
}

bool Tokenizer::is_added(TokenId id) const {
  return id >= 0 && static_cast<size_t>(id) < kind_.size() && kind_[static_cast<size_t>(id)] >= kAdded;
}

std::string Tokenizer::decode(std::span<const TokenId> ids, bool skip_special_tokens) const {
  std::string bytes;
  for (const TokenId id : ids) {
    const std::string_view token = token_bytes(id);
    if (skip_special_tokens && is_special(id)) continue;
    bytes.append(token);
  }
  if (find_invalid_utf8(bytes) == std::string::npos) return bytes;
  std::string text;
  append_replacing_invalid_utf8(bytes, text, /*keep_truncated_tail=*/false);
  return text;
}

size_t Tokenizer::safe_split_point(std::string_view text) const {
  if (!splittable_ || text.size() < 2) return 0;
  for (size_t pos = text.size() - 1; pos-- > 0;) {
    const auto next = static_cast<unsigned char>(text[pos + 1]);
    if (text[pos] == '\n' && next < 0x80 && next > ' ' && next != 0x7F) return pos + 1;
  }
  return 0;
}

}  // namespace vlmforge::tokenizer
