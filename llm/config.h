// The model's hyper-parameters, as HF's LlamaConfig names them (config.json).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "codec/kv.h"

namespace kvs::llm {

// RoPE frequency scaling, from `rope_scaling` or the newer `rope_parameters`.
struct RopeScaling {
  std::string type = "default";  // default | linear | dynamic | llama3
  double factor = 1.0;
  double low_freq_factor = 1.0;                   // llama3
  double high_freq_factor = 4.0;                  // llama3
  int64_t original_max_position_embeddings = 0;   // llama3 (0: use max_position_embeddings; config.json must give it)
};

struct ModelConfig {
  int64_t vocab_size = 256;
  int64_t hidden_size = 32;
  int64_t intermediate_size = 64;
  int64_t num_hidden_layers = 2;
  int64_t num_attention_heads = 4;
  int64_t num_key_value_heads = 2;
  int64_t head_dim = 0;  // 0: hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  // Mistral's sliding-window attention span in tokens (0: none). Only full
  // attention is implemented, identical as long as the positions fit in the
  // window: Model::forward refuses longer runs.
  int64_t sliding_window = 0;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  std::string torch_dtype = "float32";  // float32 | bfloat16 | float16
  int64_t bos_token_id = -1;            // -1: none
  int64_t eos_token_id = -1;

  int64_t effective_head_dim() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }
  codec::KVShape kv_shape() const;
  // Throws kvs::Error (prefixed by `where`) when sizes are inconsistent.
  void validate(const std::string& where) const;
  int64_t parameter_count() const;
};

// Parses HF config.json text. Accepts model_type "llama" (LlamaForCausalLM) and
// "mistral" (identical architecture, plus sliding_window above); anything
// else, biases, a non-SiLU activation, partial_rotary_factor != 1 or RoPE
// types other than default/linear/dynamic/llama3 are "unsupported
// architecture", a quantization_config is refused, and scaling keys without
// a rope_type are an error. Defaults follow HF's LlamaConfig/MistralConfig.
// Errors name `file` and the key.
ModelConfig parse_config(const std::string& json_text, const std::string& file);
// config.json text that HF's LlamaForCausalLM loads (MistralForCausalLM with
// a sliding_window).
std::string config_to_json(const ModelConfig& config);

// RoPE inverse frequencies (head_dim / 2 values, float32 arithmetic as HF) for a
// sequence whose largest position is seq_len - 1; `dynamic` scaling depends on
// seq_len, the others do not. Also returns HF's attention scaling (1 for all
// supported types).
std::vector<float> rope_inv_freq(const ModelConfig& config, int64_t seq_len);

}  // namespace kvs::llm
