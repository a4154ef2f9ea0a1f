// The kvs codec: error bound and exact reference dequantization per level,
// monotonic levels, the RoPE rotation, escapes and raw low bits, parameters,
// corrupt streams. (Its golden streams are checked by golden_test.cpp.)
#include <cmath>
#include <cstring>
#include <functional>
#include <random>

#include <gtest/gtest.h>

#include "codec/bitstream.h"
#include "codec/codec.h"
#include "codec/kvs.h"
#include "codec/kvs_internal.h"
#include "tests/codec/corrupt.h"

namespace kvs::codec {
namespace {

// RoPE's cos and sin at (position, pair): kvs's own for a base, or from a
// table of per-pair frequencies (a scaled RoPE), computed here as the
// format says: cos and sin of position x frequency in double, as floats.
using Rope = std::function<std::array<float, 2>(uint64_t position, uint32_t pair)>;
Rope base_rope(double theta, uint32_t head_dim) {
  return [=](uint64_t pos, uint32_t i) { return kvs_rope_cos_sin(theta, pos, i, head_dim); };
}
Rope table_rope(std::vector<float> inv_freq) {
  return [f = std::move(inv_freq)](uint64_t pos, uint32_t i) {
    const double a = double(pos) * double(f.at(i));
    return std::array<float, 2>{float(std::cos(a)), float(std::sin(a))};
  };
}

// KV-like data: pre-RoPE keys with per-channel means and spreads (a few
// outlier channels), rotated by RoPE at their positions (none without
// `rope`, or with theta 0); values near zero mean.
KVChunk synthetic(KVShape s, uint64_t begin, uint32_t tokens, uint64_t seed, const Rope& rope) {
  KVChunk c(s, DType::kF16, begin, tokens);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const uint32_t half = s.head_dim / 2;
  for (uint32_t l = 0; l < s.layers; ++l)
    for (uint32_t h = 0; h < s.kv_heads; ++h) {
      std::vector<float> mean(s.head_dim), sd(s.head_dim);
      for (uint32_t d = 0; d < s.head_dim; ++d) {
        mean[d] = 2.0f * n(rng);
        sd[d] = d % 7 == 3 ? 3.0f : 0.3f + 0.1f * float(d % 5);
      }
      for (uint32_t t = 0; t < tokens; ++t) {
        std::vector<float> pre(s.head_dim);
        for (uint32_t d = 0; d < s.head_dim; ++d) pre[d] = mean[d] + sd[d] * n(rng);
        for (uint32_t i = 0; i < half; ++i) {
          const auto cs = rope ? rope(begin + t, i) : std::array<float, 2>{1, 0};
          c.at(l, Kind::kKey, h, t, i) = round_to_dtype(pre[i] * cs[0] - pre[i + half] * cs[1], c.dtype);
          c.at(l, Kind::kKey, h, t, i + half) = round_to_dtype(pre[i + half] * cs[0] + pre[i] * cs[1], c.dtype);
        }
        for (uint32_t d = 0; d < s.head_dim; ++d)
          c.at(l, Kind::kValue, h, t, d) = round_to_dtype((d % 5 == 0 ? 2.0f : 0.7f) * n(rng), c.dtype);
      }
    }
  return c;
}
KVChunk synthetic(KVShape s, uint64_t begin, uint32_t tokens, uint64_t seed, double theta = 10000.0) {
  return synthetic(s, begin, tokens, seed, theta > 0 ? base_rope(theta, s.head_dim) : Rope());
}

double mse(const KVChunk& a, const KVChunk& b) {
  double e = 0;
  for (size_t i = 0; i < a.values.size(); ++i) e += double(a.values[i] - b.values[i]) * (a.values[i] - b.values[i]);
  return e / double(a.values.size());
}

// What decode must return, computed independently of the codec's code:
// rotate keys back before RoPE, q = round(x / step), x' = q * step, rotate.
KVChunk reference_dequantization(const KVChunk& c, int level, const Rope& rope, const std::vector<float>& weights) {
  KVChunk out = c;
  const uint32_t D = c.shape.head_dim, half = D / 2;
  for (uint32_t l = 0; l < c.shape.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue}) {
      const float step = kvs_level_step(level) * weights[2 * l + uint32_t(k)];
      for (uint32_t h = 0; h < c.shape.kv_heads; ++h)
        for (uint32_t t = 0; t < c.tokens; ++t) {
          if (k == Kind::kValue || !rope) {
            for (uint32_t d = 0; d < D; ++d) out.at(l, k, h, t, d) = float(std::lrint(c.at(l, k, h, t, d) / step)) * step;
            continue;
          }
          for (uint32_t i = 0; i < half; ++i) {
            const auto cs = rope(c.token_begin + t, i);
            const float o1 = c.at(l, k, h, t, i), o2 = c.at(l, k, h, t, i + half);
            const float x1 = float(std::lrint((o1 * cs[0] + o2 * cs[1]) / step)) * step;
            const float x2 = float(std::lrint((o2 * cs[0] - o1 * cs[1]) / step)) * step;
            out.at(l, k, h, t, i) = x1 * cs[0] - x2 * cs[1];
            out.at(l, k, h, t, i + half) = x2 * cs[0] + x1 * cs[1];
          }
        }
    }
  return out;
}
KVChunk reference_dequantization(const KVChunk& c, int level, double theta, const std::vector<float>& weights) {
  return reference_dequantization(c, level, theta > 0 ? base_rope(theta, c.shape.head_dim) : Rope(), weights);
}

const KVShape kShape{4, 2, 16};

// Plain reconstruction (centroid=0): decode equals q * step exactly.
TEST(Kvs, EqualsReferenceDequantizationWithinBound) {
  auto codec = make_codec("kvs", {{{"centroid", "0"}}, ""});
  const KVChunk c = synthetic(kShape, 1000, 300, 1);
  const auto weights = kvs_default_weights(kShape.layers);
  for (int level = 0; level < codec->levels(); ++level) {
    const KVChunk back = codec->decode(codec->encode(c, level));
    ASSERT_EQ(back.token_begin, c.token_begin);
    const KVChunk ref = reference_dequantization(c, level, 10000.0, weights);
    for (uint32_t l = 0; l < kShape.layers; ++l)
      for (Kind k : {Kind::kKey, Kind::kValue}) {
        const float step = kvs_level_step(level) * weights[2 * l + uint32_t(k)];
        // The documented bound: step / 2 per value, sqrt(2) step / 2 per key (rotation).
        const float bound = (k == Kind::kKey ? std::sqrt(2.0f) : 1.0f) * step / 2 * 1.0001f + 1e-5f;
        for (uint32_t h = 0; h < kShape.kv_heads; ++h)
          for (uint32_t t = 0; t < c.tokens; ++t)
            for (uint32_t d = 0; d < kShape.head_dim; ++d) {
              ASSERT_EQ(back.at(l, k, h, t, d), ref.at(l, k, h, t, d)) << level << " " << l << " " << t << " " << d;
              ASSERT_LE(std::fabs(back.at(l, k, h, t, d) - c.at(l, k, h, t, d)), bound) << level;
            }
      }
  }
}

// Centroid reconstruction's bound: every value within one step of its level
// and kind, every key within sqrt(2) steps (its pair is rotated back).
void expect_within_centroid_bound(const KVChunk& c, const KVChunk& back, int level, const std::vector<float>& weights) {
  const KVShape& s = c.shape;
  for (uint32_t l = 0; l < s.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue}) {
      const float step = kvs_level_step(level) * weights[2 * l + uint32_t(k)];
      const float bound = (k == Kind::kKey ? std::sqrt(2.0f) : 1.0f) * step * 1.0001f + 1e-5f;
      for (uint32_t h = 0; h < s.kv_heads; ++h)
        for (uint32_t t = 0; t < c.tokens; ++t)
          for (uint32_t d = 0; d < s.head_dim; ++d)
            ASSERT_LE(std::fabs(back.at(l, k, h, t, d) - c.at(l, k, h, t, d)), bound) << "level " << level;
    }
}

