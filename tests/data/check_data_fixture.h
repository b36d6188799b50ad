#pragma once
// Runs `vlmforge check-data --json` on a dataset written into a temporary directory and returns
// the findings as (code, line) pairs plus the summary object.
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "support/test_support.h"

namespace vlmforge::test {

using CodeLine = std::pair<std::string, uint64_t>;

struct CheckOutput {
  CommandResult result;
  std::vector<CodeLine> findings;  // in output order
  std::vector<nlohmann::json> finding_objects;
  nlohmann::json summary;
};

inline void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

inline CheckOutput parse_check_output(CommandResult result) {
  CheckOutput out{std::move(result), {}, {}, {}};
  std::istringstream lines(out.result.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("summary")) {
      out.summary = j;
    } else {
      out.findings.emplace_back(j["code"].get<std::string>(), j["line"].get<uint64_t>());
      out.finding_objects.push_back(j);
    }
  }
  return out;
}

// Writes `dataset` as dir/data.jsonl and checks it with `extra` flags.
inline CheckOutput check_dataset(const TempDir& dir, const std::string& dataset, std::vector<std::string> extra = {},
                                 const std::string& name = "data.jsonl") {
  write_file(dir / name, dataset);
  std::vector<std::string> args{"check-data", "--json", (dir / name).string()};
  args.insert(args.end(), extra.begin(), extra.end());
  return parse_check_output(run_vlmforge(args));
}

}  // namespace vlmforge::test
