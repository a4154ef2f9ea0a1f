#include "llm/checkpoint.h"

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/files.h"
#include "llm/safetensors.h"
#include "llm/torch_checkpoint.h"

namespace kvs::llm {
namespace fs = std::filesystem;
namespace {

at::ScalarType to_scalar(STDType t, const std::string& file, const std::string& name) {
  switch (t) {
    case STDType::kF32: return at::kFloat;
    case STDType::kF16: return at::kHalf;
    case STDType::kBF16: return at::kBFloat16;
    case STDType::kF64: return at::kDouble;
    default:
      throw Error(fmt::format("{}: tensor '{}': dtype {} is not a floating-point weight type", file, name,
                              to_string(t)));
  }
}

STDType to_st(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return STDType::kF32;
    case at::kHalf: return STDType::kF16;
    case at::kBFloat16: return STDType::kBF16;
    default: throw Error(fmt::format("save_model: unsupported weight dtype {}", at::toString(t)));
  }
}

at::ScalarType dtype_from_config(const std::string& name) {
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  return at::kFloat;
}

const char* config_dtype_name(at::ScalarType t) {
  return t == at::kBFloat16 ? "bfloat16" : t == at::kHalf ? "float16" : "float32";
}

}  // namespace

std::map<std::string, std::string> read_shard_index(const std::string& index_path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(index_path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON: {}", index_path, e.what()));
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw Error(fmt::format("{}: missing key 'weight_map'", index_path));
  std::map<std::string, std::string> out;
  for (const auto& [name, file] : j["weight_map"].items()) {
    if (!file.is_string()) throw Error(fmt::format("{}: weight_map['{}'] is not a file name", index_path, name));
    const std::string f = file.get<std::string>();
    if (f.find('/') != std::string::npos || f == ".." || f.empty())
      throw Error(fmt::format("{}: weight_map['{}'] = '{}' is not a file in the folder", index_path, name, f));
    out[name] = f;
  }
  return out;
}

namespace {

// Finds each tensor's file, keeps the mappings open.
class WeightSource {
 public:
  explicit WeightSource(const std::string& dir) {
    const fs::path index = fs::path(dir) / "model.safetensors.index.json";
    const fs::path single = fs::path(dir) / "model.safetensors";
    if (fs::exists(index)) {
      const std::string idx = index.string();
      for (const auto& [name, f] : read_shard_index(idx)) {
        if (!files_.count(f)) files_[f] = SafetensorsFile::open((fs::path(dir) / f).string());
        where_[name] = f;
      }
      missing_where_ = idx;
    } else if (fs::exists(single)) {
      files_["model.safetensors"] = SafetensorsFile::open(single.string());
      for (const auto& [name, info] : files_["model.safetensors"]->tensors()) where_[name] = "model.safetensors";
      missing_where_ = single.string();
    } else if (auto pt = load_torch_weights(dir)) {  // pytorch_model.bin(.index.json); safetensors first, as HF
      for (const auto& [name, t] : pt->tensors) where_[name] = pt->file_of.at(name);
      torch_ = std::move(pt->tensors);
      missing_where_ = pt->source;
    } else {
      throw Error(fmt::format("{}: no model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
                              "pytorch_model.bin.index.json", dir));
    }
  }

  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  // The file (or index) the tensors are listed in, for messages.
  const std::string& source() const { return missing_where_; }
  // Tensors of the checkpoint never asked for with get(), in name order.
  std::vector<std::string> unused() const {
    std::vector<std::string> out;
    for (const auto& [name, file] : where_)
      if (!used_.count(name)) out.push_back(name);
    return out;
  }

  at::Tensor get(const std::string& name, std::vector<int64_t> shape, at::ScalarType dtype, at::Device device) {
    used_.insert(name);
    auto it = where_.find(name);
    if (it == where_.end()) throw Error(fmt::format("{}: missing tensor '{}'", missing_where_, name));
    const auto pt = torch_.find(name);  // else a safetensors file's
    const std::string path = pt != torch_.end() ? it->second : files_.at(it->second)->path();
    const std::vector<int64_t> have =
        pt != torch_.end() ? pt->second.sizes().vec() : files_.at(it->second)->at(name).shape;
    if (have != shape) {
      auto str = [](const std::vector<int64_t>& s) {
        std::string o = "[";
        for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
        return o + "]";
      };
      throw Error(fmt::format("{}: tensor '{}' has shape {}, the config needs {}", path, name, str(have), str(shape)));
    }
    if (pt != torch_.end()) {
      const at::ScalarType st = pt->second.scalar_type();
      if (st != at::kFloat && st != at::kHalf && st != at::kBFloat16 && st != at::kDouble)
        throw Error(fmt::format("{}: tensor '{}': dtype {} is not a floating-point weight type", path, name,
                                at::toString(st)));
      return pt->second.to(device, dtype).contiguous();  // a view of the mapping when nothing changes
    }
    const auto& file = files_.at(it->second);
    const TensorInfo& info = file->at(name);
    const at::ScalarType st = to_scalar(info.dtype, file->path(), name);
    std::shared_ptr<SafetensorsFile> keep = file;
    at::Tensor t = at::from_blob(const_cast<uint8_t*>(info.data), shape, [keep](void*) {},
                                 at::TensorOptions().dtype(st));
    const bool aligned = reinterpret_cast<uintptr_t>(info.data) % element_bytes(info.dtype) == 0;
    if (!aligned) t = t.clone();
    if (st != dtype || device != at::Device(at::kCPU)) t = t.to(device, dtype);
    return t;
  }

 private:
  std::map<std::string, std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::string> where_;
  std::map<std::string, at::Tensor> torch_;  // pytorch_model.bin weights (views of their mappings)
  std::string missing_where_;
  std::set<std::string> used_;
};

// phi3's checkpoint names: q/k/v rows concatenated into self_attn.qkv_proj
// and gate/up into mlp.gate_up_proj, at the place of q_proj and gate_proj.
std::vector<std::pair<std::string, at::Tensor>> fuse_projections(
    const std::vector<std::pair<std::string, at::Tensor>>& params) {
  std::map<std::string, at::Tensor> by_name(params.begin(), params.end());
  auto ends_with = [](const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  };
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& [name, t] : params) {
    const auto fuse = [&](const std::string& first, const std::vector<std::string>& parts, const std::string& fused) {
      const std::string prefix = name.substr(0, name.size() - first.size());
      std::vector<at::Tensor> rows;
      for (const auto& part : parts) rows.push_back(by_name.at(prefix + part).detach());
      out.emplace_back(prefix + fused, at::cat(rows, 0));
    };
    if (ends_with(name, "self_attn.q_proj.weight"))
      fuse("self_attn.q_proj.weight", {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"},
           "self_attn.qkv_proj.weight");
    else if (ends_with(name, "mlp.gate_proj.weight"))
      fuse("mlp.gate_proj.weight", {"mlp.gate_proj.weight", "mlp.up_proj.weight"}, "mlp.gate_up_proj.weight");
    else if (!ends_with(name, "self_attn.k_proj.weight") && !ends_with(name, "self_attn.v_proj.weight") &&
             !ends_with(name, "mlp.up_proj.weight"))
      out.emplace_back(name, t);
  }
  return out;
}

}  // namespace

at::Device parse_device(const std::string& name, const std::string& what) {
  std::optional<at::Device> device;
  try {
    device = at::Device(name);
  } catch (const std::exception&) {
  }
  if (!device || !(device->is_cpu() || device->is_cuda()))
    throw Error(fmt::format("{}: '{}' is not a device (expected cpu or cuda[:N])", what, name));
  if (device->is_cuda() && !at::hasCUDA()) throw Error(fmt::format("{}: '{}' needs a libtorch built with CUDA; this one has no CUDA support", what, name));
  return *device;
}

ModelConfig load_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(path)) throw Error(fmt::format("{}: no such file (not an HF checkpoint folder)", path));
  return parse_config(read_file(path), path);
}

