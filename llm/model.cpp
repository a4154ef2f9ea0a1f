#include "llm/model.h"

#include <dlfcn.h>

#include <cstdlib>
#include <tuple>
#include <utility>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include "base/error.h"

namespace kvs::llm {
namespace {

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

void check_shape(const at::Tensor& t, std::vector<int64_t> expect, const std::string& name) {
  if (!t.defined()) throw Error(fmt::format("model: missing tensor '{}'", name));
  if (t.sizes() != at::IntArrayRef(expect))
    throw Error(fmt::format("model: tensor '{}' has shape {}, expected {}", name, shape_str(t.sizes()),
                            shape_str(expect)));
}

// HF LlamaRMSNorm: normalize in float32, cast back, then scale. GemmaRMSNorm
// (gemma = true): scale by (1 + weight) in float32, then cast back.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, bool gemma = false) {
  at::Tensor h = x.to(at::kFloat);
  at::Tensor var = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * at::rsqrt(var + eps);
  if (gemma) return (h * (weight.to(at::kFloat) + 1.0)).to(x.scalar_type());
  return weight * h.to(x.scalar_type());
}

// CPU libtorch 1.13 has no float16 matmul: there, products are computed in
// float32 and rounded back to float16 (GPU and other dtypes run natively).
bool needs_upcast(const at::Tensor& t) { return t.scalar_type() == at::kHalf && t.device().is_cpu(); }

// x w^T (+ b when defined), as torch.nn.Linear.
at::Tensor linear_(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {}) {
  if (needs_upcast(x))
    return at::linear(x.to(at::kFloat), w.to(at::kFloat), b.defined() ? b.to(at::kFloat) : b).to(at::kHalf);
  return at::linear(x, w, b);
}

at::Tensor matmul_(const at::Tensor& a, const at::Tensor& b) {
  if (needs_upcast(a)) return at::matmul(a.to(at::kFloat), b.to(at::kFloat)).to(at::kHalf);
  return at::matmul(a, b);
}

// gelu_pytorch_tanh (Gemma's GeGLU).
at::Tensor gelu_tanh_(const at::Tensor& x) {
  if (needs_upcast(x)) return at::gelu(x.to(at::kFloat), "tanh").to(at::kHalf);
  return at::gelu(x, "tanh");
}

// cap * tanh(x / cap) (Gemma 2's soft cap), in x's dtype as HF; cap 0: x.
at::Tensor softcap_(const at::Tensor& x, double cap) {
  if (cap <= 0) return x;
  if (needs_upcast(x)) return (at::tanh(x.to(at::kFloat) / cap) * cap).to(at::kHalf);
  return at::tanh(x / cap) * cap;
}

at::Tensor silu_(const at::Tensor& x) {
  if (needs_upcast(x)) return at::silu(x.to(at::kFloat)).to(at::kHalf);
  return at::silu(x);
}

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t rd = cos.size(-1), hd = x.size(-1);
  if (rd == hd) return x * cos + rotate_half(x) * sin;
  const at::Tensor rot = x.narrow(-1, 0, rd);
  return at::cat({rot * cos + rotate_half(rot) * sin, x.narrow(-1, rd, hd - rd)}, -1);
}

std::string set_cpu_threads(int threads, int blas_threads) {
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  const bool passive = policy != nullptr && (std::string(policy) == "passive" || std::string(policy) == "PASSIVE");
  at::set_num_threads(passive ? std::max(1, threads) : 1);
  using SetThreads = void (*)(int);
  if (auto f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    f(std::max(1, blas_threads > 0 ? blas_threads : threads));
    return "openblas";
  }
  return "unknown";
}

at::Tensor to_tensor(const std::vector<int64_t>& ids) {
  return at::tensor(at::ArrayRef<int64_t>(ids), at::TensorOptions().dtype(at::kLong));
}

