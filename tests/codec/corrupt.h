// Helpers for the codecs' decode tests: corrupt streams, reused output chunks.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "codec/bitstream.h"
#include "codec/codec.h"

namespace kvs::codec {

// Rewrites the last 4 bytes of `b` to the CRC of the rest, so that a mutation
// reaches the codec's own checks instead of failing the checksum.
inline void fix_crc(Bytes& b) {
  if (b.size() < 4) return;
  const uint32_t crc = crc32(std::span<const uint8_t>(b.data(), b.size() - 4));
  for (int k = 0; k < 4; ++k) b[b.size() - 4 + size_t(k)] = uint8_t(crc >> (8 * k));
}

// The bit patterns of `v`, so that NaNs compare equal to themselves.
inline std::vector<uint32_t> float_bits(const std::vector<float>& v) {
  std::vector<uint32_t> b(v.size());
  std::memcpy(b.data(), v.data(), 4 * v.size());
  return b;
}

// A chunk of `shape` and `tokens` whose every value is a NaN pattern no
// decoder produces: the output chunk for decode_into tests that must see every
// value written.
inline KVChunk poisoned_chunk(KVShape shape, uint32_t tokens) {
  KVChunk c(shape, DType::kBF16, 5, tokens);
  const uint32_t nan = 0x7fc0deadu;
  for (float& x : c.values) std::memcpy(&x, &nan, 4);
  return c;
}

// `got` is `want`: shape, dtype, token range and every value bit for bit.
inline void expect_same_chunk(const KVChunk& got, const KVChunk& want, const std::string& what = "") {
  EXPECT_EQ(got.shape, want.shape) << what;
  EXPECT_EQ(got.dtype, want.dtype) << what;
  EXPECT_EQ(got.token_begin, want.token_begin) << what;
  EXPECT_EQ(got.tokens, want.tokens) << what;
  EXPECT_EQ(float_bits(got.values), float_bits(want.values)) << what;
}

}  // namespace kvs::codec
