#include "tokenizer/bpe.h"

#include <algorithm>
#include <bit>

#include "tokenizer/byte_level.h"
#include "util/error.h"

namespace vlmforge::tokenizer {
namespace {

uint64_t pair_key(TokenId left, TokenId right) {
  return (static_cast<uint64_t>(left) << kBpeIdBits) | static_cast<uint64_t>(right);
}

size_t mix(uint64_t key) {
  // splitmix64 finalizer: ids are small and dense, so spread them over the table.
  key ^= key >> 30;
  key *= 0xbf58476d1ce4e5b9ULL;
  key ^= key >> 27;
  key *= 0x94d049bb133111ebULL;
  key ^= key >> 31;
  return static_cast<size_t>(key);
}

// Pieces up to this size merge by rescanning an array of pair ranks (O(n^2), but no heap and no
// stale candidates, so faster for the short pieces that make up nearly all text); longer ones use
// the heap, which keeps a huge letter or whitespace run O(n log n).
constexpr size_t kScanMaxBytes = 128;

// Min-heap order: lower rank first, then the leftmost position.
bool later(const BpeScratch::Candidate& a, const BpeScratch::Candidate& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
}

// Index of the first smallest rank (Hugging Face merges the leftmost pair on equal ranks). Two
// passes: the minimum alone vectorizes, and the search for it stops early.
size_t leftmost_min(std::span<const uint32_t> ranks) {
  uint32_t lowest = kNoMerge;
  for (const uint32_t rank : ranks) lowest = std::min(lowest, rank);
  return static_cast<size_t>(std::find(ranks.begin(), ranks.end(), lowest) - ranks.begin());
}

}  // namespace

void BpeModel::MergeTable::reserve(size_t count) {
  const size_t capacity = std::bit_ceil(std::max<size_t>(16, count * 2));
  slots_.assign(capacity, kEmpty);
  mask_ = capacity - 1;
}

bool BpeModel::MergeTable::insert(TokenId left, TokenId right, uint32_t rank) {
  const uint64_t key = pair_key(left, right);
  for (size_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
    if (slots_[i] == kEmpty) {
      slots_[i] = (key << kBpeRankBits) | rank;
      return true;
    }
    if ((slots_[i] >> kBpeRankBits) == key) return false;
  }
}

uint32_t BpeModel::MergeTable::find(TokenId left, TokenId right) const {
  const uint64_t key = pair_key(left, right);
  for (size_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
    const uint64_t slot = slots_[i];
    if (slot == kEmpty) return kNoMerge;
    if ((slot >> kBpeRankBits) == key) return static_cast<uint32_t>(slot & ((uint64_t{1} << kBpeRankBits) - 1));
  }
}

void BpeModel::MergeTable::prefetch(TokenId left, TokenId right) const {
  __builtin_prefetch(&slots_[mix(pair_key(left, right)) & mask_]);
}

BpeModel::BpeModel(BpeSpec spec, std::string_view source) : ignore_merges_(spec.ignore_merges) {
  const std::string where(source);
  TokenId max_id = -1;
  for (const auto& entry : spec.vocab) max_id = std::max(max_id, entry.second);
  id_to_bytes_.resize(static_cast<size_t>(max_id + 1));
  spelling_to_id_.reserve(spec.vocab.size());
  if (max_id >= (TokenId{1} << kBpeIdBits) || spec.merges.size() >= (size_t{1} << kBpeRankBits)) {
    throw Error(where + ": unsupported tokenizer: more than " + std::to_string(1 << kBpeIdBits) +
                " vocab ids or " + std::to_string(1 << kBpeRankBits) + " merges");
  }
  for (auto& [spelling, id] : spec.vocab) {
    if (id < 0) throw Error(where + ": model.vocab[\"" + spelling + "\"]: negative id");
    std::optional<std::string> raw = byte_level_to_bytes(spelling);
    if (!raw || raw->empty()) {
      throw Error(where + ": unsupported tokenizer: model.vocab entry \"" + spelling + "\" (id " +
                  std::to_string(id) + ") is not byte-level text; only byte-level BPE vocabularies are supported");
    }
    id_to_bytes_[static_cast<size_t>(id)] = std::move(*raw);
    spelling_to_id_.emplace(std::move(spelling), id);
  }
  for (int b = 0; b < 256; ++b) {
    const TokenId* id = find(std::string(1, static_cast<char>(b)));
    if (!id) {
      throw Error(where + ": unsupported tokenizer: model.vocab has no token for byte " + std::to_string(b) +
                  " (byte-level BPE needs all 256)");
    }
    byte_ids_[b] = *id;
  }
  // Merges name tokens by spelling; the spelling of a concatenation is the concatenation of the
  // spellings (the byte-level map is per byte), so no decoding is needed here.
  merges_.reserve(spec.merges.size());
  merged_by_rank_.resize(spec.merges.size());
  std::string joined;
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [left, right] = spec.merges[rank];
    const auto lookup = [&](const std::string& spelling) -> TokenId {
      const auto it = spelling_to_id_.find(spelling);
      if (it == spelling_to_id_.end()) {
        throw Error(where + ": model.merges[" + std::to_string(rank) + "] (\"" + left + " " + right +
                    "\"): token \"" + spelling + "\" is not in model.vocab");
      }
      return it->second;
    };
    joined.assign(left).append(right);
    const TokenId left_id = lookup(left), right_id = lookup(right), merged_id = lookup(joined);
    // A repeated merge keeps its first (lowest) rank, as Hugging Face does.
    merges_.insert(left_id, right_id, static_cast<uint32_t>(rank));
    merged_by_rank_[rank] = merged_id;
  }
}