Model::Model(ModelConfig config, at::Tensor embed_tokens, std::vector<LayerWeights> layers, at::Tensor norm,
             at::Tensor lm_head)
    : config_(std::move(config)),
      embed_tokens_(std::move(embed_tokens)),
      layers_(std::move(layers)),
      norm_(std::move(norm)),
      lm_head_(std::move(lm_head)) {
  config_.validate("model config");
  const int64_t H = config_.hidden_size, hd = config_.effective_head_dim();
  const int64_t q = config_.num_attention_heads * hd, kv = config_.num_key_value_heads * hd;
  const int64_t I = config_.intermediate_size;
  check_shape(embed_tokens_, {config_.vocab_size, H}, "model.embed_tokens.weight");
  if (int64_t(layers_.size()) != config_.num_hidden_layers)
    throw Error(fmt::format("model: {} layers given, config says {}", layers_.size(), config_.num_hidden_layers));
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto& w = layers_[i];
    const std::string p = fmt::format("model.layers.{}.", i);
    check_shape(w.input_layernorm, {H}, p + "input_layernorm.weight");
    check_shape(w.q_proj, {q, H}, p + "self_attn.q_proj.weight");
    check_shape(w.k_proj, {kv, H}, p + "self_attn.k_proj.weight");
    check_shape(w.v_proj, {kv, H}, p + "self_attn.v_proj.weight");
    if (config_.qkv_bias()) {
      check_shape(w.q_bias, {q}, p + "self_attn.q_proj.bias");
      check_shape(w.k_bias, {kv}, p + "self_attn.k_proj.bias");
      check_shape(w.v_bias, {kv}, p + "self_attn.v_proj.bias");
    } else if (w.q_bias.defined() || w.k_bias.defined() || w.v_bias.defined()) {
      throw Error(fmt::format("model: layer {} has q/k/v biases, which model_type '{}' does not have", i,
                              config_.model_type));
    }
    check_shape(w.o_proj, {H, q}, p + "self_attn.o_proj.weight");
    if (config_.qk_norm()) {
      check_shape(w.q_norm, {hd}, p + "self_attn.q_norm.weight");
      check_shape(w.k_norm, {hd}, p + "self_attn.k_norm.weight");
    } else if (w.q_norm.defined() || w.k_norm.defined()) {
      throw Error(fmt::format("model: layer {} has q/k norms, which model_type '{}' does not have", i,
                              config_.model_type));
    }
    check_shape(w.post_attention_layernorm, {H}, p + "post_attention_layernorm.weight");
    if (config_.sandwich_norms()) {
      check_shape(w.pre_feedforward_layernorm, {H}, p + "pre_feedforward_layernorm.weight");
      check_shape(w.post_feedforward_layernorm, {H}, p + "post_feedforward_layernorm.weight");
    } else if (w.pre_feedforward_layernorm.defined() || w.post_feedforward_layernorm.defined()) {
      throw Error(fmt::format("model: layer {} has feedforward norms, which model_type '{}' does not have", i,
                              config_.model_type));
    }
    check_shape(w.gate_proj, {I, H}, p + "mlp.gate_proj.weight");
    check_shape(w.up_proj, {I, H}, p + "mlp.up_proj.weight");
    check_shape(w.down_proj, {H, I}, p + "mlp.down_proj.weight");
  }
  check_shape(norm_, {H}, "model.norm.weight");
  if (!config_.tie_word_embeddings) check_shape(lm_head_, {config_.vocab_size, H}, "lm_head.weight");
  else lm_head_ = at::Tensor();
}

