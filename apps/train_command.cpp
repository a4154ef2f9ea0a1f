// `kvstream train`: trains a byte-level Llama from text files (llm/trainer.h).
// SIGINT/SIGTERM checkpoint and stop; running the same command again resumes.
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/core.h>

#include "apps/commands.h"
#include "base/error.h"
#include "llm/model.h"
#include "llm/trainer.h"

namespace kvs::apps {
namespace {

// The one piece of process-wide state here: a signal can only reach a flag.
std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop.store(true); }

}  // namespace

void add_train_command(CLI::App& app) {
  struct Args {
    llm::TrainOptions o;
    std::vector<std::string> texts;
    int threads = 2;
  };
  auto a = std::make_shared<Args>();
  llm::TrainOptions& o = a->o;
  o.model.hidden_size = 256;
  o.model.intermediate_size = 704;
  o.model.num_hidden_layers = 4;
  o.model.num_attention_heads = 8;
  o.model.num_key_value_heads = 2;
  o.model.max_position_embeddings = 4096;
  o.model.tie_word_embeddings = true;
  auto* cmd = app.add_subcommand("train", "Train a byte-level Llama (GQA, RoPE) from text files; resumes from --out");
  cmd->add_option("--text", a->texts, "Training text file, optionally PATH:WEIGHT (repeatable)")->required();
  cmd->add_option("--init-from", o.init_from,
                  "Start from this HF-format model's weights (fresh optimizer) unless --out already holds a checkpoint");
  cmd->add_option("--heldout", o.heldout_path, "Held-out text scored every --eval-every steps (bits per byte)");
  cmd->add_option("-o,--out", o.checkpoint_dir, "Checkpoint folder (HF format + optimizer + trainer.json)")->required();
  cmd->add_option("--steps", o.steps, "Total optimizer steps")->capture_default_str();
  cmd->add_option("--batch", o.batch, "Sequences per step")->capture_default_str();
  cmd->add_option("--seq-tokens", o.seq_tokens, "Tokens (bytes) per sequence")->capture_default_str();
  cmd->add_option("--lr", o.lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--warmup-steps", o.warmup_steps, "Linear warmup steps")->capture_default_str();
  cmd->add_option("--min-lr-ratio", o.min_lr_ratio, "Cosine floor as a fraction of --lr")->capture_default_str();
  cmd->add_option("--weight-decay", o.weight_decay, "AdamW weight decay (matrices only)")->capture_default_str();
  cmd->add_option("--clip-norm", o.clip_norm, "Gradient norm clip")->capture_default_str();
  cmd->add_option("--seed", o.seed, "Seed of weights and batches")->capture_default_str();
  cmd->add_option("--probe", o.probe_path,
                  "Retrieval contexts (JSON lines with question/answer) answered at every evaluation (exact match)");
  cmd->add_option("--probe-contexts", o.probe_contexts, "How many of --probe's contexts to answer")->capture_default_str();
  cmd->add_option("--eval-every", o.eval_every, "Steps between held-out evaluations")->capture_default_str();
  cmd->add_option("--checkpoint-every", o.checkpoint_every, "Steps between checkpoints")->capture_default_str();
  cmd->add_option("--layers", o.model.num_hidden_layers, "Decoder layers")->capture_default_str();
  cmd->add_option("--hidden", o.model.hidden_size, "Hidden size")->capture_default_str();
  cmd->add_option("--intermediate", o.model.intermediate_size, "MLP intermediate size")->capture_default_str();
  cmd->add_option("--heads", o.model.num_attention_heads, "Attention heads")->capture_default_str();
  cmd->add_option("--kv-heads", o.model.num_key_value_heads, "Key/value heads (GQA)")->capture_default_str();
  cmd->add_option("--max-positions", o.model.max_position_embeddings, "max_position_embeddings")->capture_default_str();
  cmd->add_option("--rope-theta", o.model.rope_theta, "RoPE base")->capture_default_str();
  cmd->add_option("--stop-after", o.stop_after_steps, "Checkpoint and stop after this many steps in this run (0: run to --steps)")
      ->capture_default_str();
  cmd->add_option("--device", o.device, "Device: cpu, or cuda[:N] when libtorch was built with CUDA")->capture_default_str();
  cmd->add_option("--threads", a->threads, "CPU threads")->capture_default_str();
  cmd->add_flag("--no-progress", [&o](int64_t) { o.show_progress = false; }, "Plain summary only");

  cmd->callback([a] {
    a->o.sources.clear();
    for (const auto& t : a->texts) {
      const auto colon = t.rfind(':');
      llm::TrainSource s{t, 1.0};
      if (colon != std::string::npos && colon + 1 < t.size() &&
          t.find_first_not_of("0123456789.", colon + 1) == std::string::npos) {
        s.path = t.substr(0, colon);
        s.weight = std::stod(t.substr(colon + 1));
      }
      a->o.sources.push_back(s);
    }
    const std::string blas = llm::set_cpu_threads(a->threads);
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    const llm::TrainReport r = llm::train(a->o, &g_stop);
    std::printf("train: steps %lld -> %lld%s, last loss %.4f nats (%.3f bits/byte), held-out %.3f bits/byte, "
                "probe exact match %.2f, checkpoint %s (BLAS: %s)\n",
                (long long)r.start_step, (long long)r.end_step, r.interrupted ? " (interrupted)" : "",
                r.last_loss_nats, r.last_loss_nats / std::log(2.0), r.heldout_bits_per_byte, r.probe_accuracy,
                a->o.checkpoint_dir.c_str(), blas.c_str());
  });
}

}  // namespace kvs::apps
