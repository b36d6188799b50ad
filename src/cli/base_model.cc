#include "cli/base_model.h"

#include <cstdio>
#include <filesystem>

#include "io/json_file.h"
#include "util/error.h"

namespace vlmforge::cli {
namespace fs = std::filesystem;

std::string resolve_base_model(const std::string& model, const std::vector<std::string>& adapters) {
  if (!model.empty()) return model;
  if (adapters.empty())
    throw UsageError("--model is required (or give --adapters CKPT whose args.json or adapter_config.json names the base model)");
  const fs::path checkpoint(adapters.front());
  struct Source {
    const char* file;
    const char* key;
  };
  std::string tried;
  for (const Source source : {Source{"args.json", "model"}, Source{"adapter_config.json", "base_model_name_or_path"}}) {
    const fs::path path = checkpoint / source.file;
    if (!fs::exists(path)) continue;
    const nlohmann::json doc = read_json_file(path);
    if (!doc.is_object() || !doc.contains(source.key) || !doc[source.key].is_string()) continue;
    const std::string named = doc[source.key].get<std::string>();
    if (!named.empty() && fs::is_directory(named)) {
      std::fprintf(stderr, "base model %s (from %s \"%s\"; --model overrides it)\n", named.c_str(), path.string().c_str(),
                   source.key);
      return named;
    }
    tried += std::string(tried.empty() ? "" : ", ") + path.string() + " \"" + source.key + "\" is '" + named + "'";
  }
  if (tried.empty())
    throw UsageError("--model is not given and " + checkpoint.string() +
                     " has no args.json \"model\" or adapter_config.json \"base_model_name_or_path\"; give --model");
  throw Error("the base model of " + checkpoint.string() + " is not a local directory (" + tried +
              "); vlmforge does not download models: give --model DIR");
}

}  // namespace vlmforge::cli
