// Quality measurements with the model: loss of a text, and how much a
// degraded (e.g. decoded) KV cache hurts the continuation of its context:
// loss increase, KL divergence of the next-token distribution and top-1
// agreement (both teacher-forced over the continuation), greedy agreement.
#pragma once

#include <cstdint>
#include <vector>

#include "llm/kv_cache.h"
#include "llm/model.h"

namespace kvs {
class Progress;
}

namespace kvs::llm {

struct TextLoss {
  double nll_nats = 0;   // summed over scored tokens
  int64_t tokens = 0;    // scored tokens: all but the first
  double nats_per_token() const { return tokens ? nll_nats / double(tokens) : 0.0; }
};

// Negative log-likelihood of every token after the first given all before it.
// A text longer than `window_tokens` is scored in windows of that many tokens
// advancing by half a window: the first window scores its tokens 1..W-1, each
// later one only the tokens not scored before (the last W/2 or fewer), so
// every token after the first window sees at least W/2 tokens of context.
// `progress` (optional) advances by scored tokens.
TextLoss evaluate_text(const Model& model, const std::vector<int64_t>& tokens, int64_t window_tokens,
                       Progress* progress = nullptr);

// Mean NLL (nats/token) of continuation[1:] given `context` then the
// continuation's earlier tokens: continuation[0] is the last token the cache
// does not cover (the one whose logits predict continuation[1]). Pass the
// cache of context[:-1] and continuation = {context.back(), text...}.
double continuation_nll(const Model& model, const KVCache& context, const std::vector<int64_t>& continuation);

// Next-token log-probabilities (float64 [n-1, vocab]) at each position of the
// continuation teacher-forced after `context`: row i predicts continuation[i+1].
at::Tensor continuation_log_probs(const Model& model, const KVCache& context, const std::vector<int64_t>& continuation);

// KL(P || Q) of two next-token distributions given as log-probabilities
// [positions, vocab], averaged over positions, and how often their argmax agree.
struct KlStats {
  double mean_nats = 0;     // mean over positions of sum_v p_v (log p_v - log q_v)
  // Standard error of the mean by batch means: the positions split into
  // consecutive blocks of kKlBlockTokens (the last one absorbs the rest), the
  // error taken from the spread of the block means:
  // sqrt(sum_b n_b (m_b - m)^2 / ((B - 1) n)), B = floor(n / kKlBlockTokens);
  // under 2 blocks, the i.i.d. error. Neighbouring positions' KL values are
  // correlated, so the i.i.d. error would be too small.
  double stderr_nats = 0;
  double iid_stderr_nats = 0;  // sd / sqrt(positions), for comparison
  double top1_agreement = 1;   // fraction of positions with equal argmax
  int64_t positions = 0;
};
inline constexpr int64_t kKlBlockTokens = 16;
KlStats kl_divergence(const at::Tensor& p_log_probs, const at::Tensor& q_log_probs);

// Greedy decoding of `n` tokens after `context` and `prompt` (prompt non-empty).
std::vector<int64_t> greedy_decode(const Model& model, const KVCache& context, const std::vector<int64_t>& prompt,
                                   int64_t n);

struct CacheQuality {
  double nll_exact_nats = 0;      // continuation_nll with the exact cache
  double nll_degraded_nats = 0;   // ... with the degraded cache
  double relative_increase = 0;   // degraded / exact - 1
  // Teacher-forced over the continuation: KL(P_exact || P_degraded) of the
  // next-token distribution (nats/token, with its standard error) and the
  // fraction of positions whose most likely token is the same.
  double kl_nats = 0;
  double kl_stderr_nats = 0;
  double top1_agreement = 1;
  int64_t kl_positions = 0;
  double agreement = 0;           // fraction of greedy tokens equal, position by position
  int64_t agreement_tokens = 0;
};

// What the exact cache gives, computed once and compared with many degraded
// caches of the same context.
struct CacheReference {
  int64_t context_tokens = 0;
  std::vector<int64_t> continuation;
  double nll_nats = 0;          // continuation_nll with the exact cache
  at::Tensor log_probs;         // continuation_log_probs with the exact cache
  std::vector<int64_t> greedy;  // greedy tokens after the continuation
};
CacheReference make_reference(const Model& model, const KVCache& exact, const std::vector<int64_t>& continuation,
                              int64_t agreement_tokens);
CacheQuality compare_to_reference(const Model& model, const CacheReference& reference, const KVCache& degraded);
// The teacher-forced part only (loss, KL, top-1; agreement left 0 with 0
// tokens): one forward pass over the continuation, no greedy decoding.
CacheQuality teacher_forced_quality(const Model& model, const CacheReference& reference, const KVCache& degraded);

// Compares an exact and a degraded cache of the same context on the same
// continuation (see continuation_nll), and greedy-decodes `agreement_tokens`
// tokens after continuation from each (agreement 1 when 0 tokens asked).
// Equals compare_to_reference(make_reference(...), degraded).
CacheQuality compare_caches(const Model& model, const KVCache& exact, const KVCache& degraded,
                            const std::vector<int64_t>& continuation, int64_t agreement_tokens);

}  // namespace kvs::llm
