#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "codec/bitstream.h"
#include "codec/cachegen.h"
#include "codec/codec.h"
#include "tests/codec/corrupt.h"
#include "codec/rans.h"

namespace kvs::codec {
namespace {

// KV-like data: per-channel scales with a few outlier channels, heavy-ish tails.
KVChunk synthetic(KVShape s, uint32_t tokens, DType dtype, uint64_t seed) {
  KVChunk c(s, dtype, 100, tokens);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (uint32_t l = 0; l < s.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue})
      for (uint32_t h = 0; h < s.kv_heads; ++h)
        for (uint32_t d = 0; d < s.head_dim; ++d) {
          const float ch_scale = (d % 7 == 0 ? 4.0f : 0.5f) * (1.0f + 0.1f * float(l));
          for (uint32_t t = 0; t < tokens; ++t)
            c.at(l, k, h, t, d) = round_to_dtype(ch_scale * n(rng), dtype);
        }
  return c;
}

double mse(const KVChunk& a, const KVChunk& b) {
  double e = 0;
  for (size_t i = 0; i < a.values.size(); ++i) e += double(a.values[i] - b.values[i]) * (a.values[i] - b.values[i]);
  return e / double(a.values.size());
}

const KVShape kShape{4, 2, 16};

TEST(Rans, RoundTripsManyDistributions) {
  std::mt19937_64 rng(7);
  for (uint32_t symbols : {1u, 2u, 3u, 31u, 63u, 256u}) {
    for (int trial = 0; trial < 5; ++trial) {
      std::vector<uint32_t> counts(symbols);
      std::vector<uint8_t> data(1 + rng() % 3000);
      const double skew = double(trial);
      for (auto& v : data) v = uint8_t(std::min<uint64_t>(symbols - 1, uint64_t(std::pow(double(rng() % 1000) / 1000.0, skew) * symbols)));
      for (uint8_t v : data) ++counts[v];
      rans::Table t;
      ASSERT_TRUE(rans::build_table(counts.data(), symbols, &t));
      EXPECT_EQ(t.cum[symbols], rans::kProbScale);
      std::vector<uint8_t> buf(4 + 2 * data.size());
      const size_t n = rans::encode(data.data(), data.size(), t, buf.data(), buf.size());
      ASSERT_GT(n, 0u);
      // Size close to the empirical entropy.
      double bits = 0;
      for (uint32_t s = 0; s < symbols; ++s)
        if (counts[s]) bits -= counts[s] * std::log2(double(counts[s]) / double(data.size()));
      EXPECT_LE(double(n) * 8, bits * 1.01 + 8 * 8 + double(data.size()) * 0.01) << symbols << " " << trial;
      std::vector<uint8_t> back(data.size());
      ASSERT_EQ(rans::decode(buf.data() + buf.size() - n, n, t, back.data(), back.size()), rans::DecodeStatus::kOk);
      EXPECT_EQ(back, data);
      if (n > 4) {  // truncated input is an error, not a crash
        EXPECT_NE(rans::decode(buf.data() + buf.size() - n, n - 1, t, back.data(), back.size()), rans::DecodeStatus::kOk);
      }
    }
  }
}

TEST(Rans, RejectsBadTables) {
  rans::Table t;
  t.symbols = 2;
  t.freq[0] = 1;
  t.freq[1] = 5;
  EXPECT_FALSE(rans::finish_table(&t));  // does not sum to 2^16
  t.freq[1] = rans::kProbScale - 1;
  EXPECT_TRUE(rans::finish_table(&t));
  t.freq[0] = 0;
  t.freq[1] = rans::kProbScale;
  EXPECT_FALSE(rans::finish_table(&t));  // zero frequency
}

TEST(Raw, BitExactForEveryDtype) {
  auto raw = make_codec("raw");
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16}) {
    const KVChunk c = synthetic(kShape, 37, d, 1);
    const KVChunk back = raw->decode(raw->encode(c, 0));
    EXPECT_EQ(back.values, c.values);
    EXPECT_EQ(back.token_begin, 100u);
    EXPECT_EQ(back.dtype, d);
  }
  EXPECT_THROW(raw->encode(synthetic(kShape, 3, DType::kF16, 1), 1), Error);
}