// The default (centroid reconstruction, rate-distortion choice between the two
// neighbouring points): error at most one step per value, sqrt(2) steps per key,
// and smaller mean squared error than plain rounding where steps are near the spread.
TEST(Kvs, CentroidReconstructionWithinBound) {
  auto codec = make_codec("kvs");
  auto plain = make_codec("kvs", {{{"centroid", "0"}}, ""});
  const KVChunk c = synthetic(kShape, 7, 256, 11);
  const auto weights = kvs_default_weights(kShape.layers);
  for (int level = 0; level < codec->levels(); ++level) {
    const KVChunk back = codec->decode(codec->encode(c, level));
    expect_within_centroid_bound(c, back, level, weights);
    if (level == 5) {
      EXPECT_LT(mse(c, back), mse(c, plain->decode(plain->encode(c, level))));
    }
  }
}

// Layer-0-like heads: rows that depend only on the token (from a small
// alphabet), rotated by RoPE. Repeated rows are sent as references; the result
// is still exactly the reference dequantization.
// Hundreds of distinct rows reused at random: move-to-front ranks from 1 to
// several hundred, literal rows throughout; the decoder's list must follow the
// encoder's exactly.
TEST(Kvs, ManyDistinctRepeatedRowsDecodeToTheReference) {
  const KVShape shape{2, 2, 16};
  KVChunk c(shape, DType::kF16, 3, 1500);
  std::mt19937_64 rng(29);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<std::vector<float>> alphabet(400, std::vector<float>(shape.head_dim));
  for (auto& row : alphabet)
    for (float& v : row) v = n(rng);
  for (uint32_t l = 0; l < shape.layers; ++l)
    for (uint32_t t = 0; t < c.tokens; ++t) {
      const auto& row = alphabet[rng() % (t < 300 ? 50 : alphabet.size())];
      const uint32_t half = shape.head_dim / 2;
      for (uint32_t h = 0; h < shape.kv_heads; ++h) {  // keys as RoPE stores them
        for (uint32_t i = 0; i < half; ++i) {
          const auto cs = kvs_rope_cos_sin(10000.0, c.token_begin + t, i, shape.head_dim);
          c.at(l, Kind::kKey, h, t, i) = round_to_dtype(row[i] * cs[0] - row[i + half] * cs[1], c.dtype);
          c.at(l, Kind::kKey, h, t, i + half) = round_to_dtype(row[i + half] * cs[0] + row[i] * cs[1], c.dtype);
        }
        for (uint32_t d = 0; d < shape.head_dim; ++d) c.at(l, Kind::kValue, h, t, d) = round_to_dtype(0.5f * row[d], c.dtype);
      }
    }
  auto codec = make_codec("kvs", {{{"centroid", "0"}}, ""});
  const auto weights = kvs_default_weights(shape.layers);
  for (int level : {0, 4}) {
    const Bytes b = codec->encode(c, level);
    EXPECT_LT(b.size(), c.values.size() / 4) << level;  // references, not 1,500 coded rows
    EXPECT_EQ(codec->decode(b).values, reference_dequantization(c, level, 10000.0, weights).values) << level;
  }
}

