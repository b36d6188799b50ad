#include "vision/image_processor.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "util/error.h"

namespace vlmforge::vision {

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Resample.c's PRECISION_BITS for 8-bit images

double bicubic(double x) {
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// One axis of the resize: for each output index, the first input index, the tap count and the
// fixed-point weights (precompute_coeffs + normalize_coeffs_8bpc).
struct Taps {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;  // [out, ksize]
};

Taps bicubic_taps(uint32_t in_size, uint32_t out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale;
  Taps t;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(size_t{out_size} * t.ksize, 0);
  std::vector<double> k(t.ksize);
  for (uint32_t xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    // (int) casts truncate toward zero, as in C.
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), static_cast<int>(in_size)) - xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      k[x] = bicubic((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double w = ww != 0.0 ? k[x] / ww : k[x];
      t.weights[size_t{xx} * t.ksize + x] =
          static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
    }
    t.first[xx] = xmin;
    t.count[xx] = std::max(xmax, 0);
  }
  return t;
}

uint8_t clip8(int32_t v) {
  const int32_t shifted = v >> kPrecisionBits;
  return static_cast<uint8_t>(std::clamp(shifted, 0, 255));
}

}  // namespace

RgbImage resize_bicubic(const RgbImage& in, uint32_t width, uint32_t height) {
  if (width == 0 || height == 0) throw Error("resize to an empty image");
  if (width == in.width && height == in.height) return in;
  const Taps horizontal = bicubic_taps(in.width, width), vertical = bicubic_taps(in.height, height);
  // The horizontal pass covers only the input rows the vertical pass reads.
  const uint32_t row_first = static_cast<uint32_t>(vertical.first.front());
  const uint32_t row_last = static_cast<uint32_t>(vertical.first.back() + vertical.count.back());
  const bool need_horizontal = width != in.width, need_vertical = height != in.height;
  RgbImage mid;
  mid.width = width;
  mid.height = need_horizontal ? row_last - row_first : in.height;
  if (need_horizontal) {
    mid.pixels.resize(size_t{mid.width} * mid.height * 3);
    for (uint32_t y = 0; y < mid.height; ++y) {
      const uint8_t* src = in.pixels.data() + size_t{y + row_first} * in.width * 3;
      uint8_t* dst = mid.pixels.data() + size_t{y} * width * 3;
      for (uint32_t xx = 0; xx < width; ++xx) {
        const int32_t* k = horizontal.weights.data() + size_t{xx} * horizontal.ksize;
        int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        const uint8_t* p = src + size_t(horizontal.first[xx]) * 3;
        for (int x = 0; x < horizontal.count[xx]; ++x, p += 3) {
          s0 += p[0] * k[x];
          s1 += p[1] * k[x];
          s2 += p[2] * k[x];
        }
        dst[3 * xx] = clip8(s0), dst[3 * xx + 1] = clip8(s1), dst[3 * xx + 2] = clip8(s2);
      }
    }
  } else {
    mid = in;
  }
  if (!need_vertical) return mid;
  const uint32_t shift = need_horizontal ? row_first : 0;
  RgbImage out;
  out.width = width;
  out.height = height;
  out.pixels.resize(size_t{width} * height * 3);
  const size_t stride = size_t{width} * 3;
  for (uint32_t yy = 0; yy < height; ++yy) {
    const int32_t* k = vertical.weights.data() + size_t{yy} * vertical.ksize;
    const uint8_t* src = mid.pixels.data() + size_t(vertical.first[yy] - shift) * stride;
    uint8_t* dst = out.pixels.data() + size_t{yy} * stride;
    for (size_t i = 0; i < stride; ++i) {
      int32_t s = 1 << (kPrecisionBits - 1);
      for (int y = 0; y < vertical.count[yy]; ++y) s += src[size_t(y) * stride + i] * k[y];
      dst[i] = clip8(s);
    }
  }
  return out;
}

ImagePatches preprocess_image(const RgbImage& image, const PixelBudget& budget, const VisionConfig& config) {
  const uint32_t patch = static_cast<uint32_t>(config.patch_size), merge = static_cast<uint32_t>(config.spatial_merge_size);
  const uint32_t temporal = static_cast<uint32_t>(config.temporal_patch_size);
  if (patch * merge != kResizeFactor || config.in_channels != 3 || temporal == 0)
    throw Error("vision_config: patch_size " + std::to_string(patch) + " x spatial_merge_size " + std::to_string(merge) +
                " with " + std::to_string(config.in_channels) + " channels is not supported (14 x 2, 3 channels expected)");
  const auto size = smart_resize(image.height, image.width, budget);
  if (!size)
    throw Error("image of " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                " pixels: the aspect ratio must be at most 200 (Qwen2-VL's smart_resize refuses it)");
  const RgbImage resized = resize_bicubic(image, size->width, size->height);

  // rescale: float64 product then float32, as transformers' rescale(); normalize in float32.
  const size_t plane = size_t{resized.width} * resized.height;
  std::vector<float> normalized(3 * plane);  // channel-first
  for (size_t i = 0; i < plane; ++i)
    for (int c = 0; c < 3; ++c) {
      const float x = static_cast<float>(static_cast<double>(resized.pixels[3 * i + c]) * (1.0 / 255.0));
      normalized[c * plane + i] = (x - kClipMean[c]) / kClipStd[c];
    }

  ImagePatches out;
  out.grid_t = 1;  // one frame repeated temporal_patch_size times
  out.grid_h = resized.height / patch;
  out.grid_w = resized.width / patch;
  out.row_size = size_t{3} * temporal * patch * patch;
  out.values.resize(out.rows() * out.row_size);
  float* dst = out.values.data();
  for (uint32_t bh = 0; bh < out.grid_h / merge; ++bh)
    for (uint32_t bw = 0; bw < out.grid_w / merge; ++bw)
      for (uint32_t mh = 0; mh < merge; ++mh)
        for (uint32_t mw = 0; mw < merge; ++mw) {
          const size_t y0 = size_t{bh * merge + mh} * patch, x0 = size_t{bw * merge + mw} * patch;
          for (int c = 0; c < 3; ++c)
            for (uint32_t t = 0; t < temporal; ++t)
              for (uint32_t py = 0; py < patch; ++py) {
                std::memcpy(dst, normalized.data() + c * plane + (y0 + py) * resized.width + x0, patch * sizeof(float));
                dst += patch;
              }
        }
  return out;
}

}  // namespace vlmforge::vision
