// vlmforge tokenize: text -> ids with a model's tokenizer.json (and, with --chat, its chat
// template), ids -> text with --decode, and a JSON-lines mode for scripts.
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "io/json_file.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/token_ids.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace vlmforge::cli {
namespace fs = std::filesystem;
using nlohmann::ordered_json;
using tokenizer::TokenId;
using tokenizer::Tokenizer;

namespace {

struct TokenizeArgs {
  std::string model;
  std::string input = "-";
  bool chat = false;
  std::string chat_template = "auto";
  bool no_generation_prompt = false;
  bool add_vision_id = false;
  bool json = false;
  bool jsonl = false;
  bool decode = false;
  bool ids_only = false;
  bool skip_special_tokens = false;
  bool strict = false;
};

constexpr size_t kReadChunk = size_t{1} << 20;

std::string read_stdin() {
  std::string text;
  std::string buffer(kReadChunk, '\0');
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), stdin)) > 0) text.append(buffer, 0, n);
  if (std::ferror(stdin)) throw Error("error reading standard input");
  return text;
}

std::string input_text(const TokenizeArgs& args) { return args.input == "-" ? read_stdin() : args.input; }

// Qwen2.5-VL checkpoints say so in config.json; anything else gets the Qwen2.5 text template.
tokenizer::ChatTemplateKind chat_template_for(const TokenizeArgs& args) {
  if (args.chat_template != "auto") return tokenizer::parse_chat_template_kind(args.chat_template);
  const fs::path model(args.model);
  const fs::path config = (fs::is_directory(model) ? model : model.parent_path()) / "config.json";
  if (fs::exists(config)) {
    const std::string type = read_json_file(config).value("model_type", "");
    if (type == "qwen2_5_vl" || type == "qwen2_vl") return tokenizer::ChatTemplateKind::kQwen2_5Vl;
  }
  return tokenizer::ChatTemplateKind::kQwen2_5;
}

std::string render_prompt(const TokenizeArgs& args, const ordered_json& request) {
  tokenizer::ChatOptions options;
  options.add_generation_prompt = !args.no_generation_prompt;
  options.add_vision_id = args.add_vision_id;
  return tokenizer::render_chat(chat_template_for(args), tokenizer::parse_chat_request(request), options);
}

tokenizer::InvalidUtf8 invalid_policy(const TokenizeArgs& args) {
  return args.strict ? tokenizer::InvalidUtf8::kError : tokenizer::InvalidUtf8::kReplace;
}

void print_encoding(const TokenizeArgs& args, const Tokenizer& tok, const std::vector<TokenId>& ids,
                    const std::string* rendered) {
  if (args.json) {
    ordered_json out;
    if (rendered) out["text"] = *rendered;
    out["ids"] = ids;
    ordered_json tokens = ordered_json::array();
    for (const TokenId id : ids) tokens.push_back(tok.token_text(id));
    out["tokens"] = std::move(tokens);
    out["count"] = ids.size();
    std::cout << out.dump(-1, ' ', false, ordered_json::error_handler_t::replace) << "\n";
    return;
  }
  if (rendered) std::cout << *rendered << (rendered->ends_with('\n') ? "" : "\n") << "---\n";
  std::cout << "ids:";
  for (const TokenId id : ids) std::cout << ' ' << id;
  std::cout << "\ntokens:";
  for (const TokenId id : ids) std::cout << ' ' << ordered_json(tok.token_text(id)).dump();
  std::cout << "\ncount: " << ids.size() << "\n";
}

// Encodes standard input in chunks cut where the result is provably unchanged (Tokenizer::
// safe_split_point), printing ids as they come: memory stays bounded for unbounded input.
void stream_ids(const TokenizeArgs& args, const Tokenizer& tok) {
  std::string pending;
  std::string buffer(kReadChunk, '\0');
  std::vector<TokenId> ids;
  bool first = true;
  const auto flush = [&](std::string_view text) {
    ids.clear();
    tok.encode_append(text, ids, invalid_policy(args));
    for (const TokenId id : ids) {
      std::cout << (first ? "" : " ") << id;
      first = false;
    }
  };
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), stdin)) > 0) {
    pending.append(buffer, 0, n);
    const size_t cut = tok.safe_split_point(pending);
    if (cut == 0) continue;
    // A cut never falls inside a UTF-8 sequence (it follows "\n"), so --strict offsets stay local.
    flush(std::string_view(pending).substr(0, cut));
    pending.erase(0, cut);
  }
  if (std::ferror(stdin)) throw Error("error reading standard input");
  flush(pending);
  std::cout << "\n";
}