TEST(Kvs, RepeatedRowsAreSentAsReferences) {
  const KVShape shape{2, 2, 16};
  KVChunk c = synthetic(shape, 50, 256, 12);
  std::mt19937_64 rng(13);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<std::vector<float>> alphabet(6, std::vector<float>(shape.head_dim));
  for (auto& row : alphabet)
    for (float& v : row) v = n(rng);
  const uint32_t half = shape.head_dim / 2;
  for (uint32_t t = 0; t < c.tokens; ++t) {
    const auto& row = alphabet[rng() % alphabet.size()];
    for (uint32_t h = 0; h < shape.kv_heads; ++h) {  // layer 0 only, K and V
      for (uint32_t i = 0; i < half; ++i) {
        const auto cs = kvs_rope_cos_sin(10000.0, c.token_begin + t, i, shape.head_dim);
        c.at(0, Kind::kKey, h, t, i) = round_to_dtype(row[i] * cs[0] - row[i + half] * cs[1], c.dtype);
        c.at(0, Kind::kKey, h, t, i + half) = round_to_dtype(row[i + half] * cs[0] + row[i] * cs[1], c.dtype);
      }
      for (uint32_t d = 0; d < shape.head_dim; ++d) c.at(0, Kind::kValue, h, t, d) = round_to_dtype(row[d], c.dtype);
    }
  }
  auto codec = make_codec("kvs", {{{"centroid", "0"}}, ""});
  for (int level : {0, 5, 9}) {
    const Bytes b = codec->encode(c, level);
    // Row modes follow rope_theta and the 2 x layers steps in section 0.
    const size_t sections = size_t(b[36]) | size_t(b[37]) << 8 | size_t(b[38]) << 16;
    const size_t modes = kHeaderBytes + 4 * sections + 4 + 4 * 2 * shape.layers;
    // [layer][kind][head]: layer 0's first head carries the references, the others share them;
    // layer 1's rows repeat only where the coarsest steps round them alike.
    const std::vector<uint8_t> layer0 = {1, 2, 2, 2}, layer1 = {0, 0, 0, 0};
    EXPECT_EQ(std::vector<uint8_t>(b.begin() + ptrdiff_t(modes), b.begin() + ptrdiff_t(modes + 4)), layer0) << level;
    if (level < 9) {
      EXPECT_EQ(std::vector<uint8_t>(b.begin() + ptrdiff_t(modes + 4), b.begin() + ptrdiff_t(modes + 8)), layer1) << level;
    }
    EXPECT_EQ(codec->decode(b).values,
              reference_dequantization(c, level, 10000.0, kvs_default_weights(shape.layers)).values)
        << level;
  }
  // With centroid reconstruction (the default) copies stay within one step (sqrt(2) for keys).
  auto centroid = make_codec("kvs");
  const auto weights = kvs_default_weights(shape.layers);
  for (int level : {0, 6}) {
    const KVChunk back = centroid->decode(centroid->encode(c, level));
    expect_within_centroid_bound(c, back, level, weights);
  }
  // rows=0: every row coded (row modes 0), same values.
  {
    auto plain_rows = make_codec("kvs", {{{"centroid", "0"}, {"rows", "0"}}, ""});
    const Bytes b = plain_rows->encode(c, 2);
    const size_t sections = size_t(b[36]) | size_t(b[37]) << 8 | size_t(b[38]) << 16;
    const size_t modes = kHeaderBytes + 4 * sections + 4 + 4 * 2 * shape.layers;
    EXPECT_EQ(std::vector<uint8_t>(b.begin() + ptrdiff_t(modes), b.begin() + ptrdiff_t(modes + 8)),
              std::vector<uint8_t>(8, 0));
    EXPECT_EQ(plain_rows->decode(b).values, codec->decode(codec->encode(c, 2)).values);
  }
  // Layer 0 then costs little: the chunk is far smaller than one whose layer 0 is like layer 1.
  KVChunk other = c;
  for (Kind k : {Kind::kKey, Kind::kValue})
    std::copy(c.plane(1, k).begin(), c.plane(1, k).end(), other.plane(0, k).begin());
  EXPECT_LT(double(codec->encode(c, 2).size()), 0.75 * double(codec->encode(other, 2).size()));
}

TEST(Kvs, HigherLevelsAreSmallerAndWorse) {
  auto codec = make_codec("kvs");
  const KVChunk c = synthetic(kShape, 0, 256, 2);
  size_t prev_bytes = SIZE_MAX;
  double prev_err = -1;
  for (int level = 0; level < codec->levels(); ++level) {
    const Bytes b = codec->encode(c, level);
    const double e = mse(c, codec->decode(b));
    EXPECT_LT(b.size(), prev_bytes) << level;
    EXPECT_GT(e, prev_err) << level;
    prev_bytes = b.size();
    prev_err = e;
  }
  EXPECT_EQ(codec->encode(c, 3), codec->encode(c, 3));  // deterministic
}

TEST(Kvs, RotatingKeysBackBeforeRopeSavesBits) {
  const KVChunk c = synthetic(kShape, 0, 256, 3);
  auto rotated = make_codec("kvs", {{{"centroid", "0"}}, ""});
  auto plain = make_codec("kvs", {{{"rope_theta", "0"}, {"centroid", "0"}}, ""});
  for (int level : {0, 4}) {
    const Bytes a = rotated->encode(c, level), b = plain->encode(c, level);
    EXPECT_LT(double(a.size()), 0.95 * double(b.size())) << level;
    // Without rotation keys are quantized as given: plain error bound step / 2.
    const KVChunk back = plain->decode(b);
    const KVChunk ref = reference_dequantization(c, level, 0.0, kvs_default_weights(kShape.layers));
    EXPECT_EQ(back.values, ref.values);
  }
}

TEST(Kvs, EscapesAndRawLowBitsRoundTrip) {
  // A wide channel (sigma >> 16 steps: low bits sent raw), a constant one, and
  // outliers far outside their channel's table (escapes).
  KVChunk c = synthetic({1, 1, 8}, 5, 64, 4);
  for (uint32_t t = 0; t < c.tokens; ++t) {
    c.at(0, Kind::kValue, 0, t, 1) = round_to_dtype(float(t % 13) * 300.0f - 1800.0f, c.dtype);
    c.at(0, Kind::kValue, 0, t, 2) = 0.5f;
  }
  c.at(0, Kind::kValue, 0, 7, 3) = 2000.0f;
  c.at(0, Kind::kValue, 0, 9, 3) = -31000.0f;
  c.at(0, Kind::kKey, 0, 11, 0) = 500.0f;
  auto codec = make_codec("kvs", {{{"rope_theta", "0"}, {"centroid", "0"}}, ""});
  for (int level : {0, 5, 9}) {
    const KVChunk back = codec->decode(codec->encode(c, level));
    EXPECT_EQ(back.values, reference_dequantization(c, level, 0.0, kvs_default_weights(1)).values) << level;
  }
}

