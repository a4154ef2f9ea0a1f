#include "llm/evaluate.h"

#include <ATen/core/grad_mode.h>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "base/error.h"
#include "base/progress.h"

namespace kvs::llm {
namespace {

// Sum of -log p(target[i]) over rows of float32 logits [n, V].
double sum_nll(const at::Tensor& logits, const at::Tensor& targets) {
  at::Tensor lp = at::log_softmax(logits.to(at::kDouble), -1);
  return -lp.gather(1, targets.unsqueeze(1)).sum().item<double>();
}

// Mean -log p(continuation[i+1]) over the rows of continuation_log_probs.
double nll_from_log_probs(const at::Tensor& log_probs, const std::vector<int64_t>& continuation) {
  const int64_t n = int64_t(continuation.size());
  const at::Tensor targets = to_tensor(continuation).slice(0, 1, n).to(at::kCPU);
  return -log_probs.gather(1, targets.unsqueeze(1)).sum().item<double>() / double(n - 1);
}

}  // namespace

TextLoss evaluate_text(const Model& model, const std::vector<int64_t>& tokens, int64_t window_tokens,
                       Progress* progress) {
  at::NoGradGuard no_grad;
  TextLoss loss;
  const int64_t T = int64_t(tokens.size());
  if (T < 2) return loss;
  if (window_tokens < 2) throw Error("evaluate_text: window must be at least 2 tokens");
  const at::Tensor all = to_tensor(tokens);
  const int64_t W = window_tokens, S = std::max<int64_t>(1, W / 2);
  int64_t scored_until = 1;  // next token index to score
  for (int64_t start = 0; scored_until < T; start += S) {
    const int64_t end = std::min(T, start + W);
    if (end <= scored_until) continue;
    const at::Tensor window = all.slice(0, start, end);
    const at::Tensor logits = model.prefill(window).logits;  // row i predicts window[i + 1]
    const int64_t first = scored_until - start;                // window index of the first token to score
    const at::Tensor rows = logits.slice(0, first - 1, end - start - 1);
    const at::Tensor targets = window.slice(0, first, end - start);
    loss.nll_nats += sum_nll(rows, targets);
    loss.tokens += end - scored_until;
    if (progress) progress->advance(uint64_t(end - scored_until));
    scored_until = end;
  }
  return loss;
}

double continuation_nll(const Model& model, const KVCache& context, const std::vector<int64_t>& continuation) {
  if (continuation.size() < 2) throw Error("continuation_nll: the continuation needs at least 2 tokens");
  const at::Tensor t = to_tensor(continuation);
  const at::Tensor logits = model.forward(t, context).logits;
  const int64_t n = int64_t(continuation.size());
  return sum_nll(logits.slice(0, 0, n - 1), t.slice(0, 1, n)) / double(n - 1);
}

at::Tensor continuation_log_probs(const Model& model, const KVCache& context, const std::vector<int64_t>& continuation) {
  if (continuation.size() < 2) throw Error("continuation_log_probs: the continuation needs at least 2 tokens");
  at::NoGradGuard no_grad;
  const int64_t n = int64_t(continuation.size());
  const at::Tensor logits = model.forward(to_tensor(continuation), context).logits.slice(0, 0, n - 1);
  return at::log_softmax(logits.to(at::kCPU).to(at::kDouble), -1).contiguous();
}

KlStats kl_divergence(const at::Tensor& p_log_probs, const at::Tensor& q_log_probs) {
  if (p_log_probs.dim() != 2 || !p_log_probs.sizes().equals(q_log_probs.sizes()))
    throw Error(fmt::format("kl_divergence: log-probabilities of shapes {} and {} (expected equal [positions, vocab])",
                            fmt::join(p_log_probs.sizes(), "x"), fmt::join(q_log_probs.sizes(), "x")));
  const at::Tensor p = p_log_probs.to(at::kDouble), q = q_log_probs.to(at::kDouble);
  // Per position; clamped at 0 (a true KL is >= 0; rounding can leave -1e-17).
  const at::Tensor per = (p.exp() * (p - q)).sum(-1).clamp_min(0).contiguous();
  KlStats s;
  s.positions = per.size(0);
  if (s.positions == 0) return s;
  const double* k = per.data_ptr<double>();
  const int64_t n = s.positions;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += k[i];
  s.mean_nats = sum / double(n);
  if (n > 1) {
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += (k[i] - s.mean_nats) * (k[i] - s.mean_nats);
    s.iid_stderr_nats = std::sqrt(ss / double(n - 1) / double(n));
  }
  // Batch means over blocks of kKlBlockTokens positions (the last block takes
  // the remainder), weighted by their sizes.
  const int64_t blocks = n / kKlBlockTokens;
  if (blocks >= 2) {
    std::vector<double> mean(size_t(blocks), 0.0), size(size_t(blocks), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const size_t b = size_t(std::min(i / kKlBlockTokens, blocks - 1));
      mean[b] += k[i], size[b] += 1;
    }
    double ss = 0;
    for (size_t b = 0; b < mean.size(); ++b) {
      mean[b] /= size[b];
      ss += size[b] * (mean[b] - s.mean_nats) * (mean[b] - s.mean_nats);
    }
    // Var(mean) ~= sum_b w_b^2 var(block mean) with w_b = size_b / n, var(block
    // mean) ~= sigma_B^2 / size_b, sigma_B^2 estimated by ss / (blocks - 1).
    s.stderr_nats = std::sqrt(ss / double(blocks - 1) / double(n));
  } else {
    s.stderr_nats = s.iid_stderr_nats;
  }
  const at::Tensor same = p.argmax(-1).eq(q.argmax(-1));
  s.top1_agreement = same.to(at::kDouble).mean().item<double>();
  return s;
}

std::vector<int64_t> greedy_decode(const Model& model, const KVCache& context, const std::vector<int64_t>& prompt,
                                   int64_t n) {
  if (prompt.empty()) throw Error("greedy_decode: empty prompt");
  std::vector<int64_t> out;
  if (n <= 0) return out;
  ForwardResult r = model.forward(to_tensor(prompt), context);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t next = r.logits[r.logits.size(0) - 1].argmax().item<int64_t>();
    out.push_back(next);
    if (i + 1 < n) r = model.forward(to_tensor({next}), r.cache);
  }
  return out;
}

