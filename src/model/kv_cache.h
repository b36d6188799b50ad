#pragma once
// Keys and values of one sequence for every layer, fp32, grown as tokens are appended up to a
// fixed limit (max_model_len), so memory follows the actual sequence length.
#include <cstddef>
#include <vector>

#include "util/error.h"

namespace vlmforge {

class KvCache {
 public:
  KvCache(size_t layers, size_t kv_dim, size_t max_tokens)
      : kv_dim_(kv_dim), max_tokens_(max_tokens), keys_(layers), values_(layers) {}

  size_t length() const { return length_; }
  size_t max_tokens() const { return max_tokens_; }
  size_t kv_dim() const { return kv_dim_; }

  // Makes room for `count` more positions (throws when past max_model_len).
  void reserve_more(size_t count) {
    if (length_ + count > max_tokens_)
      throw Error("sequence of " + std::to_string(length_ + count) + " tokens exceeds max_model_len " +
                  std::to_string(max_tokens_) + " (raise --max_model_len or shorten the prompt)");
    for (size_t l = 0; l < keys_.size(); ++l) {
      keys_[l].resize((length_ + count) * kv_dim_);
      values_[l].resize((length_ + count) * kv_dim_);
    }
  }
  void commit(size_t count) { length_ += count; }
  void clear() {
    length_ = 0;
    for (auto& k : keys_) k.clear();
    for (auto& v : values_) v.clear();
  }

  float* key(size_t layer, size_t position) { return keys_[layer].data() + position * kv_dim_; }
  float* value(size_t layer, size_t position) { return values_[layer].data() + position * kv_dim_; }
  size_t bytes() const { return 2 * keys_.size() * length_ * kv_dim_ * sizeof(float); }

 private:
  size_t kv_dim_;
  size_t max_tokens_;
  size_t length_ = 0;
  std::vector<std::vector<float>> keys_;
  std::vector<std::vector<float>> values_;
};

}  // namespace vlmforge
