#include "llm/evaluate.h"

#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include "base/error.h"
#include "base/progress.h"

namespace kvs::llm {
namespace {

// Sum of -log p(target[i]) over rows of float32 logits [n, V].
double sum_nll(const at::Tensor& logits, const at::Tensor& targets) {
  at::Tensor lp = at::log_softmax(logits.to(at::kDouble), -1);
  return -lp.gather(1, targets.unsqueeze(1)).sum().item<double>();
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
  r.nll_nats = continuation_nll(model, exact, continuation);
  r.greedy = greedy_decode(model, exact, continuation, agreement_tokens);
  return r;
}

CacheQuality compare_to_reference(const Model& model, const CacheReference& ref, const KVCache& degraded) {
  if (ref.context_tokens != degraded.tokens())
    throw Error(fmt::format("compare_caches: exact cache has {} tokens, degraded {}", ref.context_tokens,
                            degraded.tokens()));
  CacheQuality q;
  q.nll_exact_nats = ref.nll_nats;
  q.nll_degraded_nats = continuation_nll(model, degraded, ref.continuation);
  q.relative_increase = q.nll_exact_nats > 0 ? q.nll_degraded_nats / q.nll_exact_nats - 1.0 : 0.0;
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
