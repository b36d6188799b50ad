#pragma once
// The BPE model over raw bytes. Each vocab entry's bytes are decoded from its byte-level spelling
// once, at load, so encoding a pre-tokenized piece starts from one symbol per byte and applies merges by rank, lowest first, leftmost on ties (Hugging Face order).
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace vlmforge::tokenizer {

using TokenId = int32_t;

// Limits of the compact merge table: ids below 2^18 (262144), fewer than 2^20 merges.
inline constexpr int kBpeIdBits = 18;
inline constexpr int kBpeRankBits = 20;
// The rank of a pair that has no merge: above every real rank.
inline constexpr uint32_t kNoMerge = ~uint32_t{0};

// What tokenizer.json's "model" section gives: byte-level spellings, as in the file.
struct BpeSpec {
  std::vector<std::pair<std::string, TokenId>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  bool ignore_merges = false;  // a piece found whole in the vocab is one token, merges or not
};

// Reusable buffers for encoding, so a long text does not allocate for every piece.
struct BpeScratch {
  // Short pieces: parallel arrays, ranks[i] is the rank of merging ids[i] with ids[i + 1].
  std::vector<TokenId> ids;
  std::vector<uint32_t> ranks;
  // Long pieces: a linked list of symbols and a heap of merge candidates.
  struct Symbol {
    TokenId id;
    int32_t prev, next;  // neighbours in the linked list; -1 at the ends
    bool alive;
  };
  struct Candidate {
    uint32_t rank;
    int32_t left;  // index of the left symbol
    TokenId left_id, right_id, merged_id;
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
};

class BpeModel {
 public:
  // Throws Error (naming `source`) for entries that are not byte-level text, merges whose parts or
  // result are missing from the vocab, and bytes without a token.
  BpeModel(BpeSpec spec, std::string_view source);

  // Appends the ids of one pre-tokenized piece (raw bytes, non-empty).
  void encode_piece(std::string_view piece, BpeScratch& scratch, std::vector<TokenId>& out) const;

  // Raw bytes of a vocab id; empty for ids the model does not define.
  std::string_view token_bytes(TokenId id) const;
  const TokenId* find(std::string_view raw_bytes) const;
  // One more than the largest id.
  size_t id_limit() const { return id_to_bytes_.size(); }

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  // Open-addressing table from an id pair to its merge rank: the hot lookup of encoding. One
  // 64-bit word per slot (18-bit ids, 20-bit rank) keeps the table small enough for the caches.
  class MergeTable {
   public:
    void reserve(size_t count);
    bool insert(TokenId left, TokenId right, uint32_t rank);  // false if the pair is present
    // The rank of the merge of (left, right), or kNoMerge.
    uint32_t find(TokenId left, TokenId right) const;
    void prefetch(TokenId left, TokenId right) const;

   private:
    static constexpr uint64_t kEmpty = ~uint64_t{0};
    std::vector<uint64_t> slots_;
    size_t mask_ = 0;
  };

  void merge_by_scan(std::string_view piece, BpeScratch& scratch, std::vector<TokenId>& out) const;
  void merge_by_heap(std::string_view piece, BpeScratch& scratch, std::vector<TokenId>& out) const;
  void push_candidate(BpeScratch& scratch, int32_t left) const;

  std::unordered_map<std::string, TokenId, StringHash, std::equal_to<>> spelling_to_id_;  // byte-level spelling
  std::vector<std::string> id_to_bytes_;
  TokenId byte_ids_[256];
  MergeTable merges_;
  std::vector<TokenId> merged_by_rank_;
  bool ignore_merges_;
};

}  // namespace vlmforge::tokenizer
