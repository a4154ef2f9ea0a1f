#include "llm/selective.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include "base/error.h"
#include "llm/evaluate.h"

namespace kvs::llm {
namespace {

// Records every layer's queries and keys of a prefill.
class CaptureHook final : public AttentionHook {
 public:
  std::vector<at::Tensor> queries, keys;
  void layer_input(int64_t, const at::Tensor&) override {}
  at::Tensor select(int64_t, const at::Tensor& q, const at::Tensor& k) override {
    queries.push_back(q.to(at::kDouble));
    keys.push_back(k.to(at::kDouble));
    return {};
  }
};

// Columns `channels` [kvh, c] of x [kvh, rows, hd] -> [kvh, rows, c].
at::Tensor gather_channels(const at::Tensor& x, const at::Tensor& channels) {
  return x.gather(2, channels.unsqueeze(1).expand({x.size(0), x.size(1), channels.size(1)}));
}

// The attention scores the model computes from q.k products: times the
// config's scale (head_dim^-0.5; gemma2/3: query_pre_attn_scalar^-0.5), then
// gemma2's soft cap cap * tanh(s / cap) (llm/model.cpp).
at::Tensor model_scores(const ModelConfig& c, const at::Tensor& qk) {
  at::Tensor s = qk * c.attention_scale();
  if (c.attn_logit_softcapping > 0) s = at::tanh(s / c.attn_logit_softcapping) * c.attn_logit_softcapping;
  return s;
}

double sum_vec(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

}  // namespace

// ---- skewing -----------------------------------------------------------------

at::Tensor skew_queries(const at::Tensor& queries, const at::Tensor& skew) {
  const int64_t heads = queries.size(0), n = queries.size(1), hd = queries.size(2), kvh = skew.size(0);
  return at::matmul(queries.reshape({kvh, heads / kvh, n, hd}), skew.unsqueeze(1)).reshape({heads, n, hd});
}

at::Tensor skew_keys(const at::Tensor& keys, const at::Tensor& skew) { return at::matmul(keys, skew); }

SkewCalibration calibrate_skewing(const Model& model, const std::vector<int64_t>& warmup_tokens, double ratio,
                                  bool skew) {
  const ModelConfig& c = model.config();
  const int64_t hd = c.effective_head_dim(), kvh = c.num_key_value_heads, group = c.num_attention_heads / kvh;
  const int64_t n_channels = int64_t(double(hd) * ratio);
  if (!(ratio > 0 && ratio <= 1) || n_channels < 1)
    throw Error(fmt::format("skewing: partial weight ratio {} keeps no channel of {}", ratio, hd));
  if (int64_t(warmup_tokens.size()) < hd)
    throw Error(fmt::format("skewing: the warm-up prefill needs at least head_dim = {} tokens, got {}", hd,
                            warmup_tokens.size()));
  at::NoGradGuard no_grad;
  CaptureHook capture;
  model.forward(to_tensor(warmup_tokens), KVCache{}, &capture);
  SkewCalibration cal;
  cal.ratio = ratio;
  for (size_t l = 0; l < capture.queries.size(); ++l) {
    const at::Tensor& q = capture.queries[l];  // [heads, n, hd]
    const at::Tensor& k = capture.keys[l];     // [kvh, n, hd]
    const int64_t n = q.size(1);
    std::vector<at::Tensor> mats, chans;
    for (int64_t g = 0; g < kvh; ++g) {
      const at::Tensor qg = q.narrow(0, g * group, group).reshape({group * n, hd});
      auto [u, sq, vh] = at::linalg_svd(qg, /*full_matrices=*/false);
      const at::Tensor sk = at::linalg_svdvals(k[g]);
      // σ_q[c]·σ_k[c]; vector c goes to column rank(σ_q·σ_k)[c] (ascending), as InfiniGen's scatter.
      const at::Tensor ind = std::get<1>((sq * sk).sort());
      at::Tensor a = at::zeros({hd, hd}, q.options());
      a.index_copy_(1, ind, vh.t());
      if (!skew) a = at::eye(hd, q.options());
      const at::Tensor mass = at::matmul(qg, a).abs().sum(0);
      chans.push_back(std::get<0>(std::get<1>(mass.topk(n_channels)).sort()));
      mats.push_back(a);
    }
    cal.skew.push_back(at::stack(mats).to(model.device(), model.dtype()));
    cal.channels.push_back(at::stack(chans).to(model.device()));
  }
  return cal;
}

// ---- methods and stats ---------------------------------------------------------

std::string method_name(SelectMethod m) {
  switch (m) {
    case SelectMethod::kFull: return "full";
    case SelectMethod::kInfiniGen: return "infinigen";
    case SelectMethod::kOracle: return "oracle";
    case SelectMethod::kStreaming: return "streaming";
    case SelectMethod::kH2O: return "h2o";
  }
  return "?";
}

SelectMethod method_from_name(const std::string& name) {
  for (auto m : {SelectMethod::kFull, SelectMethod::kInfiniGen, SelectMethod::kOracle, SelectMethod::kStreaming,
                 SelectMethod::kH2O})
    if (method_name(m) == name) return m;
  throw Error(fmt::format("unknown selection method '{}' (full, infinigen, oracle, streaming, h2o)", name));
}

double SelectionStats::mean_fetched() const { return steps ? sum_vec(fetched) / double(steps * fetched.size()) : 1; }
double SelectionStats::mean_recall() const { return steps ? sum_vec(recall) / double(steps * recall.size()) : 1; }
double SelectionStats::mean_mass() const { return steps ? sum_vec(mass) / double(steps * mass.size()) : 1; }
std::vector<double> SelectionStats::fetched_per_layer() const {
  std::vector<double> out = fetched;
  for (double& x : out) x = steps ? x / double(steps) : 1;
  return out;
}
std::vector<double> SelectionStats::recall_per_layer() const {
  std::vector<double> out = recall;
  for (double& x : out) x = steps ? x / double(steps) : 1;
  return out;
}

// ---- decoder -------------------------------------------------------------------

SelectiveDecoder::SelectiveDecoder(const Model& model, SelectionConfig config, const SkewCalibration* calibration)
    : model_(&model), config_(std::move(config)), calibration_(calibration) {
  const int64_t L = model.config().num_hidden_layers;
  check_config();
  channels_.resize(size_t(L));
  partial_keys_.resize(size_t(L));
  speculated_.resize(size_t(L));
  h2o_score_.resize(size_t(L));
  h2o_present_.resize(size_t(L));
  stats_.fetched.assign(size_t(L), 0);
  stats_.recall.assign(size_t(L), 0);
  stats_.mass.assign(size_t(L), 0);
}

void SelectiveDecoder::check_config() const {
  const int64_t L = model_->config().num_hidden_layers;
  if (config_.method == SelectMethod::kInfiniGen) {
    if (calibration_ == nullptr) throw Error("selective: InfiniGen needs a skewing calibration");
    if (int64_t(calibration_->skew.size()) != L || int64_t(calibration_->channels.size()) != L)
      throw Error(fmt::format("selective: calibration has {} layers, the model {}", calibration_->skew.size(), L));
    if (!(config_.alpha > 0)) throw Error(fmt::format("selective: alpha must be > 0, got {}", config_.alpha));
    if (config_.full_front_layers < 0) throw Error("selective: full_front_layers must be >= 0");
    if (config_.lookahead < 0 || config_.lookahead > config_.full_front_layers)
      throw Error(fmt::format("selective: lookahead {} must be in [0, full_front_layers = {}]", config_.lookahead,
                              config_.full_front_layers));
  }
  if (config_.budget_tokens < 0) throw Error("selective: budget_tokens must be >= 0");
  if (config_.budget_tokens == 0 && !(config_.budget > 0 && config_.budget <= 1))
    throw Error(fmt::format("selective: budget must be in (0, 1], got {}", config_.budget));
  if (config_.sink_tokens < 0) throw Error("selective: sink_tokens must be >= 0");
}

SelectiveDecoder SelectiveDecoder::with_config(const SelectionConfig& config) const {
  if (config.method != config_.method)
    throw Error(fmt::format("selective: with_config changes the method ({} -> {})", method_name(config_.method),
                            method_name(config.method)));
  if (decoding_ && config.method == SelectMethod::kInfiniGen && config.warmup_channels != config_.warmup_channels)
    throw Error("selective: with_config changes where the partial channels come from (the prefill picked them)");
  SelectiveDecoder d = *this;
  d.config_ = config;
  d.check_config();
  d.stats_ = SelectionStats{};
  const size_t L = partial_keys_.size();
  d.stats_.fetched.assign(L, 0);
  d.stats_.recall.assign(L, 0);
  d.stats_.mass.assign(L, 0);
  return d;
}

bool SelectiveDecoder::selects(int64_t layer) const {
  const int64_t L = model_->config().num_hidden_layers;
  switch (config_.method) {
    case SelectMethod::kFull: return false;
    case SelectMethod::kInfiniGen:
      return layer >= config_.full_front_layers && !(config_.full_last_layer && layer == L - 1);
    default: return true;
  }
}

int64_t SelectiveDecoder::budget_for(int64_t past) const {
  int64_t b = config_.budget_tokens > 0 ? config_.budget_tokens
                                        : int64_t(std::floor(config_.budget * double(past) + 1e-9));
  return std::clamp<int64_t>(b, 1, past);
}

int64_t SelectiveDecoder::window_begin(int64_t layer, int64_t past) const {
  // The query at position `past` sees keys past - W < k <= past (llm/model.cpp).
  const int64_t window = model_->config().layer_window(layer);
  return window > 0 ? std::max<int64_t>(0, past - window + 1) : 0;
}

ForwardResult SelectiveDecoder::prefill(const std::vector<int64_t>& tokens) {
  decoding_ = false;
  ForwardResult r = model_->forward(to_tensor(tokens), KVCache{}, this);
  decoding_ = true;
  position_ = int64_t(tokens.size());
  return r;
}

ForwardResult SelectiveDecoder::step(int64_t token, const KVCache& past) {
  if (!decoding_) throw Error("selective: step() before prefill()");
  if (past.tokens() != position_)
    throw Error(fmt::format("selective: step after {} tokens, the decoder is at {}", past.tokens(), position_));
  for (auto& s : speculated_) s = at::Tensor();
  step_row_.assign(speculated_.size(), 1.0);
  ForwardResult r = model_->forward(to_tensor({token}), past, this);
  ++position_;
  ++stats_.steps;
  if (stats_.record_steps) stats_.step_fetched.push_back(step_row_);
  return r;
}

void SelectiveDecoder::layer_input(int64_t layer, const at::Tensor& hidden) {
  // InfiniGen: layer l's input speculates layer l+1's attention (the partial
  // query of layer l+1 against its partial keys), before layer l+1 runs
  // (lookahead 1; with 0, layer l's own input, before its attention).
  const int64_t next = layer + config_.lookahead;
  if (!decoding_ || config_.method != SelectMethod::kInfiniGen || next >= int64_t(speculated_.size()) ||
      !selects(next))
    return;
  speculated_[size_t(next)] = infinigen_keep(next, hidden);
}

at::Tensor SelectiveDecoder::infinigen_keep(int64_t layer, const at::Tensor& hidden) {
  const ModelConfig& c = model_->config();
  const int64_t heads = c.num_attention_heads, kvh = c.num_key_value_heads, hd = c.effective_head_dim();
  const int64_t group = heads / kvh, past = position_;
  const size_t l = size_t(layer);
  // Layer l's query from the previous layer's input, with RoPE at this
  // step's position (Llama: the skew comes after RoPE, so the whole query is
  // formed and its partial channels kept, as InfiniGen's modeling_llama_ours).
  const LayerWeights& w = model_->layer_weights(l);
  at::Tensor q = at::linear(hidden.to(at::kFloat), w.q_proj.to(at::kFloat),
                            w.q_bias.defined() ? w.q_bias.to(at::kFloat) : at::Tensor())  // qwen2's bias
                     .view({heads, 1, hd});
  if (w.q_norm.defined()) {  // qwen3 (gemma3: times 1 + w): the head's RMSNorm before RoPE, as Model::forward
    const at::Tensor var = q.pow(2).mean(-1, /*keepdim=*/true);
    const at::Tensor g = w.q_norm.to(at::kFloat);
    q = q * at::rsqrt(var + c.rms_norm_eps) * (c.gemma_family() ? g + 1.0 : g);
  }
  // The layer's own RoPE (gemma3's sliding layers: rope_local_base_freq).
  const ModelConfig rc = c.rope_config(layer);
  const auto inv = rope_inv_freq(rc, past + 1);
  const at::Tensor inv_t = at::tensor(at::ArrayRef<float>(inv)).to(q.device());
  const at::Tensor pos = at::full({1}, double(past), q.options());
  const at::Tensor freqs = at::outer(pos, inv_t);
  const at::Tensor emb = at::cat({freqs, freqs}, -1);
  const double att = rope_attention_scaling(rc);  // yarn's cos/sin factor (1 otherwise)
  q = apply_rope(q, emb.cos() * att, emb.sin() * att);  // phi3's partial rotary: the first rotary_dim dims
  const at::Tensor pq = gather_channels(skew_queries(q, calibration_->skew[l].to(at::kFloat)).view({kvh, group, hd}),
                                        channels_[l]);  // [kvh, group, c]
  const at::Tensor& pk = partial_keys_[l];              // [kvh, past, c]
  if (pk.size(1) != past)
    throw Error(fmt::format("selective: layer {} has {} partial keys, {} past tokens", layer, pk.size(1), past));
  // Only the keys the layer's attention sees (its sliding window) are scored.
  const int64_t begin = window_begin(layer, past), seen = past - begin;
  at::Tensor keep = at::zeros({kvh, past}, pk.options().dtype(at::kBool));
  if (seen < 1) return keep;
  const at::Tensor approx =  // [kvh, group, seen], scaled (and gemma2's soft cap) as the model's scores
      model_scores(c, at::matmul(pq, pk.narrow(1, begin, seen).to(at::kFloat).transpose(1, 2)));
  // Tokens within alpha of each head's maximum, counted per query head and
  // averaged over the layer's heads: one count per layer (kv_selection_controller).
  const at::Tensor thr = approx.amax(-1, /*keepdim=*/true) - config_.alpha;
  const double mean = (approx > thr).sum(-1).to(at::kDouble).mean().item<double>();
  const int64_t count = std::clamp<int64_t>(int64_t(mean), 1, budget_for(seen));
  keep.narrow(1, begin, seen).scatter_(1, std::get<1>(approx.amax(1).topk(count, -1)), true);
  return keep;
}

at::Tensor SelectiveDecoder::h2o_keep(int64_t layer, int64_t past, int64_t begin) {
  at::Tensor& present = h2o_present_[size_t(layer)];
  const at::Tensor& score = h2o_score_[size_t(layer)];
  const int64_t target = budget_for(past - begin), recent = target / 2;
  const int64_t kvh = present.size(0);
  at::Tensor is_recent = at::zeros({past}, present.options());
  is_recent.narrow(0, past - recent, recent).fill_(true);
  // Heavy hitters come from the window only: a token that left it is never
  // attended again, so it leaves the cache (evicted).
  at::Tensor in_window = at::zeros({past}, present.options());
  in_window.narrow(0, begin, past - begin).fill_(true);
  at::Tensor keep = present.logical_and(is_recent);  // [kvh, past]
  for (int64_t g = 0; g < kvh; ++g) {
    const int64_t heavy = target - keep[g].sum().item<int64_t>();
    const at::Tensor cand = present[g].logical_and(is_recent.logical_not()).logical_and(in_window);
    const int64_t n_cand = cand.sum().item<int64_t>();
    const int64_t take = std::min(heavy, n_cand);
    if (take <= 0) continue;
    const at::Tensor s = score[g].masked_fill(cand.logical_not(), -std::numeric_limits<double>::infinity());
    keep[g].index_fill_(0, std::get<1>(s.topk(take)), true);
  }
  present = keep;
  return keep;
}

void SelectiveDecoder::record(int64_t layer, const at::Tensor& exact, const at::Tensor& keep, int64_t begin) {
  // exact: [kvh, group, past + 1] scaled scores of the current query (last =
  // its own key); the layer's attention sees keys [begin, past] (its window).
  const int64_t kvh = exact.size(0), past = exact.size(2) - 1, seen = past - begin;
  if (seen < 1) {  // a window of one key (the token's own): nothing to fetch
    stats_.fetched[size_t(layer)] += 1;
    stats_.recall[size_t(layer)] += 1;
    stats_.mass[size_t(layer)] += 1;
    return;
  }
  const at::Tensor window = exact.narrow(2, begin, seen + 1).to(at::kDouble);  // [kvh, group, seen + 1]
  const at::Tensor in = keep.narrow(1, begin, seen);                            // [kvh, seen]
  const at::Tensor agg = window.narrow(2, 0, seen).amax(1);                     // [kvh, seen]
  double fetched = 0, recall = 0;
  for (int64_t g = 0; g < kvh; ++g) {
    const int64_t k = in[g].sum().item<int64_t>();
    fetched += double(k) / double(seen);
    if (k == 0) continue;
    const at::Tensor top = std::get<1>(agg[g].topk(k));
    recall += double(in[g].index_select(0, top).sum().item<int64_t>()) / double(k);
  }
  // The attention the model really computes: softmax over the window's keys.
  const at::Tensor probs = at::softmax(window, -1).narrow(2, 0, seen);  // [kvh, group, seen]
  const at::Tensor on = (probs * in.unsqueeze(1).to(at::kDouble)).sum(-1);
  const double mass = (on / probs.sum(-1)).mean().item<double>();
  fetched /= double(kvh);
  recall /= double(kvh);
  stats_.fetched[size_t(layer)] += fetched;
  stats_.recall[size_t(layer)] += recall;
  stats_.mass[size_t(layer)] += mass;
  step_row_[size_t(layer)] = fetched;
}

at::Tensor SelectiveDecoder::select(int64_t layer, const at::Tensor& queries, const at::Tensor& keys) {
  const int64_t kvh = keys.size(0), hd = keys.size(2), group = queries.size(0) / kvh;
  const ModelConfig& mc = model_->config();
  const size_t l = size_t(layer);
  const int64_t window = model_->config().layer_window(layer);  // 0: full attention
  if (!decoding_) {
    // Prefill: full attention; record what decoding will need.
    if (config_.method == SelectMethod::kInfiniGen) {
      const at::Tensor& skew = calibration_->skew[l];
      if (config_.warmup_channels) {
        channels_[l] = calibration_->channels[l];
      } else {
        // InfiniGen's prefill stage (partial_weight_index_generation): the
        // columns of the prompt's skewed queries with the largest summed
        // magnitude, per KV head over its query heads and all prompt tokens.
        const int64_t n = queries.size(1), c = calibration_->channels[l].size(1);
        const at::Tensor mass = skew_queries(queries, skew).reshape({kvh, group * n, hd}).abs().sum(1);  // [kvh, hd]
        channels_[l] = std::get<0>(std::get<1>(mass.topk(c, -1)).sort(-1)).to(calibration_->channels[l].device());
      }
      partial_keys_[l] = gather_channels(skew_keys(keys, skew), channels_[l]);
    }
    if (config_.method == SelectMethod::kH2O) {
      // Attention accumulated over all prefill queries (causal), per KV head.
      const int64_t n = queries.size(1);
      at::Tensor acc = at::zeros({kvh, n}, keys.options().dtype(at::kDouble));
      const at::Tensor kd = keys.to(at::kDouble);
      const at::Tensor qd = queries.to(at::kDouble).reshape({kvh, group, n, hd});
      const int64_t block = 256;
      for (int64_t b0 = 0; b0 < n; b0 += block) {
        const int64_t nb = std::min(block, n - b0);
        // [kvh, group, nb, n]
        at::Tensor s = model_scores(mc, at::matmul(qd.narrow(2, b0, nb), kd.transpose(1, 2).unsqueeze(1)));
        const at::Tensor pos = at::arange(b0, b0 + nb, keys.options().dtype(at::kLong)).unsqueeze(1);
        const at::Tensor kpos = at::arange(n, keys.options().dtype(at::kLong)).unsqueeze(0);
        at::Tensor unseen = kpos > pos;  // causal, and the layer's sliding window (q - W < k <= q)
        if (window > 0) unseen = unseen.logical_or(kpos <= pos - window);
        s.masked_fill_(unseen, -std::numeric_limits<double>::infinity());
        acc += at::softmax(s, -1).sum({1, 2});
      }
      h2o_score_[l] = acc;
      h2o_present_[l] = at::ones({kvh, n}, keys.options().dtype(at::kBool));
    }
    return {};
  }
  if (queries.size(1) != 1) throw Error("selective: decoding steps take one token");
  const int64_t past = keys.size(1) - 1;
  if (past < 1) return {};
  const at::Tensor exact =  // [kvh, group, past + 1], as the model scores them
      model_scores(mc, at::matmul(queries.reshape({kvh, group, hd}), keys.transpose(1, 2)));
  // The past keys the layer's attention sees: [begin, past) (all but on a
  // sliding-window layer). Every method chooses among them only.
  const int64_t begin = window_begin(layer, past), seen = past - begin;
  at::Tensor keep;  // [kvh, past] bool, false outside [begin, past)
  if (selects(layer)) {
    const auto bool_opts = keys.options().dtype(at::kBool);
    if (seen < 1) {
      keep = at::zeros({kvh, past}, bool_opts);  // only the token's own key is seen
    } else {
      switch (config_.method) {
        case SelectMethod::kInfiniGen:
          keep = speculated_[l];
          if (!keep.defined()) throw Error(fmt::format("selective: layer {} was not speculated", layer));
          break;
        case SelectMethod::kOracle: {
          const at::Tensor agg = exact.narrow(2, begin, seen).amax(1);
          keep = at::zeros({kvh, past}, bool_opts);
          keep.narrow(1, begin, seen).scatter_(1, std::get<1>(agg.topk(budget_for(seen), -1)), true);
          break;
        }
        case SelectMethod::kStreaming: {
          // Sink tokens that left the window are not attended: the budget
          // goes to recent tokens instead. Sinks in the window are at its
          // front and the recent tokens at its back, so they never overlap.
          const int64_t b = budget_for(seen), sink_end = std::min(config_.sink_tokens, b);
          const int64_t sinks = std::max<int64_t>(0, sink_end - begin);
          keep = at::zeros({kvh, past}, bool_opts);
          if (sinks > 0) keep.narrow(1, begin, sinks).fill_(true);
          keep.narrow(1, past - (b - sinks), b - sinks).fill_(true);
          break;
        }
        case SelectMethod::kH2O: keep = h2o_keep(layer, past, begin); break;
        case SelectMethod::kFull: break;
      }
    }
  }
  if (config_.method == SelectMethod::kInfiniGen) {
    const at::Tensor mine = keys.narrow(1, past, 1);
    partial_keys_[l] =
        at::cat({partial_keys_[l], gather_channels(skew_keys(mine, calibration_->skew[l]), channels_[l])}, 1);
  }
  if (config_.method == SelectMethod::kH2O) {
    // H2O accumulates the attention each token receives with the kept set.
    const at::Tensor with_self = at::cat({keep, at::ones({kvh, 1}, keep.options())}, 1);
    at::Tensor s = exact.to(at::kDouble).masked_fill(with_self.logical_not().unsqueeze(1),
                                                      -std::numeric_limits<double>::infinity());
    const at::Tensor got = at::softmax(s, -1).sum(1);  // [kvh, past + 1]
    h2o_score_[l] = at::cat({h2o_score_[l] + got.narrow(1, 0, past), got.narrow(1, past, 1)}, 1);
    h2o_present_[l] = at::cat({h2o_present_[l], at::ones({kvh, 1}, keep.options())}, 1);
  }
  if (!keep.defined()) {
    stats_.fetched[l] += 1;
    stats_.recall[l] += 1;
    stats_.mass[l] += 1;
    return {};
  }
  record(layer, exact, keep, begin);
  return at::cat({keep, at::ones({kvh, 1}, keep.options())}, 1).unsqueeze(1);  // [kvh, 1, past + 1]
}

// ---- evaluation -----------------------------------------------------------------

namespace {

int64_t argmax_last(const at::Tensor& logits) { return logits[logits.size(0) - 1].argmax().item<int64_t>(); }

at::Tensor log_probs_last(const at::Tensor& logits) {
  return at::log_softmax(logits[logits.size(0) - 1].to(at::kDouble), -1);
}

void add_stats(SelectionStats& into, const SelectionStats& s) {
  for (size_t l = 0; l < into.fetched.size(); ++l) {
    into.fetched[l] += s.fetched[l];
    into.recall[l] += s.recall[l];
    into.mass[l] += s.mass[l];
  }
  into.steps += s.steps;
}

}  // namespace

SelectiveResult evaluate_selective(const Model& model, const SelectiveContext& ctx, const SelectiveDecoder& prefilled,
                                   const KVCache& cache, const SelectiveReference* reference) {
  at::NoGradGuard no_grad;
  const int64_t T = int64_t(ctx.continuation.size());
  if (T < 2) throw Error(fmt::format("context {}: the continuation needs at least 2 tokens", ctx.id));
  if (ctx.greedy_tokens < 1) throw Error("selective: greedy_tokens must be >= 1");
  SelectiveResult res;

  // Continuation, teacher-forced, then greedy generation.
  SelectiveDecoder dec = prefilled.with_config(prefilled.config());
  KVCache cur = cache;
  std::vector<at::Tensor> rows;
  double nll = 0;
  ForwardResult r;
  for (int64_t t = 0; t < T; ++t) {
    if (t == T - 1) dec.stats().record_steps = true;  // this step's logits give the first greedy token
    r = dec.step(ctx.continuation[size_t(t)], cur);
    cur = std::move(r.cache);
    if (t + 1 < T) {
      at::Tensor lp = log_probs_last(r.logits);
      nll -= lp[ctx.continuation[size_t(t + 1)]].item<double>();
      rows.push_back(std::move(lp));
    }
  }
  res.nll_nats = nll / double(T - 1);
  res.log_probs = at::stack(rows);
  for (int64_t i = 0; i < ctx.greedy_tokens; ++i) {
    const int64_t next = argmax_last(r.logits);
    res.greedy.push_back(next);
    if (i + 1 < ctx.greedy_tokens) {
      r = dec.step(next, cur);
      cur = std::move(r.cache);
    }
  }
  SelectionStats stats = dec.stats();
  res.fetched_by_step = stats.step_fetched;

  // The question, from the context again.
  if (!ctx.question.empty()) {
    SelectiveDecoder qdec = prefilled.with_config(prefilled.config());
    KVCache qc = cache;
    ForwardResult qr;
    for (int64_t t : ctx.question) {
      qr = qdec.step(t, qc);
      qc = std::move(qr.cache);
    }
    std::vector<int64_t> got;
    for (size_t i = 0; i < ctx.answer.size(); ++i) {
      got.push_back(argmax_last(qr.logits));
      if (i + 1 < ctx.answer.size()) {
        qr = qdec.step(got.back(), qc);
        qc = std::move(qr.cache);
      }
    }
    res.task_accuracy = got == ctx.answer ? 1.0 : 0.0;
    add_stats(stats, qdec.stats());
  }

  res.fetched_per_layer = stats.fetched_per_layer();
  res.recall_per_layer = stats.recall_per_layer();
  res.fetched = stats.mean_fetched();
  res.recall = stats.mean_recall();
  res.mass = stats.mean_mass();
  res.steps = stats.steps;
  if (reference != nullptr) {
    if (reference->log_probs.size(0) != res.log_probs.size(0) || reference->greedy.size() != res.greedy.size())
      throw Error(fmt::format("context {}: the reference was made for another continuation", ctx.id));
    const at::Tensor& ref = reference->log_probs;
    res.kl_divergence = kl_divergence(ref, res.log_probs).mean_nats;
    res.loss_increase = reference->nll_nats > 0 ? res.nll_nats / reference->nll_nats - 1.0 : 0.0;
    int64_t same = 0;
    for (size_t i = 0; i < res.greedy.size(); ++i) same += res.greedy[i] == reference->greedy[i];
    res.greedy_agreement = double(same) / double(res.greedy.size());
  }
  return res;
}

SelectiveReference make_selective_reference(const Model& model, const SelectiveContext& ctx) {
  SelectiveDecoder dec(model, SelectionConfig{});
  const KVCache cache = dec.prefill(ctx.context).cache;
  SelectiveResult r = evaluate_selective(model, ctx, dec, cache, nullptr);
  SelectiveReference ref;
  ref.log_probs = r.log_probs;
  ref.greedy = r.greedy;
  ref.nll_nats = r.nll_nats;
  ref.task_accuracy = r.task_accuracy;
  return ref;
}

}  // namespace kvs::llm
