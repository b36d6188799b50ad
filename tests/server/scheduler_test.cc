// Continuous batching on the shared tiny Qwen2 checkpoint: sequences that join and leave the
// running batch get exactly what Generator (checked against the float64 golden data in
// tests/model) gives each prompt alone; the batch and queue limits hold; cancellation frees the
// KV cache; draining finishes everything and then refuses new work.
#include <gtest/gtest.h>

#include <thread>

#include "engine/generator.h"
#include "engine/token_text.h"
#include "server/scheduler.h"
#include "support/test_support.h"
#include "support/tiny_model_fixture.h"

namespace vlmforge::test {
namespace {
using server::Job;
using server::Scheduler;

class DeployScheduler : public TinyModelFixture {
 protected:
  static GenerationParams params(size_t max_new_tokens, float temperature, uint64_t seed) {
    GenerationParams p;
    p.max_new_tokens = max_new_tokens;
    p.sampling.temperature = temperature;
    p.sampling.top_k = 40;
    p.sampling.seed = seed;
    p.stop_ids = {151645};
    p.logprobs = true;
    p.top_logprobs = 2;
    return p;
  }
  static GenerationResult finish(Job& job) {
    while (!job.wait(SIZE_MAX, SIZE_MAX, std::chrono::milliseconds(100)).finished) {
    }
    return job.result();
  }
  static void wait_until(const std::function<bool()>& condition) {
    for (int i = 0; i < 2000 && !condition(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_TRUE(condition());
  }
};

TEST_F(DeployScheduler, JoiningSequencesGetWhatEachPromptGetsAlone) {
  const std::vector<std::vector<int32_t>> prompts = {
      {9707, 11, 1879}, {785, 6722, 315, 9625, 374}, {16}, {40, 1079, 264, 1273, 11, 1221, 374, 264, 1273, 13}, {3838, 374}, {1, 2, 3, 4}};
  const std::vector<size_t> lengths = {20, 7, 13, 3, 17, 11};
  Scheduler scheduler(*model_, *tokenizer_, {3, 16, 128});
  std::vector<std::shared_ptr<Job>> jobs;
  // Staggered submissions: later ones join a batch that is already decoding.
  for (size_t i = 0; i < prompts.size(); ++i) {
    jobs.push_back(scheduler.submit(text_prompt(prompts[i]), params(lengths[i], i % 2 ? 0.8f : 0.0f, 100 + i)));
    if (i == 1) wait_until([&] { return jobs[0]->result().tokens.size() >= 2; });
  }
  std::vector<GenerationResult> results;
  for (auto& job : jobs) results.push_back(finish(*job));
  scheduler.drain();  // the model is the scheduler thread's until then
  Generator generator(*model_, *tokenizer_, 128);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const GenerationResult& got = results[i];
    const GenerationResult want = generator.generate({prompts[i]}, params(lengths[i], i % 2 ? 0.8f : 0.0f, 100 + i))[0];
    EXPECT_EQ(got.tokens, want.tokens) << i;
    EXPECT_EQ(got.text, want.text) << i;
    EXPECT_EQ(got.finish_reason, want.finish_reason) << i;
    EXPECT_EQ(got.prompt_tokens, prompts[i].size());
    ASSERT_EQ(got.logprobs.size(), want.logprobs.size());
    for (size_t t = 0; t < got.logprobs.size(); ++t) EXPECT_DOUBLE_EQ(got.logprobs[t].logprob, want.logprobs[t].logprob);
  }
  const auto stats = scheduler.stats();
  EXPECT_EQ(stats.peak_running, 3u);  // the batch filled up and never went past --max_batch_size
  EXPECT_EQ(stats.finished, prompts.size());
  size_t generated = 0, prompt_tokens = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    generated += jobs[i]->result().tokens.size();
    prompt_tokens += prompts[i].size();
  }
  EXPECT_EQ(stats.generated_tokens, generated);
  EXPECT_EQ(stats.prompt_tokens, prompt_tokens);
  EXPECT_EQ(stats.kv_cache_bytes, 0u);
}

TEST_F(DeployScheduler, ALongPromptIsPrefilledAChunkPerStepWhileOthersDecode) {
  Scheduler scheduler(*model_, *tokenizer_, {2, 4, 256});
  auto decoding = scheduler.submit(text_prompt({9707, 11}), params(200, 0, 0));
  wait_until([&] { return !decoding->result().tokens.empty(); });
  std::vector<int32_t> long_prompt;
  for (int i = 0; i < 40; ++i) long_prompt.push_back(100 + 37 * i);
  GenerationParams chunked = params(5, 0.7f, 11);
  chunked.prefill_chunk = 4;  // 10 chunks
  const size_t before = decoding->result().tokens.size();
  auto joiner = scheduler.submit(text_prompt(long_prompt), chunked);
  wait_until([&] { return !joiner->result().tokens.empty(); });
  // One decode step of the other sequence per prefill chunk (the last one's step included).
  EXPECT_GE(decoding->result().tokens.size(), before + 9);
  const GenerationResult got = finish(*joiner);
  scheduler.cancel(decoding);
  scheduler.drain();
  const GenerationResult want = Generator(*model_, *tokenizer_, 256).generate({long_prompt}, chunked)[0];
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.text, want.text);
}

TEST_F(DeployScheduler, StreamedUpdatesConcatenateToTheResult) {
  Scheduler scheduler(*model_, *tokenizer_, {2, 4, 128});
  auto job = scheduler.submit(text_prompt({9707, 11, 1879}), params(30, 0.9f, 5));
  std::string text;
  size_t logprobs = 0;
  for (;;) {
    const Job::Update u = job->wait(text.size(), logprobs, std::chrono::milliseconds(100));
    text += u.text;
    logprobs += u.logprobs.size();
    if (u.finished) break;
  }
  EXPECT_EQ(text, job->result().text);
  EXPECT_EQ(logprobs, job->result().tokens.size());
}

TEST_F(DeployScheduler, FullQueueRefusesAndCancelFreesTheSequence) {
  Scheduler scheduler(*model_, *tokenizer_, {1, 1, 120});
  auto running = scheduler.submit(text_prompt({9707, 11}), params(100, 0, 0));
  wait_until([&] { return scheduler.stats().running == 1 && scheduler.stats().kv_cache_bytes > 0; });
  auto queued = scheduler.submit(text_prompt({9707, 12}), params(100, 0, 0));
  EXPECT_EQ(scheduler.stats().queued, 1u);
  EXPECT_THROW(scheduler.submit(text_prompt({9707, 13}), params(5, 0, 0)), server::QueueFull);

  scheduler.cancel(queued);  // leaves the queue at once
  EXPECT_EQ(finish(*queued).finish_reason, "abort");
  EXPECT_EQ(scheduler.stats().queued, 0u);
  EXPECT_GT(scheduler.stats().kv_cache_bytes, 0u);
  scheduler.cancel(running);  // leaves the batch at the next step
  EXPECT_EQ(finish(*running).finish_reason, "abort");
  EXPECT_LT(running->result().tokens.size(), 100u);
  wait_until([&] { return scheduler.stats().running == 0; });
  EXPECT_EQ(scheduler.stats().kv_cache_bytes, 0u);
  EXPECT_EQ(scheduler.stats().cancelled, 2u);
  // The freed slot serves the next request.
  EXPECT_EQ(finish(*scheduler.submit(text_prompt({9707, 13}), params(5, 0, 0))).tokens.size(), 5u);
}

TEST_F(DeployScheduler, DrainFinishesQueuedAndRunningWorkThenRefuses) {
  Scheduler scheduler(*model_, *tokenizer_, {2, 8, 128});
  std::vector<std::shared_ptr<Job>> jobs;
  for (int i = 0; i < 5; ++i) jobs.push_back(scheduler.submit(text_prompt({9707, 11 + i}), params(10, 0, 0)));
  scheduler.drain();
  for (auto& job : jobs) {
    EXPECT_TRUE(job->wait(0, 0, std::chrono::milliseconds(0)).finished);
    EXPECT_EQ(job->result().tokens.size(), 10u);
  }
  EXPECT_THROW(scheduler.submit(text_prompt({9707}), params(1, 0, 0)), server::ShuttingDown);
}

TEST_F(DeployScheduler, AFailingSequenceIsReportedAndTheOthersContinue) {
  Scheduler scheduler(*model_, *tokenizer_, {2, 8, 16});
  auto too_long = scheduler.submit(text_prompt(std::vector<int32_t>(16, 9707)), params(4, 0, 0));  // no room to generate
  auto fine = scheduler.submit(text_prompt({9707, 11}), params(4, 0, 0));
  finish(*too_long);
  EXPECT_NE(too_long->error().find("does not fit max_model_len 16"), std::string::npos) << too_long->error();
  EXPECT_EQ(finish(*fine).tokens.size(), 4u);
  EXPECT_TRUE(fine->error().empty());
  EXPECT_EQ(scheduler.stats().failed, 1u);
}

TEST_F(DeployScheduler, PaddingIdsBeyondTheTokenizerDecodeToNothing) {
  // Qwen's embedding has 151,936 rows for 151,669 tokenizer ids; a sampled padding id must not
  // end the request with an error (Hugging Face tokenizers skip unknown ids when decoding).
  const GenerationParams p = params(3, 0, 0);
  SequenceState seq(*model_, *tokenizer_, text_prompt({9707, 11}), 64, p);
  ASSERT_GT(model_->vocab_size(), tokenizer_->vocab_size());
  std::vector<float> logits(model_->vocab_size(), 0.0f);
  const int32_t padding = static_cast<int32_t>(tokenizer_->vocab_size()) + 5;
  logits[static_cast<size_t>(padding)] = 10;
  EXPECT_FALSE(seq.accept(logits));
  std::fill(logits.begin(), logits.end(), 0.0f);
  logits[1879] = 10;  // " world"
  EXPECT_FALSE(seq.accept(logits));
  EXPECT_EQ(seq.result().tokens, (std::vector<int32_t>{padding, 1879}));
  EXPECT_EQ(seq.result().text, " world");
  EXPECT_EQ(generated_token_bytes(*tokenizer_, padding), "");
}

}  // namespace
}  // namespace vlmforge::test
