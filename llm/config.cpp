#include "llm/config.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <tuple>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"

namespace kvs::llm {
namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw Error(fmt::format("{}: {}", file, what));
}

int64_t get_int(const json& j, const std::string& key, const std::string& file, std::optional<int64_t> fallback = {}) {
  if (!j.contains(key) || j[key].is_null()) {
    if (fallback) return *fallback;
    fail(file, fmt::format("missing key '{}'", key));
  }
  if (!j[key].is_number_integer()) fail(file, fmt::format("key '{}' must be an integer", key));
  return j[key].get<int64_t>();
}

double get_double(const json& j, const std::string& key, const std::string& file, std::optional<double> fallback = {}) {
  if (!j.contains(key) || j[key].is_null()) {
    if (fallback) return *fallback;
    fail(file, fmt::format("missing key '{}'", key));
  }
  if (!j[key].is_number()) fail(file, fmt::format("key '{}' must be a number", key));
  return j[key].get<double>();
}

// phi3_original_max > 0: a phi3 config with this top-level
// original_max_position_embeddings (Phi3Config's default 4096); its
// partial_rotary_factor is read by the caller.
RopeScaling parse_rope(const json& r, const std::string& file, const std::string& key, int64_t max_pos,
                       int64_t phi3_original_max = 0) {
  const bool allow_partial = phi3_original_max > 0;
  if (!r.is_object()) fail(file, fmt::format("key '{}' must be an object", key));
  RopeScaling s;
  std::string type;
  for (const char* name : {"rope_type", "type"}) {  // HF prefers rope_type; "type" is the older name
    if (!r.contains(name) || r[name].is_null()) continue;
    if (!r[name].is_string()) fail(file, fmt::format("{}.{} must be a string", key, name));
    type = r[name].get<std::string>();
    break;
  }
  if (!allow_partial && r.contains("partial_rotary_factor") && !r["partial_rotary_factor"].is_null() &&
      !(r["partial_rotary_factor"].is_number() && r["partial_rotary_factor"].get<double>() == 1.0))
    fail(file, fmt::format("unsupported architecture: {}.partial_rotary_factor is not 1 (Llama rotates the whole head)",
                           key));
  if (type.empty()) {
    // HF's standardized rope_parameters may carry only rope_theta; scaling
    // keys without a type cannot be interpreted (HF fails on them too).
    for (const auto& [k, v] : r.items())
      if (k != "rope_theta" && k != "partial_rotary_factor" && k != "rope_type" && k != "type")
        fail(file, fmt::format("{} has '{}' but no 'rope_type' (or 'type'): the RoPE scaling is unknown", key, k));
    type = "default";
  }
  s.type = type;
  if (type == "default") return s;
  if (allow_partial) {
    // Phi3Config accepts default and longrope only, and renames the older
    // "su" and "yarn" to longrope (so a phi3 "yarn" is not YaRN).
    if (type != "longrope" && type != "su" && type != "yarn")
      fail(file, fmt::format("unsupported architecture: phi3 with {} type '{}' (Phi3Config accepts only default "
                             "and longrope, with its older names su and yarn)", key, type));
    s.type = "longrope";
    // HF's _compute_longrope_parameters: per-frequency divisors, short_factor
    // while the forward call's last position + 1 <= original_max_position_embeddings,
    // long_factor past it; cos and sin times attention_factor (default
    // sqrt(1 + ln(factor) / ln(original)), factor = max / original positions).
    s.original_max_position_embeddings =
        get_int(r, "original_max_position_embeddings", file + ": " + key, phi3_original_max);
    if (s.original_max_position_embeddings <= 0)
      fail(file, fmt::format("{}: original_max_position_embeddings must be > 0", key));
    const double ratio = double(max_pos) / double(s.original_max_position_embeddings);
    if (r.contains("factor") && !r["factor"].is_null() && get_double(r, "factor", file + ": " + key) != ratio)
      fail(file, fmt::format("{}: longrope 'factor' {} differs from max_position_embeddings / "
                             "original_max_position_embeddings = {} (current HF uses the factor, older HF the ratio "
                             "for Phi-3: ambiguous, refused)", key, r["factor"].dump(), ratio));
    s.factor = ratio;
    for (const char* name : {"short_factor", "long_factor"}) {
      if (!r.contains(name) || !r[name].is_array() || r[name].empty())
        fail(file, fmt::format("{}: longrope needs '{}' (a list of numbers)", key, name));
      auto& out = std::string(name) == "short_factor" ? s.short_factor : s.long_factor;
      for (size_t i = 0; i < r[name].size(); ++i) {
        if (!r[name][i].is_number() || r[name][i].get<double>() <= 0)
          fail(file, fmt::format("{}.{}[{}] must be a number > 0", key, name, i));
        out.push_back(r[name][i].get<double>());
      }
    }
    s.attention_factor = get_double(r, "attention_factor", file + ": " + key, 0.0);
    if (r.contains("attention_factor") && !r["attention_factor"].is_null() && s.attention_factor <= 0)
      fail(file, fmt::format("{}.attention_factor must be > 0", key));
    return s;
  }
  if (type != "linear" && type != "dynamic" && type != "llama3" && type != "yarn")
    fail(file, fmt::format("{}: unsupported rope type '{}' (expected default, linear, dynamic, llama3 or yarn)", key,
                           type));
  if (type == "yarn") {
    // HF's _compute_yarn_parameters (current): `factor` as given; only when
    // it is absent, max_position_embeddings / original_max_position_embeddings.
    // (Some HF 4.4x/4.5x versions always used that ratio when
    // original_max_position_embeddings was given, whatever `factor` said.)
    s.original_max_position_embeddings = get_int(r, "original_max_position_embeddings", file + ": " + key, 0);
    if (s.original_max_position_embeddings < 0 ||
        (r.contains("original_max_position_embeddings") && !r["original_max_position_embeddings"].is_null() &&
         s.original_max_position_embeddings == 0))
      fail(file, fmt::format("{}.original_max_position_embeddings must be > 0", key));
    const bool has_factor = r.contains("factor") && !r["factor"].is_null();
    if (!has_factor && s.original_max_position_embeddings == 0)
      fail(file, fmt::format("{}: yarn needs 'factor' (or 'original_max_position_embeddings')", key));
    s.factor = has_factor ? get_double(r, "factor", file + ": " + key)
                          : double(max_pos) / double(s.original_max_position_embeddings);
    if (s.factor <= 0.0) fail(file, fmt::format("{}.factor must be > 0", key));
    // HF: `get(...) or default`, so null and 0 mean the default too.
    s.beta_fast = get_double(r, "beta_fast", file + ": " + key, 32.0);
    if (s.beta_fast == 0.0) s.beta_fast = 32.0;
    s.beta_slow = get_double(r, "beta_slow", file + ": " + key, 1.0);
    if (s.beta_slow == 0.0) s.beta_slow = 1.0;
    if (s.beta_fast < 0 || s.beta_slow < 0) fail(file, fmt::format("{}: beta_fast and beta_slow must be > 0", key));
    s.attention_factor = get_double(r, "attention_factor", file + ": " + key, 0.0);
    if (r.contains("attention_factor") && !r["attention_factor"].is_null() && s.attention_factor <= 0)
      fail(file, fmt::format("{}.attention_factor must be > 0", key));
    s.mscale = get_double(r, "mscale", file + ": " + key, 0.0);
    s.mscale_all_dim = get_double(r, "mscale_all_dim", file + ": " + key, 0.0);
    if (r.contains("truncate") && !r["truncate"].is_null()) {
      if (!r["truncate"].is_boolean()) fail(file, fmt::format("{}.truncate must be true or false", key));
      s.truncate = r["truncate"].get<bool>();
    }
    return s;
  }
  s.factor = get_double(r, "factor", file + ": " + key);
  if (s.factor < 1.0 && type != "linear") fail(file, fmt::format("{}.factor must be >= 1", key));
  if (s.factor <= 0.0) fail(file, fmt::format("{}.factor must be > 0", key));
  if (type == "llama3") {
    s.low_freq_factor = get_double(r, "low_freq_factor", file + ": " + key);
    s.high_freq_factor = get_double(r, "high_freq_factor", file + ": " + key);
    s.original_max_position_embeddings = get_int(r, "original_max_position_embeddings", file + ": " + key);
    if (s.original_max_position_embeddings <= 0)
      fail(file, fmt::format("{}.original_max_position_embeddings must be > 0", key));
    if (s.high_freq_factor <= s.low_freq_factor)
      fail(file, fmt::format("{}: high_freq_factor must exceed low_freq_factor", key));
  }
  return s;
}

}  // namespace

