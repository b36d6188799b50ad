#pragma once
// Round-to-nearest (RTN) quantization of float weights into the published checkpoint formats
// that model/quant_repack.h reads back (layouts described there):
//   GPTQ v1 (AutoGPTQ / GPTQModel QuantLinear, checkpoint_format "gptq"), 4 or 8 bits, symmetric:
//     per group of group_size inputs, amax = max |w|, scale = 2·amax / (2^bits − 1), zero
//     2^(bits−1) (stored minus one), as GPTQ's Quantizer.find_params with sym=True; an all-zero
//     group gets amax 1, as there.
//   AWQ GEMM (AutoAWQ WQLinear_GEMM), 4 bits, zero point: lo = min(w, 0), hi = max(w, 0),
//     scale = (hi − lo) / 15, zero = round(−lo / scale). AutoAWQ's pseudo_quantize_tensor takes
//     the plain min and max; holding 0 in the range means the zero point always fits in 4 bits
//     (it differs only for groups whose values all have one sign).
// Both: the scale is rounded to fp16 first and the codes are q = clamp(round(w / scale) + zero,
// 0, 2^bits − 1) with that stored scale (round half to even, as torch.round), so the checkpoint
// dequantizes to (q − zero) · scale exactly.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "io/safetensors_writer.h"
#include "model/quant_repack.h"
#include "model/quantization.h"

namespace vlmforge {

// One group's parameters: codes are (w / scale) rounded, plus zero.
struct GroupQuant {
  float scale;    // exact in fp16
  uint32_t zero;  // in [0, 2^bits)
  bool finite;    // false: the group holds NaN or Inf, and scale, zero and codes mean nothing
};

// The RTN parameters of one group of `n` weights, and their codes into `codes` (n bytes).
GroupQuant quantize_group(const QuantizationConfig& config, const float* w, size_t n, uint8_t* codes);

// Why a [rows = out, cols = in] weight cannot be stored in `config`'s format ("" when it can):
// inputs not a multiple of group_size or of the codes per int32, outputs not a multiple of the
// zero points per int32.
std::string unpackable_reason(const QuantizationConfig& config, uint64_t rows, uint64_t cols);

// The checkpoint tensors of one quantized linear (qweight, qzeros, scales and, for GPTQ, g_idx),
// filled row block by row block. Holds them whole: the output is 1/8 (4-bit) or 1/4 (8-bit) of
// the fp32 weight, and its words interleave output rows, so no row block is a contiguous part
// of it.
class PackedLinear {
 public:
  // Error naming `module` when unpackable_reason() is not empty.
  PackedLinear(const QuantizationConfig& config, std::string module, uint64_t rows, uint64_t cols);

  // Rows that share an int32 word of some tensor; quantize_rows' row ranges start at multiples of it.
  static constexpr uint64_t kRowMultiple = 8;

  // Quantizes rows [row, row + n) given as fp32 [n, cols]. Calls for disjoint ranges, each
  // starting at a multiple of kRowMultiple, may run concurrently.
  void quantize_rows(const float* w, uint64_t row, uint64_t n);

  // The tensors in checkpoint order (AutoGPTQ / AutoAWQ state_dict order: qweight, qzeros,
  // scales, g_idx) with their bytes.
  std::vector<TensorSpec> specs() const;
  std::vector<std::span<const std::byte>> data() const;
  // The same tensors as model/quant_repack.h takes them.
  QuantizedTensors tensors() const;

  // Tensor specs without building the tensors (for planning the output shards).
  static std::vector<TensorSpec> specs(const QuantizationConfig& config, const std::string& module, uint64_t rows,
                                       uint64_t cols);

 private:
  QuantizationConfig config_;
  std::string module_;
  uint64_t rows_, cols_, group_, groups_;
  std::vector<uint32_t> qweight_, qzeros_, g_idx_;
  std::vector<uint16_t> scales_;
};

}  // namespace vlmforge