Model Model::random(const ModelConfig& config, uint64_t seed, at::ScalarType dtype, at::Device device) {
  config.validate("model config");
  auto gen = at::detail::createCPUGenerator(seed);
  auto opts = at::TensorOptions().dtype(at::kFloat);
  auto normal = [&](std::vector<int64_t> shape) {
    return at::normal(0.0, 0.02, shape, gen, opts).to(device, dtype);
  };
  // Gemma's norms scale by (1 + weight): HF initialises them at 0.
  auto ones = [&](int64_t n) {
    return (config.gemma_family() ? at::zeros({n}, opts) : at::ones({n}, opts)).to(device, dtype);
  };
  const int64_t H = config.hidden_size, hd = config.effective_head_dim(), I = config.intermediate_size;
  at::Tensor embed = normal({config.vocab_size, H});
  std::vector<LayerWeights> layers;
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    LayerWeights w;
    w.input_layernorm = ones(H);
    w.q_proj = normal({config.num_attention_heads * hd, H});
    w.k_proj = normal({config.num_key_value_heads * hd, H});
    w.v_proj = normal({config.num_key_value_heads * hd, H});
    if (config.qkv_bias()) {
      w.q_bias = normal({config.num_attention_heads * hd});
      w.k_bias = normal({config.num_key_value_heads * hd});
      w.v_bias = normal({config.num_key_value_heads * hd});
    }
    w.o_proj = normal({H, config.num_attention_heads * hd});
    if (config.qk_norm()) {
      w.q_norm = ones(hd);
      w.k_norm = ones(hd);
    }
    w.post_attention_layernorm = ones(H);
    if (config.sandwich_norms()) {
      w.pre_feedforward_layernorm = ones(H);
      w.post_feedforward_layernorm = ones(H);
    }
    w.gate_proj = normal({I, H});
    w.up_proj = normal({I, H});
    w.down_proj = normal({H, I});
    layers.push_back(std::move(w));
  }
  at::Tensor norm = ones(H);
  at::Tensor head = config.tie_word_embeddings ? at::Tensor() : normal({config.vocab_size, H});
  return Model(config, embed, std::move(layers), norm, head);
}

std::vector<std::pair<std::string, at::Tensor>> Model::named_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.emplace_back("model.embed_tokens.weight", embed_tokens_);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto& w = layers_[i];
    const std::string p = fmt::format("model.layers.{}.", i);
    out.emplace_back(p + "self_attn.q_proj.weight", w.q_proj);
    out.emplace_back(p + "self_attn.k_proj.weight", w.k_proj);
    out.emplace_back(p + "self_attn.v_proj.weight", w.v_proj);
    if (w.q_bias.defined()) {
      out.emplace_back(p + "self_attn.q_proj.bias", w.q_bias);
      out.emplace_back(p + "self_attn.k_proj.bias", w.k_bias);
      out.emplace_back(p + "self_attn.v_proj.bias", w.v_bias);
    }
    out.emplace_back(p + "self_attn.o_proj.weight", w.o_proj);
    if (w.q_norm.defined()) {
      out.emplace_back(p + "self_attn.q_norm.weight", w.q_norm);
      out.emplace_back(p + "self_attn.k_norm.weight", w.k_norm);
    }
    out.emplace_back(p + "mlp.gate_proj.weight", w.gate_proj);
    out.emplace_back(p + "mlp.up_proj.weight", w.up_proj);
    out.emplace_back(p + "mlp.down_proj.weight", w.down_proj);
    out.emplace_back(p + "input_layernorm.weight", w.input_layernorm);
    out.emplace_back(p + "post_attention_layernorm.weight", w.post_attention_layernorm);
    if (w.pre_feedforward_layernorm.defined()) {
      out.emplace_back(p + "pre_feedforward_layernorm.weight", w.pre_feedforward_layernorm);
      out.emplace_back(p + "post_feedforward_layernorm.weight", w.post_feedforward_layernorm);
    }
  }
  out.emplace_back("model.norm.weight", norm_);
  if (lm_head_.defined()) out.emplace_back("lm_head.weight", lm_head_);
  return out;
}

