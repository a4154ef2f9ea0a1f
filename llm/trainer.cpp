#include "llm/trainer.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <random>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/files.h"
#include "base/progress.h"
#include "llm/checkpoint.h"
#include "llm/model.h"
#include "llm/profiler.h"
#include "llm/tokenizer.h"

namespace kvs::llm {

namespace fs = std::filesystem;

namespace {

struct Corpus {
  std::vector<std::string> texts;
  std::vector<double> cumulative;  // cumulative weights
};

Corpus load_corpus(const std::vector<TrainSource>& sources, int64_t window) {
  if (sources.empty()) throw Error("train: no training text given");
  Corpus c;
  double total = 0;
  for (const auto& s : sources) {
    if (s.weight <= 0) throw Error(fmt::format("{}: weight must be > 0", s.path));
    c.texts.push_back(read_file(s.path));
    if (int64_t(c.texts.back().size()) <= window)
      throw Error(fmt::format("{}: {} bytes, need more than one window of {}", s.path, c.texts.back().size(), window));
    total += s.weight;
    c.cumulative.push_back(total);
  }
  for (double& w : c.cumulative) w /= total;
  return c;
}

// Uniform double in [0, 1) from the top 53 bits (portable across libraries).
double unit(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }

// The batch of step `step`: [batch, seq + 1] int64 byte ids.
at::Tensor draw_batch(const Corpus& c, uint64_t seed, int64_t step, int64_t batch, int64_t seq) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + uint64_t(step));
  at::Tensor out = at::empty({batch, seq + 1}, at::kLong);
  auto acc = out.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const double u = unit(rng);
    size_t src = 0;
    while (src + 1 < c.cumulative.size() && u >= c.cumulative[src]) ++src;
    const std::string& t = c.texts[src];
    const uint64_t start = rng() % uint64_t(t.size() - size_t(seq) - 1);
    for (int64_t i = 0; i <= seq; ++i) acc[b][i] = int64_t(uint8_t(t[start + size_t(i)]));
  }
  return out;
}

double lr_at(const TrainOptions& o, int64_t step) {
  if (step < o.warmup_steps) return o.lr * double(step + 1) / double(o.warmup_steps);
  const double progress = double(step - o.warmup_steps) / double(std::max<int64_t>(1, o.steps - o.warmup_steps));
  const double cosine = 0.5 * (1 + std::cos(M_PI * std::min(1.0, progress)));
  return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * cosine);
}

// Mean next-byte loss of a batch drawn on the CPU (moved to the model's device).
at::Tensor batch_loss(const Model& model, const at::Tensor& cpu_batch) {
  const at::Tensor batch = cpu_batch.to(model.device());
  const int64_t seq = batch.size(1) - 1;
  const at::Tensor x = batch.narrow(1, 0, seq), y = batch.narrow(1, 1, seq);
  const at::Tensor logits = model.logits(x).to(at::kFloat);
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), y.reshape({-1}));
}

double heldout_bits_per_byte(const Model& model, const std::string& text, const TrainOptions& o) {
  at::NoGradGuard no_grad;
  std::mt19937_64 rng(o.seed ^ 0x5eedull);
  Corpus c{{text}, {1.0}};
  double nats = 0;
  for (int64_t i = 0; i < o.eval_windows; ++i)
    nats += batch_loss(model, draw_batch(c, o.seed ^ 0xe7a1ull, i, 1, o.seq_tokens)).item<double>();
  return nats / double(o.eval_windows) / std::log(2.0);
}

// Exact-match accuracy of greedy answers to the probe contexts' questions.
double probe_accuracy(const Model& model, const std::vector<ProfileContext>& probe) {
  at::NoGradGuard no_grad;
  const ByteTokenizer tokenizer;
  double correct = 0;
  for (const ProfileContext& c : probe)
    correct += prepare_context(model, tokenizer, c, 0, codec::DType::kF16, 0).base_task_accuracy;
  return correct / double(probe.size());
}

nlohmann::json options_json(const TrainOptions& o) {
  nlohmann::json sources = nlohmann::json::array();
  for (const auto& s : o.sources) sources.push_back({{"path", s.path}, {"weight", s.weight}});
  return {{"device", o.device},     {"steps", o.steps},       {"batch", o.batch},           {"seq_tokens", o.seq_tokens},
          {"lr", o.lr},             {"min_lr_ratio", o.min_lr_ratio}, {"warmup_steps", o.warmup_steps},
          {"weight_decay", o.weight_decay}, {"clip_norm", o.clip_norm}, {"seed", o.seed}, {"sources", sources},
          {"init_from", o.init_from}, {"probe", o.probe_path}, {"probe_contexts", o.probe_contexts}};
}

void save_checkpoint(const Model& model, torch::optim::AdamW& opt, const TrainOptions& o, int64_t step,
                     double heldout_bpb, double probe) {
  const fs::path dir(o.checkpoint_dir), tmp = dir.string() + ".tmp", old = dir.string() + ".old";
  fs::remove_all(tmp);
  save_model(model, tmp.string());
  torch::save(opt, (tmp / "optimizer.pt").string());
  nlohmann::json state = {{"step", step},
                          {"tokens_seen", step * o.batch * o.seq_tokens},
                          {"heldout_bits_per_byte", heldout_bpb},
                          {"probe_task_accuracy", probe},
                          {"options", options_json(o)}};
  write_file_atomic((tmp / "trainer.json").string(), state.dump(1) + "\n");
  fs::remove_all(old);
  if (fs::exists(dir)) fs::rename(dir, old);
  fs::rename(tmp, dir);
  fs::remove_all(old);
}

}  // namespace

