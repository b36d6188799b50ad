#include "io/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "util/error.h"

namespace vlmforge {
namespace fs = std::filesystem;

namespace {
constexpr size_t kWriteBufferBytes = 4u << 20;
// Direct I/O needs the buffer address, the file offset and the length aligned to the device's
// logical block size; 4 KiB covers 512-byte and 4K-sector devices alike.
constexpr size_t kDirectAlignment = 4096;
static_assert(kWriteBufferBytes % kDirectAlignment == 0);
}  // namespace

uint64_t TensorSpec::num_elements() const {
  uint64_t elements = 1;
  for (uint64_t d : shape) {
    if (d != 0 && elements > UINT64_MAX / d) throw Error("tensor '" + name + "': shape overflows");
    elements *= d;
  }
  return elements;
}

uint64_t TensorSpec::nbytes() const {
  const auto bytes = storage_bytes(dtype, num_elements());
  if (!bytes) throw Error("tensor '" + name + "': shape is not a whole number of bytes");
  return *bytes;
}

std::string encode_safetensors_header(std::span<const TensorSpec> tensors,
                                      const std::map<std::string, std::string>& metadata) {
  // nlohmann::ordered_json keeps our order, so offsets read in ascending order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    const uint64_t size = t.nbytes();
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}, {"data_offsets", {offset, offset + size}}};
    offset += size;
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  return text;
}

OutputFile::OutputFile(fs::path path)
    : path_(std::move(path)), buffer_(static_cast<std::byte*>(std::aligned_alloc(kDirectAlignment, kWriteBufferBytes))) {
  if (!buffer_) throw std::bad_alloc();
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0644);
  direct_ = fd_ >= 0;
  // File systems without direct I/O refuse the flag when the file is opened.
  if (fd_ < 0 && errno == EINVAL) fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(path_.string() + ": cannot create: " + errno_message(errno));
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
}

void OutputFile::leave_direct_mode() {
  const int flags = fcntl(fd_, F_GETFL);
  if (flags < 0 || fcntl(fd_, F_SETFL, flags & ~O_DIRECT) != 0)
    throw Error(path_.string() + ": cannot switch off direct I/O: " + errno_message(errno));
  direct_ = false;
}

void OutputFile::write_fully(const std::byte* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd_, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      // Some file systems take O_DIRECT at open but refuse the writes (a larger alignment than
      // ours): the page cache takes them instead.
      if (errno == EINVAL && direct_) {
        leave_direct_mode();
        continue;
      }
      throw Error(path_.string() + ": write failed: " + errno_message(errno));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
}

// Direct I/O writes only whole blocks, so an unaligned rest (only ever the end of the file) goes
// through the page cache.
void OutputFile::flush() {
  const size_t aligned = direct_ ? buffered_ / kDirectAlignment * kDirectAlignment : buffered_;
  write_fully(buffer_.get(), aligned);
  if (aligned < buffered_) {
    leave_direct_mode();
    write_fully(buffer_.get() + aligned, buffered_ - aligned);
  }
  buffered_ = 0;
}

void OutputFile::write(std::span<const std::byte> bytes) {
  if (fd_ < 0) throw Error(path_.string() + ": write after close");
  position_ += bytes.size();
  if (!direct_ && bytes.size() >= kWriteBufferBytes) {
    flush();
    write_fully(bytes.data(), bytes.size());
    return;
  }
  while (!bytes.empty()) {
    const size_t n = std::min(bytes.size(), kWriteBufferBytes - buffered_);
    std::memcpy(buffer_.get() + buffered_, bytes.data(), n);
    buffered_ += n;
    bytes = bytes.subspan(n);
    if (buffered_ == kWriteBufferBytes) flush();
  }
}

