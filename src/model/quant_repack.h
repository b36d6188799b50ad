#pragma once
// Repacking AWQ and GPTQ checkpoint tensors into the one device layout of group-quantized
// weights (kernels/quant_format.h). Pure host-to-host functions: the loader reads a linear's
// tensors from the checkpoint, repacks them here once, and uploads the result.
//
// As stored (in = input features, out = output features, G = groups, all int32 little-endian):
//   AWQ GEMM (AutoAWQ WQLinear_GEMM, 4-bit)
//     qweight [in, out/8]   8 output columns per word, column 8k+order[n] in nibble n,
//     qzeros  [G, out/8]    order = 0, 2, 4, 6, 1, 3, 5, 7 (the same for the zeros)
//     scales  [G, out]      fp16; input i is in group i / group_size
//   GPTQ (AutoGPTQ / GPTQModel QuantLinear, 4- or 8-bit: 32/bits codes per word)
//     qweight [in·bits/32, out]  input 32/bits·k + n of output column c in slot n of word [k, c]
//     qzeros  [G, out·bits/32]   output 32/bits·k + n in slot n; v1 stores zero − 1, v2 the zero
//     scales  [G, out]           fp16
//     g_idx   [in]               the group of each input (desc_act: any order, each group
//                                group_size inputs); absent or i / group_size: the column order
// Shapes come from the tensors (a checkpoint may pad a dimension past config.json's), and every
// inconsistency is an error naming the tensor.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/dtype.h"
#include "kernels/quant_format.h"
#include "model/quantization.h"

namespace vlmforge {

// One tensor as stored: its name (for errors), dtype, shape and bytes.
struct StoredTensor {
  std::string name;
  DType dtype = DType::I32;
  std::vector<uint64_t> shape;
  std::span<const std::byte> bytes;
};

// The tensors of one quantized linear layer ("<module>.qweight" and its companions).
struct QuantizedTensors {
  StoredTensor qweight, qzeros, scales;
  std::optional<StoredTensor> g_idx;  // GPTQ only; absent means the column order
};

// What a quantized linear becomes on a device: [rows = out, cols = in] in `layout`.
struct QuantizedShape {
  uint64_t rows = 0, cols = 0;
  kernels::QuantLayout layout;
  uint64_t bytes() const { return layout.bytes(rows, cols); }
};

// Checks the tensors against each other and the config; reads g_idx to decide whether the
// columns need a permutation.
QuantizedShape quantized_shape(const QuantizationConfig& config, const QuantizedTensors& t);

// The weight in kernels/quant_format.h's layout, shape.bytes() bytes.
std::vector<std::byte> repack_quantized(const QuantizationConfig& config, const QuantizedTensors& t,
                                        const QuantizedShape& shape);

// Row `row` of the weight held in `layout_bytes` (repack_quantized's output for `shape`) as fp32,
// in input order: out[c] = W[row, c] (DoRA's weight norms of a quantized base).
void dequantize_row(const QuantizedShape& shape, std::span<const std::byte> layout_bytes, uint64_t row, float* out);

}  // namespace vlmforge
