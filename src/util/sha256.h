#pragma once
// SHA-256 (OpenSSL's libcrypto): a collision-resistant digest for keys that clients can choose,
// such as the server's image cache.
#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>

namespace vlmforge {

using Sha256Digest = std::array<uint8_t, 32>;

// The digest of the parts, concatenated.
Sha256Digest sha256(std::initializer_list<std::span<const uint8_t>> parts);

}  // namespace vlmforge
