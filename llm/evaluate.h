// Quality measurements with the model: loss of a text, and how much a
// degraded (e.g. decoded) KV cache hurts the continuation of its context.
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

// Greedy decoding of `n` tokens after `context` and `prompt` (prompt non-empty).
std::vector<int64_t> greedy_decode(const Model& model, const KVCache& context, const std::vector<int64_t>& prompt,
                                   int64_t n);

struct CacheQuality {
  double nll_exact_nats = 0;      // continuation_nll with the exact cache
  double nll_degraded_nats = 0;   // ... with the degraded cache
  double relative_increase = 0;   // degraded / exact - 1
  double agreement = 0;           // fraction of greedy tokens equal, position by position
  int64_t agreement_tokens = 0;
};

// What the exact cache gives, computed once and compared with many degraded
// caches of the same context.
struct CacheReference {
  int64_t context_tokens = 0;
  std::vector<int64_t> continuation;
  double nll_nats = 0;          // continuation_nll with the exact cache
  std::vector<int64_t> greedy;  // greedy tokens after the continuation
};
CacheReference make_reference(const Model& model, const KVCache& exact, const std::vector<int64_t>& continuation,
                              int64_t agreement_tokens);
CacheQuality compare_to_reference(const Model& model, const CacheReference& reference, const KVCache& degraded);

// Compares an exact and a degraded cache of the same context on the same
// continuation (see continuation_nll), and greedy-decodes `agreement_tokens`
// tokens after continuation from each (agreement 1 when 0 tokens asked).
// Equals compare_to_reference(make_reference(...), degraded).
CacheQuality compare_caches(const Model& model, const KVCache& exact, const KVCache& degraded,
                            const std::vector<int64_t>& continuation, int64_t agreement_tokens);

}  // namespace kvs::llm