TEST(Kvs, WeightsScaleTheSteps) {
  const KVChunk c = synthetic({2, 1, 8}, 0, 40, 5);
  auto codec = make_codec("kvs", {{{"weights", "1:2:0.5:4"}, {"centroid", "0"}}, ""});
  const std::vector<float> w = {1, 2, 0.5f, 4};
  const KVChunk back = codec->decode(codec->encode(c, 2));
  EXPECT_EQ(back.values, reference_dequantization(c, 2, 10000.0, w).values);
  // The decoder reads the steps from the stream: any kvs instance decodes it.
  EXPECT_EQ(make_codec("kvs", {{{"rope_theta", "0"}}, ""})->decode(codec->encode(c, 2)).values, back.values);
  EXPECT_THROW(codec->encode(synthetic(kShape, 0, 8, 6), 0), Error);  // 4 weights for 4 layers
}

TEST(Kvs, BadParametersAndInput) {
  EXPECT_THROW(make_codec("kvs", {{{"rope_theta", "-1"}}, ""}), Error);
  EXPECT_THROW(make_codec("kvs", {{{"rope_theta", "abc"}}, ""}), Error);
  EXPECT_THROW(make_codec("kvs", {{{"weights", "1:x"}}, ""}), Error);
  EXPECT_THROW(make_codec("kvs", {{{"weights", "1:0"}}, ""}), Error);
  EXPECT_THROW(make_codec("kvs", {{{"weights", ""}}, ""}), Error);
  EXPECT_THROW(make_codec("kvs", {{{"bins", "4"}}, ""}), Error);
  EXPECT_THROW(make_codec("kvs", {{{"centroid", "2"}}, ""}), Error);
  EXPECT_THROW(make_codec("kvs", {{{"rdo", "-1"}}, ""}), Error);
  EXPECT_THROW(make_codec("kvs", {{{"rows", "2"}}, ""}), Error);
  EXPECT_THROW(make_codec("kvs", {{{"ladder", "1:0"}}, ""}), Error);
  EXPECT_EQ(make_codec("kvs", {{{"ladder", "0.5:1:2"}}, ""})->levels(), 3);
  EXPECT_NO_THROW(make_codec("kvs", {{{"weights", "default"}, {"rope_theta", "500000"}}, ""}));
  auto codec = make_codec("kvs");
  KVChunk c = synthetic({1, 1, 8}, 0, 4, 7);
  EXPECT_THROW(codec->encode(c, -1), Error);
  EXPECT_THROW(codec->encode(c, kKvsLevels), Error);
  c.values[3] = NAN;
  EXPECT_THROW(codec->encode(c, 0), Error);
  c.values[3] = 1e30f;  // too many steps for a 32-bit symbol
  EXPECT_THROW(codec->encode(c, 0), Error);
}

TEST(Kvs, CorruptSectionsThrowOrDecodeToTheShape) {
  auto codec = make_codec("kvs");
  std::mt19937_64 rng(12);
  KVChunk c = synthetic({2, 1, 8}, 3, 40, 8);
  c.at(1, Kind::kValue, 0, 5, 2) = 900.0f;  // an escape
  for (int level : {0, 9}) {
    const Bytes good = codec->encode(c, level);
    int thrown = 0;
    for (int i = 0; i < 2000; ++i) {
      Bytes b = good;
      const size_t pos = kHeaderBytes + rng() % (b.size() - kHeaderBytes - 4);
      b[pos] ^= uint8_t(1u + rng() % 255);
      fix_crc(b);
      try {
        const KVChunk out = codec->decode(b);
        EXPECT_EQ(out.values.size(), c.values.size());
      } catch (const CorruptStream&) {
        ++thrown;
      }
    }
    EXPECT_GT(thrown, 1000) << level;  // most single-byte edits are detected
    // Truncations: the CRC catches them; with a valid CRC the section checks do.
    for (size_t n = kHeaderBytes + 4; n < good.size(); n += 3) {
      Bytes b(good.begin(), good.begin() + ptrdiff_t(n));
      EXPECT_THROW(codec->decode(b), CorruptStream) << n;
      fix_crc(b);
      EXPECT_THROW(codec->decode(b), CorruptStream) << n;
    }
  }
}

// Substreams are decoded side by side, in an order of their own: an error
// in one must still name that one (and a stream whose substreams are
// intact must decode).
TEST(Kvs, ACorruptSubstreamIsTheOneNamed) {
  auto codec = make_codec("kvs");
  const KVChunk c = synthetic({4, 2, 32}, 0, 256, 13);
  const Bytes good = codec->encode(c, 0);
  const ParsedStream ps = parse_stream(good, CodecId::kKvs);
  ASSERT_GT(ps.sections.size(), 12u);  // pieces of many tables, of different lengths
  int named = 0;
  for (size_t i = 3; i < ps.sections.size(); ++i) {
    Bytes b = good;
    const size_t middle = size_t(ps.sections[i].data() - good.data()) + ps.sections[i].size() / 2;
    b[middle] ^= 0x10;
    fix_crc(b);
    try {
      codec->decode(b);
    } catch (const CorruptStream& e) {
      const std::string what = e.what();
      const size_t at = what.find("substream ");
      if (at == std::string::npos) continue;  // e.g. the raw bits' padding
      EXPECT_EQ(std::stoul(what.substr(at + 10)), i) << what;
      ++named;
    }
  }
  EXPECT_GT(named, int(ps.sections.size()) / 2);
}

