// kivi2 / kivi4: against a reference dequantization written here from the
// description in codec/kivi.h (not from its code), the per-element bound,
// bit-exact residual tokens, exact stream sizes, and corrupt streams.
#include <algorithm>
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "codec/bitstream.h"
#include "codec/codec.h"
#include "tests/codec/corrupt.h"
#include "codec/kivi.h"

namespace kvs::codec {
namespace {

KVChunk synthetic(KVShape s, uint32_t tokens, DType dtype, uint64_t seed) {
  KVChunk c(s, dtype, 7, tokens);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (uint32_t l = 0; l < s.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue})
      for (uint32_t h = 0; h < s.kv_heads; ++h)
        for (uint32_t d = 0; d < s.head_dim; ++d) {
          const float ch_scale = (d % 5 == 0 ? 6.0f : 0.5f) * (1.0f + 0.2f * float(l));
          const float ch_offset = k == Kind::kKey ? float(int(d % 3) - 1) : 0.0f;  // K channels off-centre
          for (uint32_t t = 0; t < tokens; ++t) c.at(l, k, h, t, d) = round_to_dtype(ch_offset + ch_scale * n(rng), dtype);
        }
  return c;
}

CodecOptions params(uint32_t group, uint32_t residual) {
  return {{{"group", std::to_string(group)}, {"residual", std::to_string(residual)}}, ""};
}

// Smallest fp16 value >= v >= 0, from the spacing of fp16 numbers.
float ref_half_ceil(float v) {
  if (v <= 0) return 0;
  int e = 0;
  std::frexp(v, &e);  // v in [2^(e-1), 2^e): fp16 spacing 2^(e-11), subnormals 2^-24
  const double ulp = std::ldexp(1.0, std::max(e - 11, -24));
  return float(std::ceil(double(v) / ulp) * ulp);
}

struct Expect {
  float value;
  float scale;  // of the element's group; -1 for an unquantized element
};

// What the decoder must return for element (l, k, h, t, d) of fp16 chunk `c`
// whose first `key_tokens` keys and `value_tokens` values are quantized (key
// groups of G tokens from the chunk's first, the last one cut at key_tokens).
Expect reference_split(const KVChunk& c, int bits, uint32_t G, uint32_t key_tokens, uint32_t value_tokens, uint32_t l,
                       Kind k, uint32_t h, uint32_t t, uint32_t d) {
  const uint32_t D = c.shape.head_dim;
  const bool quantized = k == Kind::kKey ? t < key_tokens : t < value_tokens;
  if (!quantized) return {c.at(l, k, h, t, d), -1};
  std::vector<float> group;
  if (k == Kind::kKey)
    for (uint32_t u = t / G * G; u < std::min(t / G * G + G, key_tokens); ++u) group.push_back(c.at(l, k, h, u, d));
  else
    for (uint32_t e = d / G * G; e < std::min(D, d / G * G + G); ++e) group.push_back(c.at(l, k, h, t, e));
  const float mn = *std::min_element(group.begin(), group.end());  // exact in fp16 already
  const float mx = *std::max_element(group.begin(), group.end());
  const float maxq = float((1 << bits) - 1);
  const float scale = ref_half_ceil((mx - mn) / maxq);
  const float x = c.at(l, k, h, t, d);
  const float q = scale > 0 ? std::clamp(std::nearbyint((x - mn) / scale), 0.0f, maxq) : 0.0f;
  return {q * scale + mn, scale};
}

// The same for a chunk that is a whole context: keys after the last whole
// block of R tokens (of G if R = 0) and values in the last R tokens unquantized.
Expect reference(const KVChunk& c, int bits, uint32_t G, uint32_t R, uint32_t l, Kind k, uint32_t h, uint32_t t,
                 uint32_t d) {
  const uint32_t T = c.tokens, block = R ? R : G;
  return reference_split(c, bits, G, T / block * block, T > R ? T - R : 0, l, k, h, t, d);
}

TEST(Kivi, SplitFollowsReleasedCodePrefill) {
  EXPECT_EQ(kivi_split(300, 32, 128).key_tokens, 256u);  // 300 mod 128 = 44 keys unquantized
  EXPECT_EQ(kivi_split(300, 32, 128).value_tokens, 172u);  // last 128 values unquantized
  EXPECT_EQ(kivi_split(256, 32, 128).key_tokens, 256u);
  EXPECT_EQ(kivi_split(256, 32, 128).value_tokens, 128u);
  EXPECT_EQ(kivi_split(100, 32, 128).key_tokens, 0u);
  EXPECT_EQ(kivi_split(100, 32, 128).value_tokens, 0u);
  EXPECT_EQ(kivi_split(70, 8, 0).key_tokens, 64u);  // no residual: only the partial key group
  EXPECT_EQ(kivi_split(70, 8, 0).value_tokens, 70u);
}

TEST(Kivi, ContextSplitPutsTheResidualAtTheContextsEnd) {
  // A 2,047-token context in chunks of 256: keys of its last 2047 mod 128 = 127
  // tokens and values of its last 128 stay fp16, all in the final chunk.
  for (uint64_t b = 0; b < 1792; b += 256) {
    EXPECT_EQ(kivi_split_in_context(b, 256, 2047, 32, 128).key_tokens, 256u) << b;
    EXPECT_EQ(kivi_split_in_context(b, 256, 2047, 32, 128).value_tokens, 256u) << b;
  }
  EXPECT_EQ(kivi_split_in_context(1792, 255, 2047, 32, 128).key_tokens, 128u);  // 1920 - 1792
  EXPECT_EQ(kivi_split_in_context(1792, 255, 2047, 32, 128).value_tokens, 127u);  // 1919 - 1792
  // A final chunk shorter than R: the values' residual reaches into the chunk before.
  EXPECT_EQ(kivi_split_in_context(1000, 100, 1100, 32, 128).value_tokens, 0u);
  EXPECT_EQ(kivi_split_in_context(900, 100, 1100, 32, 128).value_tokens, 72u);  // 972 - 900
  EXPECT_EQ(kivi_split_in_context(900, 100, 1100, 32, 128).key_tokens, 100u);   // keys quantized up to 1024
  EXPECT_EQ(kivi_split_in_context(1000, 100, 1100, 32, 128).key_tokens, 24u);
  // A whole context is split as a stand-alone chunk.
  for (uint32_t T : {1u, 100u, 128u, 300u, 2047u})
    for (uint32_t R : {0u, 32u, 128u}) {
      const KiviSplit a = kivi_split(T, 32, R), b = kivi_split_in_context(0, T, T, 32, R);
      EXPECT_EQ(a.key_tokens, b.key_tokens) << T << " " << R;
      EXPECT_EQ(a.value_tokens, b.value_tokens) << T << " " << R;
    }
}

// Chunks of one context, encoded with residual_scope=context (the default):
// each decodes to the reference of its part of the context's split; only the
// last chunks carry fp16 tokens; residual_scope=chunk gives every chunk its own.
TEST(Kivi, ChunksOfAContextEqualTheReference) {
  const KVShape shape{2, 2, 16};
  KVChunk context = synthetic(shape, 200, DType::kF16, 11);
  context.token_begin = 0;
  context.context_tokens = 200;
  const uint32_t G = 8, R = 32;
  for (const char* name : {"kivi2", "kivi4"}) {
    const int bits = name[4] - '0';
    const auto codec = make_codec(name, params(G, R));
    const auto per_chunk = make_codec(name, {{{"group", "8"}, {"residual", "32"}, {"residual_scope", "chunk"}}, ""});
    size_t context_bytes = 0, chunk_bytes = 0;
    for (uint32_t b : {0u, 50u, 100u, 150u}) {  // starts not multiples of G: short key groups
      const KVChunk c = context.slice(b, 50);
      ASSERT_EQ(c.context_tokens, 200u);
      const Bytes stream = codec->encode(c, 0);
      const KVChunk back = make_codec(name)->decode(stream);  // the split travels in the stream
      const KiviSplit split = kivi_split_in_context(b, 50, 200, G, R);
      EXPECT_EQ(split.key_tokens, b == 150 ? 42u : 50u);  // keys quantized up to 192
      EXPECT_EQ(split.value_tokens, b == 150 ? 18u : 50u);  // values up to 168
      for (uint32_t l = 0; l < shape.layers; ++l)
        for (Kind k : {Kind::kKey, Kind::kValue})
          for (uint32_t h = 0; h < shape.kv_heads; ++h)
            for (uint32_t t = 0; t < 50; ++t)
              for (uint32_t d = 0; d < shape.head_dim; ++d) {
                const Expect e = reference_split(c, bits, G, split.key_tokens, split.value_tokens, l, k, h, t, d);
                ASSERT_EQ(back.at(l, k, h, t, d), e.value) << name << " b" << b << " l" << l << " t" << t << " d" << d;
              }
      // Per chunk: the stand-alone chunk's stream, its own residual.
      KVChunk alone = c;
      alone.context_tokens = 0;
      const Bytes own = per_chunk->encode(c, 0);
      EXPECT_EQ(own, codec->encode(alone, 0));
      context_bytes += stream.size();
      chunk_bytes += own.size();
    }
    EXPECT_LT(double(context_bytes), 0.8 * double(chunk_bytes)) << name;  // kivi2 0.64, kivi4 0.73 of the size
    KVChunk beyond = context.slice(150, 50);
    beyond.context_tokens = 199;
    EXPECT_THROW(codec->encode(beyond, 0), Error);
  }
}

TEST(Kivi, EqualsReferenceDequantizationWithinBound) {
  struct Case {
    KVShape shape;
    uint32_t tokens, group, residual;
  };
  const Case cases[] = {
      {{2, 2, 32}, 300, 32, 128},  // paper defaults: K 256 quantized, V 172
      {{2, 1, 20}, 53, 8, 16},     // head_dim 20: value groups of 8, 8, 4
      {{1, 2, 16}, 45, 4, 0},      // no residual: keys 44 quantized, values all
      {{1, 1, 8}, 40, 64, 128},    // group wider than head_dim, everything residual
  };
  for (const char* name : {"kivi2", "kivi4"}) {
    const int bits = name[4] - '0';
    for (const Case& cs : cases) {
      const auto codec = make_codec(name, params(cs.group, cs.residual));
      const KVChunk c = synthetic(cs.shape, cs.tokens, DType::kF16, cs.tokens);
      const KVChunk back = make_codec(name)->decode(codec->encode(c, 0));  // parameters travel in the stream
      ASSERT_EQ(back.tokens, c.tokens);
      ASSERT_EQ(back.token_begin, c.token_begin);
      ASSERT_EQ(back.dtype, DType::kF16);
      size_t quantized = 0;
      for (uint32_t l = 0; l < cs.shape.layers; ++l)
        for (Kind k : {Kind::kKey, Kind::kValue})
          for (uint32_t h = 0; h < cs.shape.kv_heads; ++h)
            for (uint32_t t = 0; t < cs.tokens; ++t)
              for (uint32_t d = 0; d < cs.shape.head_dim; ++d) {
                const Expect e = reference(c, bits, cs.group, cs.residual, l, k, h, t, d);
                const float x = c.at(l, k, h, t, d), y = back.at(l, k, h, t, d);
                ASSERT_EQ(y, e.value) << name << " G" << cs.group << " R" << cs.residual << " l" << l << " k"
                                      << int(k) << " h" << h << " t" << t << " d" << d;
                if (e.scale >= 0) {
                  ++quantized;
                  ASSERT_LE(std::fabs(y - x), e.scale / 2 + 1e-6f * (std::fabs(x) + 16 * e.scale)) << name;
                }
              }
      if (cs.group == 32) {
        EXPECT_EQ(quantized, 2u * 2 * 32 * (256 + 172));
      }
      if (cs.group == 64) {
        EXPECT_EQ(quantized, 0u);
      }
    }
  }
}

TEST(Kivi, ResidualTokensBitExactForEveryDtype) {
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    const KVChunk c = synthetic({2, 2, 16}, 150, dtype, 9);
    const auto codec = make_codec("kivi2", params(16, 32));
    const KVChunk back = codec->decode(codec->encode(c, 0));
    ASSERT_EQ(back.dtype, dtype);
    const KiviSplit split = kivi_split(150, 16, 32);  // keys: 150 mod 32 = 22 tokens; values: 32
    ASSERT_EQ(split.key_tokens, 128u);
    ASSERT_EQ(split.value_tokens, 118u);
    double quantized_error = 0;
    for (uint32_t l = 0; l < 2; ++l)
      for (uint32_t h = 0; h < 2; ++h)
        for (uint32_t t = 0; t < 150; ++t)
          for (uint32_t d = 0; d < 16; ++d) {
            if (t >= 128) ASSERT_EQ(back.at(l, Kind::kKey, h, t, d), c.at(l, Kind::kKey, h, t, d));
            else quantized_error += std::fabs(back.at(l, Kind::kKey, h, t, d) - c.at(l, Kind::kKey, h, t, d));
            if (t >= 118) ASSERT_EQ(back.at(l, Kind::kValue, h, t, d), c.at(l, Kind::kValue, h, t, d));
            else quantized_error += std::fabs(back.at(l, Kind::kValue, h, t, d) - c.at(l, Kind::kValue, h, t, d));
          }
    EXPECT_GT(quantized_error, 0.0);  // the rest really is quantized
  }
}

