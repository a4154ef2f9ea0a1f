// `kvstream kv dump`, `kvstream eval`, `kvstream generate`: the model module's
// jobs on the command line.
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "base/error.h"
#include "base/files.h"
#include "base/progress.h"
#include "llm/checkpoint.h"
#include "llm/evaluate.h"
#include "llm/safetensors.h"
#include "llm/tokenizer.h"

namespace kvs::apps {
namespace {

// Options every model command shares.
struct ModelOptions {
  std::string model_dir;
  std::string dtype = "auto";
  std::string device = "cpu";
  int threads = int(std::max(1u, std::thread::hardware_concurrency()));

  void add(CLI::App* cmd) {
    cmd->add_option("--model", model_dir, "HF checkpoint folder (config.json + *.safetensors [+ tokenizer.model])")
        ->required();
    cmd->add_option("--dtype", dtype, "Compute dtype: auto (the checkpoint's torch_dtype), fp32, bf16 or fp16")
        ->capture_default_str()
        ->check(CLI::IsMember({"auto", "fp32", "bf16", "fp16"}));
    cmd->add_option("--device", device, "Device: cpu, or cuda[:N] when libtorch was built with CUDA")
        ->capture_default_str();
    cmd->add_option("--threads", threads, "CPU threads for matrix products (OpenBLAS); libtorch's own pool uses them only with OMP_WAIT_POLICY=passive (default: hardware threads)")
        ->capture_default_str()
        ->check(CLI::Range(1, 1024));
  }