TrainReport train(const TrainOptions& o, const std::atomic<bool>* stop) {
  if (o.steps <= 0 || o.batch <= 0 || o.seq_tokens <= 1) throw Error("train: steps, batch and seq_tokens must be > 0");
  if (o.checkpoint_dir.empty()) throw Error("train: a checkpoint folder is required");
  const Corpus corpus = load_corpus(o.sources, o.seq_tokens + 1);
  const std::string heldout = o.heldout_path.empty() ? std::string() : read_file(o.heldout_path);
  std::vector<ProfileContext> probe;
  if (!o.probe_path.empty()) {
    for (auto& c : load_contexts(o.probe_path))
      if (!c.question.empty() && int64_t(probe.size()) < o.probe_contexts) probe.push_back(std::move(c));
    if (probe.empty()) throw Error(fmt::format("{}: no contexts with a question to probe", o.probe_path));
  }

  TrainReport report;
  const fs::path state_path = fs::path(o.checkpoint_dir) / "trainer.json";
  const bool resume = fs::exists(state_path);
  const bool warm_start = !resume && !o.init_from.empty();
  const std::string weights_dir = resume ? o.checkpoint_dir : o.init_from;
  ModelConfig config = resume || warm_start ? load_config(weights_dir) : o.model;
  config.validate("train");
  if (config.vocab_size != 256) throw Error("train: only byte-level models (vocab_size 256) are trained here");
  const at::Device device = parse_device(o.device, "train --device");
  // Initialised on the CPU, so a seed gives the same weights on every device.
  Model model = Model::random(config, o.seed);
  model.to(at::kFloat, device);
  if (resume || warm_start) {
    // Copy the saved (memory-mapped, read-only) weights into the trainable model.
    const Model saved = load_model(weights_dir, {at::kFloat, at::kCPU});
    at::NoGradGuard no_grad;
    auto dst = model.named_parameters();
    auto src = saved.named_parameters();
    if (dst.size() != src.size()) throw Error(fmt::format("{}: checkpoint does not match the model", weights_dir));
    for (size_t i = 0; i < dst.size(); ++i) {
      if (dst[i].first != src[i].first || !dst[i].second.sizes().equals(src[i].second.sizes()))
        throw Error(fmt::format("{}: tensor {} does not match the model", weights_dir, src[i].first));
      dst[i].second.copy_(src[i].second);
    }
  }
  if (resume) {
    const auto state = nlohmann::json::parse(read_file(state_path.string()));
    report.start_step = state.at("step").get<int64_t>();
  }

  std::vector<at::Tensor> decay, no_decay;
  for (auto& [name, p] : model.named_parameters()) {
    p.requires_grad_(true);
    (p.dim() >= 2 ? decay : no_decay).push_back(p);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(o.lr).betas({0.9, 0.95}).weight_decay(o.weight_decay)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                    torch::optim::AdamWOptions(o.lr).betas({0.9, 0.95}).weight_decay(0.0)));
  torch::optim::AdamW opt(groups, torch::optim::AdamWOptions(o.lr));
  if (resume) torch::load(opt, (fs::path(o.checkpoint_dir) / "optimizer.pt").string(), device);

  std::unique_ptr<Progress> progress;
  if (o.show_progress) progress = std::make_unique<Progress>("train", uint64_t(o.steps), "steps", uint64_t(report.start_step));
  double bpb = -1, probe_acc = -1;
  int64_t step = report.start_step;
  for (; step < o.steps; ++step) {
    if ((stop && stop->load()) || (o.stop_after_steps > 0 && step - report.start_step >= o.stop_after_steps)) {
      report.interrupted = true;
      break;
    }
    const double lr = lr_at(o, step);
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    const at::Tensor loss = batch_loss(model, draw_batch(corpus, o.seed, step, o.batch, o.seq_tokens));
    opt.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model.parameters(), o.clip_norm);
    opt.step();
    report.last_loss_nats = loss.item<double>();
    const bool last = step + 1 == o.steps;
    if ((step + 1) % o.eval_every == 0 || last) {
      if (!heldout.empty()) bpb = heldout_bits_per_byte(model, heldout, o);
      if (!probe.empty()) probe_acc = probe_accuracy(model, probe);
    }
    if ((step + 1) % o.checkpoint_every == 0 || last) save_checkpoint(model, opt, o, step + 1, bpb, probe_acc);
    if (progress)
      progress->set(uint64_t(step + 1), fmt::format("loss {:.3f} bits/byte {:.3f} lr {:.2e} heldout {:.3f} probe {:.2f}",
                                                    report.last_loss_nats, report.last_loss_nats / std::log(2.0), lr,
                                                    bpb, probe_acc));
  }
  if (report.interrupted) save_checkpoint(model, opt, o, step, bpb, probe_acc);
  report.end_step = step;
  report.heldout_bits_per_byte = bpb;
  report.probe_accuracy = probe_acc;
  return report;
}

}  // namespace kvs::llm
