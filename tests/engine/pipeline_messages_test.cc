// The pipeline's messages (engine/pipeline.h) without MPI: what a stage decodes is what rank 0
// encoded, and a message cut short or of the wrong kind is an error, not a misread step.
#include <gtest/gtest.h>

#include "engine/pipeline.h"

namespace vlmforge {
namespace {

StageBatch sample_batch() {
  StageBatch b;
  b.released_caches = {7, 9};
  b.chunks = {{3, 4096, 0, 5, true}, {11, 2048, 17, 1, false}};
  for (int64_t i = 0; i < 6; ++i) b.rope.push_back({i, i + 100, -i});
  for (int i = 0; i < 6 * 4; ++i) b.hidden.push_back(0.25f * static_cast<float>(i) - 3.0f);
  return b;
}

TEST(PipelineMessages, BatchRoundTripsExactly) {
  const StageBatch in = sample_batch();
  const std::vector<uint8_t> message = encode_batch(in);
  EXPECT_EQ(message_kind(message), StageMessage::kBatch);
  const StageBatch out = decode_batch(message);
  EXPECT_EQ(out.released_caches, in.released_caches);
  ASSERT_EQ(out.chunks.size(), in.chunks.size());
  for (size_t i = 0; i < in.chunks.size(); ++i) {
    EXPECT_EQ(out.chunks[i].cache_id, in.chunks[i].cache_id);
    EXPECT_EQ(out.chunks[i].max_tokens, in.chunks[i].max_tokens);
    EXPECT_EQ(out.chunks[i].start, in.chunks[i].start);
    EXPECT_EQ(out.chunks[i].tokens, in.chunks[i].tokens);
    EXPECT_EQ(out.chunks[i].all_logits, in.chunks[i].all_logits);
  }
  EXPECT_EQ(out.rope, in.rope);
  EXPECT_EQ(out.hidden, in.hidden);
}

TEST(PipelineMessages, FloatsAndTextRoundTrip) {
  const std::vector<float> logits = {1.5f, -2.0f, 1e-30f, 3.4e38f};
  const auto floats = encode_floats(StageMessage::kLogits, logits);
  EXPECT_EQ(message_kind(floats), StageMessage::kLogits);
  EXPECT_EQ(decode_floats(floats), logits);
  const auto text = encode_text(StageMessage::kError, "rank 2 (host b): out of memory");
  EXPECT_EQ(message_kind(text), StageMessage::kError);
  EXPECT_EQ(decode_text(text), "rank 2 (host b): out of memory");
}

TEST(PipelineMessages, TruncatedOrMislabelledMessagesThrow) {
  const std::vector<uint8_t> message = encode_batch(sample_batch());
  for (size_t keep : {size_t{1}, size_t{9}, message.size() / 2, message.size() - 1}) {
    const std::vector<uint8_t> cut(message.begin(), message.begin() + static_cast<std::ptrdiff_t>(keep));
    EXPECT_THROW(decode_batch(cut), Error) << "kept " << keep << " of " << message.size() << " bytes";
  }
  std::vector<uint8_t> longer = message;
  longer.push_back(0);
  EXPECT_THROW(decode_batch(longer), Error);
  EXPECT_THROW(decode_batch(encode_floats(StageMessage::kLogits, {1.0f})), Error);
}

}  // namespace
}  // namespace vlmforge
