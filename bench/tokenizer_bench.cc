// Tokenizer throughput: encodes a reproducible ~10 MB mixed corpus (English prose, Chinese prose,
// C++/Python code) on one thread and reports MB/s, plus tokenizer.json load time.
// Usage: tokenizer_bench TOKENIZER_JSON [--mb N] [--write-corpus PATH]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Seeded, so every run (and the JavaScript comparison) sees the same bytes.
std::string make_corpus(size_t target_bytes) {
  static const char* kEnglish[] = {"the", "model", "image", "describes", "a", "patient", "with", "large", "language",
                                   "vision", "tokens", "quickly", "and", "of", "in", "reasoning", "It's", "we'll",
                                   "training", "data", "is", "not", "GPU", "2024", "3.5", "results", "(see", "above)"};
  static const char* kChinese[] = {"在", "大", "模型", "时代", "视觉", "语言", "图片", "描述", "医学", "影像", "的",
                                   "能力", "展现出", "强大", "多模态", "理解", "我们", "数据", "训练", "参数量"};
  static const char* kCode[] = {
      "def forward(self, x):\n    return self.proj(x) * 0.5\n",
      "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }\n",
      "    if not os.path.exists(path):\n        raise FileNotFoundError(path)\n",
      "#include <vector>\nstd::vector<float> weights(4096, 0.0f);\n",
      "const result = await fetch(`/api/v1/items?id=${id}`);\n"};
  std::mt19937 rng(20240601);
  std::string text;
  text.reserve(target_bytes + 1024);
  while (text.size() < target_bytes) {
    switch (rng() % 3) {
      case 0:
        for (int w = 0, n = 8 + rng() % 24; w < n; ++w) {
          text += kEnglish[rng() % std::size(kEnglish)];
          text += (w + 1 == n) ? ".\n" : (rng() % 9 == 0 ? ", " : " ");
        }
        break;
      case 1:
        for (int w = 0, n = 8 + rng() % 30; w < n; ++w) {
          text += kChinese[rng() % std::size(kChinese)];
          if (rng() % 10 == 0) text += "，";
        }
        text += "。\n";
        break;
      default: text += kCode[rng() % std::size(kCode)]; break;
    }
  }
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s TOKENIZER_JSON [--mb N] [--write-corpus PATH]\n", argv[0]);
    return 2;
  }
  size_t megabytes = 10;
  const char* corpus_path = nullptr;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--mb") == 0) megabytes = std::stoul(argv[i + 1]);
    if (std::strcmp(argv[i], "--write-corpus") == 0) corpus_path = argv[i + 1];
  }
  const std::string corpus = make_corpus(megabytes << 20);
  if (corpus_path) std::ofstream(corpus_path, std::ios::binary) << corpus;

  double best_load = 1e9;
  for (int i = 0; i < 5; ++i) {
    const auto start = Clock::now();
    const auto tok = vlmforge::tokenizer::Tokenizer::load(argv[1]);
    best_load = std::min(best_load, seconds_since(start));
  }
  const auto tok = vlmforge::tokenizer::Tokenizer::load(argv[1]);

  double best_encode = 1e9;
  size_t token_count = 0;
  for (int i = 0; i < 3; ++i) {
    const auto start = Clock::now();
    token_count = tok.encode(corpus).size();
    best_encode = std::min(best_encode, seconds_since(start));
  }
  const double mb = static_cast<double>(corpus.size()) / 1e6;
  std::printf("corpus: %.2f MB (%zu bytes), %zu tokens\n", mb, corpus.size(), token_count);
  std::printf("load tokenizer.json: %.1f ms (best of 5)\n", best_load * 1e3);
  std::printf("encode: %.3f s, %.1f MB/s, %.0f ktokens/s (best of 3, one thread)\n", best_encode, mb / best_encode,
              token_count / best_encode / 1e3);
  return 0;
}
