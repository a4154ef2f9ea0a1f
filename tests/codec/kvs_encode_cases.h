// Chunks for the GPU kvs encoder's tests (cuda_kvs_encode_core_test.cpp on
// the CPU, cuda_kvs_encode_test.cpp on a GPU): the kvs cases of
// cuda_cases.h and more shapes and parameters, and what the tests compare.
#pragma once

#include <string>
#include <vector>

#include "codec/codec.h"
#include "codec/fp16.h"
#include "tests/codec/cuda_cases.h"

namespace kvs::codec::kvs_encode_test {

// The chunk with every value rounded to fp16 (what fp16 input holds).
inline KVChunk through_f16(KVChunk c) {
  for (float& v : c.values) v = f16_bits_to_f32(f32_to_f16_bits(v));
  return c;
}

// An fp32 chunk of the fp16 one's values, perturbed so that fp16 does not hold
// them, with every 97th value 40 times larger (escapes and raw low bits).
inline KVChunk f32_variant(const KVChunk& f16) {
  KVChunk f32 = f16;
  f32.dtype = DType::kF32;
  for (size_t i = 0; i < f32.values.size(); ++i) f32.values[i] *= (1.0f + 1e-4f * float(i % 7)) * (i % 97 ? 1 : 40);
  return f32;
}

using cuda_test::error_of;

struct EncodeSpec {
  CodecParams params;
  KVShape shape;
  uint32_t tokens;
  uint64_t token_begin;
  uint64_t context_tokens = 0;  // KVChunk::context_tokens (a LongRoPE codec's table)
};

inline std::vector<EncodeSpec> encode_specs() {
  std::vector<EncodeSpec> out;
  for (const auto& s : cuda_test::case_specs())
    if (s.codec == "kvs") out.push_back({s.params, s.shape, s.tokens, s.token_begin});
  // One kv head (a GQA model's few), odd token counts, a single token, an odd
  // head_dim (keys then coded as given), and the other parameters.
  out.push_back({{}, {3, 1, 16}, 33, 7});
  out.push_back({{}, {2, 1, 64}, 1, 100});
  out.push_back({{{"rdo", "0"}, {"weights", "0.5:1:2:1.5"}}, {2, 3, 6}, 77, 5});
  out.push_back({{{"ladder", "0.05:0.4:3"}, {"rope_theta", "500000"}}, {1, 2, 5}, 19, 9});
  // LongRoPE: a context past rope_long_after takes the second table.
  const std::string f = cuda_test::scaled_rope_inv_freq(32);
  CodecParams long_rope = {{"rope_inv_freq", f}, {"rope_inv_freq_long", cuda_test::scaled_rope_inv_freq(32, 3)},
                           {"rope_long_after", "4096"}};
  out.push_back({long_rope, {2, 2, 32}, 90, 5000, 5090});
  out.push_back({long_rope, {2, 2, 32}, 90, 1000, 4096});
  // Per-layer RoPE with LongRoPE's tables on the main RoPE, a second base on layers 0 and 2.
  CodecParams per_layer = long_rope;
  per_layer["rope_alt_theta"] = "10000";
  per_layer["rope_alt_layers"] = "0:2";
  out.push_back({per_layer, {3, 2, 32}, 50, 6000, 6050});
  return out;
}

// The levels a test compares: every level, but on the largest chunks (over
// 100,000 values) only a few (the time of the CPU-run thread bodies).
inline std::vector<int> levels_to_compare(const KVChunk& chunk, int levels) {
  std::vector<int> out;
  for (int level = 0; level < levels; ++level)
    if (chunk.values.size() <= 100000 || level % 4 == 0 || level == levels - 1) out.push_back(level);
  return out;
}

}  // namespace kvs::codec::kvs_encode_test