TEST(Zstd, BitExactForEveryDtypeAndSmallerOnRepetitiveData) {
  auto zstd = make_codec("zstd");
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16}) {
    const KVChunk c = synthetic(kShape, 37, d, 1);
    const KVChunk back = zstd->decode(zstd->encode(c, 0));
    EXPECT_EQ(back.values, c.values);
    EXPECT_EQ(back.dtype, d);
  }
  KVChunk zeros = synthetic(kShape, 64, DType::kF16, 1);
  std::fill(zeros.values.begin(), zeros.values.end(), 0.0f);
  EXPECT_LT(zstd->encode(zeros, 0).size(), make_codec("raw")->encode(zeros, 0).size() / 10);
  EXPECT_THROW(zstd->encode(zeros, 1), Error);
}

TEST(Quant8, EqualsReferenceDequantization) {
  auto q8 = make_codec("quant8");
  const KVChunk c = synthetic(kShape, 20, DType::kF16, 2);
  const KVChunk back = q8->decode(q8->encode(c, 0));
  for (uint32_t l = 0; l < kShape.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue})
      for (uint32_t t = 0; t < c.tokens; ++t) {
        float max = 0;
        for (uint32_t h = 0; h < kShape.kv_heads; ++h)
          for (uint32_t d = 0; d < kShape.head_dim; ++d) max = std::max(max, std::fabs(c.at(l, k, h, t, d)));
        for (uint32_t h = 0; h < kShape.kv_heads; ++h)
          for (uint32_t d = 0; d < kShape.head_dim; ++d) {
            const float x = c.at(l, k, h, t, d);
            const float expect = std::nearbyint(x / max * 127.0f) * (max / 127.0f);
            ASSERT_NEAR(back.at(l, k, h, t, d), expect, 1e-6f * max);
            ASSERT_LE(std::fabs(back.at(l, k, h, t, d) - x), max / 254.0f * 1.0001f);
          }
      }
}

// A chunk holding an infinity or a NaN is refused at encode time: before, an
// infinity made a stream quant8's own decoder rejects ("scale not finite")
// and a NaN silently decoded as 0.
TEST(Quant8, RefusesValuesThatAreNotFinite) {
  auto q8 = make_codec("quant8");
  for (float bad : {INFINITY, -INFINITY, NAN}) {
    KVChunk c = synthetic(kShape, 5, DType::kF32, 2);
    c.at(1, Kind::kValue, 1, 3, 7) = bad;
    try {
      (void)q8->encode(c, 0);
      ADD_FAILURE() << "quant8 encoded a chunk holding " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("layer 1 V token 103"), std::string::npos) << e.what();
    }
  }
}

// A token whose absmax is below 127 / FLT_MAX (an fp32 cache): 127 / max
// overflows to infinity, and x * inf used to decode as 0 (error = max, not
// max / 254).
TEST(Quant8, TinyTokensStayWithinTheBound) {
  auto q8 = make_codec("quant8");
  KVChunk c({1, 1, 4}, DType::kF32, 0, 2);
  const float xs[2][4] = {{1e-38f, -5e-39f, 2.5e-39f, 0.0f}, {3e-39f, -1e-39f, 0.0f, 1.5e-39f}};
  for (uint32_t t = 0; t < 2; ++t)
    for (uint32_t d = 0; d < 4; ++d) c.at(0, Kind::kKey, 0, t, d) = c.at(0, Kind::kValue, 0, t, d) = xs[t][d];
  const KVChunk back = q8->decode(q8->encode(c, 0));
  for (uint32_t t = 0; t < 2; ++t) {
    const float max = std::fabs(xs[t][0]) > std::fabs(xs[t][1]) ? std::fabs(xs[t][0]) : std::fabs(xs[t][1]);
    for (Kind k : {Kind::kKey, Kind::kValue})
      for (uint32_t d = 0; d < 4; ++d)
        EXPECT_LE(std::fabs(back.at(0, k, 0, t, d) - xs[t][d]), max / 254.0f * 1.01f) << t << " " << d;
  }
  EXPECT_EQ(back.at(0, Kind::kKey, 0, 0, 0), 1e-38f / 127.0f * 127.0f);  // q = 127: x' = 127 * (max / 127)
}

