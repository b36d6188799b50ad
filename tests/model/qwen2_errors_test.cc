// Bad models fail at load with an error naming what is wrong.
#include <gtest/gtest.h>

#include "io/json_file.h"
#include "io/safetensors_writer.h"
#include "model/qwen2.h"
#include "model/random_checkpoint.h"
#include "support/test_support.h"
#include "util/error.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;

std::string load_error(const fs::path& dir) {
  try {
    Qwen2Model model(dir, 1);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void edit_config(const fs::path& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json config = read_json_file(dir / "config.json");
  edit(config);
  write_text_file(dir / "config.json", config.dump(2));
}

TEST(Qwen2Load, RejectsWhatItCannotRunWithNamedErrors) {
  TempDir dir;
  generate_checkpoint(preset_config("tiny"), dir / "m", {});
  EXPECT_EQ(load_error(dir / "m"), "");

  edit_config(dir / "m", [](auto& c) { c["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}}; });
  EXPECT_NE(load_error(dir / "m").find("rope_scaling type 'yarn'"), std::string::npos);

  edit_config(dir / "m", [](auto& c) {
    c["rope_scaling"] = nullptr;
    c["architectures"] = {"LlamaForCausalLM"};
    c["model_type"] = "llama";
  });
  EXPECT_NE(load_error(dir / "m").find("supported: Qwen2ForCausalLM"), std::string::npos);

  edit_config(dir / "m", [](auto& c) {
    c["architectures"] = {"Qwen2ForCausalLM"};
    c["model_type"] = "qwen2";
    c["num_hidden_layers"] = 3;
  });
  EXPECT_NE(load_error(dir / "m").find("missing tensor 'model.layers.2."), std::string::npos);

  edit_config(dir / "m", [](auto& c) {
    c["num_hidden_layers"] = 2;
    c["intermediate_size"] = 128;
  });
  const std::string err = load_error(dir / "m");
  EXPECT_NE(err.find("mlp.gate_proj.weight' has shape [160, 64], expected [128, 64]"), std::string::npos) << err;
}

}  // namespace
}  // namespace vlmforge::test
