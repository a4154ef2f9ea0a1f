// An independent reference for the quality numbers a profile reports
// (docs/profile-format.md): each metric recomputed from the model's logits
// with plain loops, straight from its documented definition, and compared
// with what run_profiler wrote. Nothing here goes through llm/evaluate.cpp's
// code: the exact next-token distributions come from ONE prefill of context +
// continuation (so position t's distribution is that of the tokens before t,
// the continuation's first token included), the degraded ones from the
// decoded cache followed by the continuation, greedy tokens by re-running the
// whole prompt each step.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "codec/codec.h"
#include "codec/profile.h"
#include "llm/checkpoint.h"
#include "llm/kv_cache.h"
#include "llm/model.h"
#include "llm/profiler.h"
#include "llm/tokenizer.h"

namespace kvs::llm {
namespace {

// Row-wise log-softmax in double, by hand: out[r][v].
std::vector<std::vector<double>> log_softmax_rows(const at::Tensor& logits_in) {
  const at::Tensor logits = logits_in.to(at::kCPU).to(at::kFloat).contiguous();
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  const float* x = logits.data_ptr<float>();
  std::vector<std::vector<double>> out(size_t(rows), std::vector<double>(size_t(vocab), 0.0));
  for (int64_t r = 0; r < rows; ++r) {
    double mx = -1e300;
    for (int64_t v = 0; v < vocab; ++v) mx = std::max(mx, double(x[r * vocab + v]));
    double z = 0;
    for (int64_t v = 0; v < vocab; ++v) z += std::exp(double(x[r * vocab + v]) - mx);
    for (int64_t v = 0; v < vocab; ++v) out[size_t(r)][size_t(v)] = double(x[r * vocab + v]) - mx - std::log(z);
  }
  return out;
}

size_t argmax(const std::vector<double>& row) {
  return size_t(std::max_element(row.begin(), row.end()) - row.begin());
}

struct Reference {
  double loss_increase = 0, kl_nats = 0, kl_stderr_nats = 0, top1 = 0;
};

// The documented metrics of degraded log-probs `q` against exact `p`, row i
// predicting target[i]: relative NLL increase, mean KL(P || Q) in nats, its
// batch-means standard error over blocks of 16 positions (n a multiple of 16
// here: the textbook formula sqrt(sum_b (m_b - m)^2 / (B (B - 1)))), top-1.
Reference metrics(const std::vector<std::vector<double>>& p, const std::vector<std::vector<double>>& q,
                  const std::vector<int64_t>& target) {
  const size_t n = target.size();
  double nll_p = 0, nll_q = 0, same = 0;
  std::vector<double> kl(n, 0.0);
  for (size_t i = 0; i < n; ++i) {
    nll_p -= p[i][size_t(target[i])];
    nll_q -= q[i][size_t(target[i])];
    for (size_t v = 0; v < p[i].size(); ++v) kl[i] += std::exp(p[i][v]) * (p[i][v] - q[i][v]);
    same += argmax(p[i]) == argmax(q[i]) ? 1 : 0;
  }
  Reference r;
  r.loss_increase = (nll_q - nll_p) / nll_p;
  for (double k : kl) r.kl_nats += k / double(n);
  const size_t blocks = n / 16;
  double ss = 0;
  for (size_t b = 0; b < blocks; ++b) {
    double m = 0;
    for (size_t i = 16 * b; i < 16 * b + 16; ++i) m += kl[i] / 16.0;
    ss += (m - r.kl_nats) * (m - r.kl_nats);
  }
  r.kl_stderr_nats = std::sqrt(ss / double(blocks * (blocks - 1)));
  r.top1 = same / double(n);
  return r;
}

// Greedy tokens after `cache` and `prompt`, the whole prompt re-run each step.
std::vector<int64_t> greedy_by_rerun(const Model& model, const KVCache& cache, std::vector<int64_t> prompt, size_t n) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor logits = model.forward(to_tensor(prompt), cache).logits;
    out.push_back(int64_t(argmax(log_softmax_rows(logits.slice(0, logits.size(0) - 1)).front())));
    prompt.push_back(out.back());
  }
  return out;
}

