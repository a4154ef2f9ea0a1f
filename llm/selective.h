// Selective KV loading in decoding: each step, each layer's attention sees
// only some past tokens' K/V (the others masked), chosen by InfiniGen's
// speculation (OSDI'24) or a baseline (oracle top-k, StreamingLLM's sink +
// recent window, H2O's heavy hitters); and the measurement of what that costs
// against the full cache (fetched fraction, recall of the true top-k, KL
// divergence, loss, greedy agreement, task accuracy). docs/selective-format.md
// describes the methods and the measures.
//
// Sliding-window layers (ModelConfig::layer_window W > 0): the query at
// position q sees only keys q - W < k <= q, so "past tokens" of a layer
// below means the past keys its full attention reads: all of them, or the
// window's min(past, W - 1). Every method chooses among those (StreamingLLM's
// sinks that left the window are not fetched; H2O evicts tokens that left
// it; InfiniGen scores only the window's partial keys), the budget and the
// fetched fraction are relative to them (so 1 = what full attention on that
// layer reads), and recall and mass are measured against the windowed
// attention the model computes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "llm/kv_cache.h"
#include "llm/model.h"

namespace kvs::llm {

// InfiniGen's offline part for one model: per layer and KV head, the skewing
// matrix and the partial channels.
struct SkewCalibration {
  // Per layer [kv_heads, head_dim, head_dim], orthogonal: A's columns are the
  // right singular vectors of the warm-up queries (after RoPE; the query heads
  // of a KV head stacked), placed as InfiniGen's gen_llama_skewing_matrix.py
  // does (torch scatter): vector c (c-th largest σ_q) at column ind[c], where
  // ind = argsort(σ_q·σ_k) ascending. (q A)·(k A) = q·k, but the mass of q·k
  // sits in few columns.
  std::vector<at::Tensor> skew;
  // Per layer [kv_heads, channels] int64: the columns of q A with the largest
  // summed |q A| over the warm-up tokens (and the KV head's query heads);
  // channels = int(ratio × head_dim). The decoder picks its own at each
  // prefill (InfiniGen's partial_weight_index_generation runs on the prompt);
  // these are used only with SelectionConfig::warmup_channels (an ablation).
  std::vector<at::Tensor> channels;
  double ratio = 0.2;
};

// Runs a warm-up prefill of `warmup_tokens` (at least head_dim tokens) and
// builds the calibration; `ratio` in (0, 1] with at least one channel.
// skew = false: identity matrices (partial channels of the raw q and k), an
// ablation measuring what skewing adds.
SkewCalibration calibrate_skewing(const Model& model, const std::vector<int64_t>& warmup_tokens, double ratio = 0.2,
                                  bool skew = true);

// Queries [heads, n, hd] and keys [kv_heads, keys, hd] of one layer, each
// multiplied by its KV head's skewing matrix [kv_heads, hd, hd].
at::Tensor skew_queries(const at::Tensor& queries, const at::Tensor& skew);
at::Tensor skew_keys(const at::Tensor& keys, const at::Tensor& skew);

enum class SelectMethod { kFull, kInfiniGen, kOracle, kStreaming, kH2O };
std::string method_name(SelectMethod m);
SelectMethod method_from_name(const std::string& name);  // throws kvs::Error naming the choices

struct SelectionConfig {
  SelectMethod method = SelectMethod::kFull;
  // At most this fraction of the past tokens per step, layer and KV head
  // (of the window's on a windowed layer; floor, at least 1); budget_tokens > 0 caps by a count instead
  // (InfiniGen's max_num_kv). Baselines fetch exactly the budget.
  double budget = 0.2;
  int64_t budget_tokens = 0;
  // InfiniGen: tokens whose approximate score (q·k/√d) is within alpha of the
  // maximum are counted. Infinity: no threshold (the budget alone).
  double alpha = 4.0;
  // InfiniGen: layers [0, full_front_layers) are loaded in full (the code's
  // `layer_id > 1`); the last layer too when full_last_layer.
  int64_t full_front_layers = 2;
  bool full_last_layer = false;
  // InfiniGen: layer l - lookahead's input speculates layer l (1 as the
  // paper; 0, an ablation: the layer's own input, so only the partial
  // channels approximate).
  int64_t lookahead = 1;
  // InfiniGen: the partial channels are picked at each prefill from the
  // prompt's own skewed queries (false, as InfiniGen's prefill stage), or
  // taken from the warm-up calibration (true: an ablation, one set for all
  // contexts).
  bool warmup_channels = false;
  int64_t sink_tokens = 4;  // StreamingLLM
};

// Running sums of the selection measures over decoding steps.
struct SelectionStats {
  // Per layer, sums over steps (means over KV heads) of: fetched / past
  // tokens the layer's full attention reads (its window's on a windowed
  // layer); recall of the true top-k of those; the exact (windowed)
  // attention mass on fetched tokens, as a share of the mass on past tokens.
  std::vector<double> fetched;
  std::vector<double> recall;
  std::vector<double> mass;
  int64_t steps = 0;            // decoding steps (one token each) with a non-empty past
  std::vector<std::vector<double>> step_fetched;  // per recorded step: per layer fraction (when record_steps)
  bool record_steps = false;

