// infer with images end to end on a random tiny Qwen2.5-VL checkpoint carrying the real tokenizer.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support/test_support.h"
#include "vision/encoded_images.h"
#include "vision/image_bytes.h"

namespace vlmforge::test {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

class InferVision : public ::testing::Test {
 protected:
  static fs::path shared_tokenizer() { return shared_dir() / "tokenizer" / "tokenizer.json"; }
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    if (!fs::exists(shared_tokenizer())) return;
    for (const char* layout : {"legacy", "transformers"}) {
      const auto r = run_vlmforge({"generate", "checkpoint", "--preset", "tiny-vl", "--output_dir",
                                   (*dir_ / layout).string(), "--dtype", "float32", "--vocab_size", "151936",
                                   "--layout", layout, "--tokenizer", shared_tokenizer().string()});
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }
    write(*dir_ / "wide.png", encoded_png(200, 120));
    write(*dir_ / "small.jpg", encoded_jpeg(56, 56));
    write(*dir_ / "plain.jpg", encoded_jpeg(200, 120));
    write(*dir_ / "turned.jpg", jpeg_with_orientation(200, 120, 6, false));
  }
  static void TearDownTestSuite() { delete dir_; }
  void SetUp() override {
    VLMFORGE_REQUIRE_SHARED(shared_tokenizer());
  }
  static void write(const fs::path& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }
  static std::string model(const char* layout = "legacy") { return (*dir_ / layout).string(); }
  static std::string file(const char* name) { return (*dir_ / name).string(); }