TEST(CacheGen, BinScheduleFollowsReleasedCodeFor32Layers) {
  // K: [0,10) / [10,20) / [20,32); V: [0,2) / [2,32); CacheGen levels 1..3 = ours 3..1.
  EXPECT_EQ(cachegen_bins(3, Kind::kKey, 9, 32), 16);
  EXPECT_EQ(cachegen_bins(3, Kind::kKey, 19, 32), 16);
  EXPECT_EQ(cachegen_bins(3, Kind::kKey, 20, 32), 12);
  EXPECT_EQ(cachegen_bins(2, Kind::kKey, 9, 32), 32);
  EXPECT_EQ(cachegen_bins(2, Kind::kKey, 10, 32), 16);
  EXPECT_EQ(cachegen_bins(2, Kind::kValue, 1, 32), 32);
  EXPECT_EQ(cachegen_bins(2, Kind::kValue, 2, 32), 16);
  EXPECT_EQ(cachegen_bins(1, Kind::kValue, 31, 32), 32);
  EXPECT_EQ(cachegen_bins(3, Kind::kValue, 0, 4), 16);  // first layer of a shallow model
  EXPECT_EQ(cachegen_bins(3, Kind::kValue, 1, 4), 12);
}

TEST(CacheGen, EqualsReferenceDequantizationWithinBound) {
  auto cg = make_codec("cachegen");
  const KVChunk c = synthetic(kShape, 300, DType::kF16, 3);  // two streams per channel
  for (int level = 0; level < cg->levels(); ++level) {
    const KVChunk back = cg->decode(cg->encode(c, level));
    for (uint32_t l = 0; l < kShape.layers; ++l)
      for (Kind k : {Kind::kKey, Kind::kValue}) {
        const int M = cachegen_bins(level, k, l, kShape.layers) / 2 - 1;
        for (uint32_t t = 0; t < c.tokens; ++t) {
          float max = 0;
          for (uint32_t h = 0; h < kShape.kv_heads; ++h)
            for (uint32_t d = 0; d < kShape.head_dim; ++d) max = std::max(max, std::fabs(c.at(l, k, h, t, d)));
          const float scale = max;  // fp16 input: the fp16 scale is max itself
          for (uint32_t h = 0; h < kShape.kv_heads; ++h)
            for (uint32_t d = 0; d < kShape.head_dim; ++d) {
              const float x = c.at(l, k, h, t, d);
              const float q = std::nearbyint(x * float(M) / scale);
              ASSERT_NEAR(back.at(l, k, h, t, d), q * scale / float(M), 1e-6f * scale) << level;
              ASSERT_LE(std::fabs(back.at(l, k, h, t, d) - x), scale / (2.0f * float(M)) * 1.0001f);
            }
        }
      }
  }
}

// Exact ties, as codec/cachegen.h states them: q = round_half_even(x * M /
// max) + M. x = max / 2 at M = 15 (level 1) is 7.5 -> 8; LMCache's GPU
// serializer, round(x * M / max + M), would give 22.5 -> 22, i.e. 7. At M = 5
// (12 bins, level 4's first K third) 2.5 -> 2, where LMCache's 7.5 -> 8 gives 3.
TEST(CacheGen, TiesRoundHalfToEvenBeforeTheOffset) {
  auto cg = make_codec("cachegen");
  KVChunk c({1, 1, 4}, DType::kF16, 0, 1);
  const float xs[4] = {1.0f, 0.5f, -0.5f, 0.25f};
  for (uint32_t d = 0; d < 4; ++d) c.at(0, Kind::kKey, 0, 0, d) = c.at(0, Kind::kValue, 0, 0, d) = xs[d];
  const KVChunk l1 = cg->decode(cg->encode(c, 1));
  ASSERT_EQ(cachegen_bins(1, Kind::kKey, 0, 1), 32);
  for (Kind k : {Kind::kKey, Kind::kValue}) {
    EXPECT_EQ(l1.at(0, k, 0, 0, 0), 1.0f);
    EXPECT_EQ(l1.at(0, k, 0, 0, 1), 8.0f * 1.0f / 15.0f);
    EXPECT_EQ(l1.at(0, k, 0, 0, 2), -8.0f * 1.0f / 15.0f);
    EXPECT_EQ(l1.at(0, k, 0, 0, 3), 4.0f * 1.0f / 15.0f);  // 3.75 -> 4
  }
  ASSERT_EQ(cachegen_bins(4, Kind::kKey, 0, 1), 12);
  const KVChunk l4 = cg->decode(cg->encode(c, 4));
  EXPECT_EQ(l4.at(0, Kind::kKey, 0, 0, 1), 2.0f * 1.0f / 5.0f);
  EXPECT_EQ(l4.at(0, Kind::kKey, 0, 0, 2), -2.0f * 1.0f / 5.0f);
}