TEST(Kvs, HostileParametersAreRejected) {
  auto codec = make_codec("kvs");
  const KVChunk c = synthetic({1, 1, 8}, 0, 8, 9);
  const Bytes good = codec->encode(c, 1);
  const size_t sections = size_t(good[36]) | size_t(good[37]) << 8 | size_t(good[38]) << 16;
  const size_t params = kHeaderBytes + 4 * sections;  // the first section
  for (float bad : {NAN, -1.0f, 0.5f, INFINITY}) {  // rope_theta
    Bytes b = good;
    std::memcpy(&b[params], &bad, 4);
    fix_crc(b);
    EXPECT_THROW(codec->decode(b), CorruptStream) << bad;
  }
  for (float bad : {0.0f, -0.1f, NAN, 1e30f}) {  // first step
    Bytes b = good;
    std::memcpy(&b[params + 4], &bad, 4);
    fix_crc(b);
    EXPECT_THROW(codec->decode(b), CorruptStream) << bad;
  }
  Bytes b = good;
  b[10] = 2;  // flags
  fix_crc(b);
  EXPECT_THROW(codec->decode(b), CorruptStream);
}

// A scaled RoPE's frequencies for head_dim 16 (LongRoPE's in outline: pair
// i's base frequency divided by a factor growing from 1 to 1.5): what
// `rope_inv_freq` is for.
std::vector<float> scaled_inv_freq() {
  std::vector<float> f(8);
  for (uint32_t i = 0; i < 8; ++i) f[i] = float(std::pow(500000.0, -2.0 * i / 16) / (1.0 + 0.5 * i / 7));
  return f;
}
std::string joined(const std::vector<float>& v) { return kvs_param_list(v); }

// With a table, keys rotate back at its frequencies: decode equals the
// reference dequantization with that RoPE; the stream says so (flags bit 1)
// and carries the table at the head of its parameters, so that any kvs
// instance decodes it.
TEST(KvsRopeTable, EqualsReferenceDequantizationWithTheTablesRope) {
  const std::vector<float> f = scaled_inv_freq();
  auto codec = make_codec("kvs", {{{"rope_inv_freq", joined(f)}, {"centroid", "0"}}, ""});
  const KVChunk c = synthetic(kShape, 3000, 200, 11, table_rope(f));
  for (int level : {0, 3, 7}) {
    const Bytes stream = codec->encode(c, level);
    EXPECT_EQ(stream[10], 2) << "flags: a table, bin centres";
    const ParsedStream ps = parse_stream(stream, CodecId::kKvs);
    ASSERT_GE(ps.sections[0].size(), 4 * f.size());
    for (size_t i = 0; i < f.size(); ++i) {
      float got;
      std::memcpy(&got, ps.sections[0].data() + 4 * i, 4);
      EXPECT_EQ(got, f[i]) << i;
    }
    const KVChunk back = make_codec("kvs")->decode(stream);
    EXPECT_EQ(back.values, reference_dequantization(c, level, table_rope(f), kvs_default_weights(4)).values) << level;
  }
  // Centroid reconstruction keeps its bound with a table too.
  auto centroid = make_codec("kvs", {{{"rope_inv_freq", joined(f)}}, ""});
  const Bytes stream = centroid->encode(c, 4);
  EXPECT_EQ(stream[10], 3);
  expect_within_centroid_bound(c, centroid->decode(stream), 4, kvs_default_weights(4));
}

// The point of the table: keys rotated by a scaled RoPE are rotated back to
// their stable pre-RoPE means by the table and not by the base, and cost
// fewer bytes. Decoding is exact either way.
// (Here pairs 1 and 2 turn by 6.5 and 2.4 radians more over the chunk than
// the base says, the others by less than one; values are half the bytes.)
TEST(KvsRopeTable, CompressesScaledRopeKeysBetterThanTheBase) {
  const std::vector<float> f = scaled_inv_freq();
  auto table = make_codec("kvs", {{{"rope_inv_freq", joined(f)}}, ""});
  auto base = make_codec("kvs", {{{"rope_theta", "500000"}}, ""});
  const KVChunk scaled = synthetic({2, 2, 16}, 20000, 512, 12, table_rope(f));
  const KVChunk plain = synthetic({2, 2, 16}, 20000, 512, 12, 500000.0);
  for (int level : {1, 4}) {
    SCOPED_TRACE(level);
    const Bytes table_on_scaled = table->encode(scaled, level), base_on_scaled = base->encode(scaled, level);
    EXPECT_LT(double(table_on_scaled.size()), 0.97 * double(base_on_scaled.size()));
    // and the other way round: keys of the base's RoPE want the base.
    EXPECT_LT(double(base->encode(plain, level).size()), 0.97 * double(table->encode(plain, level).size()));
    expect_within_centroid_bound(scaled, table->decode(table_on_scaled), level, kvs_default_weights(2));
    expect_within_centroid_bound(scaled, base->decode(base_on_scaled), level, kvs_default_weights(2));
  }
}

