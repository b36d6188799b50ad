#pragma once
// Byte sizes as people write them: "5GB" (10^9, as huggingface_hub parses max_shard_size),
// "2GiB" (2^30), "500MB", "123" (bytes).
#include <cstdint>
#include <string>
#include <string_view>

namespace vlmforge {

// Throws UsageError naming `what` on a malformed or negative size.
uint64_t parse_byte_size(std::string_view text, std::string_view what = "size");

// "1.50 GiB", "812.0 MiB", "96 B".
std::string format_bytes(uint64_t bytes);

// Memory the system can still give this process (MemAvailable), for out-of-memory messages.
uint64_t available_memory_bytes();

// Peak resident memory of this process so far (infer's [stats] line).
uint64_t peak_rss_bytes();

}  // namespace vlmforge