int64_t ModelConfig::layer_window(int64_t layer) const {
  if (sliding_window <= 0) return 0;
  if (!layer_types.empty()) return layer_types.at(size_t(layer)) == "sliding_attention" ? sliding_window : 0;
  // Qwen2Config/Qwen3Config without layer_types: windowed from max_window_layers on.
  if (qwen_windows()) return layer >= max_window_layers ? sliding_window : 0;
  if (gemma2()) return layer % 2 == 0 ? sliding_window : 0;  // Gemma2Config: sliding, full, sliding, ...
  if (gemma3()) return (layer + 1) % 6 != 0 ? sliding_window : 0;  // Gemma3TextConfig: 5 sliding, 1 full
  return sliding_window;  // mistral: every layer
}

ModelConfig ModelConfig::local_rope_config() const {
  // HF's Gemma3 rotary_emb_local: a copy of the config with rope_theta =
  // rope_local_base_freq and rope_scaling {"rope_type": "default"}.
  ModelConfig c = *this;
  c.rope_theta = rope_local_base_freq;
  c.rope_scaling = RopeScaling{};
  c.rope_local_base_freq = 0;
  return c;
}

double ModelConfig::attention_scale() const {
  // Gemma2Attention: query_pre_attn_scalar ** -0.5; elsewhere head_dim ** -0.5.
  return 1.0 / std::sqrt(query_pre_attn_scalar > 0 ? query_pre_attn_scalar : double(effective_head_dim()));
}

codec::KVShape ModelConfig::kv_shape() const {
  return {uint32_t(num_hidden_layers), uint32_t(num_key_value_heads), uint32_t(effective_head_dim())};
}

