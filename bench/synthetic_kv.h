// Synthetic KV chunks for the codec benchmarks (bench/codec_cuda_bench.cpp,
// bench/codec_bench.cpp's BM_plan): per (layer, kind, head, dim) a Gaussian
// with its own mean and a log-normal spread (keys wider; the same for every
// chunk of a shape: one "model"), the values drawn by the seed, layer 0's rows
// a function of the token (as a byte-level model's), rounded to fp16.
// Deterministic; built in parallel over layers.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

#include "codec/codec.h"

namespace kvs::bench {

inline codec::KVChunk synthetic_chunk(codec::KVShape shape, uint32_t tokens, uint64_t token_begin, uint64_t seed) {
  using codec::Kind;
  codec::KVChunk c(shape, codec::DType::kF16, token_begin, tokens);
  // 2^16 standard normal samples, drawn from by an LCG: fast enough for 10^8 values.
  std::vector<float> normal(1 << 16);
  uint64_t x = 7;  // the same table for every seed (the seed picks the values drawn from it)
  const auto uniform = [&] {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return (double(x >> 11) + 0.5) * 0x1.0p-53;
  };
  for (float& v : normal) v = float(std::sqrt(-2 * std::log(uniform())) * std::cos(6.283185307179586 * uniform()));
  const uint32_t D = shape.head_dim;
  std::vector<std::thread> workers;
  const uint32_t threads = std::max(1u, std::min(shape.layers, std::thread::hardware_concurrency()));
  for (uint32_t w = 0; w < threads; ++w)
    workers.emplace_back([&, w] {
      uint64_t r = 0;
      const auto draw = [&] {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        return normal[r >> 48];
      };
      for (uint32_t l = w; l < shape.layers; l += threads)
        for (Kind k : {Kind::kKey, Kind::kValue})
          for (uint32_t h = 0; h < shape.kv_heads; ++h) {
            // Channel statistics from (layer, kind, head) alone: every chunk
            // of a shape comes from one "model"; the values from the seed.
            r = (uint64_t(l) * 2 + uint64_t(k)) * 1000003 + h + 17;
            std::vector<float> mean(D), spread(D);
            for (uint32_t d = 0; d < D; ++d) {
              mean[d] = k == Kind::kKey ? 1.5f * draw() : 0.1f * draw();
              spread[d] = std::exp(0.7f * draw()) * (k == Kind::kKey ? 1.0f : 0.3f);
            }
            r = seed * 0x9E3779B97F4A7C15ull + (uint64_t(l) * 2 + uint64_t(k)) * 4099 + h;
            for (uint32_t t = 0; t < tokens; ++t) {
              const uint64_t word = (token_begin + t) * 7 % 16;
              for (uint32_t d = 0; d < D; ++d) {
                const float z = l == 0 ? normal[(word * D + d) * 40503 % normal.size()] : draw();
                c.at(l, k, h, t, d) = codec::round_to_dtype(mean[d] + spread[d] * z, c.dtype);
              }
            }
          }
    });
  for (auto& t : workers) t.join();
  return c;
}

}  // namespace kvs::bench