TEST(Kivi, StreamSizeIsExact) {
  // 2 layers x 2 heads x 32 dims, 300 tokens, G 32, R 128: per layer and head,
  // K: 256 x 32 codes, 8 x 32 groups, 44 x 32 fp16; V: 172 x 32 codes, 172 groups, 128 x 32 fp16.
  const KVChunk c = synthetic({2, 2, 32}, 300, DType::kF16, 1);
  for (int bits : {2, 4}) {
    const size_t per_head = (256 * 32 * bits) / 8 + 4 * 8 * 32 + 2 * 44 * 32 + (172 * 32 * bits) / 8 + 4 * 172 + 2 * 128 * 32;
    const size_t sections = 1 + 6 * 2;
    const size_t expect = kHeaderBytes + 4 * sections + 4 + 8 + 2 * 2 * per_head;
    EXPECT_EQ(make_codec("kivi" + std::to_string(bits))->encode(c, 0).size(), expect) << bits;
  }
}

TEST(Kivi, FourBitsAreMoreAccurateThanTwo) {
  const KVChunk c = synthetic({2, 2, 32}, 256, DType::kF16, 2);
  double err[2] = {0, 0};
  int i = 0;
  for (const char* name : {"kivi2", "kivi4"}) {
    const auto codec = make_codec(name, params(32, 0));
    const KVChunk back = codec->decode(codec->encode(c, 0));
    for (size_t e = 0; e < c.values.size(); ++e) err[i] += double(back.values[e] - c.values[e]) * (back.values[e] - c.values[e]);
    ++i;
  }
  EXPECT_GT(err[0], 4 * err[1]);
  EXPECT_GT(err[1], 0.0);
}