Model load_model(const std::string& dir, const LoadOptions& options) {
  ModelConfig c = load_config(dir);
  const at::ScalarType dtype = options.dtype.value_or(dtype_from_config(c.torch_dtype));
  WeightSource src(dir);
  const int64_t H = c.hidden_size, hd = c.effective_head_dim(), I = c.intermediate_size;
  const int64_t q = c.num_attention_heads * hd, kv = c.num_key_value_heads * hd;
  auto get = [&](const std::string& name, std::vector<int64_t> shape) {
    return src.get(name, std::move(shape), dtype, options.device);
  };
  at::Tensor embed = get("model.embed_tokens.weight", {c.vocab_size, H});
  std::vector<LayerWeights> layers;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    LayerWeights w;
    w.input_layernorm = get(p + "input_layernorm.weight", {H});
    if (c.fused_projections()) {
      // phi3: one qkv_proj, q rows then k then v (Phi3Attention slices it
      // so); views of it, so the weights are held once.
      const at::Tensor qkv = get(p + "self_attn.qkv_proj.weight", {q + 2 * kv, H});
      w.q_proj = qkv.narrow(0, 0, q);
      w.k_proj = qkv.narrow(0, q, kv);
      w.v_proj = qkv.narrow(0, q + kv, kv);
    } else {
      w.q_proj = get(p + "self_attn.q_proj.weight", {q, H});
      w.k_proj = get(p + "self_attn.k_proj.weight", {kv, H});
      w.v_proj = get(p + "self_attn.v_proj.weight", {kv, H});
    }
    if (c.qkv_bias()) {  // qwen2; elsewhere a bias in the file is an unused tensor, refused below
      w.q_bias = get(p + "self_attn.q_proj.bias", {q});
      w.k_bias = get(p + "self_attn.k_proj.bias", {kv});
      w.v_bias = get(p + "self_attn.v_proj.bias", {kv});
    }
    w.o_proj = get(p + "self_attn.o_proj.weight", {H, q});
    if (c.qk_norm()) {  // qwen3
      w.q_norm = get(p + "self_attn.q_norm.weight", {hd});
      w.k_norm = get(p + "self_attn.k_norm.weight", {hd});
    }
    w.post_attention_layernorm = get(p + "post_attention_layernorm.weight", {H});
    if (c.sandwich_norms()) {  // gemma2, gemma3_text
      w.pre_feedforward_layernorm = get(p + "pre_feedforward_layernorm.weight", {H});
      w.post_feedforward_layernorm = get(p + "post_feedforward_layernorm.weight", {H});
    }
    if (c.fused_projections()) {
      // phi3: gate_up_proj, gate rows then up (Phi3MLP: gate, up = chunk(2)).
      const at::Tensor gate_up = get(p + "mlp.gate_up_proj.weight", {2 * I, H});
      w.gate_proj = gate_up.narrow(0, 0, I);
      w.up_proj = gate_up.narrow(0, I, I);
    } else {
      w.gate_proj = get(p + "mlp.gate_proj.weight", {I, H});
      w.up_proj = get(p + "mlp.up_proj.weight", {I, H});
    }
    w.down_proj = get(p + "mlp.down_proj.weight", {H, I});
    layers.push_back(std::move(w));
  }
  at::Tensor norm = get("model.norm.weight", {H});
  at::Tensor head = c.tie_word_embeddings ? at::Tensor() : get("lm_head.weight", {c.vocab_size, H});
  // A tied config with its own, different lm_head.weight in the file: which
  // of the two HF ends up using depends on its version, so refuse.
  if (c.tie_word_embeddings && src.contains("lm_head.weight") &&
      !at::equal(get("lm_head.weight", {c.vocab_size, H}), embed))
    throw Error(fmt::format("{}: config.json has tie_word_embeddings true, but tensor 'lm_head.weight' differs from "
                            "'model.embed_tokens.weight'",
                            src.source()));
  // Weights the config does not use mean the config does not describe them
  // (num_hidden_layers: 2 on 4-layer weights would evaluate a truncated
  // model): an error. HF's rotary inv_freq buffers and a tied lm_head copy
  // (checked equal above) carry nothing of their own.
  std::vector<std::string> unused;
  for (const auto& name : src.unused())
    if (name.find("rotary_emb.inv_freq") == std::string::npos && !(c.tie_word_embeddings && name == "lm_head.weight"))
      unused.push_back(name);
  if (!unused.empty())
    throw Error(fmt::format("{}: {} tensor(s) that the config ({} layers) does not use, e.g. '{}': config.json does "
                            "not describe these weights",
                            src.source(), unused.size(), c.num_hidden_layers, unused.front()));
  c.torch_dtype = config_dtype_name(dtype);
  return Model(c, embed, std::move(layers), norm, head);
}

