// The vision tower against a naive double-precision reference of the same math, written here from
// transformers' Qwen2_5_VisionTransformerPretrainedModel (rot_pos_emb, get_window_index with its
// -100 padding, cu_seqlens, blocks, PatchMerger, argsort of the window index).
#include "backends/cpu_device.h"
#include "vision/vision_tower.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "io/dtype.h"
#include "kernels/convert.h"
#include "model/layout.h"
#include "model/random_checkpoint.h"
#include "support/test_support.h"
#include "util/error.h"

namespace vlmforge::test {
namespace {

using Matrix = std::vector<double>;  // row-major

struct Reference {
  const Checkpoint& ckpt;
  std::string prefix;

  Matrix tensor(const std::string& name) const {
    const auto f = kernels::tensor_to_f32(*ckpt.find(prefix + name));
    return Matrix(f.begin(), f.end());
  }
  // y[r, o] = Σ_i x[r, i] · W[o, i] + b[o]
  static Matrix linear(const Matrix& x, size_t rows, const Matrix& w, const Matrix* b, size_t out) {
    const size_t in = x.size() / rows;
    Matrix y(rows * out);
    for (size_t r = 0; r < rows; ++r)
      for (size_t o = 0; o < out; ++o) {
        double s = b ? (*b)[o] : 0.0;
        for (size_t i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
        y[r * out + o] = s;
      }
    return y;
  }
  static Matrix rms(const Matrix& x, size_t rows, const Matrix& w) {
    const size_t d = x.size() / rows;
    Matrix y(x.size());
    for (size_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (size_t i = 0; i < d; ++i) ss += x[r * d + i] * x[r * d + i];
      const double inv = 1.0 / std::sqrt(ss / d + 1e-6);
      for (size_t i = 0; i < d; ++i) y[r * d + i] = x[r * d + i] * inv * w[i];
    }
    return y;
  }

  Matrix run(const vision::ImagePatches& p, const VisionConfig& c) const {
    const size_t n = p.rows(), d = c.hidden_size, heads = c.num_heads, hd = d / heads, unit = 4;
    const size_t gh = p.grid_h, gw = p.grid_w;
    Matrix x = linear(Matrix(p.values.begin(), p.values.end()), n, tensor("patch_embed.proj.weight"), nullptr, d);
    // rot_pos_emb: hpos/wpos reshaped (h/2, 2, w/2, 2) and permuted (0, 2, 1, 3).
    std::vector<std::pair<size_t, size_t>> pos;
    for (size_t a = 0; a < gh / 2; ++a)
      for (size_t cc = 0; cc < gw / 2; ++cc)
        for (size_t b = 0; b < 2; ++b)
          for (size_t e = 0; e < 2; ++e) pos.emplace_back(a * 2 + b, cc * 2 + e);
    const size_t dim = hd / 2;
    Matrix freqs(n * dim);  // [h freqs, w freqs]
    for (size_t r = 0; r < n; ++r)
      for (size_t i = 0; i < dim / 2; ++i) {
        const double inv = 1.0 / std::pow(10000.0, 2.0 * i / dim);
        freqs[r * dim + i] = pos[r].first * inv;
        freqs[r * dim + dim / 2 + i] = pos[r].second * inv;
      }
    // get_window_index, literally: pad with -100 to whole windows (+1 when divisible), permute, drop pads.
    const long ws = c.window_size / 2 / c.patch_size;
    const long lh = gh / 2, lw = gw / 2, pad_h = ws - lh % ws, pad_w = ws - lw % ws;
    const long nwh = (lh + pad_h) / ws, nww = (lw + pad_w) / ws;
    std::vector<long> window_index;
    std::vector<size_t> cu{0};
    for (long wy = 0; wy < nwh; ++wy)
      for (long wx = 0; wx < nww; ++wx) {
        size_t count = 0;
        for (long y = 0; y < ws; ++y)
          for (long xx = 0; xx < ws; ++xx) {
            const long py = wy * ws + y, px = wx * ws + xx;
            const long v = py < lh && px < lw ? py * lw + px : -100;
            if (v != -100) window_index.push_back(v), ++count;
          }
        cu.push_back(cu.back() + count * unit);
      }
    cu.erase(std::unique(cu.begin(), cu.end()), cu.end());  // unique_consecutive
    Matrix xw(x.size()), fw(freqs.size());
    for (size_t i = 0; i < window_index.size(); ++i)
      for (size_t j = 0; j < unit; ++j) {
        std::copy_n(x.begin() + (window_index[i] * unit + j) * d, d, xw.begin() + (i * unit + j) * d);
        std::copy_n(freqs.begin() + (window_index[i] * unit + j) * dim, dim, fw.begin() + (i * unit + j) * dim);
      }
    x = xw;
    for (int b = 0; b < c.depth; ++b) {
      const std::string pre = "blocks." + std::to_string(b) + ".";
      const bool full = std::find(c.fullatt_block_indexes.begin(), c.fullatt_block_indexes.end(), b) != c.fullatt_block_indexes.end();
      const std::vector<size_t> seg = full ? std::vector<size_t>{0, n} : cu;
      Matrix h = rms(x, n, tensor(pre + "norm1.weight"));
      const Matrix qkv_b = tensor(pre + "attn.qkv.bias");
      Matrix qkv = linear(h, n, tensor(pre + "attn.qkv.weight"), &qkv_b, 3 * d);
      // apply_rotary_pos_emb_vision: x·cos + rotate_half(x)·sin with emb = cat(freqs, freqs).
      auto rope = [&](size_t r, size_t off) {
        std::vector<double> v(qkv.begin() + r * 3 * d + off, qkv.begin() + r * 3 * d + off + hd);
        for (size_t i = 0; i < hd; ++i) {
          const double f = fw[r * dim + i % dim];
          const double rot = i < hd / 2 ? -v[i + hd / 2] : v[i - hd / 2];
          qkv[r * 3 * d + off + i] = v[i] * std::cos(f) + rot * std::sin(f);
        }
      };
      for (size_t r = 0; r < n; ++r)
        for (size_t hh = 0; hh < heads; ++hh) rope(r, hh * hd), rope(r, d + hh * hd);
      Matrix attn(n * d);
      for (size_t s = 0; s + 1 < seg.size(); ++s)
        for (size_t r = seg[s]; r < seg[s + 1]; ++r)
          for (size_t hh = 0; hh < heads; ++hh) {
            std::vector<double> score;
            for (size_t k = seg[s]; k < seg[s + 1]; ++k) {
              double dot = 0;
              for (size_t i = 0; i < hd; ++i) dot += qkv[r * 3 * d + hh * hd + i] * qkv[k * 3 * d + d + hh * hd + i];
              score.push_back(dot / std::sqrt(double(hd)));
            }
            const double mx = *std::max_element(score.begin(), score.end());
            double sum = 0;
            for (double& v : score) sum += (v = std::exp(v - mx));
            for (size_t k = seg[s]; k < seg[s + 1]; ++k)
              for (size_t i = 0; i < hd; ++i)
                attn[r * d + hh * hd + i] += score[k - seg[s]] / sum * qkv[k * 3 * d + 2 * d + hh * hd + i];
          }
      const Matrix proj_b = tensor(pre + "attn.proj.bias");
      const Matrix o = linear(attn, n, tensor(pre + "attn.proj.weight"), &proj_b, d);
      for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
      h = rms(x, n, tensor(pre + "norm2.weight"));
      const size_t inter = c.intermediate_size;
      const Matrix gb = tensor(pre + "mlp.gate_proj.bias"), ub = tensor(pre + "mlp.up_proj.bias"), db = tensor(pre + "mlp.down_proj.bias");
      Matrix g = linear(h, n, tensor(pre + "mlp.gate_proj.weight"), &gb, inter);
      const Matrix u = linear(h, n, tensor(pre + "mlp.up_proj.weight"), &ub, inter);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      const Matrix down = linear(g, n, tensor(pre + "mlp.down_proj.weight"), &db, d);
      for (size_t i = 0; i < x.size(); ++i) x[i] += down[i];
    }
    const Matrix normed = rms(x, n, tensor("merger.ln_q.weight"));
    const Matrix b0 = tensor("merger.mlp.0.bias"), b2 = tensor("merger.mlp.2.bias");
    Matrix hidden = linear(normed, n / unit, tensor("merger.mlp.0.weight"), &b0, d * unit);
    for (double& v : hidden) v = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
    const size_t out = c.out_hidden_size;
    const Matrix merged = linear(hidden, n / unit, tensor("merger.mlp.2.weight"), &b2, out);
    std::vector<size_t> reverse(window_index.size());
    std::iota(reverse.begin(), reverse.end(), 0);
    std::sort(reverse.begin(), reverse.end(), [&](size_t a, size_t b) { return window_index[a] < window_index[b]; });
    Matrix result(merged.size());
    for (size_t j = 0; j < reverse.size(); ++j) std::copy_n(merged.begin() + reverse[j] * out, out, result.begin() + j * out);
    return result;
  }
};

vision::RgbImage test_image(uint32_t width, uint32_t height) {
  vision::RgbImage image;
  image.width = width, image.height = height;
  for (uint32_t y = 0; y < height; ++y)
    for (uint32_t x = 0; x < width; ++x)
      image.pixels.insert(image.pixels.end(), {uint8_t(x * 255 / width), uint8_t(y * 255 / height), uint8_t((x * y) % 251)});
  return image;
}

void expect_close(const std::vector<float>& got, const Matrix& want, double tolerance) {
  ASSERT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]) / std::max(1.0, std::fabs(want[i])));
  double biggest = 0;
  for (double w : want) biggest = std::max(biggest, std::fabs(w));
  EXPECT_LT(worst, tolerance) << "largest reference value " << biggest;
}

