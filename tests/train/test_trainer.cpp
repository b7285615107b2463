// The training loop end to end on the bundled model: resume is exact (bitwise on the CPU), a torn checkpoint is
// skipped by --resume auto, settings that changed are refused, and every config in configs/ parses and validates.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "model/convert.h"
#include "tests/common/checkpoint_compare.h"
#include "tests/common/test_util.h"
#include "train/checkpoint.h"
#include "train/train_options.h"
#include "train/trainer.h"

namespace liger {
namespace {

namespace fs = std::filesystem;
using test::source_path;
using test::TempDir;
using test::throws_error;

// A small Liger-GLA run: window 16 and chunk length 64, so a step takes milliseconds.
TrainConfig small_run(const TempDir& tmp, const std::string& out) {
  const std::string model = tmp.file("model");
  if (!fs::exists(model)) {
    ModelConfig base = load_model_config(source_path("assets/stories260K/hf/config.json"));
    convert_to_liger(source_path("assets/stories260K/hf"), model,
                     parse_liger_config({{"variant", "gla"}, {"window", 16}}, "test", base), ConvertOptions{});
  }
  TrainConfig c;
  c.model = model;
  c.out = tmp.file(out);
  c.data.path = source_path("assets/text/tinystories_valid_head.txt");
  c.data.format = "text";
  c.data.chunk_length = 64;
  c.data.validation_count = 20;
  c.data.validation_fraction = 0.0;
  c.grad_accum = 2;
  c.epochs = 1;
  c.max_steps = 20;
  c.eval_chunks = 4;
  c.log_every = 100;
  return c;
}

// --recompute changes memory, not a bit of the training.
TEST(Trainer, RecomputeTrainsTheSameBits) {
  TempDir tmp("trainer_rc");
  TrainConfig a = small_run(tmp, "plain"), b = small_run(tmp, "recompute");
  a.max_steps = b.max_steps = 5;
  b.recompute = true;
  EXPECT_EQ(train(b).losses, train(a).losses);
  EXPECT_EQ(sha256_file(checkpoint_dir(b.out, 5) + "/adapter_model.safetensors"),
            sha256_file(checkpoint_dir(a.out, 5) + "/adapter_model.safetensors"));
}

TEST(Trainer, ResumeIsBitwiseExact) {
  TempDir tmp("trainer");
  TrainConfig straight = small_run(tmp, "straight");
  TrainResult a = train(straight);
  ASSERT_EQ(a.losses.size(), 20u);
  EXPECT_LT(a.losses.back(), a.losses.front());  // it learns

  TrainConfig interrupted = small_run(tmp, "interrupted");
  TrainResult b1 = train(interrupted, /*stop_after=*/10);
  ASSERT_EQ(b1.steps, 10);
  interrupted.resume = "auto";
  TrainResult b2 = train(interrupted);
  ASSERT_EQ(b2.steps, 20);
  std::vector<double> b = b1.losses;
  b.insert(b.end(), b2.losses.begin(), b2.losses.end());
  ASSERT_EQ(b.size(), a.losses.size());
  for (size_t i = 0; i < b.size(); i++) EXPECT_EQ(b[i], a.losses[i]) << "step " << i + 1;  // bitwise
  EXPECT_EQ(b2.final_val_loss, a.final_val_loss);
  // The adapters and optimizer state of the two runs' last checkpoints are byte-identical.
  test::expect_same_checkpoint(a.last_checkpoint, b2.last_checkpoint, 20);
}

TEST(Trainer, TornCheckpointIsSkippedByResumeAuto) {
  TempDir tmp("trainer");
  TrainConfig straight = small_run(tmp, "straight");
  straight.max_steps = 12;
  TrainResult a = train(straight);

  TrainConfig c = small_run(tmp, "torn");
  c.max_steps = 12;
  c.save_every = 4;
  train(c, /*stop_after=*/8);  // checkpoints at 4 and 8
  // Tear the newest: truncate its adapter tensors.
  const std::string st8 = checkpoint_dir(c.out, 8) + "/adapter_model.safetensors";
  ASSERT_TRUE(fs::exists(st8));
  fs::resize_file(st8, fs::file_size(st8) / 2);
  c.resume = "auto";
  TrainResult r = train(c);
  ASSERT_EQ(r.steps, 12);
  ASSERT_EQ(r.losses.size(), 8u);  // steps 5..12, from the complete checkpoint of step 4
  for (size_t i = 0; i < r.losses.size(); i++) EXPECT_EQ(r.losses[i], a.losses[i + 4]) << "step " << i + 5;
}

TEST(Trainer, RefusesToMixRuns) {
  TempDir tmp("trainer");
  TrainConfig c = small_run(tmp, "run");
  c.max_steps = 2;
  train(c);
  // Starting fresh over existing checkpoints, or resuming with other settings, are errors naming the run.
  EXPECT_TRUE(throws_error([&] { train(c); }, {c.out, "--resume auto"}));
  c.resume = "auto";
  c.optim.lr = 5e-4;
  EXPECT_TRUE(throws_error([&] { train(c); }, {"other settings"}));
}

TEST(Trainer, BadSettingsAreClearErrors) {
  TempDir tmp("trainer");
  TrainConfig c = small_run(tmp, "bad");
  c.data.chunk_length = 1;
  EXPECT_TRUE(throws_error([&] { train(c); }, {"chunk"}));
  c = small_run(tmp, "bad2");
  const std::string empty = tmp.file("empty.json");
  std::ofstream(empty) << "[]";
  c.data.path = empty;
  c.data.format = "alpaca";
  EXPECT_TRUE(throws_error([&] { train(c); }, {empty}));
  c = small_run(tmp, "bad3");
  c.device = "cuda";
  EXPECT_TRUE(throws_error([&] { train(c); }, {"--device"}));
}

TEST(Configs, EveryShippedConfigParsesAndValidates) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(source_path("configs"))) {
    if (e.path().extension() != ".cfg") continue;
    SCOPED_TRACE(e.path().string());
    TrainConfig c = load_train_config_file(e.path().string());
    EXPECT_FALSE(c.model.empty());
    EXPECT_FALSE(c.data.path.empty());
    n++;
  }
  EXPECT_GE(n, 5);  // the bundled demo and the paper's recipes for Llama-3-8B, Llama-3.2-1B, Mistral-7B, Qwen2.5-7B
  // The recipe files carry the paper's settings.
  TrainConfig r = load_train_config_file(source_path("configs/llama3-8b-liger-gla.cfg"));
  EXPECT_EQ(r.lora.rank, 8);
  EXPECT_EQ(r.lora.alpha, 8.0);
  EXPECT_EQ(r.lora.targets.size(), 3u);
  EXPECT_EQ(r.optim.lr, 1e-3);
  EXPECT_EQ(r.optim.weight_decay, 0.01);
  EXPECT_EQ(r.data.chunk_length, 1024);
  EXPECT_EQ(r.grad_accum, 8);
  EXPECT_EQ(r.epochs, 2);
}

TEST(Configs, UnknownKeysAndOutOfRangeValuesAreErrors) {
  TempDir tmp("cfg");
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(tmp.file(name)) << "model = m\nout = o\ndata = d.json\n" << text;
    return tmp.file(name);
  };
  const std::string unknown = write("unknown.cfg", "lora-rnak = 8\n");
  EXPECT_TRUE(throws_error([&] { load_train_config_file(unknown); }, {unknown, "lora-rnak"}));
  const std::string range = write("range.cfg", "lr = -1\n");
  EXPECT_TRUE(throws_error([&] { load_train_config_file(range); }, {range, "--lr"}));
  const std::string type = write("type.cfg", "lora-rank = eight\n");
  EXPECT_TRUE(throws_error([&] { load_train_config_file(type); }, {type, "lora-rank"}));
  const std::string target = write("target.cfg", "lora-targets = q,x\n");
  EXPECT_TRUE(throws_error([&] { load_train_config_file(target); }, {"'x'"}));
}

}  // namespace
}  // namespace liger
