#include "tokenizer/byte_level.h"

#include <array>
#include <cstdint>

#include "tokenizer/utf8.h"

namespace vlmforge::tokenizer {
namespace {

struct ByteLevelTables {
  std::array<char32_t, 256> byte_to_char{};
  // Characters of the mapping lie below U+0144 (U+0100 + 68 unprintable bytes).
  static constexpr char32_t kCharLimit = 0x144;
  std::array<int16_t, kCharLimit> char_to_byte{};

  ByteLevelTables() {
    char_to_byte.fill(-1);
    const auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; };
    char32_t next_unprintable = 0x100;
    for (int b = 0; b < 256; ++b) {
      byte_to_char[b] = printable(b) ? static_cast<char32_t>(b) : next_unprintable++;
      char_to_byte[byte_to_char[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelTables& tables() {
  static const ByteLevelTables kTables;  // immutable after construction
  return kTables;
}

}  // namespace

std::string bytes_to_byte_level(std::string_view raw) {
  std::string out;
  out.reserve(raw.size() * 2);
  for (const char c : raw) append_utf8(tables().byte_to_char[static_cast<uint8_t>(c)], out);
  return out;
}

std::optional<std::string> byte_level_to_bytes(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Step step = decode_utf8(text, pos);
    if (step.status != Utf8Status::kValid || step.codepoint >= ByteLevelTables::kCharLimit) return std::nullopt;
    const int16_t byte = tables().char_to_byte[step.codepoint];
    if (byte < 0) return std::nullopt;
    out.push_back(static_cast<char>(byte));
    pos += step.length;
  }
  return out;
}

}  // namespace vlmforge::tokenizer