class VisionTowerTest : public ::testing::TestWithParam<std::tuple<DType, VlWeightLayout>> {};

TEST_P(VisionTowerTest, MatchesTheDoubleReference) {
  const auto [dtype, layout] = GetParam();
  TempDir dir;
  ModelConfig config = preset_config("tiny-vl");
  generate_checkpoint(config, dir.path(), {.dtype = dtype, .seed = 3, .layout = layout});
  const Checkpoint ckpt(dir.path());
  const ModelConfig loaded = ModelConfig::load(dir.path());
  const VisionConfig& c = *loaded.vision;
  // 140 x 168 pixels: a 12 x 10 patch grid, 6 x 5 merge groups, windows of 4 x 4 groups with partial
  // windows at both edges.
  const auto patches = vision::preprocess_image(test_image(140, 168), {28 * 28, 28 * 28 * 64}, c);
  ASSERT_EQ(patches.grid_h, 12u);
  ASSERT_EQ(patches.grid_w, 10u);
  CpuDevice device(0, std::nullopt, 2);
  vision::VisionTower tower(ckpt, loaded, device);
  const std::vector<float> got = tower.encode(patches);
  const Reference ref{ckpt, layout == VlWeightLayout::kLegacy ? "visual." : "model.visual."};
  expect_close(got, ref.run(patches, c), 1e-4);
  EXPECT_EQ(got.size(), patches.tokens(2) * size_t(c.out_hidden_size));
  // One thread gives the same embeddings.
  CpuDevice one_thread(1, std::nullopt, 1);
  vision::VisionTower single(ckpt, loaded, one_thread);
  EXPECT_EQ(single.encode(patches), got);
}