TEST(Kivi, BadParametersAndInputs) {
  EXPECT_THROW(make_codec("kivi2", params(0, 0)), Error);
  EXPECT_THROW(make_codec("kivi2", params(32, 100)), Error);  // not a multiple of the group
  EXPECT_THROW(make_codec("kivi4", {{{"bits", "3"}}, ""}), Error);
  EXPECT_THROW(make_codec("kivi4", {{{"group", "x"}}, ""}), Error);
  EXPECT_THROW(make_codec("kivi4", {{{"residual_scope", "all"}}, ""}), Error);
  EXPECT_NO_THROW(make_codec("kivi4", params(64, 0)));
  const auto codec = make_codec("kivi2", params(8, 0));
  KVChunk c = synthetic({1, 1, 8}, 16, DType::kF32, 3);
  EXPECT_THROW(codec->encode(c, 1), Error);
  c.values[5] = 1e6f;  // beyond fp16 scales and zero points
  EXPECT_THROW(codec->encode(c, 0), Error);
  c.values[5] = std::nanf("");
  EXPECT_THROW(codec->encode(c, 0), Error);
  // A constant group (scale 0) decodes to its value.
  std::fill(c.values.begin(), c.values.end(), -1.5f);
  EXPECT_EQ(codec->decode(codec->encode(c, 0)).values, c.values);
}

