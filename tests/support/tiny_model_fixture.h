#pragma once
// A test fixture holding the shared tiny Qwen2 checkpoint's model (2 threads) and tokenizer, loaded
// once per suite; tests fail (under CI) or skip when ../shared is missing. Header-only: only the
// test binaries that link the model and tokenizer include it.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>

#include "model/qwen2.h"
#include "support/test_support.h"
#include "tokenizer/tokenizer.h"

namespace vlmforge::test {

class TinyModelFixture : public ::testing::Test {
 protected:
  static std::filesystem::path model_dir() { return shared_dir() / "golden" / "qwen2-tiny-f32"; }
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(model_dir() / "config.json")) return;
    model_ = std::make_unique<Qwen2Model>(model_dir(), 2);
    tokenizer_ = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::load(model_dir() / "tokenizer.json"));
  }
  static void TearDownTestSuite() {
    model_.reset();
    tokenizer_.reset();
  }
  void SetUp() override {
    VLMFORGE_REQUIRE_SHARED(model_dir() / "config.json");
    ASSERT_TRUE(model_ && tokenizer_) << "loading " << model_dir() << " failed in SetUpTestSuite";
  }

  static inline std::unique_ptr<Qwen2Model> model_;
  static inline std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
};

}  // namespace vlmforge::test
