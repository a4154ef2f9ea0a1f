// Reader for PyTorch `torch.save` checkpoints in the zip format (torch >= 1.6),
// e.g. HF's pytorch_model.bin and pytorch_model-0000i-of-0000N.bin shards.
//
// The zip holds `<archive>/data.pkl` (a pickle, protocol 2, of the state
// dict), `<archive>/data/<key>` (one record per storage, raw little-endian
// bytes), `<archive>/version` and optionally `<archive>/byteorder`.
//
// libtorch 1.13's own unpickler (torch::pickle_load) cannot read state dicts:
// it turns collections.OrderedDict into None (pytorch issue #100741, fixed in
// 2024). So this file has a small pickle machine of its own that understands
// only what a state dict needs: dict/OrderedDict, tuples, ints, strings, bools,
// None, the storage persistent ids and torch._utils._rebuild_tensor_v2. Any
// other global (os.system, torch.nn.Module, ...) is refused by name before it
// could matter: nothing is imported and no code is run. The legacy pre-1.6
// format, compressed records and big-endian files are refused too.
//
// Memory: each file is memory-mapped (copy-on-write, like the safetensors
// reader) and tensors are views of the mapping (kept alive by the tensors),
// so the weights are not copied when they are loaded; shared storages stay
// shared, and non-contiguous tensors keep their strides. Every record read
// (data.pkl, byteorder, each storage) is checked against the zip's CRC-32,
// as torch's own reader does: one pass over the weights (PCLMUL CRC, several
// GB/s), and a corrupt file is an error naming the record.
#pragma once

#include <map>
#include <optional>
#include <string>

#include <ATen/ATen.h>

namespace kvs::llm {

// The state dict of one torch.save zip file: name -> CPU tensor. Throws
// kvs::Error naming the file for anything it does not read (see above), and
// for a tensor reaching outside its storage.
std::map<std::string, at::Tensor> read_torch_state_dict(const std::string& path);

// The weights of a folder, from DIR/pytorch_model.bin.index.json (its
// weight_map names each tensor's shard, as model.safetensors.index.json does)
// or else DIR/pytorch_model.bin.
struct TorchWeights {
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> file_of;  // tensor -> path of its file
  std::string source;                          // the index or the file, for messages
};
// nullopt when the folder has neither file. With an index, a shard that is
// missing, a tensor its shard does not hold, a tensor found in two shards and
// a tensor in a shard that the index does not list are kvs::Errors.
std::optional<TorchWeights> load_torch_weights(const std::string& dir);

}  // namespace kvs::llm