  llm::Model load() const {
    llm::set_cpu_threads(threads);
    llm::LoadOptions o;
    if (dtype == "fp32") o.dtype = at::kFloat;
    if (dtype == "bf16") o.dtype = at::kBFloat16;
    if (dtype == "fp16") o.dtype = at::kHalf;
    o.device = llm::parse_device(device, "--device");
    return llm::load_model(model_dir, o);
  }
};

void add_kv_dump(CLI::App& kv) {
  auto* cmd = kv.add_subcommand("dump", "Prefill a text and write its KV cache as safetensors "
                                        "(layers.{i}.key/value, [kv_heads, tokens, head_dim], keys after RoPE)");
  auto mo = std::make_shared<ModelOptions>();
  auto text = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto max_tokens = std::make_shared<int64_t>(0);
  auto kv_dtype = std::make_shared<std::string>("model");
  mo->add(cmd);
  cmd->add_option("--text", *text, "Text file to prefill")->required()->check(CLI::ExistingFile);
  cmd->add_option("-o,--output", *out, "Output KV safetensors file")->required();
  cmd->add_option("--max-tokens", *max_tokens, "Keep only the first N tokens (0: all)")->capture_default_str();
  cmd->add_option("--kv-dtype", *kv_dtype, "Dtype stored in the file: model (the compute dtype), fp32, bf16, fp16")
      ->capture_default_str()
      ->check(CLI::IsMember({"model", "fp32", "bf16", "fp16"}));
  cmd->callback([=] {
    llm::Model model = mo->load();
    auto tok = llm::load_tokenizer(mo->model_dir, model.config());
    auto ids = tok->encode(read_file(*text));
    if (*max_tokens > 0 && int64_t(ids.size()) > *max_tokens) ids.resize(size_t(*max_tokens));
    if (ids.empty()) throw Error(fmt::format("{}: no tokens", *text));
    if (int64_t(ids.size()) > model.config().max_position_embeddings)
      std::fprintf(stderr, "kvstream: warning: %zu tokens exceed max_position_embeddings %lld\n", ids.size(),
                   (long long)model.config().max_position_embeddings);
    llm::ForwardResult r = model.prefill(llm::to_tensor(ids));
    codec::KVChunk chunk = llm::to_chunk(r.cache);
    if (*kv_dtype != "model") chunk.dtype = codec::dtype_from_string(*kv_dtype);
    llm::write_kv_safetensors(*out, chunk, {{"model", mo->model_dir}, {"text", *text}, {"tokenizer", tok->name()}});
    std::printf("%s: %u tokens, %u layers x %u kv heads x %u dims, %s\n", out->c_str(), chunk.tokens,
                chunk.shape.layers, chunk.shape.kv_heads, chunk.shape.head_dim, codec::to_string(chunk.dtype));
  });
}

void add_eval(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Mean negative log-likelihood of a text under the model "
                                         "(every token after the first, given all before it)");
  auto mo = std::make_shared<ModelOptions>();
  auto text = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto context = std::make_shared<int64_t>(0);
  mo->add(cmd);
  cmd->add_option("--text", *text, "Text file to score")->required()->check(CLI::ExistingFile);
  cmd->add_option("--context-tokens", *context,
                  "Window in tokens (0: max_position_embeddings; a sliding-window model applies its own window within it); "
                  "longer texts are scored in windows advancing by "
                  "half a window, each scoring only tokens not scored before")
      ->capture_default_str();
  cmd->add_flag("--json", *json, "Print one JSON object instead of text");
  cmd->callback([=] {
    llm::Model model = mo->load();
    auto tok = llm::load_tokenizer(mo->model_dir, model.config());
    const std::string bytes = read_file(*text);
    const auto ids = tok->encode(bytes);
    if (ids.size() < 2) throw Error(fmt::format("{}: fewer than 2 tokens, nothing to score", *text));
    // The default window: the positions the model was made for. A
    // sliding-window model (mistral, qwen2 with use_sliding_window) applies
    // its window itself, as HF does over the whole input.
    const int64_t window = *context > 0 ? *context : model.config().max_position_embeddings;
    llm::TextLoss loss;
    {
      Progress progress("eval", ids.size() - 1, "tokens");
      loss = llm::evaluate_text(model, ids, window, &progress);
    }
    const double nats = loss.nats_per_token();
    const double bits = nats / std::log(2.0);
    // Bytes covered by the scored tokens: all but the first token's (none for BOS).
    const double scored_bytes = std::max(1.0, double(bytes.size()) - double(tok->decode({ids[0]}).size()));
    const double bpb = loss.nll_nats / std::log(2.0) / scored_bytes;
    if (*json) {
      nlohmann::ordered_json j{{"model", mo->model_dir},       {"text", *text},      {"tokens", loss.tokens},
                               {"nll_nats_per_token", nats}, {"bits_per_token", bits}, {"bits_per_byte", bpb},
                               {"window_tokens", window},      {"bytes", bytes.size()}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("tokens scored:      %lld\nnll (nats/token):   %.4f\nbits per token:     %.4f\n"
                  "bits per byte:      %.4f\n",
                  (long long)loss.tokens, nats, bits, bpb);
    }
  });
}

void add_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Greedy continuation of a prompt");
  auto mo = std::make_shared<ModelOptions>();
  auto prompt = std::make_shared<std::string>();
  auto n = std::make_shared<int64_t>(64);
  mo->add(cmd);
  cmd->add_option("--prompt", *prompt, "Prompt text")->required();
  cmd->add_option("-n,--tokens", *n, "Tokens to generate")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->callback([=] {
    llm::Model model = mo->load();
    auto tok = llm::load_tokenizer(mo->model_dir, model.config());
    const auto ids = tok->encode(*prompt);
    if (ids.empty()) throw Error("--prompt: no tokens");
    const auto out = llm::greedy_decode(model, llm::KVCache{}, ids, *n);
    std::printf("%s%s\n", prompt->c_str(), tok->decode(out).c_str());
  });
}

void add_model_init(CLI::App& app) {
  auto* model = app.add_subcommand("model", "Model checkpoints: init");
  model->require_subcommand(1);
  auto* cmd = model->add_subcommand("init", "Write a randomly initialized Llama-family checkpoint (HF format) of a given shape");
  auto c = std::make_shared<llm::ModelConfig>();
  auto out = std::make_shared<std::string>();
  auto seed = std::make_shared<uint64_t>(1);
  auto dtype = std::make_shared<std::string>("fp32");
  auto shard_bytes = std::make_shared<uint64_t>(0);
  cmd->add_option("-o,--output", *out, "Output checkpoint folder")->required();
  cmd->add_option("--vocab", c->vocab_size, "Vocabulary size (256: byte tokenizer)")->capture_default_str();
  cmd->add_option("--hidden", c->hidden_size, "Hidden size")->capture_default_str();
  cmd->add_option("--intermediate", c->intermediate_size, "MLP intermediate size")->capture_default_str();
  cmd->add_option("--layers", c->num_hidden_layers, "Decoder layers")->capture_default_str();
  cmd->add_option("--heads", c->num_attention_heads, "Attention heads")->capture_default_str();
  cmd->add_option("--kv-heads", c->num_key_value_heads, "Key/value heads (grouped-query attention)")
      ->capture_default_str();
  cmd->add_option("--head-dim", c->head_dim, "Head dimension (0: hidden / heads)")->capture_default_str();
  cmd->add_option("--max-positions", c->max_position_embeddings, "max_position_embeddings")->capture_default_str();
  cmd->add_option("--rope-theta", c->rope_theta, "RoPE base")->capture_default_str();
  cmd->add_flag("--tie", c->tie_word_embeddings, "Tie the LM head to the embedding");
  cmd->add_option("--model-type", c->model_type,
                  "llama, mistral, qwen2 (q/k/v biases), qwen3 (q/k norms; head dim: --head-dim), gemma (v1), "
                  "gemma2 (feedforward norms, soft caps), gemma3_text (gemma2 with q/k norms and "
                  "--rope-local-base on sliding layers) or phi3 (fused qkv_proj/gate_up_proj weights)")
      ->capture_default_str()
      ->check(CLI::IsMember({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3"}));
  cmd->add_option("--sliding-window", c->sliding_window,
                  "Sliding-window attention span in tokens (0: none; mistral/phi3: every layer, qwen2/qwen3: layers "
                  ">= --max-window-layers, gemma2: even layers, gemma3_text: all but every 6th)")
      ->capture_default_str();
  cmd->add_option("--query-pre-attn-scalar", c->query_pre_attn_scalar,
                  "gemma2: attention scores scaled by this^-0.5 (0: head dim's)")
      ->capture_default_str();
  cmd->add_option("--attn-softcap", c->attn_logit_softcapping,
                  "gemma2: attention scores soft-capped, cap * tanh(s / cap) (0: none)")
      ->capture_default_str();
  cmd->add_option("--final-softcap", c->final_logit_softcapping, "gemma2: logits soft-capped likewise (0: none)")
      ->capture_default_str();
  auto local_base = std::make_shared<double>(10000.0);
  cmd->add_option("--rope-local-base", *local_base,
                  "gemma3_text: the sliding layers' RoPE base (rope_local_base_freq)")
      ->capture_default_str();
  cmd->add_option("--max-window-layers", c->max_window_layers, "qwen2/qwen3: the first windowed layer")->capture_default_str();
  cmd->add_option("--seed", *seed, "Random seed")->capture_default_str();
  cmd->add_option("--dtype", *dtype, "Stored dtype: fp32, bf16 or fp16")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  cmd->add_option("--shard-bytes", *shard_bytes, "Shard the weights into files of at most this many bytes (0: one file)")
      ->capture_default_str();
  cmd->callback([=] {
    if (c->model_type == "gemma3_text") c->rope_local_base_freq = *local_base;
    const at::ScalarType dt = *dtype == "bf16" ? at::kBFloat16 : *dtype == "fp16" ? at::kHalf : at::kFloat;
    llm::Model m = llm::Model::random(*c, *seed, dt);
    llm::save_model(m, *out, *shard_bytes);
    std::printf("%s: %lld parameters\n", out->c_str(), (long long)c->parameter_count());
  });
}

}  // namespace

void add_model_commands(CLI::App& app) {
  add_model_init(app);
  auto* kv = app.add_subcommand("kv", "KV caches: dump");
  kv->require_subcommand(1);
  add_kv_dump(*kv);
  add_eval(app);
  add_generate(app);
}

}  // namespace kvs::apps