// The bundled model on the start of a retrieval context (its question's answer
// inside it), a 64-byte continuation, 3 chunks of 128 tokens, the KV cache
// shipped in fp16: every number of the profile against the reference.
TEST(QualityReference, ProfileMatchesMetricsComputedByHand) {
  const std::string src = KVSTREAM_SOURCE_DIR;
  const Model model = load_model(src + "/models/default");
  const auto tok = load_tokenizer(src + "/models/default", model.config());
  ProfileContext ctx = load_contexts(src + "/data/retrieval/contexts-2048.jsonl").at(0);
  ctx.context.resize(300);
  ctx.continuation.resize(64);
  ASSERT_NE(ctx.context.find(ctx.answer.substr(1)), std::string::npos);  // the answer is in the kept part

  ProfilerOptions o;
  o.codecs = {"cachegen", "quant8"};
  o.chunk_tokens = 128;
  o.greedy_tokens = 8;
  o.kv_dtype = codec::DType::kF16;
  o.model_name = "default";
  o.show_progress = false;
  const codec::Profile prof = run_profiler(model, *tok, {ctx}, o);

  const std::vector<int64_t> ids = tok->encode(ctx.context, true), text = tok->encode(ctx.continuation, false);
  const std::vector<int64_t> cache_ids(ids.begin(), ids.end() - 1);
  std::vector<int64_t> all = ids;
  all.insert(all.end(), text.begin(), text.end());
  std::vector<int64_t> prompt = {ids.back()};  // the token the cache does not cover, then the continuation
  prompt.insert(prompt.end(), text.begin(), text.end());

  // The exact cache as shipped: the prefill's K and V rounded to fp16.
  codec::KVChunk exact = to_chunk(model.prefill(to_tensor(cache_ids)).cache, 0);
  exact.dtype = codec::DType::kF16;
  exact.context_tokens = exact.tokens;
  for (float& v : exact.values) v = codec::round_to_dtype(v, codec::DType::kF16);
  const KVCache exact_cache = from_chunk(exact, model.dtype());

  // Exact distributions: rows ids.size() - 1 .. of one prefill of everything
  // (row t predicts token t + 1). Its context keys are not rounded to fp16, so
  // this also bounds what the rounding of the exact cache does.
  const auto full = log_softmax_rows(model.prefill(to_tensor(all)).logits);
  const std::vector<std::vector<double>> p_prefill(full.begin() + int64_t(ids.size()) - 1, full.end() - 1);
  ASSERT_EQ(p_prefill.size(), text.size());
  const auto p = log_softmax_rows(model.forward(to_tensor(prompt), exact_cache).logits.slice(0, 0, int64_t(text.size())));
  double nll_prefill = 0, nll = 0;
  for (size_t i = 0; i < text.size(); ++i)
    nll_prefill -= p_prefill[i][size_t(text[i])], nll -= p[i][size_t(text[i])];
  const std::vector<int64_t> greedy_exact = greedy_by_rerun(model, exact_cache, prompt, o.greedy_tokens);
  std::vector<int64_t> question = {ids.back()};
  for (int64_t t : tok->encode(ctx.question, false)) question.push_back(t);
  const std::vector<int64_t> answer = tok->encode(ctx.answer, false);

  for (const codec::CodecProfile& cp : prof.codecs) {
    const auto codec = codec::make_codec(cp.codec);
    const codec::ContextProfile& c = cp.contexts.at(0);
    EXPECT_EQ(c.tokens, cache_ids.size());
    EXPECT_EQ(c.continuation_tokens, text.size());  // every continuation token scored, its first included
    EXPECT_NEAR(c.base_loss_nats, nll / double(text.size()), 1e-5);
    EXPECT_NEAR(c.base_loss_nats, nll_prefill / double(text.size()), 1e-2);  // fp16 rounding of the cache only
    ASSERT_EQ(c.chunks.size(), 3u);
    for (const size_t level : {size_t(0), size_t(codec->levels() - 1)}) {
      SCOPED_TRACE(cp.codec + " L" + std::to_string(level));
      // The cache the GPU would hold: each chunk decoded, stored in fp16.
      std::vector<codec::KVChunk> decoded;
      for (const auto& ch : c.chunks) {
        codec::KVChunk d = codec->decode(codec->encode(exact.slice(uint32_t(ch.token_begin), ch.tokens), int(level)));
        for (float& v : d.values) v = codec::round_to_dtype(v, codec::DType::kF16);
        decoded.push_back(std::move(d));
      }
      const KVCache degraded = from_chunk(codec::KVChunk::concat(decoded), model.dtype());
      const auto q = log_softmax_rows(model.forward(to_tensor(prompt), degraded).logits.slice(0, 0, int64_t(text.size())));
      const Reference r = metrics(p, q, text);
      const codec::LevelQuality& lq = c.quality[level];
      EXPECT_NEAR(lq.loss_increase, r.loss_increase, 1e-4 * std::abs(r.loss_increase) + 1e-6);
      EXPECT_NEAR(lq.kl_nats, r.kl_nats, 1e-4 * r.kl_nats + 1e-8);
      EXPECT_NEAR(lq.kl_stderr_nats, r.kl_stderr_nats, 1e-3 * r.kl_stderr_nats + 1e-8);
      EXPECT_NEAR(lq.top1_agreement, r.top1, 1.01 / double(text.size()));  // a near-tie may flip one position
      const std::vector<int64_t> g = greedy_by_rerun(model, degraded, prompt, o.greedy_tokens);
      double same = 0;
      for (size_t i = 0; i < g.size(); ++i) same += g[i] == greedy_exact[i] ? 1 : 0;
      EXPECT_EQ(lq.greedy_agreement, same / double(g.size()));
      EXPECT_EQ(lq.task_accuracy, greedy_by_rerun(model, degraded, question, answer.size()) == answer ? 1.0 : 0.0);
      // Per chunk: only that chunk at this level, every other chunk exact.
      for (size_t k = 0; k < c.chunks.size(); ++k) {
        std::vector<codec::KVChunk> parts;
        for (size_t j = 0; j < c.chunks.size(); ++j)
          parts.push_back(j == k ? decoded[j] : exact.slice(uint32_t(c.chunks[j].token_begin), c.chunks[j].tokens));
        const KVCache only = from_chunk(codec::KVChunk::concat(parts), model.dtype());
        const Reference rk =
            metrics(p, log_softmax_rows(model.forward(to_tensor(prompt), only).logits.slice(0, 0, int64_t(text.size()))),
                    text);
        EXPECT_NEAR(c.chunks[k].levels[level].kl_nats, rk.kl_nats, 1e-4 * rk.kl_nats + 1e-8) << "chunk " << k;
        EXPECT_NEAR(c.chunks[k].levels[level].loss_increase, rk.loss_increase,
                    1e-4 * std::abs(rk.loss_increase) + 1e-6)
            << "chunk " << k;
      }
    }
  }
}

}  // namespace
}  // namespace kvs::llm
