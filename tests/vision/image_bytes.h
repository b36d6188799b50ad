#pragma once
// Tiny image files written byte by byte: just enough header for each format's size fields, and
// structurally complete (PNG up to IEND, JPEG up to EOI, GIF up to its trailer) but without pixels.
#include <cstdint>
#include <string>

namespace vlmforge::test {

inline std::string be16(uint32_t v) { return {char(v >> 8), char(v & 0xFF)}; }
inline std::string be32(uint32_t v) { return be16(v >> 16) + be16(v & 0xFFFF); }
inline std::string le16(uint32_t v) { return {char(v & 0xFF), char(v >> 8)}; }
inline std::string le32(uint32_t v) { return le16(v & 0xFFFF) + le16(v >> 16); }

inline std::string png_bytes(uint32_t width, uint32_t height) {
  return std::string("\x89PNG\r\n\x1a\n", 8) + be32(13) + "IHDR" + be32(width) + be32(height) + std::string("\x08\x02\x00\x00\x00", 5) +
         be32(0) + be32(0) + "IDAT" + be32(0x35AF061E) + be32(0) + "IEND" + be32(0xAE426082);
}

// SOI, an APP0 segment (so the reader must skip a segment), SOF0, a scan header and a few data bytes, EOI.
inline std::string jpeg_bytes(uint32_t width, uint32_t height) {
  std::string app0 = std::string("\xFF\xE0", 2) + be16(16) + std::string("JFIF\0\x01\x01\0\0\x01\0\x01\0\0", 14);
  std::string sof = std::string("\xFF\xC0", 2) + be16(17) + "\x08" + be16(height) + be16(width) + std::string(10, '\x01');
  std::string sos = std::string("\xFF\xDA", 2) + be16(12) + std::string(10, '\x01') + std::string("\x12\xFF\x00\x34", 4);
  return std::string("\xFF\xD8", 2) + app0 + sof + sos + std::string("\xFF\xD9", 2);
}

inline std::string gif_bytes(uint32_t width, uint32_t height) {
  return "GIF89a" + le16(width) + le16(height) + std::string(3, '\0') + "\x3B";
}

inline std::string bmp_bytes(uint32_t width, int32_t height) {
  return "BM" + le32(70) + le32(0) + le32(54) + le32(40) + le32(width) + le32(static_cast<uint32_t>(height)) + le16(1) + le16(24) +
         std::string(24, '\0');
}

inline std::string webp_vp8x_bytes(uint32_t width, uint32_t height) {
  const uint32_t w = width - 1, h = height - 1;
  return "RIFF" + le32(22) + "WEBPVP8X" + le32(10) + std::string(4, '\0') + le16(w & 0xFFFF) + char(w >> 16) + le16(h & 0xFFFF) +
         char(h >> 16);
}

inline std::string webp_vp8l_bytes(uint32_t width, uint32_t height) {
  const uint32_t bits = (width - 1) | ((height - 1) << 14);
  return "RIFF" + le32(14) + "WEBPVP8L" + le32(5) + "\x2F" + le32(bits);
}

inline std::string webp_vp8_bytes(uint32_t width, uint32_t height) {
  return "RIFF" + le32(22) + "WEBPVP8 " + le32(10) + std::string("\x10\x02\x00\x9D\x01\x2A", 6) + le16(width) + le16(height);
}

}  // namespace vlmforge::test
