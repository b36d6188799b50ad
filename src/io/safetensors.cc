#include "io/safetensors.h"

#include <algorithm>
#include <cstring>

#include "io/json_file.h"
#include "util/error.h"

namespace vlmforge {
namespace fs = std::filesystem;
using nlohmann::json;

uint64_t TensorInfo::num_elements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_string() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {

uint64_t read_u64_le(std::span<const std::byte> bytes) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
  return v;
}

// JSON for an error message; never throws (replaces invalid UTF-8).
std::string quote(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

TensorInfo parse_tensor_entry(const std::string& name, const json& entry, std::string_view source) {
  auto fail = [&](const std::string& why) {
    return Error(std::string(source) + ": tensor '" + name + "': " + why);
  };
  if (!entry.is_object()) throw fail("header entry is not an object");
  TensorInfo t;
  t.name = name;
  const auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) throw fail("missing or non-string \"dtype\"");
  const auto dtype = parse_dtype(dtype_it->get_ref<const std::string&>());
  if (!dtype) throw fail("unknown dtype \"" + dtype_it->get_ref<const std::string&>() + "\"");
  t.dtype = *dtype;

  const auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) throw fail("missing or non-array \"shape\"");
  uint64_t elements = 1;
  for (const auto& dim : *shape_it) {
    if (!dim.is_number_unsigned()) throw fail("shape has a non-integer or negative dimension");
    const uint64_t d = dim.get<uint64_t>();
    if (d != 0 && elements > UINT64_MAX / d) throw fail("shape " + quote(*shape_it) + " overflows");
    elements *= d;
    t.shape.push_back(d);
  }
  const auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned())
    throw fail("\"data_offsets\" must be [begin, end] with non-negative integers");
  t.begin = (*offsets_it)[0].get<uint64_t>();
  t.end = (*offsets_it)[1].get<uint64_t>();
  if (t.end < t.begin) throw fail("data_offsets " + quote(*offsets_it) + " end before they begin");
  const auto expected = storage_bytes(t.dtype, elements);
  if (!expected) throw fail("shape " + t.shape_string() + " is not a whole number of bytes of " +
                            std::string(dtype_name(t.dtype)));
  if (*expected != t.nbytes())
    throw fail("data_offsets " + quote(*offsets_it) + " span " + std::to_string(t.nbytes()) +
               " bytes but shape " + t.shape_string() + " of " + std::string(dtype_name(t.dtype)) +
               " needs " + std::to_string(*expected));
  return t;
}

}  // namespace

