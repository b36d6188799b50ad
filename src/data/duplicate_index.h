#pragma once
// The first occurrence of each row hash, for duplicate-row: an open-addressing table of 16-byte
// slots (linear probing, doubled at 3/4 full), so it costs 21 to 43 bytes per distinct row, with no
// allocation per row. Rows are told apart by a 64-bit hash alone, so a match is reported as a
// likely duplicate: two different rows among n share a hash with probability about n²/2^65.
#include <cstdint>
#include <optional>
#include <vector>

namespace vlmforge::data {

class DuplicateIndex {
 public:
  static constexpr uint64_t kMaxFiles = uint64_t{1} << 16;
  static constexpr uint64_t kMaxLine = (uint64_t{1} << 48) - 1;

  struct Where {
    uint32_t file = 0;  // index of the file among those checked
    uint64_t line = 0;
  };

  // Records `hash` at (file, line) and returns nothing the first time; later, the first place.
  // file < kMaxFiles, 1 <= line <= kMaxLine.
  std::optional<Where> insert(uint64_t hash, uint32_t file, uint64_t line);

  size_t size() const { return used_; }
  size_t memory_bytes() const { return slots_.capacity() * sizeof(Slot); }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint64_t where = 0;  // file << 48 | line; 0 marks an empty slot (lines start at 1)
  };
  void grow();

  std::vector<Slot> slots_;
  size_t used_ = 0;
};

}  // namespace vlmforge::data
