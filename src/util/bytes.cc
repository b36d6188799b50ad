#include "util/bytes.h"

#include <sys/resource.h>

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "util/error.h"

namespace vlmforge {

uint64_t parse_byte_size(std::string_view text, std::string_view what) {
  auto fail = [&] {
    return UsageError(std::string(what) + ": cannot parse '" + std::string(text) +
                      "' as a size (examples: 5GB, 500MB, 2GiB, 1048576)");
  };
  size_t pos = 0;
  while (pos < text.size() && (std::isdigit(static_cast<unsigned char>(text[pos])) || text[pos] == '.')) ++pos;
  if (pos == 0) throw fail();
  double number = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + pos, number);
  if (ec != std::errc() || ptr != text.data() + pos) throw fail();
  std::string unit;
  for (char c : text.substr(pos))
    if (!std::isspace(static_cast<unsigned char>(c))) unit += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  struct Unit {
    std::string_view name;
    double factor;
  };
  static constexpr std::array<Unit, 11> kUnits{{{"", 1},
                                                {"B", 1},
                                                {"KB", 1e3},
                                                {"MB", 1e6},
                                                {"GB", 1e9},
                                                {"TB", 1e12},
                                                {"KIB", 1024.0},
                                                {"MIB", 1048576.0},
                                                {"GIB", 1073741824.0},
                                                {"TIB", 1099511627776.0},
                                                {"K", 1e3}}};
  for (const auto& u : kUnits) {
    if (u.name == unit) {
      const double bytes = number * u.factor;
      if (!(bytes >= 0) || bytes > 1.8e19) throw fail();
      return static_cast<uint64_t>(std::llround(bytes));
    }
  }
  throw fail();
}

std::string format_bytes(uint64_t bytes) {
  static constexpr std::array<const char*, 5> kNames{"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < kNames.size()) {
    value /= 1024.0;
    ++unit;
  }
  char buf[64];
  if (unit == 0)
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof buf, "%.2f %s", value, kNames[unit]);
  return buf;
}

uint64_t available_memory_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  return 0;
}

uint64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<uint64_t>(usage.ru_maxrss) * 1024;
}

}  // namespace vlmforge