SafetensorsHeader parse_safetensors_header(std::span<const std::byte> file, std::string_view source) {
  const std::string src(source);
  if (file.size() < 8)
    throw Error(src + ": not a safetensors file: " + std::to_string(file.size()) +
                " bytes, shorter than the 8-byte header length (truncated?)");
  const uint64_t header_len = read_u64_le(file.first(8));
  if (header_len > kMaxSafetensorsHeaderBytes)
    throw Error(src + ": header length " + std::to_string(header_len) +
                " is absurd (limit 100 MB): not a safetensors file, or corrupt");
  if (header_len > file.size() - 8)
    throw Error(src + ": header length " + std::to_string(header_len) + " runs past the end of the " +
                std::to_string(file.size()) + "-byte file (truncated?)");
  const std::string_view text(reinterpret_cast<const char*>(file.data()) + 8, header_len);
  const json doc = parse_json(text, src + " (header)");
  if (!doc.is_object()) throw Error(src + ": header is not a JSON object");

  SafetensorsHeader header;
  header.data_start = 8 + header_len;
  const uint64_t data_size = file.size() - header.data_start;
  for (const auto& [name, entry] : doc.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) throw Error(src + ": __metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) throw Error(src + ": __metadata__ value for '" + key + "' is not a string");
        header.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    header.tensors.push_back(parse_tensor_entry(name, entry, source));
  }
  std::sort(header.tensors.begin(), header.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  const TensorInfo* previous = nullptr;
  for (const auto& t : header.tensors) {
    if (t.begin < cursor)
      throw Error(src + ": tensor '" + t.name + "' overlaps tensor '" + previous->name + "' (offsets " +
                  std::to_string(t.begin) + " < " + std::to_string(cursor) + ")");
    if (t.begin > cursor)
      throw Error(src + ": gap in the data section before tensor '" + t.name + "' (offset " +
                  std::to_string(t.begin) + ", expected " + std::to_string(cursor) + ")");
    if (t.end > data_size)
      throw Error(src + ": tensor '" + t.name + "' data_offsets end at " + std::to_string(t.end) +
                  " but the data section has only " + std::to_string(data_size) + " bytes (truncated file?)");
    cursor = t.end;
    previous = &t;
  }
  if (cursor != data_size)
    throw Error(src + ": " + std::to_string(data_size - cursor) +
                " trailing bytes after the last tensor's data (corrupt or not a safetensors file)");
  return header;
}

SafetensorsFile::SafetensorsFile(const fs::path& path)
    : mapped_(path), header_(parse_safetensors_header(mapped_.bytes(), path.string())) {
  for (size_t i = 0; i < header_.tensors.size(); ++i) by_name_.emplace(header_.tensors[i].name, i);
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &header_.tensors[it->second];
}

Checkpoint::Checkpoint(const fs::path& path) : root_(path) {
  std::vector<fs::path> shard_paths;
  std::map<std::string, std::string> weight_map;  // from the index, if any
  fs::path index_path;
  if (fs::is_regular_file(path)) {
    shard_paths.push_back(path);
    root_ = path.parent_path();
  } else if (fs::is_directory(path)) {
    index_path = path / "model.safetensors.index.json";
    if (fs::exists(index_path)) {
      const json index = read_json_file(index_path);
      const auto wm = index.find("weight_map");
      if (!index.is_object() || wm == index.end() || !wm->is_object())
        throw Error(index_path.string() + ": missing \"weight_map\" object");
      for (const auto& [name, file] : wm->items()) {
        if (!file.is_string()) throw Error(index_path.string() + ": weight_map[\"" + name + "\"] is not a file name");
        const std::string shard = file.get<std::string>();
        if (shard.find('/') != std::string::npos || shard == ".." || shard.empty())
          throw Error(index_path.string() + ": weight_map[\"" + name + "\"] = \"" + shard + "\" is not a file name in this directory");
        weight_map[name] = shard;
        if (std::find(shard_paths.begin(), shard_paths.end(), path / shard) == shard_paths.end())
          shard_paths.push_back(path / shard);
      }
      std::sort(shard_paths.begin(), shard_paths.end());
      for (const auto& shard : shard_paths)
        if (!fs::exists(shard))
          throw Error(index_path.string() + ": names shard '" + shard.filename().string() +
                      "', which does not exist in " + path.string());
      sharded_ = true;
    } else {
      std::vector<fs::path> adapters;
      for (const auto& entry : fs::directory_iterator(path)) {
        if (!entry.is_regular_file() || entry.path().extension() != ".safetensors") continue;
        (entry.path().filename() == "adapter_model.safetensors" ? adapters : shard_paths).push_back(entry.path());
      }
      if (shard_paths.empty()) shard_paths = adapters;
      std::sort(shard_paths.begin(), shard_paths.end());
      if (shard_paths.empty()) throw Error(path.string() + ": no *.safetensors files in this directory");
      sharded_ = shard_paths.size() > 1;
    }
  } else {
    throw Error(path.string() + ": no such file or directory");
  }

  for (const auto& shard : shard_paths) files_.push_back(std::make_unique<SafetensorsFile>(shard));
  for (const auto& file : files_) {
    for (const auto& info : file->tensors()) {
      if (!weight_map.empty()) {
        const auto it = weight_map.find(info.name);
        if (it == weight_map.end() || it->second != file->path().filename().string()) continue;
      }
      if (by_name_.count(info.name))
        throw Error(file->path().string() + ": tensor '" + info.name + "' also appears in " +
                    tensors_[by_name_[info.name]].file->path().string());
      by_name_.emplace(info.name, tensors_.size());
      tensors_.push_back({file.get(), &info});
    }
  }
  for (const auto& [name, shard] : weight_map)
    if (!by_name_.count(name))
      throw Error(index_path.string() + ": tensor '" + name + "' is mapped to '" + shard +
                  "', but that file does not contain it");
}

const TensorRef* Checkpoint::find(std::string_view name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& t : tensors_) total += t.info->nbytes();
  return total;
}

}  // namespace vlmforge
