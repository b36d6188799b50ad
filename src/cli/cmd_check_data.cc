// vlmforge check-data: validates swift fine-tuning / inference datasets (data/checker.h) and
// prints the findings and a summary; --fix writes a corrected copy.
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/vision_flags.h"
#include "data/checker.h"
#include "io/atomic_output.h"
#include "util/error.h"

namespace vlmforge::cli {
namespace fs = std::filesystem;

namespace {

struct CheckDataArgs {
  std::vector<std::string> files;
  std::string model;
  std::optional<uint64_t> max_pixels, min_pixels;
  uint64_t max_length = 0;
  std::string base_dir;
  bool json = false;
  bool deep = false;
  std::string fix;
  size_t threads = 0;
  uint64_t max_errors = 0;
  uint64_t max_line_bytes = 64 << 20;
};

// Closes the dataset file unless it is stdin.
struct InputFile {
  std::FILE* file = nullptr;
  bool owned = false;
  ~InputFile() {
    if (owned && file != nullptr) std::fclose(file);
  }
};

nlohmann::ordered_json finding_json(const data::Finding& f) {
  const data::FindingInfo& info = data::finding_info(f.code);
  nlohmann::ordered_json j = {{"file", f.file}, {"line", f.line}};
  if (f.column > 0) j["column"] = f.column;
  j["code"] = info.name;
  j["severity"] = data::severity_name(info.severity);
  j["message"] = f.message;
  j["hint"] = info.hint;
  return j;
}

struct Stats {
  uint64_t min = 0, max = 0, p50 = 0, p95 = 0;
  double mean = 0;
};

Stats stats_of(std::vector<uint32_t> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  // Nearest-rank percentiles.
  s.p50 = v[(v.size() - 1) * 50 / 100];
  s.p95 = v[(v.size() - 1) * 95 / 100];
  double sum = 0;
  for (uint32_t x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  return s;
}

nlohmann::ordered_json stats_json(const Stats& s) {
  return {{"min", s.min}, {"mean", s.mean}, {"p50", s.p50}, {"p95", s.p95}, {"max", s.max}};
}

nlohmann::ordered_json summary_json(const data::CheckSummary& s, bool with_tokens, bool with_fix) {
  nlohmann::ordered_json formats = nlohmann::ordered_json::object();
  for (int i = 0; i < data::kRowFormatCount; ++i)
    if (s.rows_per_format[i] > 0) formats[std::string(data::row_format_name(static_cast<data::RowFormat>(i)))] = s.rows_per_format[i];
  nlohmann::ordered_json codes = nlohmann::ordered_json::object();
  for (int i = 0; i < data::kFindingCodeCount; ++i)
    if (s.findings_per_code[i] > 0) codes[std::string(data::finding_info(static_cast<data::FindingCode>(i)).name)] = s.findings_per_code[i];
  nlohmann::ordered_json j = {{"summary", true},   {"rows", s.rows},         {"bytes", s.bytes},
                              {"formats", formats}, {"findings", codes},      {"errors", s.errors},
                              {"warnings", s.warnings}, {"images_checked", s.images_checked},
                              {"images_ok", s.images_ok}, {"remote_media", s.remote_media},
                              {"inline_media", s.inline_media}};
  if (!s.largest_image.empty())
    j["largest_image"] = {{"path", s.largest_image}, {"width", s.largest_width}, {"height", s.largest_height},
                          {"tokens", s.largest_tokens}};
  if (with_tokens)
    j["tokens"] = {{"total", stats_json(stats_of(s.total_tokens.values))},
                   {"text", stats_json(stats_of(s.text_tokens.values))},
                   {"image", stats_json(stats_of(s.image_tokens.values))}};
  if (with_fix) j["fix"] = {{"written", s.written_rows}, {"changed", s.fixed_rows}, {"dropped", s.dropped_rows}};
  return j;
}

void print_summary(std::FILE* out, const data::CheckSummary& s, bool with_tokens, const CheckDataArgs& args) {
  std::fprintf(out, "\n%llu rows, %.1f MB", static_cast<unsigned long long>(s.rows), static_cast<double>(s.bytes) / 1e6);
  std::string formats;
  for (int i = 0; i < data::kRowFormatCount; ++i)
    if (s.rows_per_format[i] > 0)
      formats += (formats.empty() ? "" : ", ") + std::string(data::row_format_name(static_cast<data::RowFormat>(i))) + " " +
                 std::to_string(s.rows_per_format[i]);
  std::fprintf(out, " (%s)\n", formats.empty() ? "no valid rows" : formats.c_str());
  std::fprintf(out, "%llu errors, %llu warnings\n", static_cast<unsigned long long>(s.errors), static_cast<unsigned long long>(s.warnings));
  for (int i = 0; i < data::kFindingCodeCount; ++i)
    if (s.findings_per_code[i] > 0)
      std::fprintf(out, "  %-26s %llu\n", std::string(data::finding_info(static_cast<data::FindingCode>(i)).name).c_str(),
                   static_cast<unsigned long long>(s.findings_per_code[i]));
  std::fprintf(out, "images: %llu files checked, %llu readable; %llu remote and %llu inline not checked\n",
               static_cast<unsigned long long>(s.images_checked), static_cast<unsigned long long>(s.images_ok),
               static_cast<unsigned long long>(s.remote_media), static_cast<unsigned long long>(s.inline_media));
  if (!s.largest_image.empty())
    std::fprintf(out, "largest image: %s (%ux%u, %llu tokens)\n", s.largest_image.c_str(), s.largest_width, s.largest_height,
                 static_cast<unsigned long long>(s.largest_tokens));
  if (with_tokens) {
    for (const auto& [label, values] : {std::pair{"total", &s.total_tokens}, std::pair{"text", &s.text_tokens},
                                        std::pair{"image", &s.image_tokens}}) {
      const Stats st = stats_of(values->values);
      std::fprintf(out, "tokens %-5s min %llu  mean %.1f  p50 %llu  p95 %llu  max %llu\n", label,
                   static_cast<unsigned long long>(st.min), st.mean, static_cast<unsigned long long>(st.p50),
                   static_cast<unsigned long long>(st.p95), static_cast<unsigned long long>(st.max));
    }
  }
  if (!args.fix.empty())
    std::fprintf(out, "--fix: wrote %llu rows to %s (%llu changed, %llu dropped)\n",
                 static_cast<unsigned long long>(s.written_rows), args.fix == "-" ? "standard output" : args.fix.c_str(),
                 static_cast<unsigned long long>(s.fixed_rows), static_cast<unsigned long long>(s.dropped_rows));
}

int run_check_data(const CheckDataArgs& args) {
  data::CheckOptions options;
  if (!args.base_dir.empty()) {
    std::error_code ec;
    if (!fs::is_directory(args.base_dir, ec)) throw UsageError("--base_dir: " + args.base_dir + " is not a directory");
    options.base_dir = fs::absolute(args.base_dir);
  }
  options.budget = pixel_budget_flags(args.min_pixels, args.max_pixels);
  options.max_length = args.max_length;
  options.max_record_bytes = args.max_line_bytes;
  options.threads = args.threads;
  options.deep = args.deep;
  if (args.max_length > 0 && args.model.empty()) throw UsageError("--max_length needs --model (to count tokens)");

  std::optional<data::TokenCounter> tokens;
  if (!args.model.empty()) tokens.emplace(data::TokenCounter::load(args.model));
  std::optional<AtomicOutput> fix;
  if (!args.fix.empty()) fix.emplace(args.fix, args.files, "--fix");
  // --fix - writes the corrected rows to stdout, so the report goes to stderr.
  std::FILE* const report = fix && fix->is_stdout() ? stderr : stdout;

  uint64_t printed_errors = 0, hidden = 0;
  auto sink = [&](const data::Finding& f) {
    const data::FindingInfo& info = data::finding_info(f.code);
    if (info.severity == data::Severity::kError && args.max_errors > 0 && printed_errors++ >= args.max_errors) {
      ++hidden;
      return;
    }
    if (args.json) {
      std::fprintf(report, "%s\n", finding_json(f).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      return;
    }
    std::string where = f.file + ":" + std::to_string(f.line);
    if (f.column > 0) where += ":" + std::to_string(f.column);
    std::fprintf(report, "%s: %s[%s]: %s (hint: %s)\n", where.c_str(),
                 std::string(data::severity_name(info.severity)).c_str(), std::string(info.name).c_str(), f.message.c_str(), std::string(info.hint).c_str());
  };
  data::DatasetChecker checker(options, tokens ? &*tokens : nullptr, fix ? &*fix : nullptr, sink);
  for (const std::string& name : args.files) {
    InputFile input;
    fs::path dir = fs::current_path();
    if (name == "-") {
      input.file = stdin;
    } else {
      std::error_code ec;  // a symlink loop or unreadable parent surfaces from fopen below
      if (fs::is_directory(name, ec)) throw Error(name + " is a directory, not a dataset file");
      input.file = std::fopen(name.c_str(), "rb");
      if (input.file == nullptr) throw Error("cannot open " + name + ": " + errno_message(errno));
      input.owned = true;
      dir = fs::absolute(name).parent_path();
    }
    checker.check(input.file, name, dir);
  }
  checker.finish();
  if (fix) fix->commit();
  const data::CheckSummary& s = checker.summary();
  if (args.json) {
    auto j = summary_json(s, tokens.has_value(), fix.has_value());
    if (hidden > 0) j["errors_not_shown"] = hidden;
    std::fprintf(report, "%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    if (hidden > 0) std::fprintf(report, "(%llu more errors not shown: --max_errors)\n", static_cast<unsigned long long>(hidden));
    print_summary(report, s, tokens.has_value(), args);
  }
  return s.errors > 0 ? kExitFailure : kExitOk;
}

}  // namespace

void add_check_data_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<CheckDataArgs>();
  CLI::App* cmd = app.add_subcommand(
      "check-data",
      "Validate swift datasets (.jsonl or .json array; - = stdin) before training: row formats, roles and order,\n"
      "<image> tags vs images, image paths in the text, missing or corrupt images, duplicates, token lengths.\n"
      "Exit codes: 0 clean (warnings allowed), 1 error-level findings, 2 usage or I/O error.");
  cmd->add_option("files", args->files, "Dataset files (.jsonl, .json array, - for stdin)")->required();
  cmd->add_option("--model", args->model, "Model directory (tokenizer.json, config.json) for token counts");
  cmd->add_option("--max_pixels", args->max_pixels, "Image pixel budget upper bound (default MAX_PIXELS env or 12845056)");
  cmd->add_option("--min_pixels", args->min_pixels, "Image pixel budget lower bound (default MIN_PIXELS env or 3136)");
  cmd->add_option("--max_length", args->max_length, "Report rows longer than this many tokens (text + image; needs --model)");
  cmd->add_option("--base_dir", args->base_dir, "Directory relative media paths resolve against (default: the dataset's)");
  cmd->add_flag("--json", args->json, "Findings as JSON lines, then one summary object");
  cmd->add_option("--fix", args->fix,
                  "Write a corrected copy (JSONL) with the unambiguous fixes applied (temporary file, then rename;\n"
                  "- writes it to stdout and the report to stderr). Refuses a path that is an input or not a\n"
                  "regular file (device, FIFO, directory, symbolic link) and read-only files.");
  cmd->add_flag("--deep", args->deep, "Decode every image fully (finds damaged data; files cut short are found without it)");
  cmd->add_option("--threads", args->threads, "Worker threads (default: all cores)");
  cmd->add_option("--max_errors", args->max_errors, "Print at most this many error findings (counts stay complete)");
  cmd->add_option("--max_line_bytes", args->max_line_bytes, "Refuse rows longer than this (default 64 MiB)");
  cmd->callback([args, &exit_code] {
    try {
      exit_code = run_check_data(*args);
    } catch (const UsageError&) {
      throw;
    } catch (const Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      exit_code = kExitUsage;  // I/O errors: the data could not be checked at all
    }
  });
}

}  // namespace vlmforge::cli
