// A model's KV cache as tensors, and its conversion to the codec's KVChunk.
#pragma once

#include <vector>

#include <ATen/ATen.h>

#include "codec/kv.h"

namespace kvs::llm {

// Per layer K and V, each [kv_heads, tokens, head_dim] (K after RoPE, as HF
// stores it), all of one dtype and device.
struct KVCache {
  std::vector<at::Tensor> keys;
  std::vector<at::Tensor> values;

  bool empty() const { return keys.empty(); }
  int64_t layers() const { return int64_t(keys.size()); }
  int64_t tokens() const { return keys.empty() ? 0 : keys[0].size(1); }
  codec::KVShape shape() const;
  // Tokens [begin, begin + n) (views, no copy).
  KVCache slice(int64_t begin, int64_t n) const;
  // This cache followed by `next` along the token axis.
  KVCache concat(const KVCache& next) const;
  KVCache to(at::ScalarType dtype, at::Device device = at::kCPU) const;
};

codec::DType to_codec_dtype(at::ScalarType t);  // throws for non-float types
at::ScalarType to_scalar_type(codec::DType d);

// Copies `cache` into a KVChunk (float32 storage; dtype records the cache's
// precision). token_begin is stored as given.
codec::KVChunk to_chunk(const KVCache& cache, uint64_t token_begin = 0);
// A KVCache whose float32 CPU tensors are views into `chunk.values` (no copy):
// `chunk` must outlive the result and its tensors.
KVCache view_chunk(const codec::KVChunk& chunk);
// A KVCache with its own storage in `dtype` on `device`.
KVCache from_chunk(const codec::KVChunk& chunk, at::ScalarType dtype, at::Device device = at::kCPU);

}  // namespace kvs::llm