TEST(KvsRopeTable, Parameters) {
  const std::vector<float> f = scaled_inv_freq();
  EXPECT_THROW(make_codec("kvs", {{{"rope_inv_freq", joined(f)}, {"rope_theta", "10000"}}, ""}), Error);
  EXPECT_THROW(make_codec("kvs", {{{"rope_inv_freq", "0.5:-0.1"}}, ""}), Error);
  EXPECT_THROW(make_codec("kvs", {{{"rope_inv_freq", "0.5:2000"}}, ""}), Error);
  EXPECT_THROW(make_codec("kvs", {{{"rope_inv_freq", "0.5:nan"}}, ""}), Error);
  EXPECT_THROW(make_codec("kvs", {{{"rope_inv_freq", ""}}, ""}), Error);
  EXPECT_THROW(make_codec("kvs", {{{"rope_theta", "1e39"}}, ""}), Error);  // not a float
  // A table of 8 frequencies fits head_dim 16 only.
  auto codec = make_codec("kvs", {{{"rope_inv_freq", joined(f)}}, ""});
  try {
    codec->encode(synthetic({1, 1, 8}, 0, 4, 3), 0);
    ADD_FAILURE() << "a table of 8 frequencies for head_dim 8";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rope_inv_freq has 8 frequencies; keys of head_dim 8 need 4"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(codec->encode(synthetic({1, 1, 9}, 0, 4, 3, 0.0), 0), Error);
  // The record of the parameters holds the table exactly (shortest round trip).
  const std::string params = codec->params();
  const std::string key = "rope_inv_freq=";
  const size_t at = params.find(key);
  ASSERT_NE(at, std::string::npos) << params;
  const std::string value = params.substr(at + key.size(), params.find(',', at) - at - key.size());
  EXPECT_EQ(value, joined(f));
  auto again = make_codec("kvs", {{{"rope_inv_freq", value}}, ""});
  const KVChunk c = synthetic(kShape, 0, 30, 4, table_rope(f));
  EXPECT_EQ(again->encode(c, 2), codec->encode(c, 2));
}

// LongRoPE: the model rotates a prompt longer than its original length with
// its long factors; kvs codes a chunk of such a context with the long table
// (KVChunk::context_tokens), of a shorter or unknown one with the short.
TEST(KvsRopeTable, LongRopeTablePicksByContextLength) {
  const std::vector<float> shorter = scaled_inv_freq();
  std::vector<float> longer = shorter;
  for (float& f : longer) f /= 4;
  auto codec = make_codec("kvs", {{{"rope_inv_freq", joined(shorter)},
                                   {"rope_inv_freq_long", joined(longer)},
                                   {"rope_long_after", "4096"}},
                                  ""});
  auto short_only = make_codec("kvs", {{{"rope_inv_freq", joined(shorter)}}, ""});
  auto long_only = make_codec("kvs", {{{"rope_inv_freq", joined(longer)}}, ""});
  for (const uint64_t context : {uint64_t(0), uint64_t(4096), uint64_t(4097), uint64_t(100000)}) {
    SCOPED_TRACE(context);
    KVChunk c = synthetic(kShape, 3000, 64, 21, table_rope(context > 4096 ? longer : shorter));
    c.context_tokens = context;
    const Bytes stream = codec->encode(c, 2);
    EXPECT_EQ(stream, (context > 4096 ? long_only : short_only)->encode(c, 2));
    expect_within_centroid_bound(c, make_codec("kvs")->decode(stream), 2, kvs_default_weights(4));
  }
  EXPECT_NE(codec->params().find("rope_inv_freq_long=" + joined(longer) + ",rope_long_after=4096"),
            std::string::npos)
      << codec->params();
  // The three go together; the tables have one size; a length > 0.
  EXPECT_THROW(make_codec("kvs", {{{"rope_inv_freq", joined(shorter)}, {"rope_long_after", "8"}}, ""}), Error);
  EXPECT_THROW(make_codec("kvs", {{{"rope_inv_freq_long", joined(longer)}, {"rope_long_after", "8"}}, ""}), Error);
  EXPECT_THROW(make_codec("kvs", {{{"rope_inv_freq", joined(shorter)}, {"rope_inv_freq_long", "1:0.5"},
                                   {"rope_long_after", "8"}}, ""}),
               Error);
  EXPECT_THROW(make_codec("kvs", {{{"rope_inv_freq", joined(shorter)}, {"rope_inv_freq_long", joined(longer)},
                                   {"rope_long_after", "0"}}, ""}),
               Error);
}

// A base given as a number a float does not hold: the frequencies are the
// stored float's on both sides, so decoding stays within the bound.
TEST(Kvs, RopeBaseIsTheStoredFloats) {
  auto codec = make_codec("kvs", {{{"rope_theta", "123456789"}, {"centroid", "0"}}, ""});
  const KVChunk c = synthetic(kShape, 40000, 64, 13, 123456789.0);
  const KVChunk back = codec->decode(codec->encode(c, 1));
  EXPECT_EQ(back.values, reference_dequantization(c, 1, double(float(123456789.0)), kvs_default_weights(4)).values);
}

TEST(KvsRopeTable, HostileTablesAreRejected) {
  const std::vector<float> f = scaled_inv_freq();
  auto codec = make_codec("kvs", {{{"rope_inv_freq", joined(f)}}, ""});
  const Bytes good = codec->encode(synthetic({1, 1, 16}, 5, 8, 9, table_rope(f)), 1);
  const size_t sections = size_t(good[36]) | size_t(good[37]) << 8 | size_t(good[38]) << 16;
  const size_t params = kHeaderBytes + 4 * sections;  // the first section
  EXPECT_NO_THROW(codec->decode(good));
  for (size_t i : {size_t(0), size_t(7)})
    for (float bad : {NAN, -1.0f, -0.0f + -1e-30f, INFINITY, 1001.0f}) {
      Bytes b = good;
      std::memcpy(&b[params + 4 * i], &bad, 4);
      fix_crc(b);
      EXPECT_THROW(codec->decode(b), CorruptStream) << i << " " << bad;
    }
  for (uint8_t flags : {4, 6, 255}) {
    Bytes b = good;
    b[10] = flags;
    fix_crc(b);
    EXPECT_THROW(codec->decode(b), CorruptStream) << int(flags);
  }
  // A table for an odd head_dim: refused before its values are read.
  Bytes odd = make_codec("kvs", {{{"rope_theta", "0"}}, ""})->encode(synthetic({1, 1, 9}, 0, 4, 3, 0.0), 1);
  odd[10] |= 2;
  fix_crc(odd);
  try {
    make_codec("kvs")->decode(odd);
    ADD_FAILURE() << "decoded a RoPE table for head_dim 9";
  } catch (const CorruptStream& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim 9"), std::string::npos) << e.what();
  }
}

// Per-layer RoPE (rope_alt_*: gemma3's sliding layers, layers without RoPE):
// a chunk whose layers rotate with different RoPEs, built from chunks of one
// RoPE each with the same pre-RoPE values (synthetic draws per layer in order).
KVChunk mixed_rope(KVShape s, uint64_t begin, uint32_t tokens, uint64_t seed, const std::vector<Rope>& layer_rope) {
  KVChunk c = synthetic(s, begin, tokens, seed, layer_rope.at(0));
  for (uint32_t l = 1; l < s.layers; ++l) {
    const KVChunk other = synthetic(s, begin, tokens, seed, layer_rope.at(l));
    for (Kind k : {Kind::kKey, Kind::kValue})
      std::copy_n(&other.at(l, k, 0, 0, 0), size_t(s.kv_heads) * tokens * s.head_dim, &c.at(l, k, 0, 0, 0));
  }
  return c;
}
// The reference dequantization of such a chunk: each layer at its own RoPE.
KVChunk mixed_reference(const KVChunk& c, int level, const std::vector<Rope>& layer_rope,
                        const std::vector<float>& weights) {
  KVChunk out = c;
  const KVShape& s = c.shape;
  for (uint32_t l = 0; l < s.layers; ++l) {
    const KVChunk ref = reference_dequantization(c, level, layer_rope.at(l), weights);
    for (Kind k : {Kind::kKey, Kind::kValue})
      std::copy_n(&ref.at(l, k, 0, 0, 0), size_t(s.kv_heads) * c.tokens * s.head_dim, &out.at(l, k, 0, 0, 0));
  }
  return out;
}

// Each layer's keys rotate back at its own RoPE: the main one, a second base,
// a table or none (theta 0); the stream says so (flags bit 2) and carries
// them, so that any kvs instance decodes it to the reference.
TEST(KvsRopeLayers, EqualsReferenceDequantizationPerLayer) {
  const std::vector<float> f = scaled_inv_freq();
  const Rope local = base_rope(10000.0, 16), global = base_rope(1e6, 16), table = table_rope(f);
  struct Case {
    CodecParams params;
    std::vector<Rope> layer_rope;
  };
  const Case cases[] = {
      {{{"rope_alt_theta", "1000000"}, {"rope_alt_layers", "3:1"}}, {local, global, local, global}},
      {{{"rope_theta", "1000000"}, {"rope_alt_theta", "10000"}, {"rope_alt_layers", "0:1:2"}},
       {local, local, local, global}},
      {{{"rope_alt_inv_freq", joined(f)}, {"rope_alt_layers", "2"}}, {local, local, table, local}},
      {{{"rope_inv_freq", joined(f)}, {"rope_alt_theta", "0"}, {"rope_alt_layers", "0"}}, {Rope(), table, table, table}},
      {{{"rope_alt_theta", "0"}, {"rope_alt_layers", "0:1:2:3"}}, {Rope(), Rope(), Rope(), Rope()}},
  };
  for (const Case& c : cases) {
    CodecParams params = c.params;
    params["centroid"] = "0";
    auto codec = make_codec("kvs", {params, ""});
    SCOPED_TRACE(codec->params());
    const KVChunk chunk = mixed_rope(kShape, 3000, 120, 31, c.layer_rope);
    for (int level : {0, 3, 7}) {
      const Bytes stream = codec->encode(chunk, level);
      EXPECT_EQ(stream[10], 4) << "flags: per-layer RoPE, bin centres";
      const KVChunk back = make_codec("kvs")->decode(stream);
      EXPECT_EQ(back.values, mixed_reference(chunk, level, c.layer_rope, kvs_default_weights(4)).values) << level;
    }
  }
  // Centroid reconstruction keeps its bound.
  auto centroid = make_codec("kvs", {{{"rope_alt_theta", "1000000"}, {"rope_alt_layers", "3"}}, ""});
  const KVChunk chunk = mixed_rope(kShape, 50, 64, 32, {local, local, local, global});
  const Bytes stream = centroid->encode(chunk, 4);
  EXPECT_EQ(stream[10], 5);
  expect_within_centroid_bound(chunk, centroid->decode(stream), 4, kvs_default_weights(4));
}

// The point: a gemma3-like chunk (three layers at base 10^4, one at 10^6)
// costs fewer bytes with each layer's own RoPE than with either base for all.
TEST(KvsRopeLayers, CompressesMixedRopeKeysBetterThanOneBase) {
  const Rope local = base_rope(10000.0, 16), global = base_rope(1e6, 16);
  const KVChunk c = mixed_rope(kShape, 20000, 512, 33, {local, local, local, global});
  auto per_layer = make_codec("kvs", {{{"rope_alt_theta", "1000000"}, {"rope_alt_layers", "3"}}, ""});
  auto local_only = make_codec("kvs", {{{"rope_theta", "10000"}}, ""});
  auto global_only = make_codec("kvs", {{{"rope_theta", "1000000"}}, ""});
  for (int level : {1, 4}) {
    SCOPED_TRACE(level);
    const Bytes mine = per_layer->encode(c, level);
    EXPECT_LT(double(mine.size()), 0.97 * double(local_only->encode(c, level).size()));
    EXPECT_LT(double(mine.size()), 0.97 * double(global_only->encode(c, level).size()));
    expect_within_centroid_bound(c, per_layer->decode(mine), level, kvs_default_weights(4));
  }
}

TEST(KvsRopeLayers, Parameters) {
  const std::vector<float> f = scaled_inv_freq();
  auto refused = [](const CodecParams& p, const std::string& words) {
    try {
      make_codec("kvs", {p, ""});
      ADD_FAILURE() << "accepted; wanted: " << words;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  refused({{"rope_alt_theta", "10000"}}, "rope_alt_layers goes with");
  refused({{"rope_alt_layers", "1"}}, "rope_alt_layers goes with");
  refused({{"rope_alt_theta", "10000"}, {"rope_alt_inv_freq", joined(f)}, {"rope_alt_layers", "1"}}, "both given");
  refused({{"rope_alt_theta", "0.5"}, {"rope_alt_layers", "1"}}, "rope_alt_theta: expected 0 or a number > 1");
  refused({{"rope_alt_inv_freq", "1:2000"}, {"rope_alt_layers", "1"}}, "rope_alt_inv_freq: expected");
  for (const char* bad : {"", "1:", "a", "-1", "1.5", "70000"})
    refused({{"rope_alt_theta", "0"}, {"rope_alt_layers", bad}}, "rope_alt_layers: expected");
  refused({{"rope_alt_theta", "0"}, {"rope_alt_layers", "2:1:2"}}, "layer 2 given twice");
  // A layer the chunk lacks, or a table that does not fit its head_dim: refused when encoding.
  auto beyond = make_codec("kvs", {{{"rope_alt_theta", "0"}, {"rope_alt_layers", "1:4"}}, ""});
  try {
    beyond->encode(synthetic(kShape, 0, 8, 3), 0);
    ADD_FAILURE() << "layer 4 of a 4-layer chunk";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rope_alt_layers names layer 4; the chunk has 4 layers"), std::string::npos)
        << e.what();
  }
  auto wide = make_codec("kvs", {{{"rope_alt_inv_freq", joined(f)}, {"rope_alt_layers", "1"}}, ""});
  EXPECT_THROW(wide->encode(synthetic({2, 1, 8}, 0, 4, 3), 0), Error);
  // The record of the parameters makes the same codec (sorted layers).
  auto codec = make_codec("kvs", {{{"rope_alt_inv_freq", joined(f)}, {"rope_alt_layers", "3:0"}}, ""});
  const std::string params = codec->params();
  EXPECT_NE(params.find("rope_alt_inv_freq=" + joined(f) + ",rope_alt_layers=0:3"), std::string::npos) << params;
  CodecParams again;
  for (const char* key : {"rope_alt_inv_freq", "rope_alt_layers"}) {
    const std::string k = std::string(key) + "=";
    const size_t at = params.find(k) + k.size();
    again[key] = params.substr(at, params.find(',', at) - at);
  }
  const KVChunk c = synthetic(kShape, 0, 30, 4);
  EXPECT_EQ(make_codec("kvs", {again, ""})->encode(c, 2), codec->encode(c, 2));
}

TEST(KvsRopeLayers, HostileDescriptionsAreRejected) {
  auto codec = make_codec("kvs", {{{"rope_alt_theta", "1000000"}, {"rope_alt_layers", "1"}}, ""});
  const Bytes good = codec->encode(synthetic({2, 1, 16}, 5, 8, 9), 1);
  const size_t sections = size_t(good[36]) | size_t(good[37]) << 8 | size_t(good[38]) << 16;
  const size_t params = kHeaderBytes + 4 * sections;  // the first section: 2, 0, theta, 0, theta, 0, 1, steps
  ASSERT_EQ(good[params], 2);
  ASSERT_EQ(good[params + 1], 0);
  ASSERT_EQ(good[params + 11], 0);
  ASSERT_EQ(good[params + 12], 1);
  EXPECT_NO_THROW(codec->decode(good));
  struct Bad {
    size_t at;
    uint8_t value;
    const char* words;
  };
  for (const Bad& bad : {Bad{0, 0, "0 RoPE tables"}, Bad{0, 5, "5 RoPE tables"}, Bad{1, 2, "RoPE table form 2"},
                         Bad{6, 1, "RoPE table form 1"} /* a table for the second: wrong size */,
                         Bad{12, 2, "layer 1's RoPE table 2 (of 2)"}}) {
    Bytes b = good;
    b[params + bad.at] = bad.value;
    fix_crc(b);
    try {
      make_codec("kvs")->decode(b);
      ADD_FAILURE() << "decoded with byte " << bad.at << " = " << int(bad.value);
    } catch (const CorruptStream& e) {
      if (bad.at != 6) {
        EXPECT_NE(std::string(e.what()).find(bad.words), std::string::npos) << e.what();
      }
    }
  }
  for (uint8_t flags : {6, 7, 8, 12}) {
    Bytes b = good;
    b[10] = flags;
    fix_crc(b);
    EXPECT_THROW(make_codec("kvs")->decode(b), CorruptStream) << int(flags);
  }
  // A table no layer reads is allowed (and not computed): layer 1 now at table 0.
  {
    Bytes b = good;
    b[params + 12] = 0;
    fix_crc(b);
    const KVChunk one = make_codec("kvs")->decode(b), both = codec->decode(good);
    EXPECT_TRUE(std::equal(&one.at(0, Kind::kKey, 0, 0, 0), &one.at(0, Kind::kKey, 0, 0, 0) + 8 * 16,
                           &both.at(0, Kind::kKey, 0, 0, 0)));
    EXPECT_FALSE(std::equal(&one.at(1, Kind::kKey, 0, 0, 0), &one.at(1, Kind::kKey, 0, 0, 0) + 8 * 16,
                            &both.at(1, Kind::kKey, 0, 0, 0)));
  }
  // A base below 1 for a table.
  Bytes b = good;
  const float theta = 0.5f;
  std::memcpy(&b[params + 7], &theta, 4);
  fix_crc(b);
  EXPECT_THROW(make_codec("kvs")->decode(b), CorruptStream);
}

// RecencyList::add_first(n) is add(0), ..., add(n - 1) on an empty list: the
// same ranks and times, before and after further moves (the GPU encoder's
// row plan starts each head with it).
TEST(KvsRecencyList, AddFirstEqualsAddingOneByOne) {
  using kvs_detail::RecencyList;
  for (const uint32_t T : {1u, 2u, 7u, 64u, 100u, 1025u}) {
    for (const uint32_t n : {0u, 1u, T / 2, T}) {
      SCOPED_TRACE(testing::Message() << "T " << T << " n " << n);
      RecencyList one_by_one(T), at_once(T);
      for (uint32_t t = 0; t < n; ++t) one_by_one.add(t);
      at_once.add_first(n);
      std::mt19937 rng(T * 31 + n);
      for (uint32_t t = n; t <= T; ++t) {
        ASSERT_EQ(at_once.size(), one_by_one.size());
        for (uint32_t r = 1; r <= at_once.size(); ++r) {
          ASSERT_EQ(at_once.time_of(r), one_by_one.time_of(r)) << "rank " << r;
          ASSERT_EQ(at_once.rank(at_once.time_of(r)), r);
        }
        if (t == T) break;
        // A token that reuses a row: the row moves to the front (its old time removed).
        if (at_once.size() > 0 && rng() % 2) {
          const uint32_t last = at_once.time_of(1 + rng() % at_once.size());
          at_once.remove(last), one_by_one.remove(last);
        }
        at_once.add(t), one_by_one.add(t);
      }
    }
  }
}

}  // namespace
}  // namespace kvs::codec