  double mean_fetched() const;  // over layers and steps
  double mean_recall() const;
  double mean_mass() const;
  std::vector<double> fetched_per_layer() const;
  std::vector<double> recall_per_layer() const;
};

// One sequence's selective decoding. prefill() runs the context (full
// attention, recording what the method needs: partial keys, accumulated
// attention); step() runs one token with the method's selection and adds to
// stats(). Copyable: a copy after prefill restarts decoding from the context.
class SelectiveDecoder : public AttentionHook {
 public:
  // `calibration` is required for InfiniGen (and must outlive the decoder).
  SelectiveDecoder(const Model& model, SelectionConfig config, const SkewCalibration* calibration = nullptr);

  ForwardResult prefill(const std::vector<int64_t>& tokens);
  // One token after `past` (the cache returned by prefill or step).
  ForwardResult step(int64_t token, const KVCache& past);

  const SelectionStats& stats() const { return stats_; }
  SelectionStats& stats() { return stats_; }
  const SelectionConfig& config() const { return config_; }
  // A copy (same prefill state, stats cleared) with another budget/alpha;
  // the method must be the same; the config is checked as the constructor's.
  SelectiveDecoder with_config(const SelectionConfig& config) const;
  // InfiniGen: per layer [kv_heads, channels] int64, the partial channels in
  // use (picked at prefill, or the calibration's with warmup_channels).
  const std::vector<at::Tensor>& partial_channels() const { return channels_; }
  // Whether `layer` selects (false: loaded in full).
  bool selects(int64_t layer) const;

  void layer_input(int64_t layer, const at::Tensor& hidden) override;
  at::Tensor select(int64_t layer, const at::Tensor& queries, const at::Tensor& keys) override;

 private:
  void check_config() const;  // throws kvs::Error on a bad config_
  int64_t budget_for(int64_t past) const;  // of `past` candidate tokens
  // [kvh, past] bool: the tokens each KV head of `layer` fetches.
  at::Tensor infinigen_keep(int64_t layer, const at::Tensor& previous_input);
  at::Tensor h2o_keep(int64_t layer, int64_t past, int64_t begin);
  // Adds one step's fetched fraction, recall and mass of `layer`, over the
  // past keys [begin, past) its attention sees.
  void record(int64_t layer, const at::Tensor& exact_scores, const at::Tensor& keep, int64_t begin);
  // First past key the query at position `past` sees in `layer` (0 unless
  // the layer has a sliding window W: max(0, past - W + 1)).
  int64_t window_begin(int64_t layer, int64_t past) const;

  const Model* model_;
  SelectionConfig config_;
  const SkewCalibration* calibration_;
  bool decoding_ = false;
  int64_t position_ = 0;                  // position of the token being decoded
  std::vector<at::Tensor> channels_;      // InfiniGen: per layer [kvh, channels] partial channels
  std::vector<at::Tensor> partial_keys_;  // InfiniGen: per layer [kvh, tokens, channels] (skewed)
  std::vector<at::Tensor> speculated_;    // InfiniGen: per layer [kvh, past] bool for this step
  std::vector<at::Tensor> h2o_score_;     // H2O: per layer [kvh, tokens] accumulated attention
  std::vector<at::Tensor> h2o_present_;   // H2O: per layer [kvh, tokens] bool, not yet evicted
  std::vector<double> step_row_;
  SelectionStats stats_;
};

// A context ready for selective evaluation.
struct SelectiveContext {
  std::string id;
  std::vector<int64_t> context;       // tokens the prefill covers (all context tokens but the last)
  std::vector<int64_t> continuation;  // {last context token, text...}: teacher-forced, every token but the first scored
  std::vector<int64_t> question;      // {last context token, question...}; empty: none
  std::vector<int64_t> answer;
  int64_t greedy_tokens = 64;         // generated after the continuation
};

// What the full cache gives, step by step (evaluate_selective compares to it).
struct SelectiveReference {
  // [continuation - 1, vocab] float64: next-token log-probabilities per teacher-forced step.
  at::Tensor log_probs;
  std::vector<int64_t> greedy;
  double nll_nats = 0;         // mean over scored continuation tokens
  double task_accuracy = -1;   // -1: no question
};

// Quality of one method on one context against the full cache.
struct SelectiveResult {
  std::vector<double> fetched_per_layer;
  std::vector<std::vector<double>> fetched_by_step;  // [generation step][layer]
  std::vector<double> recall_per_layer;
  double fetched = 1, recall = 1, mass = 1;
  double kl_divergence = 0;     // nats, mean over teacher-forced steps
  double nll_nats = 0;          // mean NLL of the scored continuation tokens
  double loss_increase = 0;     // nll / full's nll - 1
  double greedy_agreement = 1;
  double task_accuracy = -1;    // -1: no question
  int64_t steps = 0;
  at::Tensor log_probs;         // as SelectiveReference::log_probs, with this method
  std::vector<int64_t> greedy;
};

// Decodes `ctx` one token at a time from `prefilled` (a decoder after
// prefill(ctx.context), copied per run) and its `cache`: the continuation
// teacher-forced (NLL, KL), then greedy_tokens greedy tokens (agreement),
// then, from the context again, the question and a greedy answer (exact
// match). `reference` may be null (then KL, loss increase and agreement are
// left 0/0/1): make_reference runs this with a kFull decoder.
SelectiveResult evaluate_selective(const Model& model, const SelectiveContext& ctx, const SelectiveDecoder& prefilled,
                                   const KVCache& cache, const SelectiveReference* reference);
SelectiveReference make_selective_reference(const Model& model, const SelectiveContext& ctx);

}  // namespace kvs::llm
