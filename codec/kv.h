// KV-cache shapes and chunks as plain, typed memory: the codec's view of a
// KV cache. No libtorch here; `llm/` converts to and from tensors.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "codec/hd.h"

namespace kvs::codec {

// Element type a KV cache was produced in (and that `raw` reproduces).
enum class DType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2 };
const char* to_string(DType dtype);
DType dtype_from_string(const std::string& name);  // "fp32"/"f32"/"float32", ...; throws
uint32_t dtype_bytes(DType dtype);

// K or V.
enum class Kind : uint8_t { kKey = 0, kValue = 1 };

// The per-token shape of a model's KV cache.
struct KVShape {
  uint32_t layers = 0;
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;

  KVS_HD uint64_t channels() const { return uint64_t(kv_heads) * head_dim; }  // per layer and kind
  KVS_HD uint64_t elements_per_token() const { return 2ull * layers * channels(); }
  bool operator==(const KVShape&) const = default;
};

// A token range [token_begin, token_begin + tokens) of a KV cache, all layers,
// K and V. Values are held as float32 whatever `dtype` says; `dtype` is the
// precision the cache was produced in (fp16/bf16 values are exactly
// representable). Layout: [layer][kind][head][token][dim], i.e. for each
// layer and kind one row-major [kv_heads, tokens, head_dim] plane as HF
// stores it (keys after RoPE).
struct KVChunk {
  KVShape shape;
  DType dtype = DType::kF16;
  uint64_t token_begin = 0;
  uint32_t tokens = 0;
  std::vector<float> values;
  // Tokens of the whole context the chunk is cut from: its tokens are
  // [token_begin, token_begin + tokens) of [0, context_tokens). 0: unknown,
  // the chunk stands alone. Codecs that treat a context's last tokens apart
  // (KIVI's full-precision residual) read it; bitstreams do not carry it.
  // slice() and concat() keep it.
  uint64_t context_tokens = 0;

  KVChunk() = default;
  KVChunk(KVShape s, DType d, uint64_t begin, uint32_t n)
      : shape(s), dtype(d), token_begin(begin), tokens(n), values(s.elements_per_token() * n) {}

  uint64_t plane_size() const { return shape.channels() * tokens; }
  uint64_t plane_offset(uint32_t layer, Kind kind) const {
    return (uint64_t(layer) * 2 + uint64_t(kind)) * plane_size();
  }
  std::span<float> plane(uint32_t layer, Kind kind) {
    return {values.data() + plane_offset(layer, kind), plane_size()};
  }
  std::span<const float> plane(uint32_t layer, Kind kind) const {
    return {values.data() + plane_offset(layer, kind), plane_size()};
  }
  float& at(uint32_t layer, Kind kind, uint32_t head, uint32_t token, uint32_t dim) {
    return values[plane_offset(layer, kind) + (uint64_t(head) * tokens + token) * shape.head_dim + dim];
  }
  const float& at(uint32_t layer, Kind kind, uint32_t head, uint32_t token, uint32_t dim) const {
    return values[plane_offset(layer, kind) + (uint64_t(head) * tokens + token) * shape.head_dim + dim];
  }

  // Tokens [begin, begin + n) of this chunk (relative to token_begin) as a new chunk.
  KVChunk slice(uint32_t begin, uint32_t n) const;
  // Concatenates chunks of equal shape and dtype that follow each other in token order.
  static KVChunk concat(std::span<const KVChunk> parts);
};

// Rounds a float to the nearest value representable in `dtype` (round to
// nearest even), returned as float.
float round_to_dtype(float x, DType dtype);
uint16_t float_to_half_bits(float x);
float half_bits_to_float(uint16_t h);
uint16_t float_to_bf16_bits(float x);
float bf16_bits_to_float(uint16_t h);

}  // namespace kvs::codec
