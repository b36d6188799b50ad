#include "tokenizer/tokenizer_json.h"

#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "tokenizer/pretokenizer.h"
#include "util/error.h"

namespace vlmforge::tokenizer {
namespace {

using nlohmann::json;

// Builds a DOM of everything except model.vocab and model.merges, which go into a BpeSpec.
class SpecReader final : public nlohmann::json_sax<json> {
 public:
  explicit SpecReader(BpeSpec& bpe) : bpe_(bpe) {}

  json& root() { return root_; }
  bool saw_vocab() const { return saw_vocab_; }
  bool saw_merges() const { return saw_merges_; }
  const std::string& schema_error() const { return schema_error_; }
  const std::string& syntax_error() const { return syntax_error_; }
  size_t syntax_error_offset() const { return syntax_error_offset_; }

  bool null() override { return value(nullptr); }
  bool boolean(bool v) override { return value(v); }
  bool number_integer(number_integer_t v) override { return value(v); }
  bool number_unsigned(number_unsigned_t v) override { return value(v); }
  bool number_float(number_float_t v, const string_t&) override { return value(v); }
  bool binary(binary_t&) override { return fail("unexpected binary value"); }

  bool string(string_t& v) override {
    if (mode_ == Mode::kMerges) {
      // "left right": exactly one space, as tokenizers requires.
      const size_t space = v.find(' ');
      if (space == std::string::npos || v.find(' ', space + 1) != std::string::npos) {
        return fail("model.merges[" + std::to_string(bpe_.merges.size()) + "]: expected \"left right\", got \"" + v +
                    "\"");
      }
      bpe_.merges.emplace_back(v.substr(0, space), v.substr(space + 1));
      return true;
    }
    if (mode_ == Mode::kMergePair) {
      pair_parts_.push_back(std::move(v));
      return true;
    }
    return value(std::move(v));
  }

  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }

  bool start_object(std::size_t) override {
    if (mode_ == Mode::kNone && in_model() && key_ == "vocab") {
      mode_ = Mode::kVocab;
      saw_vocab_ = true;
      return true;
    }
    if (mode_ != Mode::kNone) return fail(mode_path() + ": unexpected object");
    return open(json::object());
  }

  bool end_object() override {
    if (mode_ == Mode::kVocab) {
      mode_ = Mode::kNone;
      return true;
    }
    return close();
  }

  bool start_array(std::size_t) override {
    if (mode_ == Mode::kNone && in_model() && key_ == "merges") {
      mode_ = Mode::kMerges;
      saw_merges_ = true;
      return true;
    }
    if (mode_ == Mode::kMerges) {
      mode_ = Mode::kMergePair;
      pair_parts_.clear();
      return true;
    }
    if (mode_ != Mode::kNone) return fail(mode_path() + ": unexpected array");
    return open(json::array());
  }

  bool end_array() override {
    if (mode_ == Mode::kMergePair) {
      if (pair_parts_.size() != 2) {
        return fail("model.merges[" + std::to_string(bpe_.merges.size()) + "]: expected a pair of strings");
      }
      bpe_.merges.emplace_back(std::move(pair_parts_[0]), std::move(pair_parts_[1]));
      mode_ = Mode::kMerges;
      return true;
    }
    if (mode_ == Mode::kMerges) {
      mode_ = Mode::kNone;
      return true;
    }
    return close();
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) override {
    syntax_error_ = e.what();
    syntax_error_offset_ = position;
    return false;
  }

 private:
  enum class Mode { kNone, kVocab, kMerges, kMergePair };

  // Directly inside the top-level "model" object.
  bool in_model() const { return stack_.size() == 2 && model_open_; }

  std::string mode_path() const { return mode_ == Mode::kVocab ? "model.vocab" : "model.merges"; }

  bool fail(std::string message) {
    schema_error_ = std::move(message);
    return false;
  }

  template <typename T>
  bool value(T&& v) {
    if (mode_ == Mode::kVocab) {
      if constexpr (std::is_same_v<std::decay_t<T>, number_unsigned_t>) {
        if (v <= static_cast<number_unsigned_t>(INT32_MAX)) {
          bpe_.vocab.emplace_back(std::move(key_), static_cast<TokenId>(v));
          return true;
        }
      }
      return fail("model.vocab[\"" + key_ + "\"]: expected a token id (non-negative integer)");
    }
    if (mode_ != Mode::kNone) return fail(mode_path() + ": expected strings");
    insert(json(std::forward<T>(v)));
    return true;
  }

