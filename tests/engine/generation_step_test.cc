// The one generation step that infer's Generator and deploy's Scheduler share, on the shared tiny
// Qwen2 checkpoint: a batch whose prompts prefill over several steps while others already decode
// gets exactly what each prompt gets alone, and a failing member ends alone under kFailMember but
// ends the step under kThrow.
#include <gtest/gtest.h>

#include <memory>

#include "engine/generation_step.h"
#include "engine/generator.h"
#include "support/test_support.h"
#include "support/tiny_model_fixture.h"
#include "util/error.h"

namespace vlmforge::test {
namespace {

class GenerationStepTest : public TinyModelFixture {
 protected:
  static GenerationParams params(size_t max_new_tokens) {
    GenerationParams p;
    p.max_new_tokens = max_new_tokens;
    p.prefill_chunk = 2;  // prompts of 3+ tokens take several steps
    p.logprobs = true;
    return p;
  }
};

TEST_F(GenerationStepTest, ABatchWithPromptsStillInPrefillGetsWhatEachPromptGetsAlone) {
  const std::vector<std::vector<int32_t>> prompts = {{16}, {40, 1079, 264, 1273, 11, 1221, 374}, {9707, 11, 1879}};
  Generator generator(*model_, *tokenizer_, 64);
  const std::vector<GenerationResult> together = generator.generate(prompts, params(6));
  EXPECT_EQ(generator.timings().prefill_tokens, 11u);
  ASSERT_EQ(together.size(), prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    const GenerationResult alone = generator.generate({prompts[i]}, params(6))[0];
    EXPECT_EQ(together[i].tokens, alone.tokens) << i;
    EXPECT_EQ(together[i].text, alone.text) << i;
    ASSERT_EQ(together[i].logprobs.size(), alone.logprobs.size()) << i;
    for (size_t t = 0; t < alone.logprobs.size(); ++t) EXPECT_EQ(together[i].logprobs[t].logprob, alone.logprobs[t].logprob);
  }
}

TEST_F(GenerationStepTest, AFailingMemberEndsAloneOrEndsTheStep) {
  const GenerationParams p = params(4);
  const std::vector<int32_t> good = {9707, 11, 1879}, bad = {9707, 1 << 30};  // an id past the vocabulary
  const GenerationResult want = Generator(*model_, *tokenizer_, 64).generate({good}, p)[0];

  SequenceState ok(*model_, *tokenizer_, text_prompt(good), 64, p), broken(*model_, *tokenizer_, text_prompt(bad), 64, p);
  std::vector<BatchMember> members(2);
  members[0].sequence = &broken;
  members[1].sequence = &ok;
  while (!ok.done()) generation_step(*model_, members, FailurePolicy::kFailMember);
  EXPECT_NE(members[0].error.find("outside the vocabulary"), std::string::npos) << members[0].error;
  EXPECT_TRUE(members[1].error.empty()) << members[1].error;
  EXPECT_EQ(ok.result().tokens, want.tokens);

  SequenceState again(*model_, *tokenizer_, text_prompt(bad), 64, p);
  std::vector<BatchMember> alone(1);
  alone[0].sequence = &again;
  EXPECT_THROW(generation_step(*model_, alone, FailurePolicy::kThrow), Error);
}

}  // namespace
}  // namespace vlmforge::test
