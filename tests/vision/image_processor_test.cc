// Qwen2-VL preprocessing: the PIL bicubic resize against a naive float64 reference, exact cases,
// normalisation, and the patch flattening order element by element.
#include "vision/image_processor.h"

#include <gtest/gtest.h>

#include <cmath>

#include "util/error.h"

namespace vlmforge::test {
namespace {

using vision::RgbImage;

RgbImage pattern(uint32_t width, uint32_t height, uint32_t seed) {
  RgbImage image;
  image.width = width, image.height = height;
  uint32_t state = seed;
  for (size_t i = 0; i < size_t{width} * height * 3; ++i) {
    state = state * 1664525u + 1013904223u;
    // Smooth ramps plus noise: both edges and flat areas.
    image.pixels.push_back(static_cast<uint8_t>(((i / 3) % width * 255 / width + (state >> 28)) & 0xFF));
  }
  return image;
}

// Naive float64 PIL-style bicubic: the same filter and support rule, weights normalised, one axis
// at a time with the intermediate rounded to 8 bits (as PIL does), all arithmetic in double.
double cubic(double x) {
  x = std::fabs(x);
  if (x < 1) return 1.5 * x * x * x - 2.5 * x * x + 1;
  if (x < 2) return -0.5 * x * x * x + 2.5 * x * x - 4 * x + 2;
  return 0;
}

std::vector<double> resample_axis(const std::vector<double>& in, size_t in_size, size_t out_size, size_t lines,
                                  bool horizontal) {
  // in: [lines][in_size] (horizontal) or [in_size][lines] (vertical), per channel packed as 3 lines.
  std::vector<double> out(out_size * lines);
  const double scale = double(in_size) / out_size, fs = std::max(scale, 1.0), support = 2 * fs;
  for (size_t o = 0; o < out_size; ++o) {
    const double center = (o + 0.5) * scale;
    const long lo = std::max(0L, long(center - support + 0.5)), hi = std::min(long(in_size), long(center + support + 0.5));
    std::vector<double> w;
    double sum = 0;
    for (long i = lo; i < hi; ++i) sum += w.emplace_back(cubic((i - center + 0.5) / fs));
    for (size_t l = 0; l < lines; ++l) {
      double acc = 0;
      for (long i = lo; i < hi; ++i) acc += w[i - lo] / sum * (horizontal ? in[l * in_size + i] : in[i * lines + l]);
      const double rounded = std::clamp(std::floor(acc + 0.5), 0.0, 255.0);
      (horizontal ? out[l * out_size + o] : out[o * lines + l]) = rounded;
    }
  }
  return out;
}

std::vector<double> reference_resize(const RgbImage& in, uint32_t width, uint32_t height) {
  std::vector<double> pixels(in.pixels.begin(), in.pixels.end());
  // Rows as lines of width·3 values: treat each channel as its own line.
  std::vector<double> lines(pixels.size());
  for (uint32_t y = 0; y < in.height; ++y)
    for (uint32_t x = 0; x < in.width; ++x)
      for (int c = 0; c < 3; ++c) lines[(size_t{y} * 3 + c) * in.width + x] = pixels[(size_t{y} * in.width + x) * 3 + c];
  if (width != in.width) lines = resample_axis(lines, in.width, width, size_t{in.height} * 3, true);
  // Now [y][c][x] with x < width: vertical pass over y for every (c, x).
  if (height != in.height) lines = resample_axis(lines, in.height, height, size_t{width} * 3, false);
  std::vector<double> out(size_t{width} * height * 3);
  for (uint32_t y = 0; y < height; ++y)
    for (uint32_t x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c) out[(size_t{y} * width + x) * 3 + c] = lines[(size_t{y} * 3 + c) * width + x];
  return out;
}

TEST(VisionPreprocess, BicubicMatchesTheFloat64Reference) {
  struct Case {
    uint32_t w, h, ow, oh;
  };
  for (const Case c : {Case{100, 75, 56, 28}, Case{13, 9, 28, 56}, Case{640, 480, 308, 224}, Case{57, 300, 57, 84},
                       Case{300, 57, 84, 57}, Case{31, 29, 28, 28}}) {
    const RgbImage in = pattern(c.w, c.h, c.w * 7 + c.h);
    const RgbImage out = vision::resize_bicubic(in, c.ow, c.oh);
    ASSERT_EQ(out.width, c.ow);
    ASSERT_EQ(out.height, c.oh);
    const auto ref = reference_resize(in, c.ow, c.oh);
    size_t exact = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      // 22-bit fixed-point weights can move a value sitting on a .5 boundary by one step.
      ASSERT_LE(std::fabs(out.pixels[i] - ref[i]), 1.0) << c.w << "x" << c.h << " -> " << c.ow << "x" << c.oh << " at " << i;
      exact += out.pixels[i] == ref[i];
    }
    EXPECT_GE(double(exact) / ref.size(), 0.99) << c.w << "x" << c.h;
  }
}

TEST(VisionPreprocess, BicubicExactCases) {
  // A constant image stays exactly constant (the fixed-point weights sum to one within rounding).
  RgbImage flat;
  flat.width = 40, flat.height = 30;
  for (size_t i = 0; i < 40 * 30; ++i) flat.pixels.insert(flat.pixels.end(), {0, 128, 255});
  for (auto [w, h] : {std::pair{28u, 28u}, std::pair{84u, 56u}, std::pair{40u, 56u}}) {
    const RgbImage out = vision::resize_bicubic(flat, w, h);
    for (size_t i = 0; i < out.pixels.size(); i += 3) {
      ASSERT_EQ(out.pixels[i], 0);
      ASSERT_EQ(out.pixels[i + 1], 128);
      ASSERT_EQ(out.pixels[i + 2], 255);
    }
  }
  // Same size: the image itself (PIL returns a copy).
  const RgbImage p = pattern(28, 56, 3);
  EXPECT_EQ(vision::resize_bicubic(p, 28, 56).pixels, p.pixels);
  // Overshoot is clipped to 0..255 (a hard black/white edge upscaled rings past both ends).
  RgbImage edge;
  edge.width = 4, edge.height = 1;
  edge.pixels = {0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255};
  const RgbImage up = vision::resize_bicubic(edge, 16, 1);
  const auto ref = reference_resize(edge, 16, 1);
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_EQ(up.pixels[i], ref[i]) << i;
}

TEST(VisionPreprocess, NormalisedValuesAndGrid) {
  const RgbImage in = pattern(100, 75, 11);
  vision::PixelBudget budget{28 * 28 * 4, 28 * 28 * 6};
  const VisionConfig config;
  const auto patches = vision::preprocess_image(in, budget, config);
  // smart_resize(75, 100) under max 4704 pixels: beta = sqrt(7500 / 4704), floor to 56 x 56.
  EXPECT_EQ(patches.grid_t, 1u);
  EXPECT_EQ(patches.grid_h, 4u);
  EXPECT_EQ(patches.grid_w, 4u);
  EXPECT_EQ(patches.row_size, 3u * 2 * 14 * 14);
  EXPECT_EQ(patches.tokens(2), 4u);
  ASSERT_EQ(patches.values.size(), patches.rows() * patches.row_size);
  const RgbImage resized = vision::resize_bicubic(in, 56, 56);
  const double mean[3] = {0.48145466, 0.4578275, 0.40821073}, stdev[3] = {0.26862954, 0.26130258, 0.27577711};
  // Element by element: row (bh, bw, mh, mw), column (channel, frame, y, x), written out directly.
  for (size_t row = 0; row < patches.rows(); ++row) {
    const size_t bh = row / 8, bw = row / 4 % 2, mh = row / 2 % 2, mw = row % 2;
    for (size_t col = 0; col < patches.row_size; ++col) {
      const size_t c = col / 392, py = col / 14 % 14, px = col % 14;
      const size_t y = (bh * 2 + mh) * 14 + py, x = (bw * 2 + mw) * 14 + px;
      const double expected = (resized.at(uint32_t(x), uint32_t(y))[c] / 255.0 - mean[c]) / stdev[c];
      ASSERT_NEAR(patches.values[row * patches.row_size + col], expected, 2e-6) << row << "," << col;
    }
  }
}

TEST(VisionPreprocess, PatchOrderOnATinyImage) {
  // 56 wide x 28 high, no resize: pixel (x, y) channel c holds a value that identifies it.
  RgbImage in;
  in.width = 56, in.height = 28;
  for (uint32_t y = 0; y < 28; ++y)
    for (uint32_t x = 0; x < 56; ++x)
      for (uint32_t c = 0; c < 3; ++c) in.pixels.push_back(static_cast<uint8_t>((x + 2 * y + 50 * c) % 256));
  const auto p = vision::preprocess_image(in, {28 * 28, 28 * 28 * 4}, VisionConfig{});
  ASSERT_EQ(p.grid_h, 2u);
  ASSERT_EQ(p.grid_w, 4u);
  auto value = [&](uint32_t x, uint32_t y, int c) { return (float(double(in.at(x, y)[c]) / 255.0) - vision::kClipMean[c]) / vision::kClipStd[c]; };
  auto at = [&](size_t row, size_t col) { return p.values[row * p.row_size + col]; };
  // Rows go merge block by merge block: row 1 is the patch right of patch 0, row 2 the one below it,
  // row 4 the first patch of the next 2x2 block (x from 28).
  EXPECT_EQ(at(0, 0), value(0, 0, 0));
  EXPECT_EQ(at(1, 0), value(14, 0, 0));
  EXPECT_EQ(at(2, 0), value(0, 14, 0));
  EXPECT_EQ(at(3, 0), value(14, 14, 0));
  EXPECT_EQ(at(4, 0), value(28, 0, 0));
  EXPECT_EQ(at(7, 0), value(42, 14, 0));
  // Within a row: x fastest, then y, then the two identical frames, then the channel.
  EXPECT_EQ(at(0, 1), value(1, 0, 0));
  EXPECT_EQ(at(0, 14), value(0, 1, 0));
  EXPECT_EQ(at(0, 196), value(0, 0, 0));  // second frame = first frame
  EXPECT_EQ(at(0, 196 + 15), value(1, 1, 0));
  EXPECT_EQ(at(0, 392), value(0, 0, 1));
  EXPECT_EQ(at(5, 392 * 2 + 196 + 14 * 13 + 13), value(28 + 14 + 13, 13, 2));
}

TEST(VisionPreprocess, RefusesExtremeAspectRatios) {
  RgbImage thin;
  thin.width = 2010, thin.height = 10;
  thin.pixels.assign(size_t{2010} * 10 * 3, 0);
  EXPECT_THROW(vision::preprocess_image(thin, {}, VisionConfig{}), Error);
  VisionConfig odd;
  odd.patch_size = 16;
  EXPECT_THROW(vision::preprocess_image(pattern(56, 56, 1), {}, odd), Error);
}

}  // namespace
}  // namespace vlmforge::test
