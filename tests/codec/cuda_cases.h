// Streams for the GPU decoder tests (cuda_core_test.cpp on the CPU,
// cuda_decode_test.cpp on a GPU): real bitstreams of both codecs at several
// shapes, levels and parameters, from synthetic KV chunks shaped like a
// model's (per-channel means and spreads, keys after RoPE-like rotation,
// layer 0's rows a function of the token so that kvs sends row references).
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "codec/cachegen_paper.h"
#include "codec/codec.h"
#include "tests/codec/corrupt.h"

namespace kvs::codec::cuda_test {

// A deterministic chunk (LCG and Box-Muller: the same on every platform's libm
// within rounding that fp16 absorbs; the tests compare decoders on the same
// stream, not values against constants).
inline KVChunk synthetic_chunk(KVShape shape, uint32_t tokens, uint64_t token_begin, uint64_t seed) {
  KVChunk c(shape, DType::kF16, token_begin, tokens);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  const auto uniform = [&] {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return (double(x >> 11) + 0.5) * 0x1.0p-53;
  };
  const auto normal = [&] { return std::sqrt(-2 * std::log(uniform())) * std::cos(6.283185307179586 * uniform()); };
  const uint32_t D = shape.head_dim;
  std::vector<double> vocab(16 * size_t(D));
  for (double& v : vocab) v = normal();
  for (uint32_t l = 0; l < shape.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue})
      for (uint32_t h = 0; h < shape.kv_heads; ++h) {
        // The channels' statistics depend on (layer, kind, head) only, not on
        // the seed: chunks of one shape come from one "model" (so that a
        // scheme=paper codec model learned from other chunks fits them).
        const uint64_t saved = x;
        x = (uint64_t(l) * 2 + uint64_t(k)) * 1000003 + h + 17;
        std::vector<double> mean(D), spread(D);
        for (uint32_t d = 0; d < D; ++d) {
          mean[d] = k == Kind::kKey ? 1.5 * normal() : 0.1 * normal();
          spread[d] = std::exp(0.7 * normal()) * (k == Kind::kKey ? 1.0 : 0.3);
        }
        x = saved;
        for (uint32_t t = 0; t < tokens; ++t) {
          const uint32_t word = uint32_t((token_begin + t) * 7 % 16);  // layer 0: rows repeat with the "token"
          for (uint32_t d = 0; d < D; ++d) {
            const double v = l == 0 ? vocab[size_t(word) * D + d] * spread[d] + mean[d] : mean[d] + spread[d] * normal();
            c.at(l, k, h, t, d) = round_to_dtype(float(v), c.dtype);
          }
        }
      }
  return c;
}

struct StreamCase {
  std::string name;
  Bytes stream;
  KVChunk decoded;                                   // the CPU decoder's output
  std::shared_ptr<const Codec> codec;                // the CPU codec (for corrupt streams)
  std::shared_ptr<const CacheGenPaperModel> model;   // scheme=paper: its codec model
};

struct CaseSpec {
  std::string codec;
  CodecParams params;
  KVShape shape;
  uint32_t tokens;
  uint64_t token_begin;
  int level;
  bool paper = false;  // cachegen scheme=paper, with a model learned from two other chunks
};

// A scaled RoPE's head_dim / 2 frequencies (kvs's rope_inv_freq): base 5e5,
// the slower half divided by 8 (Llama 3's rule in outline), all by `divide`.
inline std::string scaled_rope_inv_freq(uint32_t head_dim, double divide = 1) {
  std::string s;
  for (uint32_t i = 0; i < head_dim / 2; ++i)
    s += fmt::format("{}{}", i ? ":" : "",
                     float(std::pow(5e5, -2.0 * i / head_dim) / (4 * i >= head_dim ? 8 : 1) / divide));
  return s;
}