void OutputFile::copy_from(const MappedFile& source, uint64_t offset, uint64_t length) {
  if (fd_ < 0) throw Error(path_.string() + ": write after close");
  if (direct_) {
    // A direct-I/O file takes only aligned writes, which copy_file_range cannot promise: read
    // into the write buffer instead (one pread per buffer, no pages mapped into this process).
    for (uint64_t done = 0; done < length;) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(length - done, kWriteBufferBytes - buffered_));
      const ssize_t n = ::pread(source.fd(), buffer_.get() + buffered_, want, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw Error(source.path().string() + ": read failed: " + errno_message(errno));
      if (n == 0) throw Error(source.path().string() + ": file is shorter than its header says (changed while in use?)");
      buffered_ += static_cast<size_t>(n);
      done += static_cast<uint64_t>(n);
      if (buffered_ == kWriteBufferBytes) flush();
    }
    position_ += length;
    return;
  }
  flush();
  uint64_t done = 0;
  while (done < length) {
    loff_t in_off = static_cast<loff_t>(offset + done);
    const ssize_t n = copy_file_range(source.fd(), &in_off, fd_, nullptr, length - done, 0);
    if (n > 0) {
      done += static_cast<uint64_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP)
      throw Error(path_.string() + ": write failed: " + errno_message(errno));
    // No kernel copy here (other file system, old kernel): write from the mapping instead.
    write_fully(source.bytes().data() + offset + done, length - done);
    done = length;
  }
  position_ += length;
}

void OutputFile::close() {
  if (fd_ < 0) return;
  flush();
  if (::fsync(fd_) != 0) throw Error(path_.string() + ": fsync failed: " + errno_message(errno));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) throw Error(path_.string() + ": close failed: " + errno_message(errno));
}

SafetensorsWriter::SafetensorsWriter(fs::path path, std::vector<TensorSpec> tensors,
                                     const std::map<std::string, std::string>& metadata)
    : tensors_(std::move(tensors)), out_(std::move(path)) {
  const std::string header = encode_safetensors_header(tensors_, metadata);
  for (const auto& t : tensors_) data_total_ += t.nbytes();
  uint8_t prefix[8];
  uint64_t len = header.size();
  for (auto& b : prefix) {
    b = static_cast<uint8_t>(len & 0xff);
    len >>= 8;
  }
  out_.write(std::as_bytes(std::span(prefix)));
  out_.write(std::as_bytes(std::span(header)));
}

void SafetensorsWriter::reserve(uint64_t length) {
  if (length > data_total_ - data_written_)
    throw Error(out_.path().string() + ": internal error: more tensor data than the header declares");
  data_written_ += length;
}

void SafetensorsWriter::write(std::span<const std::byte> bytes) {
  reserve(bytes.size());
  out_.write(bytes);
}

void SafetensorsWriter::copy_from(const MappedFile& source, uint64_t offset, uint64_t length) {
  reserve(length);
  out_.copy_from(source, offset, length);
}

void SafetensorsWriter::finish() {
  if (data_written_ != data_total_)
    throw Error(out_.path().string() + ": internal error: " + std::to_string(data_total_ - data_written_) +
                " bytes of tensor data were never written");
  out_.close();
}

std::vector<std::vector<size_t>> plan_shards(std::span<const TensorSpec> tensors, uint64_t max_shard_size) {
  std::vector<std::vector<size_t>> shards;
  std::vector<size_t> current;
  uint64_t current_size = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t size = tensors[i].nbytes();
    if (size > max_shard_size) {
      shards.push_back({i});
      continue;
    }
    if (!current.empty() && current_size + size > max_shard_size) {
      shards.push_back(std::move(current));
      current.clear();
      current_size = 0;
    }
    current.push_back(i);
    current_size += size;
  }
  if (!current.empty() || shards.empty()) shards.push_back(std::move(current));
  return shards;
}

std::string shard_file_name(size_t index, size_t count) {
  if (count == 1) return "model.safetensors";
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return buf;
}

nlohmann::json make_shard_index(uint64_t total_size, const std::map<std::string, std::string>& weight_map) {
  return {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
}

void save_safetensors(const fs::path& path, std::span<const TensorSpec> tensors,
                      std::span<const std::span<const std::byte>> data,
                      const std::map<std::string, std::string>& metadata) {
  if (tensors.size() != data.size()) throw Error("save_safetensors: tensors and data differ in count");
  SafetensorsWriter writer(path, {tensors.begin(), tensors.end()}, metadata);
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (data[i].size() != tensors[i].nbytes())
      throw Error(path.string() + ": tensor '" + tensors[i].name + "' data size does not match its shape");
    writer.write(data[i]);
  }
  writer.finish();
}

void write_text_file(const fs::path& path, std::string_view text) {
  const fs::path temp = path.string() + ".tmp";
  {
    OutputFile out(temp);
    out.write(std::as_bytes(std::span(text.data(), text.size())));
    out.close();
  }
  fs::rename(temp, path);
}

}  // namespace vlmforge