TEST(CacheGen, HigherLevelsAreSmallerAndWorse) {
  auto cg = make_codec("cachegen");
  const KVChunk c = synthetic(kShape, 256, DType::kF16, 4);
  size_t prev_bytes = SIZE_MAX;
  double prev_err = -1;
  for (int level = 0; level < cg->levels(); ++level) {
    const Bytes b = cg->encode(c, level);
    const double e = mse(c, cg->decode(b));
    EXPECT_LT(b.size(), prev_bytes) << level;
    EXPECT_GT(e, prev_err) << level;
    prev_bytes = b.size();
    prev_err = e;
  }
  EXPECT_EQ(cg->encode(c, 2), cg->encode(c, 2));  // deterministic
}

TEST(CacheGen, BadParameters) {
  EXPECT_THROW(make_codec("cachegen", {{{"stream_tokens", "0"}}, ""}), Error);
  EXPECT_THROW(make_codec("cachegen", {{{"scheme", "bogus"}}, ""}), Error);
  EXPECT_THROW(make_codec("cachegen", {{{"scheme", "paper"}, {"stream_tokens", "64"}}, ""}), Error);
  EXPECT_THROW(make_codec("cachegen", {{{"bins", "4"}}, ""}), Error);
  EXPECT_THROW(make_codec("nope"), Error);
  EXPECT_NO_THROW(make_codec("cachegen", {{{"stream_tokens", "64"}}, ""}));
}

// Mutated, truncated and extended streams of every codec: an error or a chunk
// of the header's shape, never a crash (this runs under ASan/UBSan in CI, so
// gcc-only builds fuzz the decoders too; tests/codec/fuzz is the libFuzzer
// version). Deterministic: a fixed seed.
// Codec::decode_into gives decode()'s chunk, bit for bit, whatever the
// reused chunk held before (poisoned with a NaN pattern no decoder writes;
// larger, smaller or of the same size): codecs that override it (cachegen)
// write every value, the others move decode()'s result in.
TEST(DecodeInto, EqualsDecodeForEveryCodecWhateverTheChunkHeld) {
  const KVChunk c = synthetic({2, 3, 8}, 21, DType::kF16, 7);
  std::vector<std::pair<std::string, CodecParams>> variants;
  for (const auto& name : codec_names()) variants.push_back({name, {}});
  variants.push_back({"cachegen", {{"stream_tokens", "5"}}});
  for (const auto& [name, params] : variants) {
    const auto codec = make_codec(name, {params, ""});
    for (int level = 0; level < codec->levels(); level += 2) {
      const Bytes stream = codec->encode(c, level);
      const KVChunk expected = codec->decode(stream);
      for (KVChunk out : {KVChunk{}, poisoned_chunk(c.shape, c.tokens), poisoned_chunk(c.shape, 40),
                         poisoned_chunk({1, 1, 2}, 3)}) {
        codec->decode_into(stream, out);
        expect_same_chunk(out, expected, name + " level " + std::to_string(level));
      }
    }
  }
}

// A chunk of no tokens has no stream: every encoder refuses it, naming the
// chunk, rather than write one its decoder would refuse.
TEST(Encode, EveryCodecRefusesAChunkOfNoTokens) {
  const KVChunk empty({2, 1, 8}, DType::kF16, 42, 0);
  for (const auto& name : codec_names()) {
    const auto codec = make_codec(name);
    try {
      (void)codec->encode(empty, 0);
      ADD_FAILURE() << name << " wrote a stream of no tokens";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("chunk at token 42: 0 tokens"), std::string::npos) << name << ": " << e.what();
    }
  }
}