  json* insert(json v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    json& slot = parent[key_];
    slot = std::move(v);
    return &slot;
  }

  bool open(json container) {
    const bool opening_model = stack_.size() == 1 && key_ == "model" && container.is_object();
    stack_.push_back(insert(std::move(container)));
    if (opening_model) model_open_ = true;
    return true;
  }

  bool close() {
    stack_.pop_back();
    if (stack_.size() == 1) model_open_ = false;
    return true;
  }

  BpeSpec& bpe_;
  json root_;
  std::vector<json*> stack_;  // open containers of the DOM
  std::string key_;
  Mode mode_ = Mode::kNone;
  bool model_open_ = false, saw_vocab_ = false, saw_merges_ = false;
  std::vector<std::string> pair_parts_;
  std::string schema_error_, syntax_error_;
  size_t syntax_error_offset_ = 0;
};

std::string type_of(const json& section) {
  if (!section.is_object()) return "";
  const auto it = section.find("type");
  return it != section.end() && it->is_string() ? it->get<std::string>() : "";
}

bool flag(const json& object, const char* name, const std::string& where) {
  const auto it = object.find(name);
  if (it == object.end() || it->is_null()) return false;
  if (!it->is_boolean()) throw Error(where + "." + name + ": expected true or false");
  return it->get<bool>();
}

class SectionReader {
 public:
  SectionReader(const json& root, std::string_view source) : root_(root), source_(source) {}

  [[noreturn]] void unsupported(const std::string& what) const {
    throw Error(source_ + ": unsupported tokenizer: " + what +
                " (vlmforge supports byte-level BPE tokenizers such as Qwen2's)");
  }
  [[noreturn]] void invalid(const std::string& what) const { throw Error(source_ + ": " + what); }

  Normalization normalizer() const {
    const auto it = root_.find("normalizer");
    if (it == root_.end() || it->is_null()) return Normalization::kNone;
    const std::string type = type_of(*it);
    if (type == "NFC") return Normalization::kNfc;
    if (type == "Sequence") {
      const auto& list = (*it)["normalizers"];
      if (list.is_array() && list.empty()) return Normalization::kNone;
      if (list.is_array() && list.size() == 1 && type_of(list[0]) == "NFC") return Normalization::kNfc;
    }
    unsupported("normalizer " + (type.empty() ? it->dump() : type));
  }

  void pre_tokenizer(TokenizerSpec& spec) const {
    const auto it = root_.find("pre_tokenizer");
    if (it == root_.end() || it->is_null()) unsupported("no pre_tokenizer (byte-level BPE needs ByteLevel)");
    std::vector<const json*> steps;
    if (type_of(*it) == "Sequence") {
      const auto list = it->find("pretokenizers");
      if (list == it->end() || !list->is_array()) invalid("pre_tokenizer.pretokenizers: missing or not an array");
      for (const json& step : *list) steps.push_back(&step);
    } else {
      steps.push_back(&*it);
    }
    bool byte_level = false;
    for (size_t i = 0; i < steps.size(); ++i) {
      const json& step = *steps[i];
      const std::string where = "pre_tokenizer step " + std::to_string(i);
      const std::string type = type_of(step);
      if (type == "Split" && !byte_level && spec.split_pattern.empty()) {
        spec.split_pattern = split_pattern(step, where);
      } else if (type == "ByteLevel" && !byte_level) {
        byte_level = true;
        spec.add_prefix_space = flag(step, "add_prefix_space", where);
        const auto use_regex = step.find("use_regex");
        const bool regex = use_regex == step.end() || (use_regex->is_boolean() && use_regex->get<bool>());
        if (regex) {
          if (!spec.split_pattern.empty()) unsupported(where + ": ByteLevel with use_regex after a Split");
          spec.split_pattern = kGpt2SplitPatternText;
        }
      } else {
        unsupported(where + " of type " + (type.empty() ? step.dump() : type));
      }
    }
    if (!byte_level) unsupported("pre_tokenizer without ByteLevel");
  }

