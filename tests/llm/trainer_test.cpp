#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "llm/checkpoint.h"
#include "base/error.h"
#include "base/files.h"
#include "llm/trainer.h"
#include "tests/llm/test_util.h"

namespace kvs::llm {
namespace {

std::string write_text(const std::filesystem::path& dir, const std::string& name, size_t bytes) {
  std::string text;
  const char* words[] = {"the ", "cat ", "sat ", "on ", "a ", "mat. "};
  for (size_t i = 0; text.size() < bytes; ++i) text += words[(i * 7 + i / 3) % 6];
  const auto path = (dir / name).string();
  std::ofstream(path) << text;
  return path;
}

TrainOptions tiny_options(const testing::TempDir& dir, const std::string& ckpt, int64_t steps) {
  TrainOptions o;
  o.model = testing::tiny_config();
  o.sources = {{write_text(dir.path, "train.txt", 20000), 1.0}};
  o.heldout_path = write_text(dir.path, "held.txt", 4000);
  o.checkpoint_dir = (dir.path / ckpt).string();
  o.steps = steps;
  o.batch = 4;
  o.seq_tokens = 32;
  o.lr = 1e-2;
  o.warmup_steps = 2;
  o.eval_every = 10;
  o.eval_windows = 2;
  o.checkpoint_every = 5;
  o.show_progress = false;
  return o;
}

TEST(Trainer, LossDecreasesOnRepetitiveText) {
  testing::TempDir dir;
  TrainOptions o = tiny_options(dir, "ck", 30);
  const TrainReport r = train(o);
  EXPECT_EQ(r.end_step, 30);
  EXPECT_LT(r.last_loss_nats, std::log(256.0) * 0.6);  // well below uniform over bytes
  EXPECT_GT(r.heldout_bits_per_byte, 0);
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(o.checkpoint_dir) / "config.json"));
}

TEST(Trainer, InterruptedAndResumedRunEqualsUninterrupted) {
  testing::TempDir dir;
  TrainOptions full = tiny_options(dir, "full", 10);
  train(full);

  TrainOptions part = tiny_options(dir, "part", 10);
  part.stop_after_steps = 6;
  const TrainReport first = train(part);
  EXPECT_TRUE(first.interrupted);
  EXPECT_EQ(first.end_step, 6);
  part.stop_after_steps = 0;
  const TrainReport second = train(part);
  EXPECT_EQ(second.start_step, 6);
  EXPECT_EQ(second.end_step, 10);

  const Model a = load_model(full.checkpoint_dir), b = load_model(part.checkpoint_dir);
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i)
    EXPECT_TRUE(at::allclose(pa[i].second, pb[i].second, 1e-5, 1e-6)) << pa[i].first;
}

TEST(Trainer, WarmStartBeginsFromTheGivenWeights) {
  testing::TempDir dir;
  TrainOptions first = tiny_options(dir, "first", 10);
  const TrainReport trained = train(first);

  // A warm start with lr 0 must keep the weights exactly; a fresh start would not.
  TrainOptions warm = tiny_options(dir, "warm", 3);
  warm.init_from = first.checkpoint_dir;
  warm.lr = 0;
  warm.model.hidden_size *= 2;  // ignored: the config comes from init_from
  const TrainReport r = train(warm);
  EXPECT_EQ(r.start_step, 0);
  EXPECT_LT(r.last_loss_nats, std::log(256.0) * 0.6);
  const Model a = load_model(first.checkpoint_dir), b = load_model(warm.checkpoint_dir);
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(at::equal(pa[i].second, pb[i].second)) << pa[i].first;
  (void)trained;

  TrainOptions bad = tiny_options(dir, "bad", 3);
  bad.init_from = (dir.path / "no-such-model").string();
  EXPECT_THROW(train(bad), Error);
}

TEST(Trainer, RetrievalProbeIsMeasuredAndRecorded) {
  testing::TempDir dir;
  TrainOptions o = tiny_options(dir, "ck", 10);
  // One context whose answer the trained model cannot know, one without a question (skipped).
  const auto probe = (dir.path / "probe.jsonl").string();
  std::ofstream(probe) << R"({"id": "p0", "context": "the cat sat on a mat. The code of Kalo is 12345.", )"
                       << R"("continuation": " the cat", "question": " Q: code of Kalo? A:", "answer": " 12345"})" << "\n"
                       << R"({"id": "p1", "context": "the cat sat", "continuation": " on a mat"})" << "\n";
  o.probe_path = probe;
  const TrainReport r = train(o);
  EXPECT_GE(r.probe_accuracy, 0.0);
  EXPECT_LE(r.probe_accuracy, 1.0);
  const std::string state = read_file((std::filesystem::path(o.checkpoint_dir) / "trainer.json").string());
  EXPECT_NE(state.find("\"probe_task_accuracy\""), std::string::npos);

  TrainOptions none = tiny_options(dir, "none", 2);
  none.probe_path = (dir.path / "no-questions.jsonl").string();
  std::ofstream(none.probe_path) << R"({"id": "p1", "context": "the cat sat", "continuation": " on a mat"})" << "\n";
  EXPECT_THROW(train(none), Error);
}

TEST(Trainer, BadInputsAreErrors) {
  testing::TempDir dir;
  TrainOptions o = tiny_options(dir, "ck", 5);
  o.sources = {{(dir.path / "missing.txt").string(), 1.0}};
  EXPECT_THROW(train(o), Error);
  o = tiny_options(dir, "ck", 5);
  o.seq_tokens = 100000;  // longer than the text
  EXPECT_THROW(train(o), Error);
  o = tiny_options(dir, "ck", 5);
  o.device = "gpu0";
  EXPECT_THROW(train(o), Error);
  if (!at::hasCUDA()) {
    o.device = "cuda";
    EXPECT_THROW(train(o), Error);
  }
  EXPECT_FALSE(std::filesystem::exists(o.checkpoint_dir));  // nothing written
}

TEST(Trainer, DeviceIsParsedAndChecked) {
  EXPECT_TRUE(parse_device("cpu", "t").is_cpu());
  EXPECT_THROW(parse_device("tpu", "t"), Error);
  EXPECT_THROW(parse_device("", "t"), Error);
  if (!at::hasCUDA()) {
    try {
      parse_device("cuda:0", "--device");
      ADD_FAILURE() << "cuda accepted without CUDA";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("no CUDA"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace kvs::llm