TEST(CorruptStreams, EveryCodecFailsCleanly) {
  std::mt19937_64 rng(11);
  const KVChunk c = synthetic({2, 1, 8}, 12, DType::kF16, 5);
  // Every codec with its defaults, plus parameters that give more sections on a 12-token chunk.
  std::vector<std::pair<std::string, CodecParams>> variants;
  for (const auto& name : codec_names()) variants.push_back({name, {}});
  variants.push_back({"cachegen", {{"stream_tokens", "5"}}});
  variants.push_back({"kivi2", {{"group", "4"}, {"residual", "8"}}});
  variants.push_back({"kivi4", {{"group", "3"}, {"residual", "0"}}});
  int decoded = 0, rejected = 0;
  for (const auto& [name, params] : variants) {
    auto codec = make_codec(name, {params, ""});
    for (int level = 0; level < codec->levels(); ++level) {
      const Bytes good = codec->encode(c, level);
      auto check = [&](const Bytes& b) {
        try {
          const KVChunk out = codec->decode(b);
          EXPECT_EQ(out.values.size(), out.shape.elements_per_token() * out.tokens);
          ++decoded;
        } catch (const CorruptStream&) {
          ++rejected;
        }
      };
      for (size_t n = 0; n < good.size(); n += 1 + good.size() / 200) check(Bytes(good.begin(), good.begin() + ptrdiff_t(n)));
      for (int i = 0; i < 150; ++i) {
        Bytes b = good;
        const int edits = 1 + int(rng() % 4);
        for (int e = 0; e < edits; ++e) b[rng() % b.size()] ^= uint8_t(1u << (rng() % 8));
        check(b);
        // The same with a valid checksum, and random bytes, cuts and insertions behind one.
        fix_crc(b);
        check(b);
        Bytes r = good;
        switch (rng() % 3) {
          case 0: r[rng() % (r.size() - 4)] = uint8_t(rng()); break;
          case 1: r.erase(r.begin() + ptrdiff_t(rng() % (r.size() - 4))); break;
          case 2: r.insert(r.begin() + ptrdiff_t(rng() % (r.size() - 4)), uint8_t(rng())); break;
        }
        fix_crc(r);
        check(r);
      }
      Bytes longer = good;
      longer.push_back(0);
      EXPECT_THROW(codec->decode(longer), CorruptStream);
      // Valid CRC but hostile header fields: every header byte set to 0xff.
      for (size_t pos = 4; pos < kHeaderBytes; ++pos) {
        Bytes b = good;
        b[pos] = 0xff;
        fix_crc(b);
        check(b);
      }
    }
  }
  // Both outcomes happen, so the mutations do reach past the checksum.
  EXPECT_GT(decoded, 100);
  EXPECT_GT(rejected, 1000);
}

// Codec::layer_shares: what a server sending only some layers sends. Checked
// against the streams themselves: a layer whose values change changes only
// its own bytes, by exactly the stream's change in size.
void expect_layer_bytes_follow_the_data(const Codec& codec, int level, KVChunk a) {
  KVChunk b = a;
  for (uint32_t h = 0; h < a.shape.kv_heads; ++h)  // layer 2 flat: its streams shrink
    for (uint32_t t = 0; t < a.tokens; ++t)
      for (uint32_t d = 0; d < a.shape.head_dim; ++d) b.at(2, Kind::kKey, h, t, d) = b.at(2, Kind::kValue, h, t, d) = 0.25f;
  const Bytes sa = codec.encode(a, level), sb = codec.encode(b, level);
  const std::vector<double> ha = codec.layer_shares(sa), hb = codec.layer_shares(sb);
  ASSERT_EQ(ha.size(), a.shape.layers);
  double sum = 0;
  for (double x : ha) {
    sum += x;
    EXPECT_GT(x, 0.0);
  }
  EXPECT_NEAR(sum, 1.0, 1e-12);
  ASSERT_LT(sb.size(), sa.size());
  for (uint32_t l = 0; l < a.shape.layers; ++l) {
    const double da = ha[l] * double(sa.size()), db = hb[l] * double(sb.size());
    if (l == 2)
      EXPECT_NEAR(da - db, double(sa.size() - sb.size()), 1e-6) << codec.name() << " level " << level;
    else
      EXPECT_NEAR(da, db, 1e-6) << codec.name() << " level " << level << " layer " << l;
  }
}