  static json query(const std::string& text, const std::vector<std::string>& extra) {
    std::vector<std::string> args{"infer", "--model", model(), "--query", text, "--temperature", "0",
                                  "--max_new_tokens", "3", "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = run_vlmforge(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out) : json();
  }

  static TempDir* dir_;
};
TempDir* InferVision::dir_ = nullptr;

TEST_F(InferVision, ImagesAddTheirTokensUnderThePixelBudget) {
  const json text = query("Describe this.", {});
  // 200x120 → smart_resize 196x112 → 14x8 patches → 28 tokens, plus <|vision_start|><|vision_end|>.
  const json image = query("<image>Describe this.", {"--images", file("wide.png")});
  EXPECT_EQ(image["prompt_tokens"].get<int>() - text["prompt_tokens"].get<int>(), 30);
  // --max_pixels 6000: beta 2 → 84x56 → 6 tokens.
  const json small = query("<image>Describe this.", {"--images", file("wide.png"), "--max_pixels", "6000"});
  EXPECT_EQ(small["prompt_tokens"].get<int>() - text["prompt_tokens"].get<int>(), 8);
  // Without a tag the images go before the text (swift), the same prompt.
  const json untagged = query("Describe this.", {"--images", file("wide.png")});
  EXPECT_EQ(untagged["prompt_tokens"], image["prompt_tokens"]);
  EXPECT_EQ(untagged["response"], image["response"]);
}

// The tower alone on cpu:2, the language model split over cpu:0 and cpu:1: the image embeddings
// travel from the tower's device to the embedding layer's, and every output matches one device.
TEST_F(InferVision, ThreeDevicesWithTheTowerOnItsOwnGiveTheOneDeviceOutput) {
  const fs::path map = *dir_ / "vl_map.json";
  std::ofstream(map) << json{{"model.embed_tokens", "cpu:0"}, {"model.layers.0", "cpu:0"}, {"model.layers.1", "cpu:1"},
                             {"model.norm", "cpu:1"}, {"lm_head", "cpu:1"}, {"visual", "cpu:2"}}
                            .dump();
  // The budget is the image's own size (200x120 -> 196x112), so the plan's tower workspace is
  // what this image needs and the report can be held to 10%.
  const std::vector<std::string> common{"--images", file("wide.png"), "--max_pixels", "21952", "--max_model_len", "600",
                                        "--max_batch_size", "1", "--threads", "2", "--logprobs"};
  const json one = query("<image>Describe this.", common);
  std::vector<std::string> placed = common;
  for (const char* a : {"--device_map", map.c_str(), "--devices", "cpu:0,cpu:1,cpu:2", "--max_memory", "64MiB",
                        "--memory_report"})
    placed.push_back(a);
  std::vector<std::string> args{"infer", "--model", model(), "--query", "<image>Describe this.", "--temperature", "0",
                                "--max_new_tokens", "3", "--json"};
  args.insert(args.end(), placed.begin(), placed.end());
  const auto three = run_vlmforge(args);
  ASSERT_EQ(three.exit_code, 0) << three.err;
  EXPECT_EQ(json::parse(three.out), one);  // response, tokens and logprobs, bit for bit
  EXPECT_NE(three.err.find("cpu:2: vision"), std::string::npos) << three.err;
  const auto report = memory_report(three.err);
  ASSERT_EQ(report.size(), 3u) << three.err;
  for (const auto& [device, values] : report)
    EXPECT_NEAR(values.first / values.second, 1.0, 0.10) << device << ": peak " << values.first << ", plan " << values.second;
}

// score takes images in raw text (<image> tags, as infer's queries), on one device or three.
TEST_F(InferVision, ScoreWithImagesCountsTheirTokensAndMatchesAcrossDevices) {
  const fs::path map = *dir_ / "vl_score_map.json";
  std::ofstream(map) << json{{"model.embed_tokens", "cpu:0"}, {"model.layers.0", "cpu:0"}, {"model.layers.1", "cpu:1"},
                             {"model.norm", "cpu:1"}, {"lm_head", "cpu:1"}, {"visual", "cpu:2"}}
                            .dump();
  auto score = [&](const std::string& text, std::vector<std::string> extra) {
    std::vector<std::string> args{"score", "--model", model(), "--text", text, "--threads", "2", "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = run_vlmforge(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out) : json();
  };
  const json text = score("A picture of a gradient.", {});
  const json image = score("<image>A picture of a gradient.", {"--images", file("wide.png")});
  // 200x120 → 28 image tokens, plus <|vision_start|><|vision_end|>.
  EXPECT_EQ(image["tokens"].get<int>() - text["tokens"].get<int>(), 30);
  EXPECT_NE(image["perplexity"], text["perplexity"]);
  // The pixel budget as infer takes it: --max_pixels 6000 → 84x56 → 6 tokens.
  const json small = score("<image>A picture of a gradient.", {"--images", file("wide.png"), "--max_pixels", "6000"});
  EXPECT_EQ(small["tokens"].get<int>() - text["tokens"].get<int>(), 8);
  const json placed = score("<image>A picture of a gradient.",
                            {"--images", file("wide.png"), "--device_map", map.string(), "--devices", "cpu:0,cpu:1,cpu:2",
                             "--max_memory", "64MiB"});
  EXPECT_EQ(placed, image);  // bit for bit
  const auto mismatch = run_vlmforge({"score", "--model", model(), "--text", "<image><image>", "--images", file("wide.png")});
  EXPECT_EQ(mismatch.exit_code, 1) << mismatch.err;
  EXPECT_NE(mismatch.err.find("2 <image> tag(s) but 1 image(s)"), std::string::npos) << mismatch.err;
}

TEST_F(InferVision, MinPixelsAboveMaxPixelsWarnsAndShrinksAsTransformers) {
  const json text = query("Describe this.", {});
  const auto r = run_vlmforge({"infer", "--model", model(), "--query", "<image>Describe this.", "--images", file("wide.png"),
                               "--min_pixels", "9000", "--max_pixels", "100", "--max_new_tokens", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: min_pixels (9000) is larger than max_pixels (100)"), std::string::npos) << r.err;
  // 200x120 rounds to 196x112 > 100: shrunk to one 28x28 cell, one token (+ vision start / end).
  EXPECT_EQ(json::parse(r.out)["prompt_tokens"].get<int>() - text["prompt_tokens"].get<int>(), 3);
}

TEST_F(InferVision, ExifOrientationIsIgnoredAsSwiftUnlessAsked) {
  auto logprobs = [&](const char* image, std::vector<std::string> extra) {
    extra.insert(extra.end(), {"--images", file(image), "--logprobs", "--top_logprobs", "3"});
    return query("<image>Describe this.", extra)["logprobs"];
  };
  const json plain = logprobs("plain.jpg", {});
  ASSERT_FALSE(plain.is_null());
  // swift and qwen_vl_utils feed the stored pixels: the rotated file gives the plain file's logprobs.
  EXPECT_EQ(logprobs("turned.jpg", {}), plain);
  // --exif_transpose turns the photo upright (120x200): other pixels, other logprobs.
  EXPECT_NE(logprobs("turned.jpg", {"--exif_transpose"}), plain);
  EXPECT_EQ(logprobs("plain.jpg", {"--exif_transpose"}), plain);
}

TEST_F(InferVision, RepeatedImagesComeFromTheCache) {
  const auto r = run_vlmforge({"infer", "--model", model(), "--query", "<image><image>Same?", "--images",
                               file("small.jpg") + "," + file("small.jpg"), "--max_new_tokens", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("images 1 encoded, 1 from the cache"), std::string::npos) << r.err;
  const auto off = run_vlmforge({"infer", "--model", model(), "--query", "<image><image>Same?", "--images",
                                 file("small.jpg") + "," + file("small.jpg"), "--max_new_tokens", "1", "--json",
                                 "--image_cache_mb", "0"});
  ASSERT_EQ(off.exit_code, 0) << off.err;
  EXPECT_NE(off.err.find("images 2 encoded, 0 from the cache"), std::string::npos) << off.err;
  EXPECT_EQ(json::parse(off.out)["response"], json::parse(r.out)["response"]);
}

TEST_F(InferVision, TransformersWeightLayoutRuns) {
  const auto r = run_vlmforge({"infer", "--model", model("transformers"), "--query", "<image>Hi", "--images",
                               file("small.jpg"), "--max_new_tokens", "2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["completion_tokens"], 2);
}

TEST_F(InferVision, VisionLoraUnmergedMatchesTheMergedModel) {
  // Adapters on the vision attention only (qkv, proj): the language model is untouched, so any
  // change in the logprobs comes from the vision tower.
  TempDir work;
  const std::string adapter = (work / "lora").string(), merged = (work / "merged").string();
  auto ok = [](const CommandResult& r) {
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0;
  };
  ASSERT_TRUE(ok(run_vlmforge({"generate", "adapter", "--model", model(), "--output_dir", adapter, "--include_vision",
                               "--target_modules", "qkv,proj", "--dtype", "float32", "--r", "4"})));
  ASSERT_TRUE(ok(run_vlmforge({"merge-lora", "--model", model(), "--adapters", adapter, "--output_dir", merged})));
  fs::copy_file(*dir_ / "legacy" / "tokenizer.json", fs::path(merged) / "tokenizer.json", fs::copy_options::skip_existing);
  auto logprobs = [&](const std::vector<std::string>& model_args) {
    std::vector<std::string> args{"infer", "--query", "<image>Describe.", "--images", file("wide.png"), "--temperature", "0",
                                  "--max_new_tokens", "4", "--logprobs", "--json"};
    args.insert(args.end(), model_args.begin(), model_args.end());
    const auto r = run_vlmforge(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::vector<double> out;
    if (r.exit_code != 0) return out;
    const json parsed = json::parse(r.out);
    for (const auto& t : parsed["logprobs"]["content"]) out.push_back(t["logprob"].get<double>());
    return out;
  };
  const auto base = logprobs({"--model", model()});
  const auto unmerged = logprobs({"--model", model(), "--adapters", adapter});
  const auto from_merged = logprobs({"--model", merged});
  ASSERT_EQ(unmerged.size(), 4u);
  ASSERT_EQ(from_merged.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(unmerged[i], from_merged[i], 1e-4) << i;
  EXPECT_NE(base, unmerged);

  // score takes the adapters too: its prompt logprobs match the merged model's.
  auto score = [&](const std::vector<std::string>& model_args) {
    std::vector<std::string> args{"score", "--text", "<image>A gradient.", "--images", file("wide.png"), "--json"};
    args.insert(args.end(), model_args.begin(), model_args.end());
    const auto r = run_vlmforge(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out)["prompt_logprobs"].get<std::vector<double>>() : std::vector<double>{};
  };
  const auto scored = score({"--model", model(), "--adapters", adapter}), scored_merged = score({"--model", merged});
  ASSERT_EQ(scored.size(), scored_merged.size());
  ASSERT_FALSE(scored.empty());
  for (size_t i = 0; i < scored.size(); ++i) EXPECT_NEAR(scored[i], scored_merged[i], 1e-4) << i;
  EXPECT_NE(scored, score({"--model", model()}));
}

TEST_F(InferVision, DatasetRowsWithImagesSameResultsWithOrWithoutOverlap) {
  TempDir data;
  fs::create_directories(data / "imgs");
  write(data / "imgs" / "a.png", encoded_png(90, 70));
  write(data / "imgs" / "b.jpg", encoded_jpeg(60, 100));
  const fs::path dataset = data / "val.jsonl";
  std::ofstream(dataset)
      << R"({"query": "<image>What is it?", "response": "x", "images": ["imgs/a.png"]})" "\n"
      << R"({"messages": [{"role": "user", "content": "<image> and <image>?"}], "images": ["imgs/b.jpg", "imgs/a.png"]})" "\n"
      << R"({"messages": [{"role": "user", "content": "text only"}]})" "\n"
      << R"({"messages": [{"role": "user", "content": "<image>again"}], "images": [{"path": "imgs/b.jpg"}]})" "\n";
  auto run = [&](const std::string& overlap, const std::string& batch) {
    const fs::path out = data / ("out-" + overlap + batch + ".jsonl");
    const auto r = run_vlmforge({"infer", "--model", model(), "--val_dataset", dataset.string(), "--result_path",
                                 out.string(), "--temperature", "0", "--max_new_tokens", "3", "--max_batch_size", batch,
                                 "--overlap_images", overlap});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::vector<json> rows;
    std::ifstream in(out);
    for (std::string line; std::getline(in, line);) rows.push_back(json::parse(line));
    return rows;
  };
  const auto with = run("true", "1"), without = run("false", "1"), batched = run("true", "2");
  ASSERT_EQ(with.size(), 4u);
  ASSERT_EQ(without.size(), 4u);
  ASSERT_EQ(batched.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(with[i]["response"], without[i]["response"]) << i;
    EXPECT_EQ(with[i]["response"], batched[i]["response"]) << i;
    EXPECT_EQ(with[i]["prompt_tokens"], without[i]["prompt_tokens"]) << i;
    EXPECT_TRUE(with[i]["timings"].contains("batch_prepare_seconds"));
  }
  EXPECT_GT(with[1]["prompt_tokens"].get<int>(), with[0]["prompt_tokens"].get<int>());
}

TEST_F(InferVision, BadImagesAndTagsGiveClearErrors) {
  write(*dir_ / "cut.png", encoded_png(64, 64).substr(0, 200));
  write(*dir_ / "bomb.png", png_bytes(30000, 30000));
  write(*dir_ / "notes.png", "just text");
  struct Case {
    std::string query, images, expected;
  };
  for (const Case& c : {Case{"<image><image>two?", file("small.jpg"), "2 <image>"},
                        Case{"what?", file("missing.png"), "missing.png"},
                        Case{"what?", file("cut.png"), "decode failed"},
                        Case{"what?", file("bomb.png"), "decompression-bomb"},
                        Case{"what?", file("notes.png"), "not a supported image"},
                        Case{"what?", "https://example.com/a.png", "remote images are not downloaded"}}) {
    const auto r = run_vlmforge({"infer", "--model", model(), "--query", c.query, "--images", c.images, "--max_new_tokens", "1"});
    EXPECT_EQ(r.exit_code, 1) << c.images;
    EXPECT_NE(r.err.find(c.expected), std::string::npos) << r.err;
  }
  const auto usage = run_vlmforge({"infer", "--model", model(), "--images", file("small.jpg")});
  EXPECT_EQ(usage.exit_code, 2) << usage.err;
  const fs::path text_model = shared_dir() / "golden" / "qwen2-tiny-f32";
  VLMFORGE_REQUIRE_SHARED(text_model / "config.json");
  const auto r = run_vlmforge({"infer", "--model", text_model.string(), "--query", "x", "--images", file("small.jpg")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("text-only model"), std::string::npos) << r.err;
}

// A FIFO image used to hang (open waits for a writer) and /dev/zero read until memory ran out:
// image paths must be regular files. The address-space cap keeps a regression from taking the host.
TEST_F(InferVision, ImagePathsThatAreNotRegularFilesFailAtOnce) {
  TempDir data;
  ASSERT_EQ(mkfifo((data / "pipe.png").c_str(), 0644), 0);
  for (const auto& [image, expected] : {std::pair{(data / "pipe.png").string(), "FIFO"},
                                        std::pair{std::string("/dev/zero"), "character device"}}) {
    const auto r = run_vlmforge({"infer", "--model", model(), "--query", "<image>what?", "--images", image,
                                 "--max_new_tokens", "1", "--threads", "2"},
                                {.timeout_seconds = 120, .address_space_limit = uint64_t{4} << 30});
    EXPECT_EQ(r.exit_code, 1) << image << ": " << r.err;
    EXPECT_NE(r.err.find(expected), std::string::npos) << image << ": " << r.err;
  }
}

// Rows whose images are missing or not regular files get error lines; the good row is answered.
TEST_F(InferVision, DatasetRowsWithBadImagesFailAloneAndTheRunGoesOn) {
  TempDir data;
  write(data / "a.png", encoded_png(90, 70));
  ASSERT_EQ(mkfifo((data / "pipe.png").c_str(), 0644), 0);
  const fs::path dataset = data / "val.jsonl";
  std::ofstream(dataset) << R"({"query": "<image>gone?", "images": ["gone.png"]})" "\n"
                         << R"({"query": "<image>what?", "response": "x", "images": ["a.png"]})" "\n"
                         << R"({"query": "<image>pipe?", "images": ["pipe.png"]})" "\n";
  const fs::path out = data / "out.jsonl";
  const auto r = run_vlmforge({"infer", "--model", model(), "--val_dataset", dataset.string(), "--result_path",
                               out.string(), "--temperature", "0", "--max_new_tokens", "2", "--max_batch_size", "2"},
                              {.timeout_seconds = 300});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  std::vector<json> rows;
  std::ifstream in(out);
  for (std::string line; std::getline(in, line);) rows.push_back(json::parse(line));
  ASSERT_EQ(rows.size(), 3u) << r.err;
  EXPECT_NE(rows[0].value("error", "").find("gone.png"), std::string::npos) << rows[0];
  EXPECT_EQ(rows[1]["completion_tokens"], 2) << rows[1];
  EXPECT_EQ(rows[1]["labels"], "x");
  EXPECT_NE(rows[2].value("error", "").find("FIFO"), std::string::npos) << rows[2];
}

}  // namespace
}  // namespace vlmforge::test
