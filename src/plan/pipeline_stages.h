#pragma once
// Pipeline stages across nodes (mpirun ranks): contiguous runs of decoder layers, one per node.
// The first stage also holds the vision tower and the embeddings, the last the final norm and
// lm_head (a tied lm_head as its own copy of the embedding matrix); each stage is then placed on
// its node's devices by the planner like a whole model is on one node's.
#include <cstddef>
#include <vector>

#include "plan/planner.h"

namespace vlmforge {

struct PipelineStage {
  size_t first_layer = 0, end_layer = 0;  // decoder layers [first_layer, end_layer)
};

// Splits the layers into `nodes` non-empty stages so that the largest stage's weight bytes are as
// small as they can be. Throws when there are more nodes than layers.
std::vector<PipelineStage> split_stages(const ModelShape& shape, size_t nodes);

// The modules of stage `stage` of `stages`, as a shape of their own for the planner.
ModelShape stage_shape(const ModelShape& shape, const std::vector<PipelineStage>& stages, size_t stage);

}  // namespace vlmforge
