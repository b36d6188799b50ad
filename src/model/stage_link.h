#pragma once
// The boundary of a pipeline stage: the layers after this process's part of the model run in other
// processes (engine/pipeline.h sends them over MPI). The model hands the hidden states of a step
// over with what the later stages need to run their layers against their own KV caches, and gets
// the last stage's logits back. No transport here: the model only sees this interface.
#include <array>
#include <cstdint>
#include <vector>

namespace vlmforge {

// One sequence's rows of a step, as a later stage sees it: its KV cache by id (the stage keeps a
// mirror per id), where its rows go in that cache, and whether every row gives logits.
struct StageChunk {
  uint64_t cache_id = 0;
  uint64_t max_tokens = 0;  // the cache's capacity (max_model_len), for the mirror's creation
  uint64_t start = 0;       // the cache's length before this step (0 after a clear)
  uint64_t tokens = 0;
  bool all_logits = false;
};

struct StageBatch {
  std::vector<uint64_t> released_caches;      // caches destroyed since the last step: free the mirrors
  std::vector<StageChunk> chunks;
  std::vector<std::array<int64_t, 3>> rope;   // rotary position (t, h, w) per row
  std::vector<float> hidden;                  // rows × hidden_size hidden states entering the stage
};

class StageLink {
 public:
  virtual ~StageLink() = default;
  // Runs the later stages on `batch` and returns their logits: for each chunk its last row, or
  // every row with all_logits, vocab_size floats each.
  virtual std::vector<float> forward(const StageBatch& batch) = 0;
};

}  // namespace vlmforge