inline std::vector<CaseSpec> case_specs() {
  return {
      {"kvs", {}, {2, 2, 8}, 24, 40, 0},
      {"kvs", {}, {4, 2, 64}, 300, 1000, 3},
      {"kvs", {{"centroid", "0"}, {"rope_theta", "0"}}, {3, 4, 32}, 257, 0, 6},
      {"kvs", {{"rows", "0"}}, {2, 8, 128}, 200, 4096, 1},
      {"kvs", {}, {2, 2, 128}, 1200, 0, 9},  // several pieces per table
      {"kvs", {{"rope_inv_freq", scaled_rope_inv_freq(64)}}, {2, 2, 64}, 300, 70000, 2},
      // Per-layer RoPE: a table, a second base and no RoPE across four layers.
      {"kvs", {{"rope_inv_freq", scaled_rope_inv_freq(32)}, {"rope_alt_theta", "1000000"}, {"rope_alt_layers", "1:3"}},
       {4, 2, 32}, 100, 9000, 4},
      {"kvs", {{"rope_alt_theta", "0"}, {"rope_alt_layers", "0"}}, {2, 2, 16}, 40, 0, 5},
      {"cachegen", {}, {2, 2, 8}, 24, 40, 0},
      {"cachegen", {}, {4, 2, 64}, 300, 1000, 2},
      {"cachegen", {{"stream_tokens", "64"}}, {3, 4, 32}, 257, 0, 6},
      {"cachegen", {}, {2, 8, 128}, 600, 0, 4},
      {"cachegen", {{"stream_tokens", "7"}}, {1, 3, 5}, 20, 3, 5},  // channels not a multiple of 32
      {"cachegen", {{"scheme", "paper"}}, {2, 2, 8}, 24, 40, 0, true},
      {"cachegen", {{"scheme", "paper"}}, {4, 2, 64}, 300, 1000, 2, true},
      {"cachegen", {{"scheme", "paper"}}, {3, 4, 32}, 257, 0, 6, true},
  };
}

inline StreamCase make_case(const CaseSpec& spec) {
  StreamCase c;
  std::string model_file;
  if (spec.paper) {
    // A codec model learned from two other chunks, through a temporary file.
    const std::vector<KVChunk> samples = {synthetic_chunk(spec.shape, 200, 0, 7), synthetic_chunk(spec.shape, 130, 500, 8)};
    model_file = (std::filesystem::temp_directory_path() /
                  ("kvs-cuda-case-" + std::to_string(::getpid()) + "-" + std::to_string(spec.shape.layers) + "x" +
                   std::to_string(spec.shape.kv_heads) + "x" + std::to_string(spec.shape.head_dim) + ".cgm"))
                     .string();
    std::ofstream(model_file, std::ios::binary) << train_cachegen_paper_model(samples);
    c.model = load_cachegen_paper_model(model_file);
  }
  const std::shared_ptr<const Codec> codec = make_codec(spec.codec, CodecOptions{spec.params, model_file});
  if (!model_file.empty()) std::filesystem::remove(model_file);
  c.codec = codec;
  const KVChunk chunk = synthetic_chunk(spec.shape, spec.tokens, spec.token_begin, spec.tokens + spec.shape.layers);
  c.name = spec.codec + " " + std::to_string(spec.shape.layers) + "x" + std::to_string(spec.shape.kv_heads) + "x" +
           std::to_string(spec.shape.head_dim) + " T=" + std::to_string(spec.tokens) + " L" + std::to_string(spec.level);
  for (const auto& [k, v] : spec.params) c.name += " " + k + "=" + v;
  c.stream = codec->encode(chunk, spec.level);
  c.decoded = codec->decode(c.stream);
  return c;
}

// A copy of a case's stream with one payload byte changed at `at` and its CRC
// fixed, so that the mutation reaches the decoders' own checks, and whether
// the CPU decoder rejects it (CorruptStream).
struct Corrupted {
  size_t at;
  Bytes bytes;
  bool cpu_rejects;
};

// Up to 12 such copies, from 5 bytes before the end backwards every `step`
// bytes within the stream's last quarter (its substreams, not its header).
inline std::vector<Corrupted> corrupted_copies(const StreamCase& c, size_t step) {
  std::vector<Corrupted> out;
  for (size_t at = c.stream.size() - 5; at > c.stream.size() * 3 / 4 && out.size() < 12; at -= step) {
    Corrupted k{at, c.stream, false};
    k.bytes[at] ^= 0x5a;
    fix_crc(k.bytes);
    try {
      (void)c.codec->decode(k.bytes);
    } catch (const CorruptStream&) {
      k.cpu_rejects = true;
    }
    out.push_back(std::move(k));
  }
  return out;
}

// The message of what f throws (kvs::Error), or "" when it does not throw.
template <class F>
std::string error_of(F&& f) {
  try {
    (void)f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace kvs::codec::cuda_test
