#include "plan/pipeline_stages.h"

#include <algorithm>
#include <limits>
#include <string>

#include "util/error.h"

namespace vlmforge {
namespace {

uint64_t bytes_of(const ModelShape& shape, ModuleKind kind) {
  uint64_t total = 0;
  for (const auto& m : shape.modules)
    if (m.kind == kind) total += m.weight_bytes;
  return total;
}

// A tied lm_head is listed with 0 bytes; on a last stage without the embeddings it is a copy of them.
uint64_t head_bytes(const ModelShape& shape, bool with_embed) {
  const uint64_t head = bytes_of(shape, ModuleKind::kHead);
  return head == 0 && !with_embed && shape.config.tie_word_embeddings ? bytes_of(shape, ModuleKind::kEmbed) : head;
}

}  // namespace

std::vector<PipelineStage> split_stages(const ModelShape& shape, size_t nodes) {
  std::vector<uint64_t> layer;
  for (const auto& m : shape.modules)
    if (m.kind == ModuleKind::kLayer) layer.push_back(m.weight_bytes);
  const size_t n = layer.size();
  if (nodes == 0 || nodes > n)
    throw UsageError("a pipeline of " + std::to_string(nodes) + " ranks needs at least one decoder layer per rank; " +
                     shape.source + " has " + std::to_string(n));
  if (nodes == 1) return {{0, n}};
  const uint64_t first_extra = bytes_of(shape, ModuleKind::kEmbed) + bytes_of(shape, ModuleKind::kVision);
  const uint64_t last_extra = bytes_of(shape, ModuleKind::kNorm) + head_bytes(shape, false);
  std::vector<uint64_t> prefix(n + 1, 0);
  for (size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + layer[i];
  auto cost = [&](size_t stage, size_t a, size_t b) {
    return prefix[b] - prefix[a] + (stage == 0 ? first_extra : 0) + (stage + 1 == nodes ? last_extra : 0);
  };
  // best[s][i]: the smallest largest stage for layers [0, i) in stages 0..s-1; cut[s][i] where stage s-1 starts.
  constexpr uint64_t kNone = std::numeric_limits<uint64_t>::max();
  std::vector<std::vector<uint64_t>> best(nodes + 1, std::vector<uint64_t>(n + 1, kNone));
  std::vector<std::vector<size_t>> cut(nodes + 1, std::vector<size_t>(n + 1, 0));
  best[0][0] = 0;
  for (size_t s = 1; s <= nodes; ++s)
    for (size_t i = s; i <= n; ++i)
      for (size_t j = s - 1; j < i; ++j) {
        if (best[s - 1][j] == kNone) continue;
        const uint64_t worst = std::max(best[s - 1][j], cost(s - 1, j, i));
        if (worst < best[s][i]) {
          best[s][i] = worst;
          cut[s][i] = j;
        }
      }
  std::vector<PipelineStage> stages(nodes);
  for (size_t s = nodes, end = n; s > 0; --s) {
    stages[s - 1] = {cut[s][end], end};
    end = cut[s][end];
  }
  return stages;
}

ModelShape stage_shape(const ModelShape& shape, const std::vector<PipelineStage>& stages, size_t stage) {
  const bool first = stage == 0, last = stage + 1 == stages.size();
  ModelShape out{shape.config, {}, shape.source + " (pipeline stage " + std::to_string(stage) + ")"};
  out.quantized_on_load = shape.quantized_on_load;
  for (const auto& m : shape.modules) {
    const bool keep = m.kind == ModuleKind::kLayer
                          ? static_cast<size_t>(m.layer) >= stages[stage].first_layer &&
                                static_cast<size_t>(m.layer) < stages[stage].end_layer
                          : ((m.kind == ModuleKind::kVision || m.kind == ModuleKind::kEmbed) ? first : last);
    if (!keep) continue;
    out.modules.push_back(m);
    if (m.kind == ModuleKind::kHead) out.modules.back().weight_bytes = head_bytes(shape, first);
  }
  return out;
}

}  // namespace vlmforge
