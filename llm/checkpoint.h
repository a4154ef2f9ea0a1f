// HF checkpoints: a folder with config.json and model.safetensors, or shards
// model-0000i-of-0000N.safetensors listed in model.safetensors.index.json;
// without those, PyTorch's pytorch_model.bin or its shards listed in
// pytorch_model.bin.index.json (llm/torch_checkpoint.h; same checks after).
// Weights are memory-mapped; tensors already in the requested dtype on CPU are
// views of the mapping (kept alive by the tensors themselves).
#pragma once

#include <map>
#include <optional>
#include <string>

#include <ATen/ATen.h>

#include "llm/model.h"

namespace kvs::llm {

struct LoadOptions {
  std::optional<at::ScalarType> dtype;  // default: config's torch_dtype
  at::Device device = at::kCPU;
};

// "cpu" or "cuda[:N]" as a device; a kvs::Error naming `what` for anything
// else, and for cuda when this libtorch was built without CUDA.
at::Device parse_device(const std::string& name, const std::string& what);

// HF's shard index (model.safetensors.index.json, pytorch_model.bin.index.json):
// its weight_map, tensor name -> shard file name (a file in the index's
// folder). Throws kvs::Error naming the index for bad JSON, a missing
// weight_map, and entries that are not plain file names.
std::map<std::string, std::string> read_shard_index(const std::string& index_path);

// Reads DIR/config.json only (throws kvs::Error naming the file and key).
ModelConfig load_config(const std::string& dir);
// Loads a model; every missing tensor, wrong shape or bad file is a kvs::Error
// naming the file and tensor, and so is a tensor the config does not use
// (except HF's old rotary_emb.inv_freq buffers, and with tied embeddings an
// lm_head.weight equal to model.embed_tokens.weight).
Model load_model(const std::string& dir, const LoadOptions& options = {});

// Writes DIR/config.json and DIR/model.safetensors (atomically; DIR is
// created), or, with max_shard_bytes > 0, shards of at most that many bytes
// (a tensor larger than that gets a shard of its own) plus
// model.safetensors.index.json. Tensors are stored in the model's dtype.
void save_model(const Model& model, const std::string& dir, uint64_t max_shard_bytes = 0);

}  // namespace kvs::llm
