// OutputFile writes through direct I/O where the file system allows it and buffered elsewhere;
// either way the bytes on disk are exactly those written, whatever the sizes and alignments.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <random>

#include "io/mapped_file.h"
#include "io/safetensors_writer.h"
#include "support/test_support.h"

namespace vlmforge {
namespace {
namespace fs = std::filesystem;

std::vector<std::byte> read_bytes(const fs::path& path) {
  // Read in place: an empty file leaves the vector's data() null, which memcpy may not be given.
  std::vector<std::byte> bytes(fs::file_size(path));
  std::ifstream(path, std::ios::binary).read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return bytes;
}

void expect_exact_output(const fs::path& dir) {
  std::mt19937 rng(7);
  std::vector<std::byte> source_bytes((5u << 20) + 123);
  for (auto& b : source_bytes) b = static_cast<std::byte>(rng());
  const fs::path source_path = dir / "source.bin";
  {
    std::ofstream(source_path, std::ios::binary)
        .write(reinterpret_cast<const char*>(source_bytes.data()), static_cast<std::streamsize>(source_bytes.size()));
  }
  const MappedFile source(source_path);
  // Odd pieces around the 4 KiB block and the 4 MiB buffer, mixed with copies from a file.
  for (size_t total_pieces : {0u, 1u, 9u}) {
    const fs::path out_path = dir / ("out-" + std::to_string(total_pieces));
    std::vector<std::byte> expected;
    OutputFile out(out_path);
    for (size_t i = 0; i < total_pieces; ++i) {
      const size_t sizes[] = {1, 4095, 4096, 4097, (4u << 20) + 1, 13, 8192, 3, (1u << 20) + 7};
      const size_t n = sizes[i % 9];
      const size_t offset = (i * 977) % (source_bytes.size() - n);
      if (i % 2) {
        out.copy_from(source, offset, n);
      } else {
        out.write(std::span(source_bytes).subspan(offset, n));
      }
      expected.insert(expected.end(), source_bytes.begin() + offset, source_bytes.begin() + offset + n);
    }
    EXPECT_EQ(out.position(), expected.size());
    out.close();
    EXPECT_EQ(read_bytes(out_path), expected) << out_path << (out.direct() ? " (direct)" : " (buffered)");
  }
}

TEST(OutputFile, WritesExactBytesOnADiskFileSystem) {
  test::TempDir dir;
  expect_exact_output(dir.path());
}

TEST(OutputFile, WritesExactBytesOnTmpfs) {
  // tmpfs refused O_DIRECT before Linux 6.6: the buffered fallback is taken there.
  if (!fs::is_directory("/dev/shm")) GTEST_SKIP() << "no /dev/shm";
  const fs::path dir = fs::path("/dev/shm") / ("vlmforge-output-test-" + std::to_string(getpid()));
  fs::create_directories(dir);
  expect_exact_output(dir);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace vlmforge