CacheReference make_reference(const Model& model, const KVCache& exact, const std::vector<int64_t>& continuation,
                              int64_t agreement_tokens) {
  CacheReference r;
  r.context_tokens = exact.tokens();
  r.continuation = continuation;
  r.log_probs = continuation_log_probs(model, exact, continuation);
  r.nll_nats = nll_from_log_probs(r.log_probs, continuation);
  r.greedy = greedy_decode(model, exact, continuation, agreement_tokens);
  return r;
}

CacheQuality teacher_forced_quality(const Model& model, const CacheReference& ref, const KVCache& degraded) {
  if (ref.context_tokens != degraded.tokens())
    throw Error(fmt::format("compare_caches: exact cache has {} tokens, degraded {}", ref.context_tokens,
                            degraded.tokens()));
  CacheQuality q;
  q.nll_exact_nats = ref.nll_nats;
  const at::Tensor log_probs = continuation_log_probs(model, degraded, ref.continuation);
  q.nll_degraded_nats = nll_from_log_probs(log_probs, ref.continuation);
  q.relative_increase = q.nll_exact_nats > 0 ? q.nll_degraded_nats / q.nll_exact_nats - 1.0 : 0.0;
  const KlStats kl = kl_divergence(ref.log_probs, log_probs);
  q.kl_nats = kl.mean_nats;
  q.kl_stderr_nats = kl.stderr_nats;
  q.top1_agreement = kl.top1_agreement;
  q.kl_positions = kl.positions;
  return q;
}

CacheQuality compare_to_reference(const Model& model, const CacheReference& ref, const KVCache& degraded) {
  CacheQuality q = teacher_forced_quality(model, ref, degraded);
  q.agreement_tokens = int64_t(ref.greedy.size());
  q.agreement = 1.0;
  if (!ref.greedy.empty()) {
    const auto b = greedy_decode(model, degraded, ref.continuation, int64_t(ref.greedy.size()));
    int64_t same = 0;
    for (size_t i = 0; i < b.size(); ++i) same += ref.greedy[i] == b[i];
    q.agreement = double(same) / double(ref.greedy.size());
  }
  return q;
}

CacheQuality compare_caches(const Model& model, const KVCache& exact, const KVCache& degraded,
                            const std::vector<int64_t>& continuation, int64_t agreement_tokens) {
  if (exact.tokens() != degraded.tokens())
    throw Error(fmt::format("compare_caches: exact cache has {} tokens, degraded {}", exact.tokens(),
                            degraded.tokens()));
  return compare_to_reference(model, make_reference(model, exact, continuation, agreement_tokens), degraded);
}

}  // namespace kvs::llm
