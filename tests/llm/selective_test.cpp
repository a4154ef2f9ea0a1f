// Selective KV loading (llm/selective.h): skewing keeps attention scores,
// a full budget reproduces the full cache exactly, budgets are respected,
// speculation recall against exact scores on a fixed input (golden numbers),
// partial channels picked at prefill, and InfiniGen's speculation against an
// independent numpy implementation (tests/llm/data/selective_reference.py).
#include "llm/selective.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "llm/checkpoint.h"
#include "llm/profiler.h"
#include "llm/tokenizer.h"
#include "tests/llm/test_util.h"

namespace kvs::llm {
namespace {

using testing::some_tokens;

// 4 layers (so InfiniGen speculates layers 2 and 3), head_dim 16 (ratio 0.25
// keeps 4 channels), GQA 4 query heads on 2 KV heads. W_q and W_k are scaled
// by 10 so attention is peaked as in a trained model (random normal(0, 0.02)
// weights give almost uniform attention).
Model test_model(uint64_t seed = 7) {
  ModelConfig c = testing::tiny_config();
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 512;
  Model m = Model::random(c, seed);
  for (auto& [name, t] : m.named_parameters())
    if (name.find("q_proj") != std::string::npos || name.find("k_proj") != std::string::npos) t.mul_(10.0);
  return m;
}

// Records each layer's queries and keys of one forward.
struct Capture : AttentionHook {
  std::vector<at::Tensor> q, k;
  void layer_input(int64_t, const at::Tensor&) override {}
  at::Tensor select(int64_t, const at::Tensor& queries, const at::Tensor& keys) override {
    q.push_back(queries.clone());
    k.push_back(keys.clone());
    return {};
  }
};

// Scores [heads, n, keys] of grouped-query attention (no mask, no scale).
at::Tensor gqa_scores(const at::Tensor& q, const at::Tensor& k) {
  const int64_t kvh = k.size(0), group = q.size(0) / kvh;
  return at::matmul(q.to(at::kDouble), k.to(at::kDouble).repeat_interleave(group, 0).transpose(1, 2));
}

// Share of sum_c |q_c k_c| (over all query/key pairs) in the `n` channels with the largest summed |q_c|.
double top_channel_share(const at::Tensor& q, const at::Tensor& k, int64_t n) {
  const int64_t kvh = k.size(0), group = q.size(0) / kvh;
  double top = 0, all = 0;
  for (int64_t h = 0; h < q.size(0); ++h) {
    const at::Tensor qh = q[h].to(at::kDouble).abs(), kh = k[h / group].to(at::kDouble).abs();
    const at::Tensor per_channel = qh.sum(0) * kh.sum(0);  // sum over pairs of |q_c||k_c|
    const at::Tensor chosen = std::get<1>(qh.sum(0).topk(n));
    top += per_channel.index_select(0, chosen).sum().item<double>();
    all += per_channel.sum().item<double>();
  }
  return top / all;
}

TEST(SelectiveTest, SkewingPreservesScores) {
  const Model m = test_model();
  const SkewCalibration cal = calibrate_skewing(m, some_tokens(96, 256, 1), 0.25);
  ASSERT_EQ(cal.skew.size(), 4u);
  EXPECT_EQ(cal.channels[0].sizes(), (at::IntArrayRef{2, 4}));
  Capture cap;
  m.forward(to_tensor(some_tokens(64, 256, 2)), KVCache{}, &cap);  // other tokens than the warm-up
  for (size_t l = 0; l < 4; ++l) {
    const at::Tensor& a = cal.skew[l];
    const at::Tensor eye = at::eye(16, at::kDouble).expand({2, 16, 16});
    EXPECT_LT((at::matmul(a.transpose(1, 2), a).to(at::kDouble) - eye).abs().max().item<double>(), 1e-6);
    const at::Tensor before = gqa_scores(cap.q[l], cap.k[l]);
    const at::Tensor after = gqa_scores(skew_queries(cap.q[l], a), skew_keys(cap.k[l], a));
    // fp32 precision: relative to the largest score.
    EXPECT_LT(((after - before).abs().max() / before.abs().max()).item<double>(), 1e-6) << "layer " << l;
  }
}

// On the trained bundled model (random weights have isotropic queries, with
// nothing to concentrate): after skewing, the 20 % of channels InfiniGen keeps
// carry more of sum_c |q_c k_c| than the same number of the original channels.
TEST(SelectiveTest, SkewingConcentratesScoresOnTheTrainedModel) {
  const std::string dir = std::string(KVSTREAM_SOURCE_DIR) + "/models/default";
  const Model m = load_model(dir);
  const auto tok = load_tokenizer(dir, m.config());
  const std::string text =
      "The code of Briqui Quisul is 87049. Nothing, however, could be farther from the truth. The whole purpose "
      "of the book is to portray the tragic dialectic between means and ends inherent in all organized political "
      "violence. Q: What is the code of Briqui Quisul? A: 87049.";
  const auto ids = tok->encode(text, true);
  const SkewCalibration cal = calibrate_skewing(m, std::vector<int64_t>(ids.begin(), ids.begin() + 128), 0.2);
  Capture cap;
  m.forward(to_tensor(std::vector<int64_t>(ids.begin() + 64, ids.end())), KVCache{}, &cap);
  const int64_t channels = cal.channels[0].size(1);
  double before = 0, after = 0;
  const size_t L = cap.q.size();
  for (size_t l = 0; l < L; ++l) {
    before += top_channel_share(cap.q[l], cap.k[l], channels) / double(L);
    after += top_channel_share(skew_queries(cap.q[l], cal.skew[l]), skew_keys(cap.k[l], cal.skew[l]), channels) /
             double(L);
  }
  std::printf("share of |q.k| in the top %lld channels: %.3f before skewing, %.3f after\n", (long long)channels, before,
              after);
  EXPECT_GT(after, before + 0.05);
}

TEST(SelectiveTest, CalibrationRejectsBadInput) {
  const Model m = test_model();
  EXPECT_THROW(calibrate_skewing(m, some_tokens(8, 256, 1), 0.25), Error);   // fewer tokens than head_dim
  EXPECT_THROW(calibrate_skewing(m, some_tokens(64, 256, 1), 0.01), Error);  // no channel
  EXPECT_THROW(SelectiveDecoder(m, SelectionConfig{SelectMethod::kInfiniGen}), Error);  // no calibration
  SelectionConfig bad;
  bad.method = SelectMethod::kOracle;
  bad.budget = 0;
  EXPECT_THROW(SelectiveDecoder(m, bad), Error);
  EXPECT_THROW(method_from_name("lru"), Error);
}

TEST(SelectiveTest, FullBudgetEqualsFullCacheExactly) {
  const Model m = test_model();
  const SkewCalibration cal = calibrate_skewing(m, some_tokens(96, 256, 1), 0.25);
  const auto ctx = some_tokens(80, 256, 3), next = some_tokens(12, 256, 4);
  for (SelectMethod method : {SelectMethod::kInfiniGen, SelectMethod::kOracle, SelectMethod::kStreaming,
                              SelectMethod::kH2O}) {
    SelectionConfig c;
    c.method = method;
    c.budget = 1.0;
    c.alpha = std::numeric_limits<double>::infinity();
    SelectiveDecoder full(m, SelectionConfig{}), sel(m, c, &cal);
    KVCache a = full.prefill(ctx).cache, b = sel.prefill(ctx).cache;
    for (int64_t t : next) {
      ForwardResult ra = full.step(t, a), rb = sel.step(t, b);
      ASSERT_TRUE(at::equal(ra.logits, rb.logits)) << method_name(method);
      a = std::move(ra.cache);
      b = std::move(rb.cache);
    }
    EXPECT_DOUBLE_EQ(sel.stats().mean_fetched(), 1.0);
    EXPECT_DOUBLE_EQ(sel.stats().mean_recall(), 1.0);
  }
  // And the whole evaluation: no KL, no loss increase, full agreement.
  SelectiveContext sc;
  sc.context = ctx;
  sc.continuation = some_tokens(10, 256, 5);
  sc.question = some_tokens(4, 256, 6);
  sc.answer = some_tokens(3, 256, 7);
  sc.greedy_tokens = 8;
  const SelectiveReference ref = make_selective_reference(m, sc);
  SelectionConfig c{SelectMethod::kInfiniGen};
  c.budget = 1.0;
  c.alpha = std::numeric_limits<double>::infinity();
  SelectiveDecoder dec(m, c, &cal);
  const KVCache cache = dec.prefill(sc.context).cache;
  const SelectiveResult r = evaluate_selective(m, sc, dec, cache, &ref);
  EXPECT_EQ(r.kl_divergence, 0.0);
  EXPECT_EQ(r.loss_increase, 0.0);
  EXPECT_EQ(r.greedy_agreement, 1.0);
  EXPECT_EQ(r.task_accuracy, ref.task_accuracy);
  EXPECT_EQ(r.steps, 10 + 7 + 4 + 2);  // continuation, greedy after its last step, question, answer
  EXPECT_EQ(r.fetched_by_step.size(), 8u);
}

// Checks every mask the decoder returns.
struct BudgetSpy : SelectiveDecoder {
  using SelectiveDecoder::SelectiveDecoder;
  int64_t max_over = std::numeric_limits<int64_t>::min();  // max of (fetched past tokens - budget)
  int64_t masks = 0;
  std::vector<at::Tensor> kept;  // layer 3's masks per step (past part)
  at::Tensor select(int64_t layer, const at::Tensor& q, const at::Tensor& k) override {
    at::Tensor keep = SelectiveDecoder::select(layer, q, k);
    if (keep.defined()) {
      const int64_t past = k.size(1) - 1;
      const int64_t budget = config().budget_tokens > 0 ? std::min(config().budget_tokens, past)
                                                         : std::max<int64_t>(1, int64_t(config().budget * past));
      EXPECT_TRUE(keep.select(2, past).all().item<bool>());  // the current token is always there
      const at::Tensor counts = keep.narrow(2, 0, past).sum(-1);
      max_over = std::max(max_over, counts.max().item<int64_t>() - budget);
      ++masks;
      if (layer == 3) kept.push_back(keep.narrow(2, 0, past).squeeze(1));
    }
    return keep;
  }
};

TEST(SelectiveTest, BudgetIsRespected) {
  const Model m = test_model();
  const SkewCalibration cal = calibrate_skewing(m, some_tokens(96, 256, 1), 0.25);
  const auto ctx = some_tokens(100, 256, 8);
  for (SelectMethod method : {SelectMethod::kInfiniGen, SelectMethod::kOracle, SelectMethod::kStreaming,
                              SelectMethod::kH2O}) {
    for (int64_t count : {0, 7}) {
      SelectionConfig c;
      c.method = method;
      c.budget = 0.1;
      c.budget_tokens = count;
      c.alpha = 1e9;  // speculation would take everything: the budget decides
      BudgetSpy spy(m, c, &cal);
      KVCache cache = spy.prefill(ctx).cache;
      for (int64_t t : some_tokens(20, 256, 9)) cache = spy.step(t, cache).cache;
      const int64_t layers_selected = method == SelectMethod::kInfiniGen ? 2 : 4;
      EXPECT_EQ(spy.masks, 20 * layers_selected) << method_name(method);
      EXPECT_EQ(spy.max_over, 0) << method_name(method) << " budget_tokens " << count;  // uses the whole budget
      if (method == SelectMethod::kH2O) {
        // An evicted token never comes back.
        for (size_t s = 1; s < spy.kept.size(); ++s) {
          const at::Tensor before = spy.kept[s - 1], now = spy.kept[s].narrow(1, 0, before.size(1));
          EXPECT_FALSE(now.logical_and(before.logical_not()).any().item<bool>()) << "step " << s;
        }
      }
      if (method == SelectMethod::kStreaming) {
        const at::Tensor last = spy.kept.back();
        EXPECT_TRUE(last.narrow(1, 0, 4).all().item<bool>());
        EXPECT_TRUE(last.select(1, last.size(1) - 1).all().item<bool>());
      }
    }
  }
}

// Golden recall on a fixed input: seed-7 test model, calibration on
// some_tokens(96, 256, 1) at ratio 0.25, context some_tokens(120, 256, 11),
// 16 decoding steps of some_tokens(16, 256, 12), budget 20 %, alpha 4.
// Recall = share of the true top-k past tokens (k = tokens fetched; true
// score = max over the KV head's query heads of the exact q·k/√d) that
// InfiniGen's speculation fetched, per KV head, averaged over steps.
// Partial channels from the warm-up (warmup_channels). Values computed once
// by this code (the test prints them: "golden: ...") and checked in; a random choice of the same size would recall about the
// fetched fraction, which is also checked below.
constexpr double kGoldenRecall2 = 0.41748887108262106, kGoldenRecall3 = 0.35367699430199429;
constexpr double kGoldenFetched2 = 0.19706714693242669, kGoldenFetched3 = 0.19706714693242669;

TEST(SelectiveTest, SpeculationRecallGolden) {
  const Model m = test_model();
  const SkewCalibration cal = calibrate_skewing(m, some_tokens(96, 256, 1), 0.25);
  SelectionConfig c{SelectMethod::kInfiniGen};
  c.budget = 0.2;
  c.alpha = 4;
  c.warmup_channels = true;  // the values were computed with the warm-up's channels
  SelectiveDecoder dec(m, c, &cal);
  KVCache cache = dec.prefill(some_tokens(120, 256, 11)).cache;
  for (int64_t t : some_tokens(16, 256, 12)) cache = dec.step(t, cache).cache;
  const auto recall = dec.stats().recall_per_layer();
  const auto fetched = dec.stats().fetched_per_layer();
  std::printf("golden: recall %.17g %.17g fetched %.17g %.17g\n", recall[2], recall[3], fetched[2], fetched[3]);
  EXPECT_EQ(recall[0], 1.0);
  EXPECT_EQ(recall[1], 1.0);
  EXPECT_NEAR(recall[2], kGoldenRecall2, 1e-9);
  EXPECT_NEAR(recall[3], kGoldenRecall3, 1e-9);
  EXPECT_NEAR(fetched[2], kGoldenFetched2, 1e-9);
  EXPECT_NEAR(fetched[3], kGoldenFetched3, 1e-9);
  for (int l : {2, 3}) EXPECT_GT(recall[size_t(l)], fetched[size_t(l)] + 0.1) << "layer " << l;

  // The oracle recalls everything by definition; StreamingLLM's window less.
  for (SelectMethod method : {SelectMethod::kOracle, SelectMethod::kStreaming}) {
    SelectionConfig oc{method};
    oc.budget = 0.2;
    SelectiveDecoder od(m, oc);
    KVCache oc_cache = od.prefill(some_tokens(120, 256, 11)).cache;
    for (int64_t t : some_tokens(16, 256, 12)) oc_cache = od.step(t, oc_cache).cache;
    if (method == SelectMethod::kOracle) EXPECT_DOUBLE_EQ(od.stats().mean_recall(), 1.0);
    else EXPECT_LT(od.stats().mean_recall(), 0.9);
  }
}

// InfiniGen picks the partial channels at each prefill, from the prompt's
// own skewed queries (partial_weight_index_generation in its prefill stage):
// the calibration's warm-up channels do not matter unless warmup_channels.
TEST(SelectiveTest, PartialChannelsArePickedAtPrefill) {
  const Model m = test_model();
  const SkewCalibration cal = calibrate_skewing(m, some_tokens(96, 256, 1), 0.25);
  SkewCalibration bad = cal;  // the 4 channels with the least warm-up mass instead
  for (auto& ch : bad.channels) {
    ch = ch.clone();
    for (int64_t g = 0; g < ch.size(0); ++g) {
      std::vector<int64_t> rest;
      for (int64_t i = 0; i < 16 && int64_t(rest.size()) < ch.size(1); ++i)
        if (!ch[g].eq(i).any().item<bool>()) rest.push_back(i);
      ch[g].copy_(at::tensor(rest, at::kLong));
    }
  }
  const auto ctx = some_tokens(120, 256, 11), next = some_tokens(16, 256, 12);
  auto run = [&](const SkewCalibration& calibration, bool warmup_channels) {
    SelectionConfig c{SelectMethod::kInfiniGen};
    c.budget = 0.2;
    c.alpha = 4;
    c.warmup_channels = warmup_channels;
    SelectiveDecoder dec(m, c, &calibration);
    KVCache cache = dec.prefill(ctx).cache;
    for (int64_t t : next) cache = dec.step(t, cache).cache;
    return std::make_pair(dec.partial_channels(), dec.stats().recall_per_layer());
  };
  const auto [good_channels, good_recall] = run(cal, false);
  const auto [bad_channels, bad_recall] = run(bad, false);
  // The prompt's channels, computed here per query head and channel.
  Capture cap;
  m.forward(to_tensor(ctx), KVCache{}, &cap);
  for (size_t l = 0; l < 4; ++l) {
    const at::Tensor q = skew_queries(cap.q[l], cal.skew[l]).to(at::kDouble).abs();  // [heads, n, hd]
    for (int64_t g = 0; g < 2; ++g) {
      const at::Tensor mass = q.narrow(0, 2 * g, 2).sum(at::IntArrayRef{0, 1});
      const at::Tensor want = std::get<0>(std::get<1>(mass.topk(4)).sort());
      EXPECT_TRUE(at::equal(good_channels[l][g].cpu(), want)) << "layer " << l << " kv head " << g;
      EXPECT_TRUE(at::equal(bad_channels[l][g].cpu(), want)) << "layer " << l << " kv head " << g;
    }
  }
  EXPECT_EQ(good_recall, bad_recall);
  // The ablation uses the calibration's channels as they are.
  const auto [warm_channels, warm_recall] = run(bad, true);
  for (size_t l = 0; l < 4; ++l) EXPECT_TRUE(at::equal(warm_channels[l], bad.channels[l])) << "layer " << l;
  EXPECT_LT(warm_recall[2] + warm_recall[3], good_recall[2] + good_recall[3]);
}

TEST(SelectiveTest, WithConfigChecksTheConfig) {
  const Model m = test_model();
  const SkewCalibration cal = calibrate_skewing(m, some_tokens(96, 256, 1), 0.25);
  SelectionConfig c{SelectMethod::kInfiniGen};
  SelectiveDecoder dec(m, c, &cal);
  dec.prefill(some_tokens(40, 256, 3));
  SelectionConfig bad = c;
  bad.alpha = 0;
  EXPECT_THROW(dec.with_config(bad), Error);
  bad = c;
  bad.budget = 0;
  EXPECT_THROW(dec.with_config(bad), Error);
  bad = c;
  bad.lookahead = 3;  // > full_front_layers
  EXPECT_THROW(dec.with_config(bad), Error);
  bad = c;
  bad.warmup_channels = true;  // the prefill already picked them
  EXPECT_THROW(dec.with_config(bad), Error);
  c.alpha = 5;
  c.budget = 0.1;
  EXPECT_NO_THROW(dec.with_config(c));
}

// Against an independent implementation: tests/llm/data/selective_reference.py
// (numpy, float64, following InfiniGen's skewing_controller.skew,
// partial_weight_index_generation and kv_selection_controller.speculate_attention,
// with RoPE before the skew as its modeling_llama_ours.py) on the bundled
// model: warm-up = the first 384 bytes of contexts-2048's context 0, prefill
// = the first 383 bytes of context 1, then its next 24 bytes decoded one at a
// time; budget 0.2, alpha 4, ratio 0.2. Its output, checked in:
TEST(SelectiveTest, SpeculationMatchesIndependentReference) {
  const std::string dir = std::string(KVSTREAM_SOURCE_DIR) + "/models/default";
  const Model m = load_model(dir);
  const auto contexts = load_contexts(std::string(KVSTREAM_SOURCE_DIR) + "/data/retrieval/contexts-2048.jsonl");
  ASSERT_GE(contexts.size(), 2u);
  auto bytes = [](const std::string& s, size_t from, size_t n) {
    std::vector<int64_t> out;
    for (size_t i = from; i < from + n; ++i) out.push_back(int64_t(static_cast<unsigned char>(s.at(i))));
    return out;
  };
  const SkewCalibration cal = calibrate_skewing(m, bytes(contexts[0].context, 0, 384), 0.2);
  struct Want {
    bool warmup_channels;
    double fetched[2], recall[2], mass[2];
  };
  const Want wants[] = {
      {false,
       {0.19898440600174347, 0.19855814854223794},
       {0.6184106922416222, 0.6424585565669172},
       {0.7187438000352487, 0.772216535373503}},
      {true,
       {0.19898440600174347, 0.19887784163686706},
       {0.6130042317291905, 0.641081772151279},
       {0.7053459453204085, 0.7985686534714085}},
  };
  for (const Want& w : wants) {
    SelectionConfig c{SelectMethod::kInfiniGen};
    c.budget = 0.2;
    c.alpha = 4;
    c.warmup_channels = w.warmup_channels;
    SelectiveDecoder dec(m, c, &cal);
    KVCache cache = dec.prefill(bytes(contexts[1].context, 0, 383)).cache;
    for (int64_t t : bytes(contexts[1].context, 383, 24)) cache = dec.step(t, cache).cache;
    const SelectionStats& st = dec.stats();
    for (size_t l = 0; l < 2; ++l) {
      EXPECT_EQ(st.fetched[l] / double(st.steps), 1.0);
      EXPECT_EQ(st.recall[l] / double(st.steps), 1.0);
    }
    for (size_t i = 0; i < 2; ++i) {
      const size_t l = i + 2;
      const std::string what = fmt::format("layer {} warmup_channels {}", l, w.warmup_channels);
      EXPECT_NEAR(st.fetched[l] / double(st.steps), w.fetched[i], 1e-9) << what;
      EXPECT_NEAR(st.recall[l] / double(st.steps), w.recall[i], 1e-6) << what;
      EXPECT_NEAR(st.mass[l] / double(st.steps), w.mass[i], 1e-5) << what;
    }
  }
}

// InfiniGen with all channels and an unbounded alpha speculates exactly: the
// recomputed query (bias, norm, RoPE as the model's) finds every key the
// attention weighs (recall 1 on layers 2 and 3, 4-layer models).
void expect_exact_speculation_finds_every_key(const Model& m) {
  const SkewCalibration cal = calibrate_skewing(m, some_tokens(96, 256, 1), 1.0, /*skew=*/false);
  SelectionConfig sc{SelectMethod::kInfiniGen};
  sc.lookahead = 0;
  sc.alpha = std::numeric_limits<double>::infinity();
  SelectiveDecoder dec(m, sc, &cal);
  KVCache cache = dec.prefill(some_tokens(60, 256, 2)).cache;
  for (int64_t t : some_tokens(6, 256, 3)) cache = dec.step(t, cache).cache;
  const auto recall = dec.stats().recall_per_layer();
  for (size_t l = 2; l < 4; ++l) EXPECT_NEAR(recall[l], 1.0, 1e-12) << l;
}

// qwen2 (q/k/v biases; layer 3 with a sliding window): with all channels,
// no skew and lookahead 0, InfiniGen's speculated query (recomputed from the
// layer's input and W_q, plus the bias) is the model's, so it fetches the
// true top-k exactly: recall 1. Without the bias it would not.
TEST(SelectiveTest, InfiniGenOnQwen2UsesTheQueryBias) {
  ModelConfig c = testing::tiny_config();
  c.model_type = "qwen2";
  c.hidden_size = 64;
  c.num_hidden_layers = 4;
  c.sliding_window = 24;
  c.max_window_layers = 3;
  Model m = Model::random(c, 8);
  for (auto& [name, t] : m.named_parameters())
    if (name.find("q_proj") != std::string::npos || name.find("k_proj") != std::string::npos) t.mul_(10.0);
  expect_exact_speculation_finds_every_key(m);
}

// qwen3 (per-head q/k RMSNorm before RoPE, with non-trivial weights; YaRN
// RoPE): InfiniGen's recomputed query applies q_norm and YaRN's attention
// factor as the model does, so with all channels, no skew and lookahead 0 it
// fetches the true top-k: recall 1. Without q_norm it would not.
TEST(SelectiveTest, InfiniGenOnQwen3AppliesTheQueryNorm) {
  ModelConfig c = testing::tiny_config();
  c.model_type = "qwen3";
  c.hidden_size = 64;
  c.head_dim = 16;
  c.num_hidden_layers = 4;
  c.rope_scaling.type = "yarn";
  c.rope_scaling.factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 32;
  Model m = Model::random(c, 9);
  for (auto& [name, t] : m.named_parameters())
    if (name.find("q_norm") != std::string::npos || name.find("k_norm") != std::string::npos)
      t.copy_(at::linspace(-3.0, 6.0, t.numel()));
  expect_exact_speculation_finds_every_key(m);
}

// gemma3_text (q/k norms scaling by 1 + w, non-trivial; sliding layers 0, 1
// and 3 rotating with rope_local_base_freq, the full layer 2 with rope_theta
// and linear scaling): InfiniGen's recomputed query applies the layer's own
// RoPE and the Gemma-style norm, so exact speculation finds every key on
// layers 2 (full) and 3 (sliding). With the global RoPE on layer 3 it would not.
TEST(SelectiveTest, InfiniGenOnGemma3UsesEachLayersRope) {
  ModelConfig c = testing::tiny_config();
  c.model_type = "gemma3_text";
  c.hidden_size = 64;
  c.head_dim = 16;
  c.num_hidden_layers = 4;
  c.sliding_window = 40;
  c.layer_types = {"sliding_attention", "sliding_attention", "full_attention", "sliding_attention"};
  c.rope_local_base_freq = 10.0;
  c.rope_scaling.type = "linear";
  c.rope_scaling.factor = 8.0;
  c.query_pre_attn_scalar = 24;
  Model m = Model::random(c, 10);
  for (auto& [name, t] : m.named_parameters()) {
    if (name.find("q_norm") != std::string::npos || name.find("k_norm") != std::string::npos)
      t.copy_(at::linspace(-1.5, 3.0, t.numel()));
    if (name.find("q_proj") != std::string::npos || name.find("k_proj") != std::string::npos) t.mul_(10.0);
  }
  expect_exact_speculation_finds_every_key(m);
}

// phi3 with partial_rotary_factor < 1 (Phi-4-mini): the recomputed query
// rotates only the first rotary_dim dims, as the model does (it failed with a
// shape error when it rotated the whole head).
TEST(SelectiveTest, InfiniGenOnPartialRotaryRotatesOnlyTheRotaryDims) {
  ModelConfig c = testing::tiny_config();
  c.model_type = "phi3";
  c.hidden_size = 64;
  c.head_dim = 16;
  c.num_hidden_layers = 4;
  c.partial_rotary_factor = 0.75;
  expect_exact_speculation_finds_every_key(Model::random(c, 9));
}

// ---- sliding-window layers --------------------------------------------------------

constexpr int64_t kWindow = 8;  // keys q - 8 < k <= q: 7 past keys and the token's own

// test_model's shape with sliding windows of kWindow tokens: mistral on every
// layer, qwen2 on layers 1 and 3 only (layer_types; 0 and 2 full), or gemma2
// on layers 0 and 2 (its default), whose scores are scaled by
// kGemma2Scalar^-0.5 and soft-capped at kGemma2Cap.
constexpr double kGemma2Scalar = 20.0, kGemma2Cap = 5.0;
Model windowed_model(const std::string& type) {
  ModelConfig c = testing::tiny_config();
  c.model_type = type;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 4;
  c.max_position_embeddings = 512;
  c.sliding_window = kWindow;
  if (type == "qwen2")
    c.layer_types = {"full_attention", "sliding_attention", "full_attention", "sliding_attention"};
  if (type == "gemma2") {
    c.query_pre_attn_scalar = kGemma2Scalar;
    c.attn_logit_softcapping = kGemma2Cap;
    c.final_logit_softcapping = 10.0;
  }
  Model m = Model::random(c, 7);
  for (auto& [name, t] : m.named_parameters())
    if (name.find("q_proj") != std::string::npos || name.find("k_proj") != std::string::npos) t.mul_(10.0);
  return m;
}

// First past key that the query at position `past` sees in `layer`.
int64_t first_seen(const Model& m, int64_t layer, int64_t past) {
  const int64_t w = m.config().layer_window(layer);
  return w > 0 ? std::max<int64_t>(0, past - w + 1) : 0;
}

// Records each decoding step's queries, keys and returned mask.
struct WindowSpy : SelectiveDecoder {
  using SelectiveDecoder::SelectiveDecoder;
  struct Call {
    int64_t layer;
    at::Tensor q, k, keep;
  };
  std::vector<Call> calls;
  at::Tensor select(int64_t layer, const at::Tensor& q, const at::Tensor& k) override {
    at::Tensor keep = SelectiveDecoder::select(layer, q, k);
    if (q.size(1) == 1) calls.push_back({layer, q.clone(), k.clone(), keep});
    return keep;
  }
};

const std::vector<SelectMethod> kSelecting = {SelectMethod::kInfiniGen, SelectMethod::kOracle,
                                              SelectMethod::kStreaming, SelectMethod::kH2O};

// On a windowed layer every method picks among the window's 7 past keys only
// (StreamingLLM's sinks, 32 tokens back, are not fetched), exactly its budget
// of them (a share of the window: floor(0.5 x 7) = 3, or 3 tokens), and the
// fetched fraction is relative to the window; full layers are unchanged
// (floor(0.5 x past) / past).
TEST(SelectiveTest, WindowedLayersFetchOnlyInsideTheWindow) {
  for (const std::string type : {"mistral", "qwen2", "gemma2"}) {
    const Model m = windowed_model(type);
    const SkewCalibration cal = calibrate_skewing(m, some_tokens(96, 256, 1), 0.25);
    for (SelectMethod method : kSelecting) {
      for (int64_t count : {0, 3}) {
        SelectionConfig c{method};
        c.budget = 0.5;
        c.budget_tokens = count;
        c.alpha = 1e9;  // speculation would take everything: the budget decides
        c.full_front_layers = 1;  // InfiniGen selects layers 1-3
        const std::string what = fmt::format("{} {} budget_tokens {}", type, method_name(method), count);
        WindowSpy spy(m, c, &cal);
        spy.stats().record_steps = true;
        KVCache cache = spy.prefill(some_tokens(40, 256, 2)).cache;
        for (int64_t t : some_tokens(8, 256, 3)) cache = spy.step(t, cache).cache;
        ASSERT_EQ(spy.stats().step_fetched.size(), 8u);
        int64_t windowed_masks = 0;
        std::vector<double> want(4, 0.0);  // per layer: sum over steps of the expected fraction
        for (const auto& call : spy.calls) {
          const int64_t past = call.k.size(1) - 1, begin = first_seen(m, call.layer, past), seen = past - begin;
          if (!call.keep.defined()) {  // loaded in full
            EXPECT_TRUE(method == SelectMethod::kInfiniGen && call.layer == 0) << what;
            want[size_t(call.layer)] += 1;
            continue;
          }
          const at::Tensor keep = call.keep.squeeze(1);  // [kvh, past + 1]
          EXPECT_FALSE(keep.narrow(1, 0, begin).any().item<bool>()) << what << " layer " << call.layer;
          const int64_t budget = count > 0 ? std::min(count, seen) : int64_t(0.5 * double(seen));
          const at::Tensor fetched = keep.narrow(1, begin, seen).sum(-1);
          EXPECT_TRUE(fetched.eq(budget).all().item<bool>()) << what << " layer " << call.layer;
          EXPECT_LE(fetched.max().item<int64_t>(), seen) << what;
          want[size_t(call.layer)] += double(budget) / double(seen);
          windowed_masks += begin > 0;
        }
        int64_t windowed_selecting = 0;  // layers with a window where the method selects
        for (int64_t l = 0; l < 4; ++l)
          windowed_selecting += m.config().layer_window(l) > 0 && (method != SelectMethod::kInfiniGen || l > 0);
        EXPECT_EQ(windowed_masks, 8 * windowed_selecting) << what;
        const auto per_layer = spy.stats().fetched_per_layer();
        for (size_t l = 0; l < 4; ++l) {
          EXPECT_NEAR(per_layer[l], want[l] / 8, 1e-12) << what << " layer " << l;
          if (m.config().layer_window(int64_t(l)) > 0 && (method != SelectMethod::kInfiniGen || l > 0)) {
            for (const auto& row : spy.stats().step_fetched) EXPECT_NEAR(row[l], 3.0 / 7.0, 1e-12) << what;
          }
        }
      }
    }
  }
}

// Every layer windowed (mistral, W 8): fetching the window's 7 past keys is a
// full budget, so every method's output equals the full cache's exactly and
// fetched fraction, recall and attention mass are 1 (the oracle's recall is 1
// at any budget >= the window); so is a larger budget.
TEST(SelectiveTest, WindowBudgetIsAFullBudget) {
  const Model m = windowed_model("mistral");
  const SkewCalibration cal = calibrate_skewing(m, some_tokens(96, 256, 1), 0.25);
  const auto ctx = some_tokens(40, 256, 3), next = some_tokens(10, 256, 4);
  for (SelectMethod method : kSelecting) {
    for (int64_t count : {kWindow - 1, 3 * kWindow}) {
      SelectionConfig c{method};
      c.budget_tokens = count;
      c.alpha = std::numeric_limits<double>::infinity();
      SelectiveDecoder full(m, SelectionConfig{}), sel(m, c, &cal);
      KVCache a = full.prefill(ctx).cache, b = sel.prefill(ctx).cache;
      for (int64_t t : next) {
        ForwardResult ra = full.step(t, a), rb = sel.step(t, b);
        ASSERT_TRUE(at::equal(ra.logits, rb.logits)) << method_name(method) << " budget_tokens " << count;
        a = std::move(ra.cache);
        b = std::move(rb.cache);
      }
      EXPECT_DOUBLE_EQ(sel.stats().mean_fetched(), 1.0) << method_name(method);
      EXPECT_DOUBLE_EQ(sel.stats().mean_recall(), 1.0) << method_name(method);
      EXPECT_DOUBLE_EQ(sel.stats().mean_mass(), 1.0) << method_name(method);
    }
  }
  // The whole evaluation with the oracle at the window's budget: no KL, no loss increase, full agreement.
  SelectiveContext sc;
  sc.context = ctx;
  sc.continuation = some_tokens(8, 256, 5);
  sc.greedy_tokens = 6;
  const SelectiveReference ref = make_selective_reference(m, sc);
  SelectionConfig c{SelectMethod::kOracle};
  c.budget_tokens = kWindow - 1;
  SelectiveDecoder dec(m, c);
  const KVCache cache = dec.prefill(sc.context).cache;
  const SelectiveResult r = evaluate_selective(m, sc, dec, cache, &ref);
  EXPECT_EQ(r.kl_divergence, 0.0);
  EXPECT_EQ(r.loss_increase, 0.0);
  EXPECT_EQ(r.greedy_agreement, 1.0);
  EXPECT_EQ(r.fetched, 1.0);
  EXPECT_EQ(r.mass, 1.0);
}

// Recall and attention mass on the windowed layers (qwen2, layers 1 and 3;
// gemma2, layers 0 and 2) are those of the attention the model computes
// there: recomputed here from each step's queries, keys and mask with the
// softmax over the window's keys (its own included) of the scores scaled by
// 1/sqrt(head_dim), or for gemma2 by kGemma2Scalar^-0.5 and soft-capped.
// InfiniGen with exact speculation (all channels, no skew, lookahead 0)
// scores only the window's keys, so it fetches their true top-k: recall 1.
TEST(SelectiveTest, WindowedRecallAndMassFollowTheWindowedAttention) {
  for (const std::string type : {"qwen2", "gemma2"})
  for (SelectMethod method : kSelecting) {
    const Model m = windowed_model(type);
    const SkewCalibration exact = calibrate_skewing(m, some_tokens(96, 256, 1), 1.0, /*skew=*/false);
    SelectionConfig c{method};
    c.budget = 0.3;
    c.alpha = std::numeric_limits<double>::infinity();
    c.lookahead = 0;
    WindowSpy spy(m, c, &exact);
    const KVCache cache = spy.prefill(some_tokens(40, 256, 2)).cache;
    spy.step(17, cache);  // one step: the stats' sums are that step's values
    for (const auto& call : spy.calls) {
      const int64_t l = call.layer;
      if (m.config().layer_window(l) == 0 || !call.keep.defined()) continue;
      const int64_t past = call.k.size(1) - 1, begin = first_seen(m, l, past), seen = past - begin;
      const int64_t kvh = call.k.size(0), group = call.q.size(0) / kvh;
      at::Tensor scores = gqa_scores(call.q, call.k).squeeze(1);  // [heads, past + 1]
      if (type == "gemma2") {
        scores = at::tanh(scores / std::sqrt(kGemma2Scalar) / kGemma2Cap) * kGemma2Cap;
      } else {
        scores = scores / std::sqrt(16.0);
      }
      const at::Tensor probs = at::softmax(scores.narrow(1, begin, seen + 1), -1).narrow(1, 0, seen);
      const at::Tensor in = call.keep.squeeze(1).narrow(1, begin, seen);  // [kvh, seen]
      ASSERT_FALSE(call.keep.squeeze(1).narrow(1, 0, begin).any().item<bool>()) << method_name(method);
      const at::Tensor in_heads = in.repeat_interleave(group, 0).to(at::kDouble);
      const double mass = ((probs * in_heads).sum(-1) / probs.sum(-1)).mean().item<double>();
      double recall = 0;
      for (int64_t g = 0; g < kvh; ++g) {
        const at::Tensor agg = scores.narrow(0, g * group, group).narrow(1, begin, seen).amax(0);
        const int64_t k = in[g].sum().item<int64_t>();
        recall += double(in[g].index_select(0, std::get<1>(agg.topk(k))).sum().item<int64_t>()) / double(k) /
                  double(kvh);
      }
      // The decoder's scores are fp32 products (the model's), these float64.
      const std::string what = type + " " + method_name(method) + " layer " + std::to_string(l);
      EXPECT_NEAR(spy.stats().mass[size_t(l)], mass, 1e-6) << what;
      EXPECT_NEAR(spy.stats().recall[size_t(l)], recall, 1e-12) << what;
      EXPECT_LT(mass, 1.0) << what;
      if (method == SelectMethod::kOracle || method == SelectMethod::kInfiniGen) {
        EXPECT_NEAR(spy.stats().recall[size_t(l)], 1.0, 1e-12) << what;
      }
    }
  }
}

}  // namespace
}  // namespace kvs::llm
