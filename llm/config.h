// The model's hyper-parameters, as HF's LlamaConfig names them (config.json),
// for the Llama family: llama, mistral (sliding window), qwen2 (q/k/v
// biases, per-layer sliding window), qwen3 (per-head RMSNorm of queries and
// keys, Qwen2's windows), gemma (v1: GeGLU, RMSNorm (1 + w), embeddings
// scaled by sqrt(hidden)), gemma2 (gemma v1's plus post-attention and
// pre/post-feedforward norms, attention scaled by query_pre_attn_scalar,
// tanh soft-capping of attention scores and final logits, windows on the
// layers layer_types marks), gemma3_text (gemma2's layers with per-head q/k
// norms and a RoPE of their own on sliding layers) and phi3 (Llama with fused
// qkv_proj/gate_up_proj weights, split at load: llm/checkpoint.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "codec/kv.h"

namespace kvs::llm {

// RoPE frequency scaling, from `rope_scaling` or the newer `rope_parameters`.
struct RopeScaling {
  std::string type = "default";  // default | linear | dynamic | llama3 | yarn | longrope (phi3)
  double factor = 1.0;
  double low_freq_factor = 1.0;                   // llama3
  double high_freq_factor = 4.0;                  // llama3
  // llama3 (config.json must give it), yarn (optional); 0: max_position_embeddings.
  int64_t original_max_position_embeddings = 0;
  // yarn (HF's _compute_yarn_parameters): frequencies blend from
  // extrapolated (rotating > beta_fast times over the original context) to
  // interpolated (< beta_slow times) along a linear ramp over the dimension
  // pairs between the two (floored/ceiled when truncate); cos and sin are
  // multiplied by the attention factor (0: derived, 0.1 ln(factor) + 1, or
  // the ratio of mscale and mscale_all_dim's when both are non-zero).
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double attention_factor = 0.0;
  double mscale = 0.0;
  double mscale_all_dim = 0.0;
  bool truncate = true;
  // longrope (phi3; HF's _compute_longrope_parameters): inverse frequency i
  // is divided by short_factor[i] while the forward call's last position + 1
  // <= original_max_position_embeddings, else by long_factor[i] (cached keys
  // keep theirs, as dynamic); cos and sin are multiplied by attention_factor
  // (0: sqrt(1 + ln(factor) / ln(original)), factor = max / original positions).
  std::vector<double> short_factor, long_factor;
};

struct ModelConfig {
  // HF's model_type: "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text" or "phi3". qwen2
  // adds biases to q_proj, k_proj and v_proj (Qwen2Attention hard-codes them;
  // o_proj has none). qwen3 (Qwen3ForCausalLM) has no biases but RMSNorms
  // each head's query and key over head_dim (weights q_norm, k_norm
  // [head_dim], eps rms_norm_eps) before RoPE. gemma (GemmaForCausalLM, v1) differs from llama in the
  // MLP's activation (gelu_pytorch_tanh), RMSNorm scaling by (1 + weight)
  // in float32, and embeddings multiplied by sqrt(hidden_size) rounded to
  // the model's dtype. phi3 (Phi3ForCausalLM) computes as llama (with
  // mistral's window on every layer); only its checkpoint differs, fusing
  // q/k/v into self_attn.qkv_proj and gate/up into mlp.gate_up_proj.
  // gemma2 (Gemma2ForCausalLM) computes as gemma, but each layer is
  // x + post_attention_layernorm(attn(input_layernorm(x))), then
  // h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h))), with
  // the scores and logits soft-capped (below). gemma3_text (Gemma3ForCausalLM)
  // computes as gemma2 plus qwen3's per-head q/k norms, Gemma-style (1 + w),
  // and sliding layers rotate with rope_local_base_freq (below).
  std::string model_type = "llama";
  int64_t vocab_size = 256;
  int64_t hidden_size = 32;
  int64_t intermediate_size = 64;
  int64_t num_hidden_layers = 2;
  int64_t num_attention_heads = 4;
  int64_t num_key_value_heads = 2;
  int64_t head_dim = 0;  // 0: hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  // Sliding-window attention span W in tokens (0: none): in a windowed layer
  // the query at position q attends the keys at positions k with
  // q - W < k <= q (HF's sliding_window_overlay: W keys, its own included).
  // The KV cache still keeps every position (as HF's DynamicCache). Which
  // layers are windowed: all (llama/mistral/phi3), or those layer_types marks.
  int64_t sliding_window = 0;
  // qwen2/qwen3/gemma2/gemma3_text only: per layer "full_attention" or "sliding_attention", as HF's
  // Qwen2Config.layer_types (when config.json has none: sliding for layers
  // >= max_window_layers if use_sliding_window; gemma2: sliding on even
  // layers, as Gemma2Config; gemma3_text: layer i full when (i + 1) % 6 == 0,
  // as Gemma3TextConfig's sliding_window_pattern). Empty for llama/mistral.
  std::vector<std::string> layer_types;
  int64_t max_window_layers = 28;  // qwen2/qwen3, kept to write config.json back
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  // phi3 only (e.g. Phi-4-mini: 0.75): RoPE rotates the first rotary_dim()
  // dims of each head (rotate_half within them), the rest pass unrotated, as
  // HF's phi3 apply_rotary_pos_emb. 1 elsewhere.
  double partial_rotary_factor = 1.0;
  bool tie_word_embeddings = false;
  // gemma2, gemma3_text: attention scores are scaled by query_pre_attn_scalar^-0.5
  // (0: head_dim^-0.5, as every other model), then soft-capped before the
  // mask and softmax, s = cap * tanh(s / cap) with cap attn_logit_softcapping;
  // the final logits likewise with final_logit_softcapping (0: no cap).
  double query_pre_attn_scalar = 0.0;
  double attn_logit_softcapping = 0.0;
  double final_logit_softcapping = 0.0;
  // gemma3_text: the windowed layers rotate with this base and no scaling
  // (HF's rotary_emb_local); the full ones with rope_theta and rope_scaling.
  // 0: every layer uses rope_theta and rope_scaling.
  double rope_local_base_freq = 0.0;
  std::string torch_dtype = "float32";  // float32 | bfloat16 | float16
  int64_t bos_token_id = -1;            // -1: none
  int64_t eos_token_id = -1;