// Every truncation and every single-byte change of a stream is rejected
// (the checksum covers them); changes behind a recomputed checksum give
// CorruptStream or a chunk of the header's shape.
TEST(Kivi, CorruptStreamsAreRejected) {
  KVChunk c = synthetic({2, 1, 8}, 20, DType::kF16, 4);
  for (const char* name : {"kivi2", "kivi4"}) {
    const auto codec = make_codec(name, params(4, 8));
    Bytes good = codec->encode(c, 0);
    if (name[4] == '4') {  // a chunk of a longer context, its split in the stream
      c.token_begin = 1;
      c.context_tokens = 25;
      good = codec->encode(c, 0);
      ASSERT_NE(good, make_codec(name, {{{"group", "4"}, {"residual", "8"}, {"residual_scope", "chunk"}}, ""})->encode(c, 0));
    }
    for (size_t n = 0; n < good.size(); ++n)
      EXPECT_THROW(codec->decode(std::span<const uint8_t>(good.data(), n)), CorruptStream) << n;
    for (size_t pos = 0; pos < good.size(); ++pos)
      for (uint8_t x : {0x01, 0x80, 0xff}) {
        Bytes b = good;
        b[pos] ^= x;
        EXPECT_THROW(codec->decode(b), CorruptStream) << pos;
        if (x != 0xff) continue;
        fix_crc(b);
        try {
          const KVChunk out = codec->decode(b);
          EXPECT_EQ(out.values.size(), out.shape.elements_per_token() * out.tokens);
        } catch (const CorruptStream&) {
        }
      }
    Bytes other = good;  // a kivi2 stream is not a kivi4 stream
    other[6] = name[4] == '2' ? 7 : 4;
    fix_crc(other);
    EXPECT_THROW(codec->decode(other), CorruptStream);
    EXPECT_THROW(make_codec(name[4] == '2' ? "kivi4" : "kivi2")->decode(other), CorruptStream);  // code sizes differ
  }
}

}  // namespace
}  // namespace kvs::codec