TEST(LayerShares, CachegenAttributesEachLayersSections) {
  const auto codec = make_codec("cachegen");
  const KVChunk c = synthetic(kShape, 300, DType::kF16, 11);
  for (int level = 0; level < codec->levels(); ++level) expect_layer_bytes_follow_the_data(*codec, level, c);
  // Early layers get more bins at levels 2-6 (codec/cachegen.h): layer 0 outweighs layer 3.
  const std::vector<double> shares = codec->layer_shares(codec->encode(c, 6));
  EXPECT_GT(shares[0], shares[3] * 1.05);
}

// kvs codes each table's channels, across layers, in shared substreams: each
// is split over layers by symbols (one table: the same bits per symbol in
// expectation), so the bytes follow the data closely, not to the byte.
TEST(LayerShares, KvsSplitsSharedSubstreamsBySymbols) {
  const auto codec = make_codec("kvs");
  const KVChunk base = synthetic(kShape, 300, DType::kF16, 11);
  KVChunk a = base;
  for (uint32_t h = 0; h < a.shape.kv_heads; ++h)  // layer 1 four times as spread: more bits per value
    for (uint32_t t = 0; t < a.tokens; ++t)
      for (uint32_t d = 0; d < a.shape.head_dim; ++d)
        for (Kind k : {Kind::kKey, Kind::kValue}) a.at(1, k, h, t, d) *= 4.0f;
  KVChunk b = a;
  for (uint32_t h = 0; h < a.shape.kv_heads; ++h)  // layer 2 flat: its streams shrink
    for (uint32_t t = 0; t < a.tokens; ++t)
      for (uint32_t d = 0; d < a.shape.head_dim; ++d) b.at(2, Kind::kKey, h, t, d) = b.at(2, Kind::kValue, h, t, d) = 0.25f;
  for (int level : {0, 2, 4, 6}) {
    const Bytes sa = codec->encode(a, level), sb = codec->encode(b, level);
    const std::vector<double> ha = codec->layer_shares(sa), hb = codec->layer_shares(sb);
    ASSERT_EQ(ha.size(), 4u);
    double sum = 0;
    for (double x : ha) sum += x;
    EXPECT_NEAR(sum, 1.0, 1e-12);
    EXPECT_GT(ha[1], codec->layer_shares(codec->encode(base, level))[1] * 1.2) << level;  // the wider layer weighs more
    ASSERT_LT(sb.size(), sa.size());
    // Layer 2 takes the stream's change to within 5 %; the others keep their bytes to within 1 %
    // (an even split would move every layer by a quarter of the change).
    const double change = double(sa.size() - sb.size());
    for (uint32_t l = 0; l < 4; ++l) {
      const double da = ha[l] * double(sa.size()), db = hb[l] * double(sb.size());
      if (l == 2)
        EXPECT_NEAR(da - db, change, 0.05 * change) << "level " << level;
      else
        EXPECT_NEAR(db, da, 0.01 * da) << "level " << level << " layer " << l;
    }
  }
  EXPECT_THROW(codec->layer_shares(std::span<const uint8_t>(codec->encode(a, 0)).first(100)), CorruptStream);
}

TEST(LayerShares, DefaultIsEvenAndChecksTheStream) {
  const KVChunk c = synthetic(kShape, 40, DType::kF16, 12);
  const auto quant8 = make_codec("quant8");
  const Bytes s = quant8->encode(c, 0);
  EXPECT_EQ(quant8->layer_shares(s), std::vector<double>(4, 0.25));
  EXPECT_THROW(make_codec("raw")->layer_shares(s), CorruptStream);  // another codec's stream
  EXPECT_THROW(make_codec("cachegen")->layer_shares(s), CorruptStream);
  EXPECT_THROW(quant8->layer_shares(std::span<const uint8_t>(s).first(s.size() - 1)), CorruptStream);
  EXPECT_THROW(quant8->layer_shares(std::span<const uint8_t>(s).first(20)), CorruptStream);
}

}  // namespace
}  // namespace kvs::codec