  int64_t effective_head_dim() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }
  // The rotated dims per head: int(head_dim * partial_rotary_factor), as HF.
  int64_t rotary_dim() const { return int64_t(double(effective_head_dim()) * partial_rotary_factor); }
  // q_proj, k_proj and v_proj have biases (qwen2).
  bool qkv_bias() const { return model_type == "qwen2"; }
  bool gemma() const { return model_type == "gemma"; }
  bool gemma2() const { return model_type == "gemma2"; }
  bool gemma3() const { return model_type == "gemma3_text"; }
  // Gemma's embeddings times sqrt(hidden), (1 + w) RMSNorms and GeGLU (gemma, gemma2, gemma3_text).
  bool gemma_family() const { return gemma() || gemma2() || gemma3(); }
  // The layer also norms the attention's output (post_attention_layernorm)
  // and the MLP's input and output (pre/post_feedforward_layernorm) (gemma2, gemma3_text).
  bool sandwich_norms() const { return gemma2() || gemma3(); }
  // Layer `layer` rotates with local_rope_config()'s RoPE (gemma3_text's windowed layers).
  bool local_rope(int64_t layer) const { return rope_local_base_freq > 0 && layer_window(layer) > 0; }
  // This config with rope_theta = rope_local_base_freq and default RoPE.
  ModelConfig local_rope_config() const;
  // The config whose RoPE layer `layer` uses: local_rope_config() or this.
  ModelConfig rope_config(int64_t layer) const { return local_rope(layer) ? local_rope_config() : *this; }
  // The factor on q.k before the soft cap and the softmax.
  double attention_scale() const;
  // Per-head RMSNorm of queries and keys before RoPE (qwen3; gemma3_text's scale by 1 + w).
  bool qk_norm() const { return model_type == "qwen3" || gemma3(); }
  // Qwen2Config/Qwen3Config's window keys (use_sliding_window, max_window_layers, layer_types).
  bool qwen_windows() const { return model_type == "qwen2" || model_type == "qwen3"; }
  // The checkpoint fuses q/k/v (self_attn.qkv_proj: q rows, then k, then v)
  // and gate/up (mlp.gate_up_proj: gate rows, then up) (phi3).
  bool fused_projections() const { return model_type == "phi3"; }
  // The window of layer `layer` in tokens (0: full attention).
  int64_t layer_window(int64_t layer) const;
  codec::KVShape kv_shape() const;
  // Throws kvs::Error (prefixed by `where`) when sizes are inconsistent.
  void validate(const std::string& where) const;
  int64_t parameter_count() const;
};

