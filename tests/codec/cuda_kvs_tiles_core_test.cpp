// The kvs GPU decoder's output tiles (codec/cuda/threads.h
// kvs_values_tile_load/_store, a block per tile of up to 32 tokens of one
// head) on the CPU: run_on_host runs each tile's loads, then its stores, as
// the block does across its barrier. Shapes at the tiles' edges (head_dim 1
// to 1,024, tokens 1, a tile less one, a tile, a tile and one, three tiles
// and a partial one), with row references, against the CPU decoder bit for
// bit in fp32, fp16 and bf16. The kernel itself runs in cuda_decode_test.
#include <cstring>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <gtest/gtest.h>

#include "codec/bitstream.h"
#include "codec/cuda/plan.h"
#include "codec/fp16.h"
#include "codec/kvs_internal.h"
#include "tests/codec/cuda_cases.h"

namespace kvs::codec {
namespace {

namespace cd = cuda::detail;

// Every head_dim up to kMaxHeadDim: a tile fits the kernel's shared array,
// its pitch is odd (a warp's stores of one token hit 32 banks) and at least
// its tokens, and it holds at most kKvsTileFloats values.
TEST(CudaKvsTiles, TileGeometryFitsSharedMemory) {
  for (uint32_t D = 1; D <= kMaxHeadDim; ++D) {
    const uint32_t tt = cd::kvs_tile_tokens(D), pitch = cd::kvs_tile_pitch(D);
    ASSERT_GE(tt, 1u) << D;
    ASSERT_LE(tt, cd::kKvsTileMaxTokens) << D;
    ASSERT_LE(size_t(tt) * D, cd::kKvsTileFloats) << D;
    ASSERT_TRUE(tt == cd::kKvsTileMaxTokens || size_t(tt + 1) * D > cd::kKvsTileFloats) << D << ": tiles not filled";
    ASSERT_EQ(pitch % 2, 1u) << D;
    ASSERT_GE(pitch, tt) << D;
    ASSERT_LE(cd::kvs_tile_shared(D), cd::kKvsTileShared) << D;
  }
}

// The tiles of a launch cover every (plane, token) once, the last of each head partial.
TEST(CudaKvsTiles, TilesCoverEveryTokenOnce) {
  for (uint32_t D : {1u, 3u, 96u, 1024u})
    for (uint32_t T : {1u, 5u, 31u, 32u, 33u, 101u}) {
      cd::KvsLaunch p{};
      p.layers = 2, p.kv_heads = 3, p.head_dim = D, p.tokens = T;
      std::vector<int> seen(size_t(2) * 2 * 3 * T, 0);
      for (size_t tile = 0; tile < cd::kvs_tiles(p); ++tile) {
        const cd::KvsTile k = cd::kvs_tile(p, tile);
        ASSERT_GE(k.n, 1u);
        ASSERT_LE(k.n, cd::kvs_tile_tokens(D));
        for (uint32_t t = k.t0; t < k.t0 + k.n; ++t) ++seen.at(k.ph * T + t);
      }
      for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], 1) << "D " << D << " T " << T << " row " << i;
    }
}

// Whether any head of the plan sends rows as references to other tokens.
bool has_row_references(const cd::KvsPlan& plan, const Bytes& stream) {
  const std::vector<const float*> no_rope(plan.ropes.size(), nullptr);
  const cd::KvsLaunch p =
      plan.bind(stream.data(), plan.meta.data(), nullptr, no_rope, nullptr, nullptr, nullptr, cd::kOutF32, nullptr);
  for (size_t ph = 0; ph < size_t(2) * p.layers * p.kv_heads; ++ph) {
    const cd::KvsHead h = p.heads[ph];
    if (h.source == cd::kNone) continue;
    for (uint32_t t = 0; t < p.tokens; ++t)
      if (p.sources[h.source + t] != t) return true;
  }
  return false;
}

TEST(CudaKvsTiles, ThreadBodiesDecodeTileEdgesAsTheCpuDecoder) {
  const auto parser = cd::make_kvs_parser();
  int with_references = 0;
  for (uint32_t D : {1u, 2u, 96u, 128u, 1024u}) {
    const uint32_t tt = cd::kvs_tile_tokens(D);
    for (uint32_t T : {1u, tt - 1, tt, tt + 1, 3 * tt + 5}) {
      if (T == 0) continue;
      cuda_test::CaseSpec spec{"kvs", {}, {2, 2, D}, T, 100, 2};
      if (D % 2) spec.params["rope_theta"] = "0";  // RoPE rotates pairs of dims
      const cuda_test::StreamCase c = cuda_test::make_case(spec);
      SCOPED_TRACE(fmt::format("{} (a tile: {} tokens)", c.name, tt));
      const cd::KvsPlan plan = cd::plan_kvs(c.stream, *parser);
      ASSERT_EQ(plan.rotates(), D % 2 == 0);
      with_references += has_row_references(plan, c.stream);
      const size_t n = c.decoded.values.size();
      ASSERT_EQ(plan.values(), n);
      for (uint8_t type : {cd::kOutF32, cd::kOutF16, cd::kOutBF16}) {
        SCOPED_TRACE(int(type));
        const size_t bytes = n * (type == cd::kOutF32 ? 4 : 2);
        std::vector<uint8_t> out(bytes, 0xA5);  // poison: every value must be written
        ASSERT_EQ(cd::run_on_host(plan, c.stream, *parser, out.data(), type), cd::kNoFault);
        std::vector<uint8_t> want(bytes);
        if (type == cd::kOutF32) {
          std::memcpy(want.data(), c.decoded.values.data(), bytes);
        } else {
          std::vector<uint16_t> bits(n);
          for (size_t i = 0; i < n; ++i)
            bits[i] = type == cd::kOutF16 ? float_to_half_bits(c.decoded.values[i]) : float_to_bf16_bits(c.decoded.values[i]);
          std::memcpy(want.data(), bits.data(), bytes);
        }
        size_t first = 0;
        while (first < bytes && out[first] == want[first]) ++first;
        EXPECT_EQ(first, bytes) << "output differs from byte " << first;
      }
    }
  }
  // The synthetic chunks' layer 0 repeats rows every 16 tokens: heads of the
  // longer chunks send references, so the loads' sources are not the tokens.
  EXPECT_GE(with_references, 5);
}

}  // namespace
}  // namespace kvs::codec