void ModelConfig::validate(const std::string& where) const {
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) fail(where, what);
  };
  need(model_type == "llama" || model_type == "mistral" || model_type == "qwen2" || model_type == "qwen3" ||
           model_type == "gemma" || model_type == "gemma2" || model_type == "gemma3_text" || model_type == "phi3",
       fmt::format("model_type '{}' is not llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text or phi3",
                   model_type));
  need(query_pre_attn_scalar >= 0 && attn_logit_softcapping >= 0 && final_logit_softcapping >= 0,
       "query_pre_attn_scalar, attn_logit_softcapping and final_logit_softcapping must be >= 0 (0: unused)");
  need(gemma2() || gemma3() ||
           (query_pre_attn_scalar == 0 && attn_logit_softcapping == 0 && final_logit_softcapping == 0),
       "query_pre_attn_scalar and the soft caps are only read for gemma2 and gemma3_text");
  need(gemma3() ? rope_local_base_freq > 0 : rope_local_base_freq == 0,
       "rope_local_base_freq (the sliding layers' RoPE base) must be > 0 for gemma3_text and is read for it only");
  need(!gemma() || sliding_window == 0, "gemma (v1) has no sliding window");
  need(vocab_size > 0, "vocab_size must be > 0");
  need(hidden_size > 0, "hidden_size must be > 0");
  need(intermediate_size > 0, "intermediate_size must be > 0");
  need(num_hidden_layers > 0, "num_hidden_layers must be > 0");
  need(num_attention_heads > 0, "num_attention_heads must be > 0");
  need(num_key_value_heads > 0 && num_key_value_heads <= num_attention_heads &&
           num_attention_heads % num_key_value_heads == 0,
       fmt::format("num_key_value_heads ({}) must divide num_attention_heads ({})", num_key_value_heads,
                   num_attention_heads));
  need(head_dim > 0 || hidden_size % num_attention_heads == 0,
       "hidden_size must be a multiple of num_attention_heads when head_dim is not given");
  need(effective_head_dim() % 2 == 0, "head_dim must be even (RoPE rotates pairs)");
  need(partial_rotary_factor == 1.0 || model_type == "phi3", "partial_rotary_factor != 1 is only read for phi3");
  need(rope_scaling.type != "longrope" || model_type == "phi3", "longrope RoPE is only read for phi3");
  need(rope_scaling.type != "longrope" ||
           (int64_t(rope_scaling.short_factor.size()) == rotary_dim() / 2 &&
            int64_t(rope_scaling.long_factor.size()) == rotary_dim() / 2),
       fmt::format("longrope short_factor/long_factor have {}/{} entries, rotary_dim / 2 is {}",
                   rope_scaling.short_factor.size(), rope_scaling.long_factor.size(), rotary_dim() / 2));
  need(partial_rotary_factor > 0.0 && partial_rotary_factor <= 1.0 && rotary_dim() > 0 && rotary_dim() % 2 == 0,
       fmt::format("partial_rotary_factor {} gives {} rotary dims of head_dim {} (must be even and > 0)",
                   partial_rotary_factor, rotary_dim(), effective_head_dim()));
  need(max_position_embeddings > 0, "max_position_embeddings must be > 0");
  need(sliding_window >= 0, "sliding_window must be > 0 (or null)");
  need(layer_types.empty() || qwen_windows() || gemma2() || gemma3(),
       "layer_types is only read for qwen2, qwen3, gemma2 and gemma3_text");
  need(layer_types.empty() || int64_t(layer_types.size()) == num_hidden_layers,
       fmt::format("layer_types has {} entries, num_hidden_layers is {}", layer_types.size(), num_hidden_layers));
  for (size_t i = 0; i < layer_types.size(); ++i) {
    need(layer_types[i] == "full_attention" || layer_types[i] == "sliding_attention",
         fmt::format("layer_types[{}] '{}' is not full_attention or sliding_attention", i, layer_types[i]));
    need(layer_types[i] != "sliding_attention" || sliding_window > 0,
         fmt::format("layer_types[{}] is sliding_attention but there is no window (use_sliding_window false or "
                     "sliding_window null; HF fails on this too)", i));
  }
  need(max_window_layers >= 0, "max_window_layers must be >= 0");
  need(rms_norm_eps > 0, "rms_norm_eps must be > 0");
  need(rope_theta > 0, "rope_theta must be > 0");
  const auto& s = rope_scaling;
  need(s.type == "default" || s.type == "linear" || s.type == "dynamic" || s.type == "llama3" || s.type == "yarn" ||
           s.type == "longrope",
       fmt::format("rope type '{}' is not default, linear, dynamic, llama3, yarn or longrope (phi3)", s.type));
  need(s.type != "longrope" || (s.original_max_position_embeddings > 0 && s.attention_factor >= 0),
       "rope longrope: original_max_position_embeddings must be > 0, attention_factor >= 0 (0: derived)");
  need(s.type != "yarn" || (s.beta_fast > 0 && s.beta_slow > 0 && s.attention_factor >= 0),
       "rope yarn: beta_fast and beta_slow must be > 0, attention_factor >= 0 (0: derived)");
  need(s.type == "default" || s.factor > 0, "rope factor must be > 0");
  need(s.type != "llama3" || s.high_freq_factor > s.low_freq_factor,
       "rope high_freq_factor must exceed low_freq_factor");
  need(s.original_max_position_embeddings >= 0, "rope original_max_position_embeddings must be >= 0");
  need(torch_dtype == "float32" || torch_dtype == "bfloat16" || torch_dtype == "float16",
       fmt::format("torch_dtype '{}' is not float32, bfloat16 or float16", torch_dtype));
}

int64_t ModelConfig::parameter_count() const {
  const int64_t hd = effective_head_dim();
  const int64_t attn = hidden_size * hd * (2 * num_attention_heads + 2 * num_key_value_heads);
  const int64_t mlp = 3 * hidden_size * intermediate_size;
  const int64_t bias = qkv_bias() ? hd * (num_attention_heads + 2 * num_key_value_heads) : 0;
  const int64_t qk_norms = qk_norm() ? 2 * hd : 0;
  const int64_t norms = (sandwich_norms() ? 4 : 2) * hidden_size;
  const int64_t per_layer = attn + bias + qk_norms + mlp + norms;
  return vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * per_layer + hidden_size;
}

