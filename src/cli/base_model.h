#pragma once
// Which base model `--adapters CKPT` runs on when --model is not given (merge-lora, infer, deploy),
// read from the checkpoint as swift's --load_args reads it.
#include <string>
#include <vector>

namespace vlmforge::cli {

// `model` when given. Otherwise the first of these that names a local directory: the first
// adapter's args.json "model" (what swift trained with), then its adapter_config.json
// "base_model_name_or_path" (PEFT's record). The choice is printed on stderr. UsageError without
// adapters; Error naming the candidates when none is a local directory (models are not downloaded).
std::string resolve_base_model(const std::string& model, const std::vector<std::string>& adapters);

}  // namespace vlmforge::cli
