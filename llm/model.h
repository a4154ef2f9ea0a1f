// A Llama-family decoder-only transformer on libtorch (ATen ops only, so
// autograd can train it): token embedding, per layer RMSNorm -> grouped-query
// attention with RoPE (HF "rotate_half" convention) -> residual -> RMSNorm ->
// SwiGLU MLP -> residual, final RMSNorm, LM head (tied or not); qwen2's q/k/v
// biases, qwen3's per-head q/k RMSNorm before RoPE, sliding-window layers (ModelConfig::layer_window), and gemma's
// scaled embeddings, (1 + w) RMSNorm and GeGLU (ModelConfig::model_type);
// gemma2's extra norms around attention and MLP, query_pre_attn_scalar and
// tanh soft caps on attention scores and final logits; gemma3_text's (1 + w)
// q/k norms and its sliding layers' own RoPE (ModelConfig::local_rope);
// phi3 computes as llama (its fused checkpoint weights are split at load into
// views and fused again by save_model), with partial RoPE when
// partial_rotary_factor < 1 (ModelConfig::rotary_dim). Numerics
// follow HF transformers' LlamaForCausalLM (eager attention, softmax in
// float32). On CPU, float16 products run in float32 and are rounded back
// (libtorch 1.13 has no CPU float16 matmul).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "llm/config.h"
#include "llm/kv_cache.h"

namespace kvs::llm {

// RoPE on x [..., head_dim] with cos/sin [n, rotary_dim] (HF's "rotate_half"
// convention): the first rotary_dim dims rotate, the rest pass unchanged
// (phi3's partial rotary; the whole head when rotary_dim == head_dim).
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// The weights of one decoder layer (shapes as HF: [out_features, in_features]).
struct LayerWeights {
  at::Tensor input_layernorm;           // [hidden]
  at::Tensor q_proj, k_proj, v_proj;    // [heads*head_dim, hidden], [kv_heads*head_dim, hidden] x2
  at::Tensor q_bias, k_bias, v_bias;    // qwen2: [heads*head_dim], [kv_heads*head_dim] x2; else undefined
  at::Tensor o_proj;                    // [hidden, heads*head_dim]
  at::Tensor q_norm, k_norm;            // qwen3, gemma3_text: [head_dim] RMSNorm weights of each query/key head; else undefined
  at::Tensor post_attention_layernorm;  // [hidden] (gemma2: of the attention's output, before the residual)
  // gemma2: [hidden] norms of the MLP's input and output; else undefined.
  at::Tensor pre_feedforward_layernorm, post_feedforward_layernorm;
  at::Tensor gate_proj, up_proj;        // [intermediate, hidden]
  at::Tensor down_proj;                 // [hidden, intermediate]
};

// Optional observer/selector of attention, called by Model::forward for each
// layer (llm/selective.h implements it for selective KV loading). Neither
// call may change its arguments.
class AttentionHook {
 public:
  virtual ~AttentionHook() = default;
  // Layer `layer`'s attention input (after its input RMSNorm), [n, hidden].
  virtual void layer_input(int64_t layer, const at::Tensor& hidden) = 0;
  // Queries [heads, n, head_dim] and all keys [kv_heads, keys, head_dim]
  // (both after RoPE; keys = past + n) of layer `layer`. Returns a bool
  // [kv_heads, n, keys] of the keys each query may attend to (shared by the
  // query heads of a KV head; causality and the layer's sliding window are
  // still applied), or an undefined tensor for full attention.
  virtual at::Tensor select(int64_t layer, const at::Tensor& queries, const at::Tensor& keys) = 0;
};

struct ForwardResult {
  at::Tensor logits;  // [tokens, vocab] (float32) for the new tokens
  KVCache cache;      // past followed by the new tokens' K and V
};

class Model {
 public:
  // A model with random weights (normal(0, 0.02) as HF's initializer_range,
  // norms at 1 (gemma: 0, as its norms scale by 1 + w; qwen3's q/k norms 1); qwen2's biases normal(0, 0.02) too, where HF zeroes them, so
  // that they matter), seeded deterministically, on `device` in `dtype`.
  static Model random(const ModelConfig& config, uint64_t seed, at::ScalarType dtype = at::kFloat,
                      at::Device device = at::kCPU);
  // A model over given weights; checks every shape (throws kvs::Error).
  Model(ModelConfig config, at::Tensor embed_tokens, std::vector<LayerWeights> layers, at::Tensor norm,
        at::Tensor lm_head /* undefined when tied */);

  const ModelConfig& config() const { return config_; }
  at::ScalarType dtype() const { return embed_tokens_.scalar_type(); }
  at::Device device() const { return embed_tokens_.device(); }
  codec::KVShape kv_shape() const { return config_.kv_shape(); }
  const LayerWeights& layer_weights(size_t layer) const { return layers_.at(layer); }

  // Every parameter with its HF name ("model.layers.0.self_attn.q_proj.weight",
  // "...q_proj.bias" for qwen2, "...self_attn.q_norm.weight" for qwen3, ...;
  // phi3's too are q/k/v_proj and gate/up_proj, unfused); lm_head.weight is absent when tied. Tensors share storage with the
  // model, so an optimizer stepping them trains the model.
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;
  std::vector<at::Tensor> parameters() const;
  // Casts/moves all weights (a copy unless already there).
  void to(at::ScalarType dtype, at::Device device);

  // Runs `tokens` (int64 [n], n >= 1) after `past` (may be empty): positions
  // continue from past.tokens(). Logits are float32 [n, vocab].
  // `hook` (optional) sees each layer's input and may restrict its attention.
  ForwardResult forward(const at::Tensor& tokens, const KVCache& past, AttentionHook* hook = nullptr) const;
  ForwardResult prefill(const at::Tensor& tokens) const { return forward(tokens, KVCache{}); }
  // Batched training forward without a cache: tokens int64 [batch, n] ->
  // logits [batch, n, vocab] in the model's dtype (differentiable).
  at::Tensor logits(const at::Tensor& tokens) const;

  // Queries are processed in blocks of this many tokens to bound attention
  // memory and skip masked keys (scores are [heads, block, keys]); 0 means
  // all at once. Default 256 (15% faster than 1024 at 4K tokens here).
  void set_query_block(int64_t tokens) { query_block_ = tokens; }

 private:
  // hidden [batch, n, H] at positions past..past+n-1; appends K/V per layer to
  // `cache_out` when not null.
  at::Tensor run(const at::Tensor& tokens, const KVCache& past, KVCache* cache_out,
                 AttentionHook* hook = nullptr) const;

  ModelConfig config_;
  at::Tensor embed_tokens_;
  std::vector<LayerWeights> layers_;
  at::Tensor norm_;
  at::Tensor lm_head_;  // undefined when tied
  int64_t query_block_ = 256;
};

// Sets the CPU threads: OpenBLAS's own pool (when the BLAS loaded is
// OpenBLAS) gets `blas_threads` (0: `threads`); libtorch's OpenMP pool gets
// `threads` only when OMP_WAIT_POLICY=passive is set in the environment, else
// 1: with libgomp's default spinning, 2 OpenMP threads on this shared 2-core
// machine made prefill 8x slower (bench/prefill_bench), while matmuls, most
// of the work, run in OpenBLAS's threads anyway. Returns the BLAS's name when
// known ("openblas"), else "unknown".
std::string set_cpu_threads(int threads, int blas_threads = 0 /* 0: threads */);

// Token ids as the int64 tensor forward() expects.
at::Tensor to_tensor(const std::vector<int64_t>& ids);

}  // namespace kvs::llm