ModelConfig parse_config(const std::string& json_text, const std::string& file) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    fail(file, fmt::format("not valid JSON: {}", e.what()));
  }
  if (!j.is_object()) fail(file, "expected a JSON object");
  const std::string model_type = j.contains("model_type") && j["model_type"].is_string()
                                     ? j["model_type"].get<std::string>() : std::string();
  if (model_type.empty()) fail(file, "missing key 'model_type'");
  if (model_type == "gemma3")
    fail(file, "unsupported architecture: model_type 'gemma3' is the multimodal Gemma3ForConditionalGeneration "
               "(its text_config and vision tower are not read); only text checkpoints, model_type gemma3_text "
               "(Gemma3ForCausalLM, e.g. gemma-3-1b), load");
  if (model_type != "llama" && model_type != "mistral" && model_type != "qwen2" && model_type != "qwen3" &&
      model_type != "gemma" && model_type != "gemma2" && model_type != "gemma3_text" && model_type != "phi3")
    fail(file, fmt::format("unsupported architecture: model_type '{}' (expected llama, mistral, qwen2, qwen3, "
                           "gemma, gemma2, gemma3_text or phi3)", model_type));
  const bool qwen2 = model_type == "qwen2", qwen3 = model_type == "qwen3", gemma2 = model_type == "gemma2";
  const bool gemma3 = model_type == "gemma3_text";
  // gemma2 and gemma3_text share gemma's defaults and activation rules.
  const bool gemma = model_type == "gemma" || gemma2 || gemma3;
  const bool phi3 = model_type == "phi3";
  if (model_type == "mistral" && !j.contains("sliding_window"))
    fail(file, "mistral without key 'sliding_window' (HF's MistralConfig then uses a 4096-token window; write "
               "\"sliding_window\": null for full attention or the window's size)");
  if (j.contains("quantization_config") && !j["quantization_config"].is_null())
    fail(file, "unsupported: a quantized checkpoint ('quantization_config' is set); only float weights load");
  if (!phi3 && j.contains("partial_rotary_factor") && !j["partial_rotary_factor"].is_null() &&
      !(j["partial_rotary_factor"].is_number() && j["partial_rotary_factor"].get<double>() == 1.0))
    fail(file, "unsupported architecture: partial_rotary_factor is not 1 (Llama rotates the whole head)");
  if (j.contains("architectures") && j["architectures"].is_array()) {
    for (const auto& a : j["architectures"]) {
      if (!a.is_string()) continue;
      const auto s = a.get<std::string>();
      if (s != "LlamaForCausalLM" && s != "MistralForCausalLM" && s != "Qwen2ForCausalLM" && s != "Qwen3ForCausalLM" &&
          s != "GemmaForCausalLM" && s != "Gemma2ForCausalLM" && s != "Gemma3ForCausalLM" && s != "Phi3ForCausalLM")
        fail(file, fmt::format("unsupported architecture '{}' (expected LlamaForCausalLM, MistralForCausalLM, "
                               "Qwen2ForCausalLM, Qwen3ForCausalLM, GemmaForCausalLM, Gemma2ForCausalLM, "
                               "Gemma3ForCausalLM or Phi3ForCausalLM)", s));
      // Qwen2's attention has biases, Qwen3's q/k norms, Gemma's layers and
      // Phi-3's weight names differ: a mix-up changes the computation.
      if ((s == "Qwen2ForCausalLM") != qwen2 || (s == "Qwen3ForCausalLM") != qwen3 ||
          (s == "GemmaForCausalLM") != (gemma && !gemma2 && !gemma3) || (s == "Gemma2ForCausalLM") != gemma2 ||
          (s == "Gemma3ForCausalLM") != gemma3 ||
          (s == "Phi3ForCausalLM") != phi3)
        fail(file, fmt::format("architecture '{}' does not match model_type '{}'", s, model_type));
    }
  }
  // (Qwen2 hard-codes its biases and ignores these keys, as HF does; Qwen3's
  // and Phi-3's MLPs ignore mlp_bias.)
  for (const char* bias : {"attention_bias", "mlp_bias"}) {
    if (!(j.contains(bias) && j[bias].is_boolean() && j[bias].get<bool>()) || qwen2) continue;
    if ((qwen3 || phi3) && std::string(bias) == "mlp_bias") continue;
    if (phi3)
      fail(file, "unsupported architecture: phi3 with 'attention_bias' true (Phi3Attention has no biases; such a "
                 "checkpoint is not a Phi3ForCausalLM)");
    if (qwen3)
      fail(file, "unsupported architecture: qwen3 with 'attention_bias' true (Qwen3Attention then adds biases to "
                 "q_proj, k_proj, v_proj and o_proj; only the bias-free attention is implemented)");
    fail(file, fmt::format("unsupported architecture: '{}' is true (linear layers with bias)", bias));
  }
  if (gemma) {
    // GemmaConfig: HF 4.39+ reads hidden_activation (None: gelu_pytorch_tanh,
    // whatever hidden_act says), current HF hidden_act; 4.38 read hidden_act
    // "gelu" of the released configs as exact GELU. Only an unambiguous
    // gelu_pytorch_tanh is accepted.
    const bool has_activation = j.contains("hidden_activation") && !j["hidden_activation"].is_null();
    const char* key = has_activation ? "hidden_activation" : "hidden_act";
    if (has_activation ? j[key] != "gelu_pytorch_tanh"
                       : (j.contains(key) && !j[key].is_null() && j[key] != "gelu_pytorch_tanh"))
      fail(file, fmt::format("unsupported architecture: gemma with {} {} (expected gelu_pytorch_tanh; HF versions "
                             "disagree on a bare \"gelu\": give \"hidden_activation\": \"gelu_pytorch_tanh\" if "
                             "that is what the weights were trained with)",
                             key, j[key].dump()));
    if (has_activation && j.contains("hidden_act") && !j["hidden_act"].is_null() && j["hidden_act"] != "gelu" &&
        j["hidden_act"] != "gelu_pytorch_tanh")
      fail(file, fmt::format("unsupported architecture: gemma with hidden_act {} next to hidden_activation",
                             j["hidden_act"].dump()));
    if (j.contains("use_bidirectional_attention") && j["use_bidirectional_attention"].is_boolean() &&
        j["use_bidirectional_attention"].get<bool>())
      fail(file, "unsupported architecture: use_bidirectional_attention is true (only causal attention)");
  } else if (j.contains("hidden_act") && j["hidden_act"] != "silu") {
    fail(file, fmt::format("unsupported architecture: hidden_act '{}' (expected silu)", j["hidden_act"].dump()));
  }
  if (j.contains("pretraining_tp") && j["pretraining_tp"].is_number_integer() && j["pretraining_tp"].get<int>() > 1) {
    // pretraining_tp only changes how HF slices the matmuls, not the result.
  }

  ModelConfig c;
  c.model_type = model_type;
  // layer_types (qwen2, qwen3, gemma2, gemma3_text): full_attention or sliding_attention per layer.
  auto read_layer_types = [&] {
    if (!j.contains("layer_types") || j["layer_types"].is_null()) return;
    const auto& lt = j["layer_types"];
    if (!lt.is_array()) fail(file, "key 'layer_types' must be a list");
    for (size_t i = 0; i < lt.size(); ++i) {
      if (!lt[i].is_string()) fail(file, fmt::format("layer_types[{}] must be a string", i));
      const auto t = lt[i].get<std::string>();
      if (t != "full_attention" && t != "sliding_attention")
        fail(file, fmt::format("unsupported architecture: layer_types[{}] is '{}' (expected full_attention or "
                               "sliding_attention)", i, t));
      c.layer_types.push_back(t);
    }
  };
  c.vocab_size = get_int(j, "vocab_size", file);
  c.hidden_size = get_int(j, "hidden_size", file);
  c.intermediate_size = get_int(j, "intermediate_size", file);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", file);
  c.num_attention_heads = get_int(j, "num_attention_heads", file);
  // HF: absent or null means one KV head per query head, except that an
  // absent key is 8 for MistralConfig, 32 for Qwen2Config/Qwen3Config, 16 for GemmaConfig and 4 for Gemma2Config.
  const bool kvh_absent = !j.contains("num_key_value_heads");
  c.num_key_value_heads = get_int(j, "num_key_value_heads", file,
                                  model_type == "mistral" && kvh_absent ? int64_t(8)
                                  : (qwen2 || qwen3) && kvh_absent      ? int64_t(32)
                                  : (gemma2 || gemma3) && kvh_absent    ? int64_t(4)
                                  : gemma && kvh_absent                 ? int64_t(16)
                                                                        : c.num_attention_heads);
  c.head_dim = get_int(j, "head_dim", file, gemma ? 256 : qwen3 ? 128 : 0);
  // Qwen2Config's, Qwen3Config's and GemmaConfig's defaults where Llama's configs are required to give them.
  c.max_position_embeddings = get_int(j, "max_position_embeddings", file,
                                      qwen2 || qwen3 ? std::optional<int64_t>(32768)
                                      : gemma3 ? std::optional<int64_t>(131072)
                                      : gemma ? std::optional<int64_t>(8192)
                                      : phi3  ? std::optional<int64_t>(4096) : std::nullopt);
  if (model_type == "mistral" || phi3) {
    // Phi3Config: sliding_window defaults to None; Phi3Model masks every
    // layer with it as MistralModel (Phi-3-mini-4k: 2047).
    c.sliding_window = get_int(j, "sliding_window", file, 0);
    if (j.contains("sliding_window") && !j["sliding_window"].is_null() && c.sliding_window <= 0)
      fail(file, "key 'sliding_window' must be > 0 or null");
  }
  if (phi3 && j.contains("layer_types") && !j["layer_types"].is_null()) {
    // Some Phi3Config versions derive layer_types (all sliding_attention when
    // sliding_window is set, else all full_attention); only that is implemented.
    const auto& lt = j["layer_types"];
    if (!lt.is_array() || int64_t(lt.size()) != c.num_hidden_layers)
      fail(file, fmt::format("key 'layer_types' must be a list of num_hidden_layers ({}) entries",
                             c.num_hidden_layers));
    const std::string want = c.sliding_window > 0 ? "sliding_attention" : "full_attention";
    for (size_t i = 0; i < lt.size(); ++i)
      if (lt[i] != want)
        fail(file, fmt::format("unsupported architecture: phi3 with layer_types[{}] {} (Phi3Model windows every "
                               "layer alike: expected \"{}\" for sliding_window {})",
                               i, lt[i].dump(), want, j.contains("sliding_window") ? j["sliding_window"].dump()
                                                                                    : std::string("null")));
  }
  if (qwen2 || qwen3) {
    // Qwen2Config (and Qwen3Config, alike): sliding_window counts only with use_sliding_window (else
    // None); layer_types, when absent, windows the layers >= max_window_layers.
    bool use = false;
    if (j.contains("use_sliding_window") && !j["use_sliding_window"].is_null()) {
      if (!j["use_sliding_window"].is_boolean()) fail(file, "key 'use_sliding_window' must be true or false");
      use = j["use_sliding_window"].get<bool>();
    }
    c.max_window_layers = get_int(j, "max_window_layers", file, 28);
    if (c.max_window_layers < 0) fail(file, "key 'max_window_layers' must be >= 0");
    if (use) {
      c.sliding_window = get_int(j, "sliding_window", file, j.contains("sliding_window") ? 0 : 4096);
      if (j.contains("sliding_window") && !j["sliding_window"].is_null() && c.sliding_window <= 0)
        fail(file, "key 'sliding_window' must be > 0 or null");
    } else {
      (void)get_int(j, "sliding_window", file, 0);  // unused (HF sets it to None), but must be an integer or null
    }
    read_layer_types();
  }
  if (gemma2 || gemma3) {
    // Gemma2Config: sliding_window 4096 when absent; layer_types as given,
    // else sliding_attention on even layers (its __post_init__);
    // Gemma3TextConfig: likewise, with layer i full when (i + 1) %
    // sliding_window_pattern == 0 (default 6; newer files write
    // _sliding_window_pattern). A sliding layer needs a window (HF versions
    // differ on a null one).
    c.sliding_window = get_int(j, "sliding_window", file, j.contains("sliding_window") ? 0 : 4096);
    if (j.contains("sliding_window") && !j["sliding_window"].is_null() && c.sliding_window <= 0)
      fail(file, "key 'sliding_window' must be > 0 or null");
    read_layer_types();
    int64_t pattern = 2;  // gemma2: (i + 1) % 2 != 0, the even layers
    if (gemma3) {
      const char* key = j.contains("sliding_window_pattern") || !j.contains("_sliding_window_pattern")
                            ? "sliding_window_pattern" : "_sliding_window_pattern";
      pattern = get_int(j, key, file, 6);
      if (pattern <= 0) fail(file, fmt::format("key '{}' must be > 0", key));
    }
    const bool types_given = !c.layer_types.empty();
    if (!types_given)
      for (int64_t i = 0; i < c.num_hidden_layers; ++i)
        c.layer_types.push_back((i + 1) % pattern != 0 ? "sliding_attention" : "full_attention");
    if (int64_t(c.layer_types.size()) != c.num_hidden_layers)
      fail(file, fmt::format("key 'layer_types' has {} entries, num_hidden_layers is {}", c.layer_types.size(),
                             c.num_hidden_layers));
    for (size_t i = 0; i < c.layer_types.size(); ++i)
      if (c.layer_types[i] == "sliding_attention" && c.sliding_window == 0)
        fail(file, fmt::format("unsupported: {} layer {} is sliding_attention (layer_types{}) but "
                               "'sliding_window' is null", model_type, i,
                               types_given ? "" : gemma2 ? ": even layers by default" : ": sliding_window_pattern"));
    // Gemma2Config's scaling and soft caps (null: no cap); Gemma3TextConfig's caps default to none.
    c.query_pre_attn_scalar = get_double(j, "query_pre_attn_scalar", file, 256.0);
    if (c.query_pre_attn_scalar <= 0) fail(file, "key 'query_pre_attn_scalar' must be > 0");
    for (auto [key, fallback, out] :
         {std::tuple{"attn_logit_softcapping", gemma2 ? 50.0 : 0.0, &c.attn_logit_softcapping},
          std::tuple{"final_logit_softcapping", gemma2 ? 30.0 : 0.0, &c.final_logit_softcapping}}) {
      *out = get_double(j, key, file, j.contains(key) ? 0.0 : fallback);
      if (j.contains(key) && !j[key].is_null() && *out <= 0)
        fail(file, fmt::format("key '{}' must be > 0 or null (no cap)", key));
    }
  }
  c.rms_norm_eps = get_double(j, "rms_norm_eps", file,
                              qwen2 || qwen3 || gemma ? std::optional<double>(1e-6)
                              : phi3                  ? std::optional<double>(1e-5) : std::nullopt);
  const int64_t phi3_original = phi3 ? get_int(j, "original_max_position_embeddings", file, 4096) : 0;
  if (phi3 && phi3_original <= 0) fail(file, "key 'original_max_position_embeddings' must be > 0");
  c.rope_theta = get_double(j, "rope_theta", file, gemma3 ? 1000000.0 : 10000.0);
  if (gemma3) {
    c.rope_local_base_freq = get_double(j, "rope_local_base_freq", file, 10000.0);
    if (c.rope_local_base_freq <= 0) fail(file, "key 'rope_local_base_freq' must be > 0");
  }
  const auto is_per_layer_type = [](const json& rp) {
    return rp.is_object() && (rp.contains("full_attention") || rp.contains("sliding_attention"));
  };
  if (gemma3 && j.contains("rope_parameters") && is_per_layer_type(j["rope_parameters"])) {
    // Newer Gemma3TextConfig: rope_parameters per layer type, each with its rope_theta.
    const auto& rp = j["rope_parameters"];
    for (const auto& [k, v] : rp.items())
      if (k != "full_attention" && k != "sliding_attention")
        fail(file, fmt::format("rope_parameters has '{}' next to per-layer-type entries (expected full_attention "
                               "and sliding_attention)", k));
    if (rp.contains("full_attention")) {
      c.rope_scaling = parse_rope(rp["full_attention"], file, "rope_parameters.full_attention",
                                  c.max_position_embeddings);
      if (rp["full_attention"].contains("rope_theta"))
        c.rope_theta = get_double(rp["full_attention"], "rope_theta", file + ": rope_parameters.full_attention");
    }
    if (rp.contains("sliding_attention")) {
      const RopeScaling local = parse_rope(rp["sliding_attention"], file, "rope_parameters.sliding_attention",
                                           c.max_position_embeddings);
      if (local.type != "default")
        fail(file, fmt::format("unsupported: rope_parameters.sliding_attention has rope_type '{}' (Gemma 3's "
                               "sliding layers rotate with default RoPE)", local.type));
      if (rp["sliding_attention"].contains("rope_theta"))
        c.rope_local_base_freq =
            get_double(rp["sliding_attention"], "rope_theta", file + ": rope_parameters.sliding_attention");
      if (c.rope_local_base_freq <= 0) fail(file, "rope_parameters.sliding_attention.rope_theta must be > 0");
    }
  } else if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
    const auto& rp = j["rope_parameters"];
    c.rope_scaling = parse_rope(rp, file, "rope_parameters", c.max_position_embeddings, phi3_original);
    if (rp.is_object() && rp.contains("rope_theta")) c.rope_theta = get_double(rp, "rope_theta", file);
  } else if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    c.rope_scaling = parse_rope(j["rope_scaling"], file, "rope_scaling", c.max_position_embeddings, phi3_original);
  }
  if (phi3) {
    // Phi3Config: top-level partial_rotary_factor; newer HF keeps it in
    // rope_parameters (which wins, as its setdefault does).
    c.partial_rotary_factor = get_double(j, "partial_rotary_factor", file, 1.0);
    for (const char* key : {"rope_scaling", "rope_parameters"})
      if (j.contains(key) && j[key].is_object() && j[key].contains("partial_rotary_factor") &&
          !j[key]["partial_rotary_factor"].is_null())
        c.partial_rotary_factor = get_double(j[key], "partial_rotary_factor", file + ": " + key);
    if (!(c.partial_rotary_factor > 0.0 && c.partial_rotary_factor <= 1.0))
      fail(file, "key 'partial_rotary_factor' must be in (0, 1]");
  }
  c.tie_word_embeddings = j.contains("tie_word_embeddings") && j["tie_word_embeddings"].is_boolean()
                              ? j["tie_word_embeddings"].get<bool>() : gemma;  // GemmaConfig: tied by default
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) c.torch_dtype = j["torch_dtype"].get<std::string>();
  else if (j.contains("dtype") && j["dtype"].is_string()) c.torch_dtype = j["dtype"].get<std::string>();
  c.bos_token_id = j.contains("bos_token_id") && j["bos_token_id"].is_number_integer() ? j["bos_token_id"].get<int64_t>() : -1;
  c.eos_token_id = j.contains("eos_token_id") && j["eos_token_id"].is_number_integer() ? j["eos_token_id"].get<int64_t>() : -1;
  c.validate(file);
  return c;
}

