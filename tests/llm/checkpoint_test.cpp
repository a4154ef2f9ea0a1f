// HF checkpoints: save/load round trips (single file, sharded, dtypes) and
// clear errors for missing or malformed parts.
#include "llm/checkpoint.h"

#include <filesystem>

#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "base/files.h"
#include "llm/safetensors.h"
#include "tests/llm/test_util.h"

namespace kvs::llm {
namespace {

namespace fs = std::filesystem;
using testing::some_tokens;
using testing::TempDir;
using testing::tiny_config;

void expect_error(const std::function<void()>& f, std::initializer_list<std::string> fragments) {
  try {
    f();
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const auto& s : fragments) EXPECT_NE(m.find(s), std::string::npos) << m << " lacks " << s;
  }
}

// Sum of |parameter `name`| (-1 when absent).
double param_sum(const Model& m, const std::string& name) {
  for (const auto& [n, t] : m.named_parameters())
    if (n == name) return t.abs().sum().item<double>();
  return -1;
}

TEST(CheckpointTest, SavedModelLoadsWithIdenticalLogits) {
  TempDir dir;
  for (bool tied : {false, true}) {
    ModelConfig c = tiny_config();
    c.tie_word_embeddings = tied;
    Model m = Model::random(c, 21);
    save_model(m, dir.str());
    ASSERT_TRUE(fs::exists(dir.path / "config.json"));
    auto st = SafetensorsFile::open((dir.path / "model.safetensors").string());
    EXPECT_EQ(st->metadata().at("format"), "pt");
    EXPECT_EQ(st->contains("lm_head.weight"), !tied);
    EXPECT_TRUE(st->contains("model.layers.1.mlp.down_proj.weight"));
    Model back = load_model(dir.str());
    EXPECT_EQ(back.config().tie_word_embeddings, tied);
    const at::Tensor t = to_tensor(some_tokens(12, 256, 4));
    EXPECT_TRUE(at::equal(back.prefill(t).logits, m.prefill(t).logits));
  }
}

TEST(CheckpointTest, ShardedAndUnshardedGiveIdenticalLogits) {
  TempDir one, many;
  Model m = Model::random(tiny_config(), 22, at::kBFloat16);
  save_model(m, one.str());
  save_model(m, many.str(), /*max_shard_bytes=*/20000);
  EXPECT_TRUE(fs::exists(many.path / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(many.path / "model.safetensors"));
  EXPECT_TRUE(fs::exists(many.path / "model-00001-of-00003.safetensors") ||
              fs::exists(many.path / "model-00001-of-00004.safetensors") ||
              fs::exists(many.path / "model-00001-of-00002.safetensors"));
  Model a = load_model(one.str()), b = load_model(many.str());
  EXPECT_EQ(a.dtype(), at::kBFloat16);  // the config's torch_dtype
  const at::Tensor t = to_tensor(some_tokens(10, 256, 5));
  EXPECT_TRUE(at::equal(a.prefill(t).logits, b.prefill(t).logits));
  EXPECT_TRUE(at::equal(a.prefill(t).logits, m.prefill(t).logits));
  // Loading in another dtype converts.
  LoadOptions o;
  o.dtype = at::kFloat;
  Model f = load_model(many.str(), o);
  EXPECT_EQ(f.dtype(), at::kFloat);
  EXPECT_LT((f.prefill(t).logits - a.prefill(t).logits).abs().max().item<float>(), 0.05);
}

TEST(CheckpointTest, MissingTensorNamesFileAndTensor) {
  TempDir dir;
  Model m = Model::random(tiny_config(), 23);
  save_model(m, dir.str());
  auto st = SafetensorsFile::open((dir.path / "model.safetensors").string());
  std::vector<TensorView> views;
  for (const auto& [name, info] : st->tensors())
    if (name != "model.layers.1.self_attn.v_proj.weight")
      views.push_back({name, info.dtype, info.shape, info.data, info.bytes});
  const std::string copy = (dir.path / "copy.safetensors").string();
  write_safetensors(copy, views);
  st.reset();
  fs::rename(copy, dir.path / "model.safetensors");
  expect_error([&] { load_model(dir.str()); }, {"model.safetensors", "model.layers.1.self_attn.v_proj.weight"});
}

// Issue 25: a config with fewer layers than the weights is an error, not a
// silently truncated model.
TEST(CheckpointTest, UnusedTensorsAreAnError) {
  TempDir dir;
  ModelConfig c = tiny_config();
  ASSERT_GE(c.num_hidden_layers, 2);
  save_model(Model::random(c, 26), dir.str());
  c.num_hidden_layers -= 1;
  write_file_atomic((dir.path / "config.json").string(), config_to_json(c));
  expect_error([&] { load_model(dir.str()); },
               {"model.safetensors", "that the config (" + std::to_string(c.num_hidden_layers) + " layers) does not use",
                "model.layers." + std::to_string(c.num_hidden_layers) + "."});
}

// tie_word_embeddings true with an lm_head.weight in the file: a copy of the
// embeddings loads; a different matrix is refused, not silently dropped.
TEST(CheckpointTest, TiedConfigWithADifferentLmHeadIsAnError) {
  TempDir dir;
  ModelConfig c = tiny_config();
  save_model(Model::random(c, 27), dir.str());  // untied: embed and lm_head differ
  c.tie_word_embeddings = true;
  write_file_atomic((dir.path / "config.json").string(), config_to_json(c));
  expect_error([&] { load_model(dir.str()); }, {"model.safetensors", "tie_word_embeddings", "lm_head.weight"});

  // The same file with lm_head.weight a copy of the embeddings loads, tied.
  auto st = SafetensorsFile::open((dir.path / "model.safetensors").string());
  std::vector<TensorView> views;
  const TensorInfo& embed = st->at("model.embed_tokens.weight");
  for (const auto& [name, info] : st->tensors())
    views.push_back({name, info.dtype, info.shape, name == "lm_head.weight" ? embed.data : info.data, info.bytes});
  const std::string copy = (dir.path / "copy.safetensors").string();
  write_safetensors(copy, views);
  st.reset();
  fs::rename(copy, dir.path / "model.safetensors");
  Model m = load_model(dir.str());
  EXPECT_TRUE(m.config().tie_word_embeddings);
  EXPECT_EQ(m.named_parameters().back().first, "model.norm.weight");  // no separate lm_head
}

// qwen2 (biases, a per-layer window, tied) saves as Qwen2ForCausalLM and loads back the same.
TEST(CheckpointTest, Qwen2RoundTripKeepsBiasesAndWindows) {
  TempDir dir;
  for (bool explicit_types : {false, true}) {
    ModelConfig c = tiny_config();
    c.model_type = "qwen2";
    c.tie_word_embeddings = true;
    c.sliding_window = 3;
    c.max_window_layers = 1;  // layer 1 windowed
    if (explicit_types) c.layer_types = {"sliding_attention", "full_attention"};
    Model m = Model::random(c, 28);
    save_model(m, dir.str());
    const std::string json = read_file((dir.path / "config.json").string());
    for (const char* key : {"\"Qwen2ForCausalLM\"", "\"use_sliding_window\": true", "\"max_window_layers\": 1"})
      EXPECT_NE(json.find(key), std::string::npos) << json << " lacks " << key;
    EXPECT_EQ(json.find("attention_bias"), std::string::npos) << json;
    auto st = SafetensorsFile::open((dir.path / "model.safetensors").string());
    EXPECT_TRUE(st->contains("model.layers.1.self_attn.q_proj.bias"));
    EXPECT_FALSE(st->contains("model.layers.1.self_attn.o_proj.bias"));
    EXPECT_FALSE(st->contains("lm_head.weight"));
    st.reset();
    Model back = load_model(dir.str());
    EXPECT_EQ(back.config().model_type, "qwen2");
    EXPECT_EQ(back.config().layer_types, c.layer_types);
    for (int64_t l = 0; l < 2; ++l) EXPECT_EQ(back.config().layer_window(l), c.layer_window(l)) << l;
    EXPECT_EQ(c.layer_window(explicit_types ? 0 : 1), 3);
    EXPECT_EQ(c.layer_window(explicit_types ? 1 : 0), 0);
    const at::Tensor t = to_tensor(some_tokens(9, 256, 8));
    EXPECT_TRUE(at::equal(back.prefill(t).logits, m.prefill(t).logits));
  }
}

// gemma saves as GemmaForCausalLM (gelu_pytorch_tanh named both ways) and loads back the same.
TEST(CheckpointTest, GemmaRoundTrip) {
  TempDir dir;
  ModelConfig c = tiny_config();
  c.model_type = "gemma";
  c.tie_word_embeddings = true;
  c.head_dim = 16;  // 4 x 16 != hidden 32, as Gemma-7B's 16 x 256 != 3072
  Model m = Model::random(c, 30);
  EXPECT_EQ(param_sum(m, "model.norm.weight"), 0.0);  // (1 + w): HF initialises w at 0
  save_model(m, dir.str());
  const std::string json = read_file((dir.path / "config.json").string());
  for (const char* key : {"\"GemmaForCausalLM\"", "\"hidden_activation\": \"gelu_pytorch_tanh\""})
    EXPECT_NE(json.find(key), std::string::npos) << json << " lacks " << key;
  Model back = load_model(dir.str());
  EXPECT_TRUE(back.config().gemma());
  EXPECT_EQ(back.config().effective_head_dim(), 16);
  const at::Tensor t = to_tensor(some_tokens(9, 256, 9));
  EXPECT_TRUE(at::equal(back.prefill(t).logits, m.prefill(t).logits));
}

// gemma2 (its four norms per layer, non-default layer_types, scaling and
// soft caps, shards) saves as Gemma2ForCausalLM and loads back the same; a
// missing feedforward norm is named, and read as gemma (v1) the norms are
// unused tensors.
TEST(CheckpointTest, Gemma2RoundTripKeepsNormsWindowsAndCaps) {
  TempDir dir;
  ModelConfig c = tiny_config();
  c.model_type = "gemma2";
  c.tie_word_embeddings = true;
  c.head_dim = 16;
  c.num_hidden_layers = 3;
  c.sliding_window = 3;
  c.layer_types = {"full_attention", "sliding_attention", "sliding_attention"};
  c.query_pre_attn_scalar = 20;
  c.attn_logit_softcapping = 1.5;
  c.final_logit_softcapping = 0.5;
  Model m = Model::random(c, 32);
  {
    at::NoGradGuard no_grad;
    for (auto& [name, t] : m.named_parameters())  // norms that matter (HF initialises them at 0)
      if (name.find("layernorm.weight") != std::string::npos) t.copy_(at::linspace(-0.5, 0.5, t.numel()));
  }
  save_model(m, dir.str(), /*max_shard_bytes=*/40000);
  const std::string json = read_file((dir.path / "config.json").string());
  for (const char* key : {"\"Gemma2ForCausalLM\"", "\"query_pre_attn_scalar\": 20", "\"attn_logit_softcapping\": 1.5",
                          "\"final_logit_softcapping\": 0.5", "\"sliding_window\": 3", "\"full_attention\""})
    EXPECT_NE(json.find(key), std::string::npos) << json << " lacks " << key;
  Model back = load_model(dir.str());
  EXPECT_TRUE(back.config().gemma2());
  for (int64_t l = 0; l < 3; ++l) EXPECT_EQ(back.config().layer_window(l), c.layer_window(l)) << l;
  EXPECT_EQ(back.config().layer_window(0), 0);
  const at::Tensor t = to_tensor(some_tokens(9, 256, 11));
  const at::Tensor logits = m.prefill(t).logits;
  EXPECT_TRUE(at::equal(back.prefill(t).logits, logits));
  EXPECT_LE(logits.abs().max().item<float>(), 0.5f);  // the final cap holds
  // Read as gemma (v1): the feedforward norms are tensors the config does not use.
  ModelConfig v1 = c;
  v1.model_type = "gemma";
  v1.sliding_window = 0;
  v1.layer_types.clear();
  v1.query_pre_attn_scalar = v1.attn_logit_softcapping = v1.final_logit_softcapping = 0;
  write_file_atomic((dir.path / "config.json").string(), config_to_json(v1));
  expect_error([&] { load_model(dir.str()); }, {"does not use", "feedforward_layernorm.weight"});
  // A gemma2 file without one of them names it.
  TempDir one;
  save_model(m, one.str());
  auto st = SafetensorsFile::open((one.path / "model.safetensors").string());
  EXPECT_EQ(st->at("model.layers.2.pre_feedforward_layernorm.weight").shape, std::vector<int64_t>{32});
  std::vector<TensorView> views;
  for (const auto& [name, info] : st->tensors())
    if (name != "model.layers.1.post_feedforward_layernorm.weight")
      views.push_back({name, info.dtype, info.shape, info.data, info.bytes});
  const std::string copy = (one.path / "copy.safetensors").string();
  write_safetensors(copy, views);
  st.reset();
  fs::rename(copy, one.path / "model.safetensors");
  expect_error([&] { load_model(one.str()); }, {"model.safetensors", "model.layers.1.post_feedforward_layernorm.weight"});
}

// gemma3_text (q/k norms, per-layer RoPE: local base on sliding layers,
// linear scaling on full ones) saves as Gemma3ForCausalLM and loads back the
// same; read as gemma2 its q/k norms are unused tensors.
TEST(CheckpointTest, Gemma3RoundTripKeepsQkNormsAndLocalRope) {
  TempDir dir;
  ModelConfig c = tiny_config();
  c.model_type = "gemma3_text";
  c.tie_word_embeddings = true;
  c.head_dim = 16;
  c.num_hidden_layers = 3;
  c.sliding_window = 3;
  c.rope_local_base_freq = 50;
  c.rope_scaling.type = "linear";
  c.rope_scaling.factor = 4.0;
  Model m = Model::random(c, 33);
  {
    at::NoGradGuard no_grad;
    for (auto& [name, t] : m.named_parameters())
      if (name.find("norm.weight") != std::string::npos) t.copy_(at::linspace(-0.5, 0.5, t.numel()));
  }
  save_model(m, dir.str());
  const std::string json = read_file((dir.path / "config.json").string());
  for (const char* key : {"\"Gemma3ForCausalLM\"", "\"gemma3_text\"", "\"rope_local_base_freq\": 50",
                          "\"sliding_window_pattern\": 6", "\"linear\""})
    EXPECT_NE(json.find(key), std::string::npos) << json << " lacks " << key;
  Model back = load_model(dir.str());
  EXPECT_TRUE(back.config().gemma3());
  EXPECT_EQ(back.config().rope_local_base_freq, 50);
  const at::Tensor t = to_tensor(some_tokens(9, 256, 12));
  EXPECT_TRUE(at::equal(back.prefill(t).logits, m.prefill(t).logits));
  ModelConfig g2 = c;
  g2.model_type = "gemma2";
  g2.rope_local_base_freq = 0;
  write_file_atomic((dir.path / "config.json").string(), config_to_json(g2));
  expect_error([&] { load_model(dir.str()); }, {"does not use", "_norm.weight"});
}

// qwen3 (q/k norms, head_dim != hidden / heads, YaRN RoPE) saves as
// Qwen3ForCausalLM and loads back the same; read as llama the norms are
// unused tensors, and a missing norm is named.
TEST(CheckpointTest, Qwen3RoundTripKeepsQkNorms) {
  TempDir dir;
  ModelConfig c = tiny_config();
  c.model_type = "qwen3";
  c.head_dim = 16;
  c.rope_scaling.type = "yarn";
  c.rope_scaling.factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 32;
  Model m = Model::random(c, 31);
  {
    at::NoGradGuard no_grad;
    for (auto& [name, t] : m.named_parameters())  // non-trivial norms (HF initialises them at 1)
      if (name.find("_norm.weight") != std::string::npos && name.find("self_attn") != std::string::npos)
        t.copy_(at::linspace(0.5, 1.5, t.numel()));
  }
  save_model(m, dir.str());
  const std::string json = read_file((dir.path / "config.json").string());
  for (const char* key : {"\"Qwen3ForCausalLM\"", "\"yarn\"", "\"head_dim\": 16"})
    EXPECT_NE(json.find(key), std::string::npos) << json << " lacks " << key;
  auto st = SafetensorsFile::open((dir.path / "model.safetensors").string());
  EXPECT_EQ(st->at("model.layers.1.self_attn.k_norm.weight").shape, std::vector<int64_t>{16});
  EXPECT_FALSE(st->contains("model.layers.1.self_attn.q_proj.bias"));
  Model back = load_model(dir.str());
  EXPECT_TRUE(back.config().qk_norm());
  EXPECT_EQ(back.config().rope_scaling.original_max_position_embeddings, 32);
  const at::Tensor t = to_tensor(some_tokens(9, 256, 10));
  EXPECT_TRUE(at::equal(back.prefill(t).logits, m.prefill(t).logits));
  ModelConfig llama = c;
  llama.model_type = "llama";
  write_file_atomic((dir.path / "config.json").string(), config_to_json(llama));
  expect_error([&] { load_model(dir.str()); }, {"model.safetensors", "does not use", "_norm.weight"});
  write_file_atomic((dir.path / "config.json").string(), config_to_json(c));
  std::vector<TensorView> views;
  for (const auto& [name, info] : st->tensors())
    if (name != "model.layers.0.self_attn.q_norm.weight") views.push_back({name, info.dtype, info.shape, info.data, info.bytes});
  const std::string copy = (dir.path / "copy.safetensors").string();
  write_safetensors(copy, views);
  st.reset();
  fs::rename(copy, dir.path / "model.safetensors");
  expect_error([&] { load_model(dir.str()); }, {"model.safetensors", "model.layers.0.self_attn.q_norm.weight"});
}

// phi3: the file holds the fused self_attn.qkv_proj (q, k, v rows) and
// mlp.gate_up_proj (gate, up rows), in one file and in shards; what loads
// back computes the same logits. Read as llama, a fused file has tensors the
// config does not use; a fused tensor missing or of the wrong shape is named.
TEST(CheckpointTest, Phi3RoundTripWritesFusedWeights) {
  ModelConfig c = tiny_config();
  c.model_type = "phi3";
  c.sliding_window = 5;
  Model m = Model::random(c, 37);
  const at::Tensor t = to_tensor(some_tokens(11, 256, 12));
  const int64_t hd = c.effective_head_dim(), q = c.num_attention_heads * hd, kv = c.num_key_value_heads * hd;
  for (uint64_t shard : {uint64_t(0), uint64_t(20000)}) {
    TempDir dir;
    save_model(m, dir.str(), shard);
    const std::string json = read_file((dir.path / "config.json").string());
    for (const char* key : {"\"Phi3ForCausalLM\"", "\"model_type\": \"phi3\"", "\"sliding_window\": 5"})
      EXPECT_NE(json.find(key), std::string::npos) << json << " lacks " << key;
    Model back = load_model(dir.str());
    EXPECT_EQ(back.config().model_type, "phi3");
    EXPECT_EQ(back.config().layer_window(1), 5);
    EXPECT_TRUE(at::equal(back.prefill(t).logits, m.prefill(t).logits)) << shard;
    for (size_t l = 0; l < 2; ++l) {
      EXPECT_TRUE(at::equal(back.layer_weights(l).k_proj, m.layer_weights(l).k_proj));
      EXPECT_TRUE(at::equal(back.layer_weights(l).up_proj, m.layer_weights(l).up_proj));
    }
    if (shard == 0) {
      auto st = SafetensorsFile::open((dir.path / "model.safetensors").string());
      EXPECT_EQ(st->at("model.layers.1.self_attn.qkv_proj.weight").shape, (std::vector<int64_t>{q + 2 * kv, 32}));
      EXPECT_EQ(st->at("model.layers.1.mlp.gate_up_proj.weight").shape,
                (std::vector<int64_t>{2 * c.intermediate_size, 32}));
      for (const char* name : {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
                               "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight"})
        EXPECT_FALSE(st->contains(name)) << name;
    }
  }
  TempDir dir;
  save_model(m, dir.str());
  ModelConfig llama = c;
  llama.model_type = "llama";
  write_file_atomic((dir.path / "config.json").string(), config_to_json(llama));
  expect_error([&] { load_model(dir.str()); }, {"model.safetensors", "missing tensor", "q_proj.weight"});
  ModelConfig wide = c;
  wide.intermediate_size = 40;
  write_file_atomic((dir.path / "config.json").string(), config_to_json(wide));
  expect_error([&] { load_model(dir.str()); }, {"model.safetensors", "model.layers.0.mlp.gate_up_proj.weight", "[80, 32]"});
  write_file_atomic((dir.path / "config.json").string(), config_to_json(c));
  auto st = SafetensorsFile::open((dir.path / "model.safetensors").string());
  std::vector<TensorView> views;
  for (const auto& [name, info] : st->tensors())
    if (name != "model.layers.1.self_attn.qkv_proj.weight") views.push_back({name, info.dtype, info.shape, info.data, info.bytes});
  const std::string copy = (dir.path / "copy.safetensors").string();
  write_safetensors(copy, views);
  st.reset();
  fs::rename(copy, dir.path / "model.safetensors");
  expect_error([&] { load_model(dir.str()); }, {"model.safetensors", "model.layers.1.self_attn.qkv_proj.weight"});
}

// A qwen2 file without a bias names the tensor; the same file read as llama
// (a config that lost its model_type) has tensors the config does not use.
TEST(CheckpointTest, Qwen2BiasMissingOrUnexpectedIsAnError) {
  TempDir dir;
  ModelConfig c = tiny_config();
  c.model_type = "qwen2";
  save_model(Model::random(c, 29), dir.str());
  ModelConfig llama = c;
  llama.model_type = "llama";
  write_file_atomic((dir.path / "config.json").string(), config_to_json(llama));
  expect_error([&] { load_model(dir.str()); }, {"model.safetensors", "does not use", ".bias"});
  write_file_atomic((dir.path / "config.json").string(), config_to_json(c));
  auto st = SafetensorsFile::open((dir.path / "model.safetensors").string());
  std::vector<TensorView> views;
  for (const auto& [name, info] : st->tensors())
    if (name != "model.layers.1.self_attn.k_proj.bias") views.push_back({name, info.dtype, info.shape, info.data, info.bytes});
  const std::string copy = (dir.path / "copy.safetensors").string();
  write_safetensors(copy, views);
  st.reset();
  fs::rename(copy, dir.path / "model.safetensors");
  expect_error([&] { load_model(dir.str()); }, {"model.safetensors", "model.layers.1.self_attn.k_proj.bias"});
}

TEST(CheckpointTest, WrongShapeNamesFileAndTensor) {
  TempDir dir;
  ModelConfig c = tiny_config();
  save_model(Model::random(c, 24), dir.str());
  c.intermediate_size = 40;  // the file's MLP weights are 48 wide
  write_file_atomic((dir.path / "config.json").string(), config_to_json(c));
  expect_error([&] { load_model(dir.str()); }, {"model.safetensors", "model.layers.0.mlp.gate_proj.weight", "[48, 32]"});
}

TEST(CheckpointTest, ConfigMissingKeyOrFolderIsAnError) {
  TempDir dir;
  expect_error([&] { load_model(dir.str()); }, {"config.json"});
  write_file_atomic((dir.path / "config.json").string(), R"({"model_type": "llama", "vocab_size": 256, "hidden_size": 32})");
  expect_error([&] { load_model(dir.str()); }, {"config.json", "intermediate_size"});
  write_file_atomic((dir.path / "config.json").string(), config_to_json(tiny_config()));
  expect_error([&] { load_model(dir.str()); }, {"model.safetensors"});
}

TEST(CheckpointTest, CorruptWeightsFileIsAnError) {
  TempDir dir;
  save_model(Model::random(tiny_config(), 25), dir.str());
  const std::string path = (dir.path / "model.safetensors").string();
  std::string bytes = read_file(path);
  write_file_atomic(path, bytes.substr(0, bytes.size() - 100));  // truncated data
  expect_error([&] { load_model(dir.str()); }, {"model.safetensors", "past the end"});
}

TEST(CheckpointTest, LoadedWeightsAreTrainableViews) {
  TempDir dir;
  save_model(Model::random(tiny_config(), 26), dir.str());
  Model m = load_model(dir.str());
  // Weights map the file copy-on-write: in-place updates work and leave the file alone.
  at::Tensor w = m.named_parameters()[0].second;
  w.add_(1.0f);
  Model again = load_model(dir.str());
  EXPECT_FALSE(at::equal(again.named_parameters()[0].second, w));
}

}  // namespace
}  // namespace kvs::llm