INSTANTIATE_TEST_SUITE_P(DtypesAndLayouts, VisionTowerTest,
                         ::testing::Values(std::tuple{DType::F32, VlWeightLayout::kLegacy},
                                           std::tuple{DType::BF16, VlWeightLayout::kTransformers},
                                           std::tuple{DType::F16, VlWeightLayout::kLegacy}));

TEST(VisionTowerStop, AStopBetweenBlocksThrowsCancelledAndFreesTheDeviceBuffers) {
  TempDir dir;
  const ModelConfig config = preset_config("tiny-vl");
  generate_checkpoint(config, dir.path(), {.dtype = DType::F32, .seed = 5});
  const Checkpoint ckpt(dir.path());
  const auto patches = vision::preprocess_image(test_image(140, 168), {28 * 28, 28 * 28 * 64}, *config.vision);
  CpuDevice device(0, std::nullopt, 2);
  vision::VisionTower tower(ckpt, config, device);
  ASSERT_GE(config.vision->depth, 2);
  const std::vector<float> whole = tower.encode(patches);
  const uint64_t weights_only = device.allocated();
  size_t asked = 0;
  try {
    tower.encode(patches, [&] { return ++asked == 2; });  // go on after the first block, then stop
    FAIL() << "the stop was not heeded";
  } catch (const Cancelled& e) {
    EXPECT_NE(std::string(e.what()).find("after 1 of " + std::to_string(config.vision->depth) + " vision blocks"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(asked, 2u);
  EXPECT_EQ(device.allocated(), weights_only);  // every activation buffer of the stopped call is back
  // The tower is whole after a stop; a stop that never fires changes nothing.
  EXPECT_EQ(tower.encode(patches, [] { return false; }), whole);
}

TEST(VisionWindows, LayoutOfAPartialGrid) {
  VisionConfig c;  // window 112 px = 4 x 4 merge groups
  const auto layout = vision::window_layout(12, 10, c);
  EXPECT_EQ(layout.boundaries, (std::vector<size_t>{0, 64, 80, 112, 120}));
  ASSERT_EQ(layout.group_order.size(), 30u);
  EXPECT_EQ(layout.group_order[0], 0u);
  EXPECT_EQ(layout.group_order[4], 5u);    // second row of the first window
  EXPECT_EQ(layout.group_order[16], 4u);   // the 1-wide window at the right edge
  EXPECT_EQ(layout.group_order[20], 20u);  // the bottom-left window
  // An evenly divisible grid: transformers' padding adds empty windows, which are dropped.
  const auto even = vision::window_layout(16, 8, c);
  EXPECT_EQ(even.boundaries, (std::vector<size_t>{0, 64, 128}));
}

TEST(VisionWindows, ActivationBytesForThePlanner) {
  const ModelConfig c = preset_config("qwen2.5-vl-3b");
  const uint64_t bytes = vision::vision_activation_bytes(*c.vision, 802816, 16);
  // 4096 patches: the MLP's gate and up buffers alone are 2 · 4096 · 3420 floats.
  EXPECT_GT(bytes, uint64_t{2} * 4096 * 3420 * 4);
  EXPECT_EQ(bytes, vision::vision_activations(*c.vision, 4096).bytes(16));
  EXPECT_LT(vision::vision_activation_bytes(*c.vision, 200704, 16), bytes);
}

TEST(VisionWindows, MissingOrMisshapenWeightsAreNamed) {
  TempDir dir;
  ModelConfig config = preset_config("tiny-vl");
  generate_checkpoint(config, dir.path(), {.dtype = DType::F32});
  const Checkpoint ckpt(dir.path());
  ModelConfig wrong = config;
  wrong.vision->intermediate_size = 100;
  try {
    CpuDevice device(0, std::nullopt, 1);
    vision::VisionTower tower(ckpt, wrong, device);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("visual.blocks.0.mlp.gate_proj.weight"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace vlmforge::test
