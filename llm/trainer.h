// Trains a byte-level Llama (the model of llm/model.h) from text files on the
// CPU or GPU: AdamW, cosine schedule with linear warmup, gradient clipping,
// periodic held-out evaluation, and checkpoints that resume exactly.
//
// Batches are windows of `seq_tokens + 1` bytes drawn from the training
// files; the draw for step s depends only on (seed, s), so a resumed run sees
// the same batches as an uninterrupted one. A checkpoint folder holds the
// model in HF format (config.json + model.safetensors, loadable by
// load_model), the optimizer state (optimizer.pt) and trainer.json (step,
// tokens seen, options); all written atomically, folder swapped by rename.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "llm/config.h"

namespace kvs::llm {

struct TrainSource {
  std::string path;     // text file (bytes = tokens)
  double weight = 1.0;  // share of windows drawn from it
};

struct TrainOptions {
  ModelConfig model;                  // used when starting fresh
  std::vector<TrainSource> sources;
  std::string heldout_path;           // scored every eval_every steps (bits per byte)
  std::string checkpoint_dir;         // resumes from here when it holds a checkpoint
  // Warm start: when checkpoint_dir holds no checkpoint yet, start from this
  // HF-format model's weights and config (fresh optimizer) instead of random ones.
  std::string init_from;
  // "cpu" or "cuda[:N]" (needs a libtorch built with CUDA). Batches are drawn on
  // the CPU and moved; checkpoints are written from the CPU and load on any device.
  std::string device = "cpu";
  int64_t steps = 1000;
  int64_t batch = 8;
  int64_t seq_tokens = 512;
  double lr = 3e-3;
  double min_lr_ratio = 0.1;          // cosine decays to lr * this
  int64_t warmup_steps = 100;
  double weight_decay = 0.1;          // on matrices only, not on norms
  double clip_norm = 1.0;
  uint64_t seed = 1;
  // Retrieval probe: contexts with a question (JSON lines as `kvstream profile`
  // reads them), the first `probe_contexts` answered greedily at every
  // evaluation; exact-match accuracy shows whether the model copies yet.
  std::string probe_path;
  int64_t probe_contexts = 8;
  int64_t eval_every = 200;
  int64_t eval_windows = 16;
  int64_t checkpoint_every = 200;
  int64_t stop_after_steps = 0;      // > 0: checkpoint and stop after this many steps in this run
  bool show_progress = true;
};

struct TrainReport {
  int64_t start_step = 0;   // > 0 when resumed
  int64_t end_step = 0;
  double last_loss_nats = 0;
  double heldout_bits_per_byte = -1;  // last evaluation (-1: none)
  double probe_accuracy = -1;         // last retrieval probe (-1: none)
  bool interrupted = false;
};

// Trains until options.steps or until `stop` becomes true (then checkpoints
// and returns with interrupted = true). Throws kvs::Error for bad inputs.
TrainReport train(const TrainOptions& options, const std::atomic<bool>* stop = nullptr);

}  // namespace kvs::llm