std::string config_to_json(const ModelConfig& c) {
  nlohmann::ordered_json j;
  const bool qwen2 = c.model_type == "qwen2", qwen3 = c.model_type == "qwen3", gemma = c.gemma_family();
  const bool gemma2 = c.gemma2(), gemma3 = c.gemma3(), phi3 = c.model_type == "phi3";
  // LlamaConfig has no window: a windowed config is written as Mistral's.
  const bool mistral = !qwen2 && !qwen3 && !gemma && !phi3 && (c.model_type == "mistral" || c.sliding_window > 0);
  j["architectures"] = {qwen2 ? "Qwen2ForCausalLM" : qwen3 ? "Qwen3ForCausalLM" : gemma2 ? "Gemma2ForCausalLM"
                        : gemma3 ? "Gemma3ForCausalLM" : gemma ? "GemmaForCausalLM" : phi3 ? "Phi3ForCausalLM"
                        : mistral ? "MistralForCausalLM" : "LlamaForCausalLM"};
  j["model_type"] = qwen2 ? "qwen2" : qwen3 ? "qwen3" : gemma2 ? "gemma2" : gemma3 ? "gemma3_text"
                    : gemma ? "gemma" : phi3 ? "phi3" : mistral ? "mistral" : "llama";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.effective_head_dim();
  j["max_position_embeddings"] = c.max_position_embeddings;
  if (mistral || phi3)
    j["sliding_window"] = c.sliding_window > 0 ? nlohmann::ordered_json(c.sliding_window) : nullptr;
  if (phi3) {
    j["partial_rotary_factor"] = c.partial_rotary_factor;
    j["original_max_position_embeddings"] = c.rope_scaling.type == "longrope"
                                                ? c.rope_scaling.original_max_position_embeddings
                                                : c.max_position_embeddings;
  }
  if (qwen2 || qwen3) {
    j["use_sliding_window"] = c.sliding_window > 0;
    j["sliding_window"] = c.sliding_window > 0 ? nlohmann::ordered_json(c.sliding_window) : nullptr;
    j["max_window_layers"] = c.max_window_layers;
    if (!c.layer_types.empty()) j["layer_types"] = c.layer_types;
  }
  if (gemma2 || gemma3) {
    // Every key Gemma2Config/Gemma3TextConfig would otherwise default, and
    // the layer types written out (older HF ignores them and windows by
    // its pattern: gemma2's even layers, gemma3's sliding_window_pattern,
    // written when the types follow one).
    j["sliding_window"] = c.sliding_window > 0 ? nlohmann::ordered_json(c.sliding_window) : nullptr;
    std::vector<std::string> types;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l)
      types.push_back(c.layer_window(l) > 0 ? "sliding_attention" : "full_attention");
    j["layer_types"] = types;
    if (gemma3) {
      // HF's default 6 when it fits, else the smallest pattern that does.
      auto fits = [&](int64_t p) {
        for (int64_t l = 0; l < c.num_hidden_layers; ++l)
          if ((types[size_t(l)] == "sliding_attention") != ((l + 1) % p != 0)) return false;
        return true;
      };
      int64_t pattern = fits(6) ? 6 : 0;
      for (int64_t p = 1; pattern == 0 && p <= c.num_hidden_layers + 1; ++p)
        if (fits(p)) pattern = p;
      if (pattern > 0) j["sliding_window_pattern"] = pattern;
      j["rope_local_base_freq"] = c.rope_local_base_freq;
    }
    j["query_pre_attn_scalar"] = c.query_pre_attn_scalar > 0 ? c.query_pre_attn_scalar
                                                             : double(c.effective_head_dim());
    auto cap = [](double v) { return v > 0 ? nlohmann::ordered_json(v) : nlohmann::ordered_json(nullptr); };
    j["attn_logit_softcapping"] = cap(c.attn_logit_softcapping);
    j["final_logit_softcapping"] = cap(c.final_logit_softcapping);
  }
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.type == "default") {
    j["rope_scaling"] = nullptr;
  } else {
    nlohmann::ordered_json r;
    r["rope_type"] = c.rope_scaling.type;
    r["factor"] = c.rope_scaling.factor;
    if (c.rope_scaling.type == "llama3") {
      r["low_freq_factor"] = c.rope_scaling.low_freq_factor;
      r["high_freq_factor"] = c.rope_scaling.high_freq_factor;
      r["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings > 0
                                                  ? c.rope_scaling.original_max_position_embeddings
                                                  : c.max_position_embeddings;
    } else if (c.rope_scaling.type == "longrope") {
      r.erase("factor");  // Phi3: max_position_embeddings / original_max_position_embeddings
      r["short_factor"] = c.rope_scaling.short_factor;
      r["long_factor"] = c.rope_scaling.long_factor;
      if (c.rope_scaling.attention_factor > 0) r["attention_factor"] = c.rope_scaling.attention_factor;
    } else if (c.rope_scaling.type == "yarn") {
      const auto& s = c.rope_scaling;
      if (s.original_max_position_embeddings > 0)
        r["original_max_position_embeddings"] = s.original_max_position_embeddings;
      r["beta_fast"] = s.beta_fast;
      r["beta_slow"] = s.beta_slow;
      if (s.attention_factor > 0) r["attention_factor"] = s.attention_factor;
      if (s.mscale != 0) r["mscale"] = s.mscale;
      if (s.mscale_all_dim != 0) r["mscale_all_dim"] = s.mscale_all_dim;
      r["truncate"] = s.truncate;
    }
    j["rope_scaling"] = r;
  }
  if (gemma) {
    j["hidden_act"] = "gelu_pytorch_tanh";
    j["hidden_activation"] = "gelu_pytorch_tanh";
    j["attention_bias"] = false;
  } else {
    j["hidden_act"] = "silu";
  }
  if (qwen3) j["attention_bias"] = false;
  if (!qwen2 && !qwen3 && !gemma && !phi3) {
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
  }
  j["attention_dropout"] = 0.0;
  j["initializer_range"] = 0.02;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["torch_dtype"] = c.torch_dtype;
  j["use_cache"] = true;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_id >= 0) j["eos_token_id"] = c.eos_token_id;
  return j.dump(2) + "\n";
}

