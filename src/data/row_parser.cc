#include "data/row_parser.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "io/json_file.h"
#include "util/error.h"

namespace vlmforge::data {

namespace dom = simdjson::dom;

namespace {

// A parser and buffer grown for a huge row are shrunk back to this before the next row, so one
// 64 MB row does not pin ~14 bytes of simdjson state per byte for the rest of the run.
constexpr size_t kKeepCapacity = 1 << 20;

Finding too_deep(uint64_t line) {
  return Finding{FindingCode::kNestingTooDeep, line, 0, "nesting deeper than " + std::to_string(RowParser::kMaxDepth) + " levels", {}};
}

uint64_t mix(uint64_t h, uint64_t v) {  // splitmix64's finalizer over the running state
  uint64_t x = h ^ (v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Also finds the nesting depth: simdjson's own limit lets one more level through when the
// innermost container is empty.
uint64_t hash_into(uint64_t h, dom::element value, int level, int& depth) {
  const auto type = value.type();
  h = mix(h, static_cast<uint64_t>(type));
  switch (type) {
    case dom::element_type::OBJECT: {
      depth = std::max(depth, level + 1);
      const dom::object object = value.get_object().value_unsafe();
      h = mix(h, object.size());
      for (const dom::key_value_pair field : object) {
        h = mix(h, std::hash<std::string_view>{}(field.key));
        h = hash_into(h, field.value, level + 1, depth);
      }
      return h;
    }
    case dom::element_type::ARRAY: {
      depth = std::max(depth, level + 1);
      const dom::array array = value.get_array().value_unsafe();
      h = mix(h, array.size());
      for (const dom::element item : array) h = hash_into(h, item, level + 1, depth);
      return h;
    }
    case dom::element_type::STRING: {
      const std::string_view s = value.get_string().value_unsafe();
      return mix(mix(h, s.size()), std::hash<std::string_view>{}(s));
    }
    case dom::element_type::INT64: return mix(h, static_cast<uint64_t>(value.get_int64().value_unsafe()));
    case dom::element_type::UINT64: return mix(h, value.get_uint64().value_unsafe());
    case dom::element_type::DOUBLE: {
      const double d = value.get_double().value_unsafe();
      uint64_t bits;
      std::memcpy(&bits, &d, sizeof bits);
      return mix(h, bits);
    }
    case dom::element_type::BOOL: return mix(h, value.get_bool().value_unsafe() ? 1 : 0);
    case dom::element_type::NULL_VALUE: break;
  }
  return h;
}

}  // namespace

uint64_t structural_hash(dom::element value, int& depth) {
  depth = 0;
  return hash_into(0, value, 0, depth);
}

// max_depth counts the document itself as one level, so kMaxDepth levels of nesting need one more.
RowParser::RowParser() {
  if (parser_.allocate(kKeepCapacity, kMaxDepth + 1) != simdjson::SUCCESS) throw Error("out of memory for the JSON parser");
}

simdjson::error_code RowParser::load(std::string_view text, dom::element& root) {
  if (text.size() + simdjson::SIMDJSON_PADDING > buffer_capacity_ || (buffer_capacity_ > 2 * kKeepCapacity && text.size() <= kKeepCapacity)) {
    buffer_capacity_ = std::max(text.size(), kKeepCapacity) + simdjson::SIMDJSON_PADDING;
    buffer_ = std::make_unique_for_overwrite<char[]>(buffer_capacity_);
  }
  if (parser_.capacity() > kKeepCapacity && text.size() <= kKeepCapacity) {
    if (parser_.allocate(kKeepCapacity, kMaxDepth + 1) != simdjson::SUCCESS) throw Error("out of memory for the JSON parser");
  }
  std::memcpy(buffer_.get(), text.data(), text.size());
  std::memset(buffer_.get() + text.size(), ' ', simdjson::SIMDJSON_PADDING);
  return parser_.parse(reinterpret_cast<const uint8_t*>(buffer_.get()), text.size(), false).get(root);
}

ParsedRow RowParser::parse(std::string_view text, uint64_t line, uint64_t column) {
  ParsedRow out;
  dom::element root;
  if (simdjson::error_code error = load(text, root); error != simdjson::SUCCESS) {
    // On the raw text, before nlohmann parses it: a DOM of millions of nested arrays would take
    // gigabytes, and nlohmann's parser recurses.
    if (json_nesting_exceeds(text, kMaxDepth)) {
      out.syntax = too_deep(line);
      return out;
    }
    nlohmann::ordered_json value;
    try {
      value = nlohmann::ordered_json::parse(text);
    } catch (const nlohmann::ordered_json::parse_error& e) {
      const auto [at_line, at_column] = text_position(text, e.byte > 0 ? e.byte - 1 : 0, line, column);
      std::string what = e.what();
      if (const size_t at = what.find(": "); at != std::string::npos) what = what.substr(at + 2);  // drop "[json.exception...]"
      out.syntax = Finding{FindingCode::kInvalidJson, at_line, at_column, what, {}};
      return out;
    } catch (const nlohmann::ordered_json::exception& e) {  // a number beyond double's range: no position
      std::string what = e.what();
      if (const size_t at = what.find("] "); at != std::string::npos) what = what.substr(at + 2);
      out.syntax = Finding{FindingCode::kInvalidJson, line, column, what, {}};
      return out;
    }
    // nlohmann accepts what simdjson refuses only for integers beyond 64 bits (the fuzz target
    // checks that): its serialization writes them as doubles, which simdjson reads.
    if (error = load(value.dump(), root); error != simdjson::SUCCESS) {
      out.syntax = Finding{FindingCode::kInvalidJson, line, column, simdjson::error_message(error), {}};
      return out;
    }
  }
  int depth = 0;
  out.hash = structural_hash(root, depth);
  if (depth > kMaxDepth) {
    out.syntax = too_deep(line);
    return out;
  }
  out.type_name = json_type_name(root);
  dom::object object;
  if (root.get_object().get(object) != simdjson::SUCCESS) return out;
  out.normalized = normalize_row(object, out.problems);
  out.facts = check_row(out.normalized, out.problems);
  return out;
}

}  // namespace vlmforge::data
