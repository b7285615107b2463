// LoRA gradients of the bundled stories260K model (softmax attention kept) against transformers + PEFT
// (tools/golden/make_peft_golden.py, float64): the adapters load from PEFT's own files, the loss is HF's mean over
// supervised tokens, and every dA, dB must match (relative error <= 1e-4, the bound; our fp32 CPU forward and
// backward land near 1e-6 against the fp64 reference).
#include "model/train_step.h"
#include "tests/model/golden_cases.h"

namespace liger::test {
namespace {

void check_case(const std::string& name) {
  SCOPED_TRACE(name);
  const std::string dir = source_path("tests/golden/peft_stories260k/" + name);
  Context ctx = Context::cpu();
  auto model = LlamaModel::load(stories_dir(), ctx, DType::F32);
  LoraAdapters lora = LoraAdapters::load(dir, model->config(), Device::CPU);
  EXPECT_EQ(lora.config().rank, 8);
  EXPECT_EQ(lora.config().targets.size(), 3u);
  auto batch = SafetensorsFile::open(dir + "/batch.safetensors");
  const std::vector<int64_t> ids64 = batch->tensor("input_ids").to_i64_vector();
  const std::vector<int64_t> labels = batch->tensor("labels").to_i64_vector();
  const int64_t T = static_cast<int64_t>(ids64.size());
  // HF shifts inside the model: position t predicts labels[t + 1]; the last position predicts nothing.
  std::vector<int32_t> ids, targets;
  int64_t supervised = 0;
  for (int64_t t = 0; t < T; t++) {
    ids.push_back(static_cast<int32_t>(ids64[static_cast<size_t>(t)]));
    const int64_t next = t + 1 < T ? labels[static_cast<size_t>(t + 1)] : -100;
    targets.push_back(static_cast<int32_t>(next));
    supervised += next != -100;
  }
  lora.zero_grad();
  StepStats st = train_step(*model, lora, Tensor::from_i32({1, T}, ids), Tensor::from_i32({1, T}, targets),
                            1.0f / static_cast<float>(supervised));
  EXPECT_EQ(st.tokens, supervised);
  const double ref_loss = batch->tensor("loss").to_f32_vector()[0];
  EXPECT_NEAR(st.loss_sum / static_cast<double>(st.tokens), ref_loss, 1e-5 * ref_loss);
  std::vector<float> got, want;
  for (auto& [pname, g] : lora.gradients()) {
    const std::vector<float> a = g.to_f32_vector(), b = batch->tensor(pname + ".grad").to_f32_vector();
    got.insert(got.end(), a.begin(), a.end());
    want.insert(want.end(), b.begin(), b.end());
  }
  const double e = rel_error(got, want);
  std::printf("  %s: loss %.6f (PEFT %.6f), LoRA gradient rel error %.3g over %zu values\n", name.c_str(),
              st.loss_sum / static_cast<double>(st.tokens), ref_loss, e, got.size());
  EXPECT_LE(e, 1e-4);
}

TEST(PeftGolden, GradientsAtInitialization) {
  check_case("init");
}
TEST(PeftGolden, GradientsAfterOneAdamWStep) {
  check_case("step1");
}

}  // namespace
}  // namespace liger::test
