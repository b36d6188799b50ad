// libFuzzer target for check-data's row parser: any byte string is read as a dataset (JSONL or a
// JSON array) and every row goes through the simdjson parser, the nlohmann fallback and the row
// checks. Nothing may throw or crash; rows stay within the reader's limit; simdjson and nlohmann
// agree on which rows are JSON (rows nested too deep aside); a row and its re-serialization hash
// alike unless it repeats keys (nlohmann keeps one of them).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "data/record_reader.h"
#include "data/row_parser.h"

namespace {
constexpr size_t kLimit = 4096;  // small, so the too-long path is reached

// nlohmann keeps one of repeated keys, so only rows without them round-trip through it.
bool repeats_keys(simdjson::dom::element value) {
  if (value.is_array()) {
    const simdjson::dom::array array = value.get_array().value_unsafe();
    for (const simdjson::dom::element item : array)
      if (repeats_keys(item)) return true;
    return false;
  }
  if (!value.is_object()) return false;
  const simdjson::dom::object object = value.get_object().value_unsafe();
  std::set<std::string_view> keys;
  for (const simdjson::dom::key_value_pair field : object)
    if (!keys.insert(field.key).second || repeats_keys(field.value)) return true;
  return false;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vlmforge::data;
  if (size == 0) return 0;
  // The reader takes a FILE*: a read-only stream over the input, no disk involved.
  std::FILE* file = fmemopen(const_cast<uint8_t*>(data), size, "rb");
  if (file == nullptr) std::abort();
  {
    static RowParser parser;  // reused across inputs, as in check-data
    RecordReader reader(file, kLimit);
    Record record;
    size_t records = 0;
    while (reader.next(record)) {
      if (++records > size + 2 || record.text.size() > kLimit + 1) std::abort();
      if (record.status != Record::Status::kOk) continue;
      const ParsedRow row = parser.parse(record.text, record.line, record.column);
      if (row.syntax && row.syntax->code == FindingCode::kNestingTooDeep) continue;  // valid JSON or not
      const bool json = nlohmann::json::accept(record.text);
      if (!row.syntax != json) std::abort();
      if (row.syntax && (row.syntax->line < record.line || row.syntax->message.empty())) std::abort();
      if (!row.syntax && row.type_name == "object") {
        const std::string again = nlohmann::ordered_json::parse(record.text).dump();
        static simdjson::dom::parser check;
        simdjson::dom::element root;
        // simdjson refuses integers beyond 64 bits, which the row parser takes via nlohmann.
        const bool repeated = check.parse(record.text.data(), record.text.size()).get(root) == simdjson::SUCCESS && repeats_keys(root);
        const ParsedRow twin = parser.parse(again, 1, 1);
        if (twin.syntax || twin.type_name != "object" || (!repeated && twin.hash != row.hash)) std::abort();
      }
    }
  }
  std::fclose(file);
  return 0;
}
