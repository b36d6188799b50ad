#pragma once
// The image preprocessing of transformers' Qwen2VLImageProcessor (which Qwen2.5-VL uses):
// smart_resize, a PIL-identical bicubic resize of the uint8 RGB image, rescale by 1/255,
// normalisation with the OpenAI CLIP mean/std, the frame repeated temporal_patch_size times,
// and the patches flattened in the processor's order, with image_grid_thw.
#include <cstdint>
#include <vector>

#include "model/config.h"
#include "vision/image_decode.h"
#include "vision/smart_resize.h"

namespace vlmforge::vision {

// OPENAI_CLIP_MEAN / OPENAI_CLIP_STD (transformers' image_utils), the Qwen2-VL processor's defaults.
inline constexpr float kClipMean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
inline constexpr float kClipStd[3] = {0.26862954f, 0.26130258f, 0.27577711f};

// PIL's Image.resize((width, height), Image.BICUBIC) of an 8-bit RGB image, byte for byte
// (Pillow's libImaging/Resample.c): the cubic filter a = -0.5 with support 2, widened by the scale
// factor when downscaling (antialiasing), coefficients normalised in double and rounded to 22-bit
// fixed point, a horizontal pass rounded to uint8, then a vertical pass. Same size: a copy.
RgbImage resize_bicubic(const RgbImage& image, uint32_t width, uint32_t height);

struct ImagePatches {
  std::vector<float> values;  // [grid_t·grid_h·grid_w rows, channels·temporal·patch·patch]
  uint32_t grid_t = 0, grid_h = 0, grid_w = 0;
  size_t row_size = 0;

  size_t rows() const { return size_t{grid_t} * grid_h * grid_w; }
  // <|image_pad|> tokens for the language model: t·h·w / merge².
  size_t tokens(int merge_size) const { return rows() / (size_t(merge_size) * merge_size); }
};

// Rows are ordered (t, h/merge, w/merge, merge row, merge column) and each row holds
// (channel, frame, y, x) — pixel_values exactly as the processor returns them. Throws Error for an
// aspect ratio over 200 or a vision config whose patch geometry is not 14 × merge 2 × 3 channels.
ImagePatches preprocess_image(const RgbImage& image, const PixelBudget& budget, const VisionConfig& config);

}  // namespace vlmforge::vision
