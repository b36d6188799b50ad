#include "data/duplicate_index.h"

#include <bit>

#include "util/error.h"

namespace vlmforge::data {

namespace {
// Fibonacci hashing: the top bits of hash * 2^64/phi pick the home slot, so even hashes that
// differ only in a few bits spread over the table (the table size is a power of two).
size_t home(uint64_t hash, size_t mask) {
  return static_cast<size_t>((hash * 0x9e3779b97f4a7c15ULL) >> (64 - std::countr_one(mask)));
}
}  // namespace

void DuplicateIndex::grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(old.empty() ? 1024 : old.size() * 2, Slot{});
  const size_t mask = slots_.size() - 1;
  for (const Slot& s : old) {
    if (s.where == 0) continue;
    size_t i = home(s.hash, mask);
    while (slots_[i].where != 0) i = (i + 1) & mask;
    slots_[i] = s;
  }
}

std::optional<DuplicateIndex::Where> DuplicateIndex::insert(uint64_t hash, uint32_t file, uint64_t line) {
  if (file >= kMaxFiles || line == 0 || line > kMaxLine) throw Error("duplicate index: file " + std::to_string(file) + " line " + std::to_string(line) + " out of range");
  if ((used_ + 1) * 4 > slots_.size() * 3) grow();
  const size_t mask = slots_.size() - 1;
  for (size_t i = home(hash, mask);; i = (i + 1) & mask) {
    Slot& s = slots_[i];
    if (s.where == 0) {
      s = Slot{hash, uint64_t{file} << 48 | line};
      ++used_;
      return std::nullopt;
    }
    if (s.hash == hash) return Where{static_cast<uint32_t>(s.where >> 48), s.where & kMaxLine};
  }
}

}  // namespace vlmforge::data
