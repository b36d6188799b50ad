// Qwen2.5-VL image encoding: decode, preprocess and vision-tower time for one image under the
// MIN_PIXELS / MAX_PIXELS budget (as swift reads them), the image cache's hit cost against a miss,
// and the pixel values + embeddings for bench/torch_qwen25vl_vision.py to check and time the same
// work in PyTorch. Every time is the median of --runs runs.
// Usage: vision_bench --model DIR --image FILE [--runs 2] [--hits 200] [--threads N] [--dump PREFIX]
//        vision_bench --write_jpeg FILE [--size 1280x960]   (a synthetic test photo)
// libjpeg's header needs <cstdio> first.
#include <cstdio>
#include <jpeglib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"
#include "vision/image_encoder.h"
#include "vision/image_processor.h"
#include "backends/cpu_device.h"
#include "vision/vision_tower.h"

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Smooth gradients with texture, JPEG quality 90: a stand-in for a photo.
void write_jpeg(const std::string& path, int width, int height) {
  std::vector<unsigned char> pixels(static_cast<size_t>(width) * height * 3);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      unsigned char* p = pixels.data() + (static_cast<size_t>(y) * width + x) * 3;
      p[0] = static_cast<unsigned char>(127 + 120 * std::sin(x * 0.013) * std::cos(y * 0.021));
      p[1] = static_cast<unsigned char>(x * 255 / width);
      p[2] = static_cast<unsigned char>((x * 7 + y * 13) % 256 / 2 + y * 127 / height);
    }
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot write " + path);
  jpeg_compress_struct cinfo{};
  jpeg_error_mgr error{};
  cinfo.err = jpeg_std_error(&error);
  jpeg_create_compress(&cinfo);
  jpeg_stdio_dest(&cinfo, f);
  cinfo.image_width = width, cinfo.image_height = height, cinfo.input_components = 3, cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 90, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = pixels.data() + static_cast<size_t>(cinfo.next_scanline) * width * 3;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::fclose(f);
}

// Multiply-adds ×2 of the tower for one image: matmuls and attention score/value products.
double tower_flops(const vlmforge::VisionConfig& c, const vlmforge::vision::ImagePatches& p) {
  const double n = static_cast<double>(p.rows()), d = c.hidden_size, inter = c.intermediate_size;
  const double k = static_cast<double>(p.row_size), unit = c.spatial_merge_size * c.spatial_merge_size;
  const auto layout = vlmforge::vision::window_layout(p.grid_h, p.grid_w, c);
  double window_pairs = 0;
  for (size_t i = 1; i < layout.boundaries.size(); ++i) {
    const double len = static_cast<double>(layout.boundaries[i] - layout.boundaries[i - 1]);
    window_pairs += len * len;
  }
  double flops = 2 * n * k * d;
  for (int b = 0; b < c.depth; ++b) {
    const bool full = std::find(c.fullatt_block_indexes.begin(), c.fullatt_block_indexes.end(), b) != c.fullatt_block_indexes.end();
    flops += 2 * n * d * (3 * d + d + 3 * inter) + 4 * (full ? n * n : window_pairs) * d;
  }
  const double merged = d * unit;
  flops += 2 * (n / unit) * merged * (merged + c.out_hidden_size);
  return flops;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, image, dump, jpeg_out, size = "1280x960";
  size_t runs = 2, hits = 200, threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model") model = value;
    else if (flag == "--image") image = value;
    else if (flag == "--dump") dump = value;
    else if (flag == "--write_jpeg") jpeg_out = value;
    else if (flag == "--size") size = value;
    else if (flag == "--runs") runs = std::stoul(value);
    else if (flag == "--hits") hits = std::stoul(value);
    else if (flag == "--threads") threads = std::stoul(value);
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  try {
    if (!jpeg_out.empty()) {
      const size_t x = size.find('x');
      write_jpeg(jpeg_out, std::stoi(size.substr(0, x)), std::stoi(size.substr(x + 1)));
      return 0;
    }
    if (model.empty() || image.empty()) {
      std::fprintf(stderr, "usage: vision_bench --model DIR --image FILE [--runs N] [--hits N] [--threads N] [--dump PREFIX]\n");
      return 2;
    }
    using namespace vlmforge;
    const ModelConfig config = ModelConfig::load(model);
    const Checkpoint ckpt(model);
    CpuDevice device(0, std::nullopt, threads);
  vision::VisionTower tower(ckpt, config, device);
    const vision::PixelBudget budget = vision::pixel_budget_from_env(std::nullopt, std::nullopt);
    std::vector<double> decode_s, preprocess_s, encode_s;
    vision::ImagePatches patches;
    std::vector<float> embeds;
    for (size_t r = 0; r < runs; ++r) {
      auto t = Clock::now();
      const vision::RgbImage rgb = vision::load_rgb(image);
      decode_s.push_back(since(t));
      t = Clock::now();
      patches = vision::preprocess_image(rgb, budget, tower.config());
      preprocess_s.push_back(since(t));
      t = Clock::now();
      embeds = tower.encode(patches);
      encode_s.push_back(since(t));
    }
    // Cache: one miss (the whole pipeline), then hits of the same file.
    vision::ImageEncoder encoder(tower, budget, uint64_t{1} << 30);
    auto t = Clock::now();
    encoder.encode(image);
    const double miss = since(t);
    std::vector<double> hit_s;
    for (size_t i = 0; i < hits; ++i) {
      t = Clock::now();
      if (!encoder.encode(image).cache_hit) throw std::runtime_error("expected a cache hit");
      hit_s.push_back(since(t));
    }
    if (!dump.empty()) {
      std::ofstream(dump + ".pixels.f32", std::ios::binary)
          .write(reinterpret_cast<const char*>(patches.values.data()), static_cast<std::streamsize>(patches.values.size() * 4));
      std::ofstream(dump + ".embeds.f32", std::ios::binary)
          .write(reinterpret_cast<const char*>(embeds.data()), static_cast<std::streamsize>(embeds.size() * 4));
    }
    const double encode = median(encode_s), flops = tower_flops(tower.config(), patches);
    std::printf(
        "{\"grid\": [%u, %u, %u], \"tokens\": %zu, \"max_pixels\": %llu, \"decode_s\": %.4f, \"preprocess_s\": %.4f, "
        "\"encode_s\": %.3f, \"images_per_s\": %.4f, \"tower_gflop\": %.1f, \"gflop_per_s\": %.1f, \"miss_s\": %.3f, "
        "\"hit_s\": %.6f, \"hit_over_miss\": %.6f}\n",
        patches.grid_t, patches.grid_h, patches.grid_w, patches.tokens(tower.config().spatial_merge_size),
        static_cast<unsigned long long>(budget.max_pixels), median(decode_s), median(preprocess_s), encode,
        1.0 / (median(decode_s) + median(preprocess_s) + encode), flops / 1e9, flops / 1e9 / encode, miss,
        median(hit_s), median(hit_s) / miss);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
