// Chunks and codec models for the GPU cachegen scheme=paper encoder's tests
// (cuda_paper_encode_core_test.cpp on the CPU, cuda_paper_encode_test.cpp on
// a GPU): several shapes (few KV heads as with grouped-query attention, head
// dims that are not powers of two), odd token counts, each with a codec model
// learned from two other chunks, and a chunk with values outside the model's
// ranges (escapes at anchors and deltas, infinities and NaNs).
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "codec/bitstream.h"
#include "codec/cachegen.h"  // kCacheGenLevels
#include "codec/cachegen_paper.h"
#include "codec/codec.h"
#include "codec/fp16.h"
#include "tests/codec/cuda_cases.h"

namespace kvs::codec::paper_encode_test {

struct PaperCase {
  std::string name;
  KVChunk chunk;
  std::shared_ptr<const CacheGenPaperModel> model;
  std::shared_ptr<const Codec> cpu;  // cachegen scheme=paper with that model
  std::string model_file;            // the name the model had (removed after loading)
};

inline std::string shape_name(KVShape s) {
  return std::to_string(s.layers) + "x" + std::to_string(s.kv_heads) + "x" + std::to_string(s.head_dim);
}

// A model learned from two synthetic chunks of `shape`, and the CPU codec
// with it (the model file is written to a temporary path and removed).
inline PaperCase with_model(KVShape shape) {
  PaperCase c;
  const std::vector<KVChunk> samples = {cuda_test::synthetic_chunk(shape, 120, 0, 11),
                                        cuda_test::synthetic_chunk(shape, 47, 300, 12)};
  c.model_file = (std::filesystem::temp_directory_path() /
                  ("kvs-paper-encode-" + std::to_string(::getpid()) + "-" + shape_name(shape) + ".cgm"))
                     .string();
  std::ofstream(c.model_file, std::ios::binary) << train_cachegen_paper_model(samples);
  c.model = load_cachegen_paper_model(c.model_file);
  c.cpu = make_codec("cachegen", CodecOptions{{{"scheme", "paper"}}, c.model_file});
  std::filesystem::remove(c.model_file);
  return c;
}

// Values no model of these chunks covers: some scaled far out (escapes at
// anchors, t % 10 == 0, and at deltas), infinities and NaNs, all values fp16
// holds (so that fp16 input gives the same chunk).
inline void add_outliers(KVChunk& c) {
  const size_t n = c.values.size();
  for (size_t i = 0; i < n; i += 37) c.values[i] = round_to_dtype(c.values[i] * 300.0f, DType::kF16);
  for (size_t i = 5; i < n; i += 211) c.values[i] = std::numeric_limits<float>::infinity();
  for (size_t i = 11; i < n; i += 307) c.values[i] = -std::numeric_limits<float>::infinity();
  for (size_t i = 17; i < n; i += 401) c.values[i] = f16_bits_to_f32(0x7e00);  // fp16's quiet NaN, as fp32
}

// Shapes and tokens: (layers, kv heads, head dim), token count, first token.
struct Spec {
  KVShape shape;
  uint32_t tokens;
  uint64_t token_begin;
  bool outliers;
};
inline std::vector<Spec> specs() {
  return {
      {{2, 2, 8}, 24, 40, false},     // tiny
      {{4, 2, 64}, 257, 1000, false},  // GQA-like: 2 KV heads; an odd count, a partial last group
      {{3, 4, 32}, 31, 0, true},       // escapes everywhere
      {{1, 3, 5}, 11, 7, true},        // odd dims: a group of 10 and one token
      {{3, 1, 16}, 1, 0, false},       // one token: anchors only
      {{4, 8, 128}, 300, 4096, false},  // a 7B model's head layout (8 KV heads x 128 dims)
  };
}

inline PaperCase make(const Spec& s) {
  PaperCase c = with_model(s.shape);
  c.chunk = cuda_test::synthetic_chunk(s.shape, s.tokens, s.token_begin, s.tokens + 99);
  if (s.outliers) add_outliers(c.chunk);
  c.name = shape_name(s.shape) + " T=" + std::to_string(s.tokens) + (s.outliers ? " outliers" : "");
  return c;
}

// The escapes a stream's substreams store, all together (to check that a
// case exercises them).
inline uint64_t escape_count(const Bytes& stream) {
  const ParsedStream ps = parse_stream(stream, CodecId::kCacheGen);
  uint64_t n = 0;
  for (const auto& sec : ps.sections)
    n += uint32_t(sec[0]) | uint32_t(sec[1]) << 8 | uint32_t(sec[2]) << 16 | uint32_t(sec[3]) << 24;
  return n;
}

}  // namespace kvs::codec::paper_encode_test