std::string_view BpeModel::token_bytes(TokenId id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_bytes_.size()) return {};
  return id_to_bytes_[static_cast<size_t>(id)];
}

const TokenId* BpeModel::find(std::string_view raw_bytes) const {
  const auto it = spelling_to_id_.find(bytes_to_byte_level(raw_bytes));
  return it == spelling_to_id_.end() ? nullptr : &it->second;
}

void BpeModel::push_candidate(BpeScratch& scratch, int32_t left) const {
  const int32_t right = scratch.symbols[static_cast<size_t>(left)].next;
  if (right < 0) return;
  const TokenId left_id = scratch.symbols[static_cast<size_t>(left)].id;
  const TokenId right_id = scratch.symbols[static_cast<size_t>(right)].id;
  const uint32_t rank = merges_.find(left_id, right_id);
  if (rank == kNoMerge) return;
  scratch.heap.push_back({rank, left, left_id, right_id, merged_by_rank_[static_cast<size_t>(rank)]});
  std::push_heap(scratch.heap.begin(), scratch.heap.end(), later);
}

void BpeModel::encode_piece(std::string_view piece, BpeScratch& scratch, std::vector<TokenId>& out) const {
  if (piece.size() == 1) {
    out.push_back(byte_ids_[static_cast<uint8_t>(piece[0])]);
    return;
  }
  if (ignore_merges_) {
    if (const TokenId* whole = find(piece)) {
      out.push_back(*whole);
      return;
    }
  }
  if (piece.size() <= kScanMaxBytes) {
    merge_by_scan(piece, scratch, out);
  } else {
    merge_by_heap(piece, scratch, out);
  }
}

void BpeModel::merge_by_scan(std::string_view piece, BpeScratch& scratch, std::vector<TokenId>& out) const {
  auto& ids = scratch.ids;
  auto& ranks = scratch.ranks;
  size_t count = piece.size();
  ids.resize(count);
  ranks.resize(count);
  for (size_t i = 0; i < count; ++i) ids[i] = byte_ids_[static_cast<uint8_t>(piece[i])];
  // The table is larger than the caches: start all first-round lookups before using any.
  for (size_t i = 0; i + 1 < count; ++i) merges_.prefetch(ids[i], ids[i + 1]);
  for (size_t i = 0; i + 1 < count; ++i) ranks[i] = merges_.find(ids[i], ids[i + 1]);
  ranks[count - 1] = kNoMerge;  // no right neighbour; stays last as the arrays shrink
  while (count > 1) {
    const size_t best = leftmost_min(std::span(ranks.data(), count - 1));
    const uint32_t rank = ranks[best];
    if (rank == kNoMerge) break;
    // Symbol best absorbs best + 1: drop the latter from both arrays.
    ids[best] = merged_by_rank_[rank];
    std::copy(ids.begin() + static_cast<std::ptrdiff_t>(best + 2), ids.begin() + static_cast<std::ptrdiff_t>(count),
              ids.begin() + static_cast<std::ptrdiff_t>(best + 1));
    std::copy(ranks.begin() + static_cast<std::ptrdiff_t>(best + 2),
              ranks.begin() + static_cast<std::ptrdiff_t>(count), ranks.begin() + static_cast<std::ptrdiff_t>(best + 1));
    --count;
    ranks[best] = best + 1 < count ? merges_.find(ids[best], ids[best + 1]) : kNoMerge;
    if (best > 0) ranks[best - 1] = merges_.find(ids[best - 1], ids[best]);
  }
  out.insert(out.end(), ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(count));
}

void BpeModel::merge_by_heap(std::string_view piece, BpeScratch& scratch, std::vector<TokenId>& out) const {
  auto& symbols = scratch.symbols;
  symbols.clear();
  scratch.heap.clear();
  const auto count = static_cast<int32_t>(piece.size());
  for (int32_t i = 0; i < count; ++i) {
    symbols.push_back({byte_ids_[static_cast<uint8_t>(piece[static_cast<size_t>(i)])], i - 1,
                       i + 1 < count ? i + 1 : -1, true});
  }
  // The table is larger than the caches: start all first-round lookups before using any.
  for (int32_t i = 0; i + 1 < count; ++i) merges_.prefetch(symbols[static_cast<size_t>(i)].id, symbols[static_cast<size_t>(i + 1)].id);
  for (int32_t i = 0; i + 1 < count; ++i) push_candidate(scratch, i);
  while (!scratch.heap.empty()) {
    std::pop_heap(scratch.heap.begin(), scratch.heap.end(), later);
    const BpeScratch::Candidate candidate = scratch.heap.back();
    scratch.heap.pop_back();
    // Candidates are not removed when a neighbour merges; skip those whose pair no longer exists.
    BpeScratch::Symbol& left = symbols[static_cast<size_t>(candidate.left)];
    if (!left.alive || left.id != candidate.left_id || left.next < 0) continue;
    BpeScratch::Symbol& right = symbols[static_cast<size_t>(left.next)];
    if (right.id != candidate.right_id) continue;
    left.id = candidate.merged_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = candidate.left;
    if (left.prev >= 0) push_candidate(scratch, left.prev);
    push_candidate(scratch, candidate.left);
  }
  for (int32_t i = 0; i >= 0; i = symbols[static_cast<size_t>(i)].next) out.push_back(symbols[static_cast<size_t>(i)].id);
}

}  // namespace vlmforge::tokenizer