  std::string split_pattern(const json& step, const std::string& where) const {
    const auto behavior = step.find("behavior");
    if (behavior == step.end() || *behavior != "Isolated") {
      unsupported(where + ": Split behavior " + (behavior == step.end() ? "(missing)" : behavior->dump()) +
                  " (only Isolated is supported)");
    }
    if (flag(step, "invert", where)) unsupported(where + ": Split with invert=true");
    const auto pattern = step.find("pattern");
    if (pattern == step.end() || !pattern->is_object()) invalid(where + ".pattern: missing");
    if (const auto regex = pattern->find("Regex"); regex != pattern->end() && regex->is_string()) {
      return regex->get<std::string>();
    }
    if (const auto literal = pattern->find("String"); literal != pattern->end() && literal->is_string()) {
      // A literal string: quote it for PCRE2.
      return "\\Q" + literal->get<std::string>() + "\\E";
    }
    invalid(where + ".pattern: expected {\"Regex\": ...} or {\"String\": ...}");
  }

  void model(TokenizerSpec& spec, const SpecReader& reader) const {
    const auto it = root_.find("model");
    if (it == root_.end() || !it->is_object()) invalid("missing field \"model\"");
    const std::string type = type_of(*it);
    if (!type.empty() && type != "BPE") unsupported("model type " + type);
    if (!reader.saw_vocab()) invalid("missing field \"model.vocab\"");
    if (!reader.saw_merges()) invalid("missing field \"model.merges\"");
    if (const auto dropout = it->find("dropout"); dropout != it->end() && !dropout->is_null()) {
      unsupported("BPE dropout (non-deterministic encoding)");
    }
    for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      const auto field = it->find(affix);
      if (field != it->end() && !field->is_null() && *field != "") unsupported(std::string("model.") + affix);
    }
    if (flag(*it, "byte_fallback", "model")) unsupported("model.byte_fallback");
    spec.bpe.ignore_merges = flag(*it, "ignore_merges", "model");
  }

  std::vector<AddedToken> added_tokens() const {
    std::vector<AddedToken> tokens;
    const auto it = root_.find("added_tokens");
    if (it == root_.end() || it->is_null()) return tokens;
    if (!it->is_array()) invalid("added_tokens: expected an array");
    for (size_t i = 0; i < it->size(); ++i) {
      const json& entry = (*it)[i];
      const std::string where = "added_tokens[" + std::to_string(i) + "]";
      if (!entry.is_object()) invalid(where + ": expected an object");
      const auto id = entry.find("id");
      const auto content = entry.find("content");
      if (id == entry.end() || !id->is_number_unsigned() || id->get<uint64_t>() > INT32_MAX) {
        invalid(where + ".id: missing or not a token id");
      }
      if (content == entry.end() || !content->is_string() || content->get<std::string>().empty()) {
        invalid(where + ".content: missing or empty");
      }
      AddedToken token;
      token.id = static_cast<TokenId>(id->get<uint64_t>());
      token.content = content->get<std::string>();
      token.special = flag(entry, "special", where);
      token.single_word = flag(entry, "single_word", where);
      token.lstrip = flag(entry, "lstrip", where);
      token.rstrip = flag(entry, "rstrip", where);
      token.normalized = flag(entry, "normalized", where);
      tokens.push_back(std::move(token));
    }
    return tokens;
  }

  void decoder() const {
    const auto it = root_.find("decoder");
    if (it == root_.end() || it->is_null()) return;
    const std::string type = type_of(*it);
    if (type != "ByteLevel") unsupported("decoder " + (type.empty() ? it->dump() : type));
  }

 private:
  // The GPT-2 pattern as a std::string for split_pattern.
  static inline const std::string kGpt2SplitPatternText{kGpt2SplitPattern};

  const json& root_;
  std::string source_;
};

}  // namespace

TokenizerSpec parse_tokenizer_json(std::string_view text, std::string_view source) {
  TokenizerSpec spec;
  SpecReader reader(spec.bpe);
  const bool parsed = json::sax_parse(text, &reader, json::input_format_t::json, /*strict=*/true);
  if (!parsed) {
    if (!reader.schema_error().empty()) throw Error(std::string(source) + ": " + reader.schema_error());
    std::string reason = reader.syntax_error();
    if (const auto pos = reason.find("syntax error"); pos != std::string::npos) reason = reason.substr(pos);
    throw Error(std::string(source) + ":" + line_column(text, reader.syntax_error_offset() > 0 ? reader.syntax_error_offset() - 1 : 0) +
                ": invalid JSON: " + reason);
  }
  const json& root = reader.root();
  const SectionReader sections(root, source);
  if (!root.is_object()) sections.invalid("expected a JSON object at the top level");
  sections.model(spec, reader);
  spec.normalization = sections.normalizer();
  sections.pre_tokenizer(spec);
  sections.decoder();
  spec.added_tokens = sections.added_tokens();
  return spec;
}

}  // namespace vlmforge::tokenizer