std::vector<float> rope_inv_freq(const ModelConfig& c, int64_t seq_len) {
  const int64_t dim = c.rotary_dim();  // HF: int(head_dim * partial_rotary_factor)
  const auto& s = c.rope_scaling;
  float base = float(c.rope_theta);
  if (s.type == "dynamic" && seq_len > c.max_position_embeddings) {
    // HF: base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
    const double b = c.rope_theta * std::pow(s.factor * double(seq_len) / double(c.max_position_embeddings) -
                                                 (s.factor - 1.0),
                                             double(dim) / double(dim - 2));
    base = float(b);
  }
  std::vector<float> inv(size_t(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float e = float(2 * i) / float(dim);  // torch.arange(0, dim, 2).float() / dim
    inv[size_t(i)] = 1.0f / std::pow(base, e);
  }
  if (s.type == "longrope") {
    // 1 / (ext * base^(2i/dim)) in float32, as _compute_longrope_parameters.
    const auto& ext = seq_len > s.original_max_position_embeddings ? s.long_factor : s.short_factor;
    for (int64_t i = 0; i < dim / 2; ++i) {
      const float e = float(2 * i) / float(dim);
      inv[size_t(i)] = 1.0f / (float(ext.at(size_t(i))) * std::pow(base, e));
    }
  } else if (s.type == "linear") {
    for (auto& f : inv) f = f / float(s.factor);
  } else if (s.type == "yarn") {
    // HF's _compute_yarn_parameters, float32 tensors as there: the pair i
    // gets extrapolation weight 1 - clamp((i - low) / (high - low), 0, 1).
    const double base_d = c.rope_theta, orig = double(s.original_max_position_embeddings > 0
                                                          ? s.original_max_position_embeddings
                                                          : c.max_position_embeddings);
    auto correction_dim = [&](double rotations) {  // find_correction_dim
      return double(dim) * std::log(orig / (rotations * 2.0 * M_PI)) / (2.0 * std::log(base_d));
    };
    double low = correction_dim(s.beta_fast), high = correction_dim(s.beta_slow);
    if (s.truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, double(dim - 1));
    if (low == high) high += 0.001;  // linear_ramp_factor: prevent singularity
    // torch: (arange(float32) - low) / (high - low) with Python-float operands, computed in float32.
    const float lo_f = float(low), span_f = float(high - low);
    for (int64_t i = 0; i < dim / 2; ++i) {
      const float ramp = std::clamp((float(i) - lo_f) / span_f, 0.0f, 1.0f);
      const float extra = 1.0f - ramp;  // inv_freq_extrapolation_factor
      const float f_extra = inv[size_t(i)];
      const float pos_freq = std::pow(float(c.rope_theta), float(2 * i) / float(dim));
      const float f_inter = 1.0f / (float(s.factor) * pos_freq);
      inv[size_t(i)] = f_inter * (1.0f - extra) + f_extra * extra;
    }
  } else if (s.type == "llama3") {
    const double old_ctx = double(s.original_max_position_embeddings > 0 ? s.original_max_position_embeddings
                                                                         : c.max_position_embeddings);
    const double low_wavelen = old_ctx / s.low_freq_factor;
    const double high_wavelen = old_ctx / s.high_freq_factor;
    for (auto& f : inv) {
      const float wavelen = float(2.0 * M_PI) / f;
      float scaled = wavelen > low_wavelen ? f / float(s.factor) : f;
      const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
      if (medium) {
        const float smooth = float((old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor));
        scaled = (1.0f - smooth) * scaled / float(s.factor) + smooth * scaled;
      }
      f = scaled;
    }
  }
  return inv;
}

double rope_attention_scaling(const ModelConfig& c) {
  const auto& s = c.rope_scaling;
  if (s.type == "longrope") {
    if (s.attention_factor > 0) return s.attention_factor;
    return s.factor <= 1.0 ? 1.0
                           : std::sqrt(1.0 + std::log(s.factor) / std::log(double(s.original_max_position_embeddings)));
  }
  if (s.type != "yarn") return 1.0;
  if (s.attention_factor > 0) return s.attention_factor;
  auto get_mscale = [&](double m) { return s.factor <= 1.0 ? 1.0 : 0.1 * m * std::log(s.factor) + 1.0; };
  if (s.mscale != 0 && s.mscale_all_dim != 0) return get_mscale(s.mscale) / get_mscale(s.mscale_all_dim);
  return get_mscale(1.0);
}

}  // namespace kvs::llm