std::vector<at::Tensor> Model::parameters() const {
  std::vector<at::Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

void Model::to(at::ScalarType dtype, at::Device device) {
  auto conv = [&](at::Tensor& t) {
    if (t.defined()) t = t.to(device, dtype);
  };
  conv(embed_tokens_);
  for (auto& w : layers_) {
    for (at::Tensor* t : {&w.input_layernorm, &w.q_proj, &w.k_proj, &w.v_proj, &w.q_bias, &w.k_bias, &w.v_bias,
                          &w.o_proj, &w.q_norm, &w.k_norm, &w.post_attention_layernorm, &w.pre_feedforward_layernorm,
                          &w.post_feedforward_layernorm, &w.gate_proj, &w.up_proj, &w.down_proj})
      conv(*t);
  }
  conv(norm_);
  conv(lm_head_);
}

at::Tensor Model::run(const at::Tensor& tokens, const KVCache& past, KVCache* cache_out, AttentionHook* hook) const {
  const int64_t B = tokens.size(0), n = tokens.size(1);
  const int64_t past_len = past.tokens();
  const int64_t heads = config_.num_attention_heads, kvh = config_.num_key_value_heads;
  const int64_t hd = config_.effective_head_dim(), group = heads / kvh;
  const auto dtype = embed_tokens_.scalar_type();
  const auto device = embed_tokens_.device();
  if (!past.empty() && past.layers() != config_.num_hidden_layers)
    throw Error(fmt::format("forward: past KV cache has {} layers, the model {}", past.layers(),
                            config_.num_hidden_layers));
  if (!past.empty() && B != 1) throw Error("forward: a past KV cache needs a batch of 1");
  if (past.values.size() != past.keys.size())
    throw Error(fmt::format("forward: past KV cache has {} key and {} value layers", past.keys.size(),
                            past.values.size()));
  for (size_t l = 0; l < past.keys.size(); ++l) {  // a cache of another model: say so, not an ATen shape error
    const std::vector<int64_t> want{kvh, past_len, hd};
    for (const at::Tensor* t : {&past.keys[l], &past.values[l]})
      if (t->sizes() != at::IntArrayRef(want))
        throw Error(fmt::format("forward: past KV cache layer {} has shape {}, the model needs {}", l,
                                shape_str(t->sizes()), shape_str(want)));
  }
  const int64_t vocab = config_.vocab_size;
  if (n > 0) {
    const int64_t lo = tokens.min().item<int64_t>(), hi = tokens.max().item<int64_t>();
    if (lo < 0 || hi >= vocab) throw Error(fmt::format("forward: token id out of range [0, {})", vocab));
  }

  // RoPE tables [n, rotary_dim] for positions past_len .. past_len + n - 1
  // (float32, as HF) of a config's RoPE.
  auto rope_table = [&](const ModelConfig& rc) {
    const auto inv = rope_inv_freq(rc, past_len + n);
    at::Tensor inv_t = at::tensor(at::ArrayRef<float>(inv)).to(device);
    at::Tensor pos = at::arange(past_len, past_len + n, at::TensorOptions().dtype(at::kFloat).device(device));
    at::Tensor freqs = at::outer(pos, inv_t);
    at::Tensor emb = at::cat({freqs, freqs}, -1);
    at::Tensor cos = emb.cos(), sin = emb.sin();
    // YaRN's attention factor scales cos and sin in float32 (HF's attention_scaling).
    if (const double att = rope_attention_scaling(rc); att != 1.0) {
      cos = cos * att;
      sin = sin * att;
    }
    return std::pair{cos.to(dtype), sin.to(dtype)};
  };
  const auto [cos, sin] = rope_table(config_);
  // gemma3_text: the sliding layers' own RoPE (rope_local_base_freq, unscaled).
  at::Tensor cos_local, sin_local;
  for (int64_t l = 0; l < config_.num_hidden_layers && !cos_local.defined(); ++l)
    if (config_.local_rope(l)) std::tie(cos_local, sin_local) = rope_table(config_.local_rope_config());

  at::Tensor x = at::embedding(embed_tokens_, tokens.to(device));  // [B, n, H]
  const bool gemma = config_.gemma_family();
  // Gemma: embeddings times sqrt(hidden), the factor rounded to the model's dtype.
  if (gemma) x = x * at::scalar_tensor(std::sqrt(double(config_.hidden_size)), x.options());
  const double scale = config_.attention_scale();  // head_dim^-0.5 (gemma2/3: query_pre_attn_scalar^-0.5)
  const double score_cap = config_.attn_logit_softcapping;  // gemma2 (gemma3 when given); 0: none
  const int64_t block = query_block_ > 0 ? query_block_ : n;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const auto& w = layers_[l];
    at::Tensor h = rms_norm(x, w.input_layernorm, config_.rms_norm_eps, gemma);
    if (hook != nullptr) {
      if (B != 1) throw Error("forward: an attention hook needs a batch of 1");
      hook->layer_input(int64_t(l), h.select(0, 0));
    }
    at::Tensor q = linear_(h, w.q_proj, w.q_bias).view({B, n, heads, hd});
    at::Tensor k = linear_(h, w.k_proj, w.k_bias).view({B, n, kvh, hd});
    if (w.q_norm.defined()) {  // qwen3, gemma3 (1 + w): each head's query and key RMSNormed over head_dim, before RoPE
      q = rms_norm(q, w.q_norm, config_.rms_norm_eps, gemma);
      k = rms_norm(k, w.k_norm, config_.rms_norm_eps, gemma);
    }
    q = q.transpose(1, 2);  // [B, heads, n, hd]
    k = k.transpose(1, 2);  // [B, kvh, n, hd]
    at::Tensor v = linear_(h, w.v_proj, w.v_bias).view({B, n, kvh, hd}).transpose(1, 2);
    const bool local = config_.local_rope(int64_t(l));
    q = apply_rope(q, local ? cos_local : cos, local ? sin_local : sin);
    k = apply_rope(k, local ? cos_local : cos, local ? sin_local : sin);
    if (!past.empty()) {
      k = at::cat({past.keys[l].to(device, dtype).unsqueeze(0), k}, 2);
      v = at::cat({past.values[l].to(device, dtype).unsqueeze(0), v}, 2);
    }
    k = k.contiguous();
    v = v.contiguous();
    if (cache_out != nullptr) {
      cache_out->keys.push_back(k.select(0, 0));
      cache_out->values.push_back(v.select(0, 0));
    }
    at::Tensor keep;  // [kvh, n, keys] bool, or undefined: all keys
    if (hook != nullptr) {
      keep = hook->select(int64_t(l), q.select(0, 0), k.select(0, 0));
      if (keep.defined() && (keep.scalar_type() != at::kBool || keep.sizes() != at::IntArrayRef({kvh, n, k.size(2)})))
        throw Error(fmt::format("forward: attention hook returned a mask of shape {}, expected bool {}",
                                shape_str(keep.sizes()), shape_str({kvh, n, k.size(2)})));
      if (keep.defined()) keep = keep.to(device).unsqueeze(1);  // [kvh, 1, n, keys]
    }
    // Grouped-query attention without repeating K/V: the `group` query heads
    // [j*group, (j+1)*group) that share kv head j (HF's repeat_kv order) are
    // stacked as rows of one product with that head's keys.
    at::Tensor qg = q.reshape({B, kvh, group, n, hd});
    const int64_t window = config_.layer_window(int64_t(l));  // 0: full attention
    std::vector<at::Tensor> outs;
    for (int64_t b0 = 0; b0 < n; b0 += block) {
      const int64_t nb = std::min(block, n - b0);
      const int64_t end = past_len + b0 + nb;  // causal: later keys are all masked
      // Sliding window (HF's sliding_window_overlay): the query at position p
      // sees keys p - window < k <= p, so keys before the block's first
      // query's window are never seen.
      const int64_t begin = window > 0 ? std::max<int64_t>(0, past_len + b0 - window + 1) : 0;
      const int64_t keys = end - begin;
      at::Tensor qb = (qg.narrow(3, b0, nb) * scale).reshape({B, kvh, group * nb, hd});
      at::Tensor kb = k.narrow(2, begin, keys), vb = v.narrow(2, begin, keys);
      // [B, kvh, group*nb, keys]; gemma2 soft-caps them before the mask (Gemma2's eager attention).
      at::Tensor scores = softcap_(matmul_(qb, kb.transpose(-1, -2)), score_cap);
      const auto bool_opts = at::TensorOptions().dtype(at::kBool).device(device);
      if (window <= 0) {
        // Only the block's own keys can lie in the future: mask their strict upper triangle.
        const at::Tensor future = at::ones({nb, nb}, bool_opts).triu(1);
        scores.view({B, kvh, group, nb, keys}).narrow(-1, keys - nb, nb).masked_fill_(
            future, -std::numeric_limits<float>::infinity());
      } else {
        const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device);
        const at::Tensor qpos = at::arange(past_len + b0, end, long_opts).unsqueeze(1);  // [nb, 1]
        const at::Tensor kpos = at::arange(begin, end, long_opts).unsqueeze(0);          // [1, keys]
        const at::Tensor outside = (kpos > qpos).logical_or(kpos <= qpos - window);     // [nb, keys]
        scores.view({B, kvh, group, nb, keys}).masked_fill_(outside, -std::numeric_limits<float>::infinity());
      }
      if (keep.defined())
        scores.view({B, kvh, group, nb, keys}).masked_fill_(
            keep.narrow(2, b0, nb).narrow(3, begin, keys).logical_not(), -std::numeric_limits<float>::infinity());
      at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(dtype);
      outs.push_back(matmul_(probs, vb).view({B, kvh, group, nb, hd}));
    }
    at::Tensor attn = outs.size() == 1 ? outs[0] : at::cat(outs, 3);
    attn = attn.reshape({B, heads, n, hd}).transpose(1, 2).reshape({B, n, heads * hd});
    const bool sandwich = w.pre_feedforward_layernorm.defined();  // gemma2, gemma3_text
    if (sandwich) {
      // Gemma2DecoderLayer: the attention's and the MLP's outputs are normed before their residuals.
      x = x + rms_norm(linear_(attn, w.o_proj), w.post_attention_layernorm, config_.rms_norm_eps, gemma);
      h = rms_norm(x, w.pre_feedforward_layernorm, config_.rms_norm_eps, gemma);
    } else {
      x = x + linear_(attn, w.o_proj);
      h = rms_norm(x, w.post_attention_layernorm, config_.rms_norm_eps, gemma);
    }
    const at::Tensor gate = linear_(h, w.gate_proj);
    at::Tensor mlp = linear_((gemma ? gelu_tanh_(gate) : silu_(gate)) * linear_(h, w.up_proj), w.down_proj);
    if (sandwich) mlp = rms_norm(mlp, w.post_feedforward_layernorm, config_.rms_norm_eps, gemma);
    x = x + mlp;
  }
  x = rms_norm(x, norm_, config_.rms_norm_eps, gemma);
  // gemma2: the logits soft-capped in the model's dtype (Gemma2ForCausalLM).
  return softcap_(linear_(x, lm_head_.defined() ? lm_head_ : embed_tokens_), config_.final_logit_softcapping);
}

ForwardResult Model::forward(const at::Tensor& tokens, const KVCache& past, AttentionHook* hook) const {
  if (tokens.dim() != 1 || tokens.size(0) < 1) throw Error("forward: tokens must be a non-empty 1-D tensor");
  at::NoGradGuard no_grad;
  ForwardResult r;
  at::Tensor logits = run(tokens.to(at::kLong).unsqueeze(0), past, &r.cache, hook);
  r.logits = logits.select(0, 0).to(at::kFloat);
  return r;
}

at::Tensor Model::logits(const at::Tensor& tokens) const {
  if (tokens.dim() != 2 || tokens.size(1) < 1) throw Error("logits: tokens must be [batch, n] with n >= 1");
  return run(tokens.to(at::kLong), KVCache{}, nullptr);
}

}  // namespace kvs::llm