void save_model(const Model& model, const std::string& dir, uint64_t max_shard_bytes) {
  fs::create_directories(dir);
  ModelConfig c = model.config();
  c.torch_dtype = config_dtype_name(model.dtype());
  std::vector<at::Tensor> cpu;  // keeps the bytes alive until written
  std::vector<TensorView> views;
  auto params = model.named_parameters();
  if (c.fused_projections()) params = fuse_projections(params);
  for (const auto& [name, t] : params) {
    at::Tensor h = t.detach().to(at::kCPU).contiguous();
    cpu.push_back(h);
    TensorView v;
    v.name = name;
    v.dtype = to_st(h.scalar_type());
    v.shape = h.sizes().vec();
    v.data = h.data_ptr();
    v.bytes = uint64_t(h.numel()) * h.element_size();
    views.push_back(std::move(v));
  }
  const std::map<std::string, std::string> meta{{"format", "pt"}};
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single_path = fs::path(dir) / "model.safetensors";
  if (max_shard_bytes == 0) {
    write_safetensors(single_path.string(), views, meta);
    fs::remove(index_path);
  } else {
    std::vector<std::vector<TensorView>> shards(1);
    uint64_t in_shard = 0, total = 0;
    for (auto& v : views) {
      if (!shards.back().empty() && in_shard + v.bytes > max_shard_bytes) {
        shards.emplace_back();
        in_shard = 0;
      }
      in_shard += v.bytes;
      total += v.bytes;
      shards.back().push_back(v);
    }
    nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
    for (size_t s = 0; s < shards.size(); ++s) {
      const std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size());
      write_safetensors((fs::path(dir) / name).string(), shards[s], meta);
      for (const auto& v : shards[s]) weight_map[v.name] = name;
    }
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = weight_map;
    write_file_atomic(index_path.string(), index.dump(2) + "\n");
    fs::remove(single_path);
  }
  write_file_atomic((fs::path(dir) / "config.json").string(), config_to_json(c));
}

}  // namespace kvs::llm
