#include "llm/kv_cache.h"

#include <cstring>

#include <fmt/format.h>

#include "base/error.h"

namespace kvs::llm {

codec::KVShape KVCache::shape() const {
  if (keys.empty()) return {};
  return {uint32_t(keys.size()), uint32_t(keys[0].size(0)), uint32_t(keys[0].size(2))};
}

KVCache KVCache::slice(int64_t begin, int64_t n) const {
  KVCache out;
  for (size_t l = 0; l < keys.size(); ++l) {
    out.keys.push_back(keys[l].narrow(1, begin, n));
    out.values.push_back(values[l].narrow(1, begin, n));
  }
  return out;
}

KVCache KVCache::concat(const KVCache& next) const {
  if (empty()) return next;
  if (next.empty()) return *this;
  if (next.layers() != layers()) throw Error("KVCache::concat: layer counts differ");
  KVCache out;
  for (size_t l = 0; l < keys.size(); ++l) {
    out.keys.push_back(at::cat({keys[l], next.keys[l]}, 1));
    out.values.push_back(at::cat({values[l], next.values[l]}, 1));
  }
  return out;
}

KVCache KVCache::to(at::ScalarType dtype, at::Device device) const {
  KVCache out;
  for (size_t l = 0; l < keys.size(); ++l) {
    out.keys.push_back(keys[l].to(device, dtype));
    out.values.push_back(values[l].to(device, dtype));
  }
  return out;
}

codec::DType to_codec_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return codec::DType::kF32;
    case at::kHalf: return codec::DType::kF16;
    case at::kBFloat16: return codec::DType::kBF16;
    default: throw Error(fmt::format("KV cache dtype {} is not float32, float16 or bfloat16", at::toString(t)));
  }
}

at::ScalarType to_scalar_type(codec::DType d) {
  switch (d) {
    case codec::DType::kF32: return at::kFloat;
    case codec::DType::kF16: return at::kHalf;
    case codec::DType::kBF16: return at::kBFloat16;
  }
  return at::kFloat;
}

codec::KVChunk to_chunk(const KVCache& cache, uint64_t token_begin) {
  if (cache.empty()) throw Error("to_chunk: empty KV cache");
  const codec::DType dtype = to_codec_dtype(cache.keys[0].scalar_type());
  codec::KVChunk chunk(cache.shape(), dtype, token_begin, uint32_t(cache.tokens()));
  for (int64_t l = 0; l < cache.layers(); ++l) {
    for (int k = 0; k < 2; ++k) {
      const at::Tensor& t = k == 0 ? cache.keys[size_t(l)] : cache.values[size_t(l)];
      at::Tensor f = t.detach().to(at::kCPU, at::kFloat).contiguous();
      auto out = chunk.plane(uint32_t(l), codec::Kind(k));
      if (uint64_t(f.numel()) != out.size()) throw Error("to_chunk: layers differ in shape");
      std::memcpy(out.data(), f.data_ptr<float>(), out.size() * sizeof(float));
    }
  }
  return chunk;
}

KVCache view_chunk(const codec::KVChunk& chunk) {
  KVCache out;
  const auto& s = chunk.shape;
  for (uint32_t l = 0; l < s.layers; ++l) {
    for (int k = 0; k < 2; ++k) {
      auto plane = chunk.plane(l, codec::Kind(k));
      at::Tensor t = at::from_blob(const_cast<float*>(plane.data()),
                                   {int64_t(s.kv_heads), int64_t(chunk.tokens), int64_t(s.head_dim)},
                                   at::TensorOptions().dtype(at::kFloat));
      (k == 0 ? out.keys : out.values).push_back(t);
    }
  }
  return out;
}

KVCache from_chunk(const codec::KVChunk& chunk, at::ScalarType dtype, at::Device device) {
  KVCache view = view_chunk(chunk);
  KVCache out;
  for (size_t l = 0; l < view.keys.size(); ++l) {
    out.keys.push_back(view.keys[l].to(device, dtype, false, /*copy=*/true));
    out.values.push_back(view.values[l].to(device, dtype, false, /*copy=*/true));
  }
  return out;
}

}  // namespace kvs::llm
