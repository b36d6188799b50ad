#pragma once
// JSON text exactly as Python's json.dumps(value, ensure_ascii=False) writes it, which is what the
// `tojson` filter of transformers' chat templates produces: ", " and ": " separators, keys in
// insertion order, non-ASCII characters unescaped.
#include <nlohmann/json.hpp>
#include <string>

namespace vlmforge::tokenizer {

std::string python_json_dumps(const nlohmann::ordered_json& value);

}  // namespace vlmforge::tokenizer