// Parses HF config.json text. Accepts model_type "llama" (LlamaForCausalLM),
// "mistral" (identical architecture, plus sliding_window above), "qwen2"
// (Qwen2ForCausalLM: q/k/v biases; use_sliding_window, sliding_window,
// max_window_layers and layer_types as Qwen2Config) and "qwen3"
// (Qwen3ForCausalLM: q/k norms, Qwen3Config's defaults, the same window
// keys; attention_bias true, which adds q/k/v and o_proj biases, is
// refused); anything else,
// attention_bias/mlp_bias on llama/mistral, a non-SiLU activation,
// partial_rotary_factor != 1 or RoPE types other than
// default/linear/dynamic/llama3/yarn are "unsupported architecture", a
// quantization_config is refused, and scaling keys without a rope_type are an
// error. Defaults follow HF's LlamaConfig/MistralConfig/Qwen2Config. Errors
// name `file` and the key. gemma: the activation must be
// gelu_pytorch_tanh (hidden_activation when given, else hidden_act; a bare
// "gelu" is refused: HF versions differ on it) and use_bidirectional_attention
// must not be set; GemmaConfig's defaults (head_dim 256, tied) apply.
// phi3 (Phi3ForCausalLM): Phi3Config's defaults; sliding_window (null: none)
// on every layer (Phi3Model masks as MistralModel); dropout keys and
// pad_token_id ignored; attention_bias true, layer_types other than all
// layers alike; RoPE default or longrope (also under the older names "su"
// and "yarn", which Phi3Config renames: a phi3 "yarn" is not YaRN), others
// refused, a longrope `factor` other than max / original positions refused
// (HF versions disagree on it); partial_rotary_factor
// (top level, or in rope_parameters as newer HF writes it) in (0, 1].
// gemma2 (Gemma2ForCausalLM): Gemma2Config's defaults (head_dim 256, 4 KV
// heads, query_pre_attn_scalar 256, sliding_window 4096, attention and final
// soft caps 50 and 30, tied); gemma's activation rules; layer_types as given,
// else sliding on even layers; a sliding layer without a window, a soft cap
// <= 0, attention_bias true and use_bidirectional_attention are refused.
// gemma3_text (Gemma3ForCausalLM): as gemma2 with Gemma3TextConfig's
// defaults (no soft caps, rope_theta 1e6 with rope_scaling for full layers,
// rope_local_base_freq 10000 for sliding ones, 131072 positions), layer_types
// or sliding_window_pattern (default 6); newer rope_parameters keyed by layer
// type too (a sliding RoPE other than default refused); model_type gemma3
// (the multimodal checkpoint) is refused.
ModelConfig parse_config(const std::string& json_text, const std::string& file);
// config.json text that HF loads as the same model: Qwen2ForCausalLM for
// qwen2, Qwen3ForCausalLM for qwen3, GemmaForCausalLM for gemma,
// Gemma2ForCausalLM for gemma2, Gemma3ForCausalLM for gemma3_text,
// Phi3ForCausalLM for phi3,
// MistralForCausalLM for mistral or any config with a sliding_window,
// else LlamaForCausalLM.
std::string config_to_json(const ModelConfig& config);

// RoPE inverse frequencies (rotary_dim() / 2 values, float32 arithmetic as HF) for a
// sequence whose largest position is seq_len - 1; `dynamic` scaling depends on
// seq_len, the others do not.
std::vector<float> rope_inv_freq(const ModelConfig& config, int64_t seq_len);
// HF's attention_scaling of the RoPE type, which multiplies cos and sin (so
// q.k by its square): yarn's and longrope's attention factor, 1 for the other types.
double rope_attention_scaling(const ModelConfig& config);

}  // namespace kvs::llm
