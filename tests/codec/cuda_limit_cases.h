// Streams at the edges of what a chunk may hold, for the GPU codecs' limit
// tests (cuda_limits_core_test.cpp: the thread bodies on the CPU;
// cuda_limits_test.cpp: the kernels on a GPU): launch geometry that the
// cases of cuda_cases.h do not reach. Kept small, so that the sanitizers'
// runs of the GPU test stay short.
#pragma once

#include <vector>

#include "tests/codec/cuda_cases.h"

namespace kvs::codec::cuda_test {

inline std::vector<CaseSpec> edge_specs() {
  return {
      // One value per (layer, kind): grids of one block, 31 idle lanes of
      // cachegen's warp, 3 idle warps, a CRC tile of a few dozen bytes.
      {"cachegen", {}, {1, 1, 1}, 1, 0, 0},
      {"kvs", {}, {1, 1, 1}, 1, 0, 0},
      {"cachegen", {{"scheme", "paper"}}, {1, 1, 1}, 1, 0, 0, true},
      // The largest stream_tokens (a u16): one 65,535-token stream per
      // channel, then one of 1 token; 33 channels (a second x block of one
      // channel).
      {"cachegen", {{"stream_tokens", "65535"}}, {1, 33, 1}, 65536, 0, 3},
      // The largest head_dim: 512 RoPE pairs, a scheme=paper thread's 1,024
      // channels of scratch, 32 cachegen blocks per plane.
      {"kvs", {}, {1, 1, 1024}, 33, 5, 4},
      {"cachegen", {{"scheme", "paper"}}, {1, 1, 1024}, 21, 0, 2, true},
      // Sections of one token each: 2,562 sections (a multi-block scan of the
      // table) of minimal size.
      {"cachegen", {{"stream_tokens", "1"}}, {1, 2, 16}, 40, 9, 1},
      // Tokens past kKvsStreamSymbols in one channel: a channel's symbols
      // split across pieces, rows of two dimensions.
      {"kvs", {{"rows", "0"}}, {1, 1, 2}, 20000, 0, 2},
  };
}

}  // namespace kvs::codec::cuda_test
