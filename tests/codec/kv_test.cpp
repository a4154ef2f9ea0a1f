#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "codec/kv.h"

namespace kvs::codec {
namespace {

KVChunk numbered(KVShape shape, uint64_t begin, uint32_t tokens) {
  KVChunk c(shape, DType::kF32, begin, tokens);
  for (uint32_t l = 0; l < shape.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue})
      for (uint32_t h = 0; h < shape.kv_heads; ++h)
        for (uint32_t t = 0; t < tokens; ++t)
          for (uint32_t d = 0; d < shape.head_dim; ++d)
            c.at(l, k, h, t, d) = float(l * 100000 + int(k) * 10000 + h * 1000 + (begin + t) * 10 + d);
  return c;
}

TEST(KVChunk, LayoutIsLayerKindHeadTokenDim) {
  KVShape s{2, 3, 4};
  KVChunk c(s, DType::kF16, 0, 5);
  EXPECT_EQ(c.values.size(), 2u * 2 * 3 * 5 * 4);
  EXPECT_EQ(&c.at(1, Kind::kValue, 2, 4, 3) - c.values.data(), long(c.values.size() - 1));
  EXPECT_EQ(&c.at(0, Kind::kValue, 0, 0, 0) - c.values.data(), long(3 * 5 * 4));
}

TEST(KVChunk, SliceAndConcatRoundTrip) {
  KVShape s{2, 2, 3};
  KVChunk whole = numbered(s, 7, 10);
  std::vector<KVChunk> parts = {whole.slice(0, 4), whole.slice(4, 6)};
  EXPECT_EQ(parts[1].token_begin, 11u);
  EXPECT_EQ(parts[1].at(1, Kind::kKey, 1, 0, 2), whole.at(1, Kind::kKey, 1, 4, 2));
  KVChunk back = KVChunk::concat(parts);
  EXPECT_EQ(back.values, whole.values);
  EXPECT_EQ(back.token_begin, 7u);
  EXPECT_THROW(whole.slice(5, 6), std::out_of_range);
  std::vector<KVChunk> gap = {whole.slice(0, 2), whole.slice(3, 2)};
  EXPECT_THROW(KVChunk::concat(gap), std::invalid_argument);
}

TEST(DType, HalfConversionMatchesKnownValues) {
  EXPECT_EQ(float_to_half_bits(1.0f), 0x3c00);
  EXPECT_EQ(float_to_half_bits(-2.0f), 0xc000);
  EXPECT_EQ(float_to_half_bits(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_half_bits(70000.0f), 0x7c00);
  EXPECT_EQ(float_to_half_bits(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(float_to_half_bits(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie -> even
  EXPECT_EQ(float_to_half_bits(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie -> even (up)
  EXPECT_TRUE(std::isnan(half_bits_to_float(float_to_half_bits(std::numeric_limits<float>::quiet_NaN()))));
  for (uint32_t h = 0; h < 0x7c00; ++h) {  // every finite positive half round-trips
    const float f = half_bits_to_float(uint16_t(h));
    ASSERT_EQ(float_to_half_bits(f), h) << h;
    ASSERT_EQ(float_to_half_bits(-f), h | 0x8000) << h;
  }
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16_bits(1.0f), 0x3f80);
  EXPECT_EQ(bf16_bits_to_float(0x3f80), 1.0f);
  EXPECT_EQ(float_to_bf16_bits(1.0f + std::ldexp(1.0f, -8)), 0x3f80);   // tie -> even
  EXPECT_EQ(float_to_bf16_bits(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(round_to_dtype(0.1f, DType::kF32), 0.1f);
}

TEST(DType, Names) {
  EXPECT_EQ(dtype_from_string("bfloat16"), DType::kBF16);
  EXPECT_STREQ(to_string(DType::kF16), "fp16");
  EXPECT_THROW(dtype_from_string("int8"), std::invalid_argument);
}

}  // namespace
}  // namespace kvs::codec