int run_jsonl(const TokenizeArgs& args, const Tokenizer& tok) {
  std::string line;
  size_t line_number = 0;
  while (std::getline(std::cin, line)) {
    ++line_number;
    if (line.empty()) continue;
    const std::string source = "stdin:" + std::to_string(line_number);
    const ordered_json value = [&] {
      try {
        return ordered_json::parse(line);
      } catch (const ordered_json::parse_error& e) {
        throw Error(source + ": invalid JSON: " + e.what());
      }
    }();
    if (args.decode) {
      if (!value.is_array()) throw Error(source + ": expected a JSON array of token ids");
      std::vector<TokenId> ids;
      for (const auto& v : value) {
        const std::optional<TokenId> id = tokenizer::token_id_from_json(v);
        if (!id) throw Error(source + ": " + tokenizer::not_a_token_id(v.dump()));
        ids.push_back(*id);
      }
      std::cout << ordered_json(tok.decode(ids, args.skip_special_tokens)).dump() << "\n";
      continue;
    }
    std::string text;
    if (args.chat) {
      text = render_prompt(args, value);
    } else if (value.is_string()) {
      text = value.get<std::string>();
    } else {
      throw Error(source + ": expected a JSON string (or a chat request with --chat)");
    }
    std::cout << ordered_json(tok.encode(text, invalid_policy(args))).dump() << "\n";
  }
  return kExitOk;
}

int run(const TokenizeArgs& args) {
  if (args.decode && args.chat) throw UsageError("--decode and --chat cannot be combined");
  if (args.jsonl && args.input != "-") throw UsageError("--jsonl reads standard input; drop the TEXT argument");
  if (args.ids_only && (args.json || args.jsonl || args.decode || args.chat)) {
    throw UsageError("--ids-only is for plain encoding; it cannot be combined with --json, --jsonl, --decode or --chat");
  }
  const Tokenizer tok = Tokenizer::load(args.model);
  if (args.jsonl) return run_jsonl(args, tok);
  if (args.decode) {
    const std::string input = input_text(args);
    const std::vector<TokenId> ids = tokenizer::parse_token_ids(input, args.input == "-" ? "stdin" : "TEXT");
    const std::string text = tok.decode(ids, args.skip_special_tokens);
    if (args.json) {
      std::cout << ordered_json(text).dump() << "\n";
    } else {
      std::cout << text;
    }
    return kExitOk;
  }
  if (args.ids_only && args.input == "-") {
    stream_ids(args, tok);
    return kExitOk;
  }
  std::string text = input_text(args);
  std::string rendered;
  if (args.chat) {
    rendered = render_prompt(args, parse_json(text, args.input == "-" ? "stdin" : "TEXT"));
    text = rendered;
  }
  const std::vector<TokenId> ids = tok.encode(text, invalid_policy(args));
  if (args.ids_only) {
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
    std::cout << "\n";
    return kExitOk;
  }
  print_encoding(args, tok, ids, args.chat ? &rendered : nullptr);
  return kExitOk;
}

}  // namespace

void add_tokenize_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<TokenizeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "tokenize",
      "Encode text to token ids with a model's tokenizer.json (byte-level BPE: Qwen2.5, Qwen2.5-VL), or decode\n"
      "ids back. Special tokens written in the text (<|im_start|> ...) are recognised; none are added.\n"
      "Input that is not valid UTF-8 is repaired with U+FFFD unless --strict.");
  cmd->add_option("--model", args->model, "Model directory holding tokenizer.json, or the tokenizer.json itself")
      ->required();
  cmd->add_option("input", args->input, "TEXT to encode (ids to decode with --decode); '-' or omitted: standard input");
  cmd->add_flag("--chat", args->chat,
                "Input is a chat request (JSON: a message list, {\"messages\", \"tools\"}, or swift's form with <image>\n"
                "tags and \"images\"); it is rendered with the chat template, then encoded");
  cmd->add_option("--template", args->chat_template,
                  "Chat template: qwen2.5, qwen2.5-vl, or auto (qwen2.5-vl when config.json says so)")
      ->capture_default_str();
  cmd->add_flag("--no-generation-prompt", args->no_generation_prompt,
                "With --chat: do not append '<|im_start|>assistant\\n'");
  cmd->add_flag("--add-vision-id", args->add_vision_id, "With --chat and qwen2.5-vl: 'Picture N: ' before images");
  cmd->add_flag("--json", args->json, "Print one JSON object (ids, tokens, count; text with --chat)");
  cmd->add_flag("--jsonl", args->jsonl,
                "Each stdin line is a JSON string (a request with --chat, an id array with --decode); each output\n"
                "line the JSON array of its ids (the decoded JSON string with --decode)");
  cmd->add_flag("--decode", args->decode, "Input is token ids (JSON array or whitespace/comma separated)");
  cmd->add_flag("--ids-only", args->ids_only,
                "Print only the ids, space separated; standard input is then encoded in a stream of chunks");
  cmd->add_flag("--skip-special-tokens", args->skip_special_tokens, "With --decode: leave special tokens out");
  cmd->add_flag("--strict", args->strict, "Fail on input that is not valid UTF-8 instead of replacing bytes");
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace vlmforge::cli
