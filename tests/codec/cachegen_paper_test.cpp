// cachegen scheme=paper: anchors and deltas against a codec model file.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>

#include <gtest/gtest.h>

#include "base/files.h"
#include "codec/bitstream.h"
#include "codec/cachegen.h"
#include "codec/cachegen_paper.h"
#include "codec/codec.h"
#include "tests/codec/corrupt.h"

namespace kvs::codec {
namespace {

// KV-like data with token-to-token correlation: per channel an AR(1) series
// x_t = rho x_{t-1} + sqrt(1 - rho^2) sigma_c n_t, a few outlier channels.
KVChunk correlated(KVShape s, uint32_t tokens, uint64_t seed, float rho = 0.95f) {
  KVChunk c(s, DType::kF16, 0, tokens);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const float innovation = std::sqrt(1 - rho * rho);
  for (uint32_t l = 0; l < s.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue})
      for (uint32_t h = 0; h < s.kv_heads; ++h)
        for (uint32_t d = 0; d < s.head_dim; ++d) {
          const float sigma = (d % 5 == 0 ? 4.0f : 0.7f) * (1.0f + 0.2f * float(l));
          float x = sigma * n(rng);
          for (uint32_t t = 0; t < tokens; ++t) {
            c.at(l, k, h, t, d) = round_to_dtype(x, c.dtype);
            x = rho * x + innovation * sigma * n(rng);
          }
        }
  return c;
}

std::vector<KVChunk> samples(KVShape s, uint64_t first_seed, int count = 4, uint32_t tokens = 64) {
  std::vector<KVChunk> out;
  for (int i = 0; i < count; ++i) out.push_back(correlated(s, tokens, first_seed + uint64_t(i)));
  return out;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) / ("kvs-paper-" + name)).string();
}

// Trains a model on `train`, writes it to a temp file, returns the path.
std::string write_model(const std::string& name, std::span<const KVChunk> train) {
  const std::string path = temp_path(name + ".cgm");
  write_file_atomic(path, train_cachegen_paper_model(train));
  return path;
}

std::unique_ptr<Codec> paper(const std::string& model_path) {
  return make_codec("cachegen", {{{"scheme", "paper"}}, model_path});
}

CacheGenPaperModel parse(const std::string& path) {
  const std::string b = read_file(path);
  return parse_cachegen_paper_model({reinterpret_cast<const uint8_t*>(b.data()), b.size()}, path);
}

double mse(const KVChunk& a, const KVChunk& b) {
  double e = 0;
  for (size_t i = 0; i < a.values.size(); ++i) e += double(a.values[i] - b.values[i]) * (a.values[i] - b.values[i]);
  return e / double(a.values.size());
}

// Every value within its documented bound: anchors step_a / 2, others
// step_d(level) / 2 (escaped values are exact). Returns the largest error
// of anchors and of deltas.
std::pair<double, double> check_bounds(const CacheGenPaperModel& m, const KVChunk& in, const KVChunk& out, int level) {
  EXPECT_EQ(out.shape, in.shape);
  EXPECT_EQ(out.tokens, in.tokens);
  EXPECT_EQ(out.token_begin, in.token_begin);
  double max_anchor = 0, max_delta = 0;
  const KVShape& s = in.shape;
  for (uint32_t l = 0; l < s.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue})
      for (uint32_t h = 0; h < s.kv_heads; ++h)
        for (uint32_t d = 0; d < s.head_dim; ++d) {
          const size_t r = m.record(l, k, h * s.head_dim + d);
          for (uint32_t t = 0; t < in.tokens; ++t) {
            const float x = in.at(l, k, h, t, d), y = out.at(l, k, h, t, d);
            if (!std::isfinite(x)) {
              if (std::isnan(x)) EXPECT_TRUE(std::isnan(y));
              else EXPECT_EQ(x, y);
              continue;
            }
            const bool anchor = t % kPaperGroupTokens == 0;
            const double bound = (anchor ? m.anchor_step(r) : m.delta_step(r, level, l)) / 2;
            const double err = std::fabs(double(x) - double(y));
            if (!(err <= bound * (1 + 1e-5) + 1e-6 * std::fabs(x))) {
              ADD_FAILURE() << "error " << err << " over bound " << bound << " at level " << level << " layer " << l << " kind " << int(k) << " head " << h << " token " << t
                << " dim " << d << (anchor ? " (anchor)" : " (delta)");
              return {max_anchor, max_delta};
            }
            (anchor ? max_anchor : max_delta) = std::max(anchor ? max_anchor : max_delta, err);
          }
        }
  return {max_anchor, max_delta};
}

TEST(CacheGenPaper, DepthGroupsAreThirds) {
  EXPECT_EQ(cachegen_paper_depth_group(0, 1), 0);
  EXPECT_EQ(cachegen_paper_depth_group(1, 2), 1);
  for (uint32_t l = 0; l < 32; ++l)
    EXPECT_EQ(cachegen_paper_depth_group(l, 32), l < 11 ? 0 : l < 22 ? 1 : 2) << l;
  EXPECT_EQ(cachegen_paper_bins(2, 0, 32), 32);
  EXPECT_EQ(cachegen_paper_bins(2, 31, 32), 16);
}

TEST(CacheGenPaper, RoundTripWithinBoundAtEveryLevel) {
  const KVShape s{3, 2, 8};
  const auto train = samples(s, 1);
  const std::string path = write_model("bounds", train);
  const CacheGenPaperModel m = parse(path);
  const auto codec = paper(path);
  EXPECT_TRUE(codec->needs_model());
  EXPECT_EQ(codec->levels(), kCacheGenLevels);
  KVChunk in = correlated(s, 37, 99);  // groups of 10, 10, 10 and 7
  in.token_begin = 1234;
  KVChunk anchors_l0;
  for (int level = 0; level < kCacheGenLevels; ++level) {
    const Bytes stream = codec->encode(in, level);
    const KVChunk out = codec->decode(stream);
    const auto [max_anchor, max_delta] = check_bounds(m, in, out, level);
    EXPECT_GT(max_delta, 0.0);
    // Anchors are coded at 8 bits whatever the level: identical at every level.
    if (level == 0) anchors_l0 = out;
    for (uint32_t t = 0; t < in.tokens; t += kPaperGroupTokens)
      for (uint32_t l = 0; l < s.layers; ++l)
        for (uint32_t d = 0; d < s.head_dim; ++d) ASSERT_EQ(out.at(l, Kind::kValue, 1, t, d), anchors_l0.at(l, Kind::kValue, 1, t, d));
    if (level == kCacheGenLevels - 1) {
      EXPECT_LT(max_anchor, max_delta) << "anchors are finer than the coarsest deltas";
    }
  }
}

TEST(CacheGenPaper, AnyShapeAndChunkLength) {
  for (const KVShape s : {KVShape{1, 1, 1}, KVShape{2, 3, 5}, KVShape{5, 1, 7}}) {
    const auto train = samples(s, 10, 2, 30);
    const std::string path = write_model("shape", train);
    const CacheGenPaperModel m = parse(path);
    const auto codec = paper(path);
    for (uint32_t tokens : {1u, 9u, 10u, 11u, 23u})
      for (int level : {0, 2, 6}) {
        const KVChunk in = correlated(s, tokens, 50 + tokens);
        check_bounds(m, in, codec->decode(codec->encode(in, level)), level);
      }
  }
}

// Values far outside the trained ranges, and non-finite ones, still encode:
// escapes keep them exact.
TEST(CacheGenPaper, OutOfRangeValuesEscape) {
  const KVShape s{3, 1, 8};
  const std::string path = write_model("escape", samples(s, 1));
  const CacheGenPaperModel m = parse(path);
  const auto codec = paper(path);
  KVChunk in = correlated(s, 40, 7);
  for (size_t i = 0; i < in.values.size(); i += 3) in.values[i] *= 100.0f;
  in.values[0] = std::numeric_limits<float>::infinity();
  in.values[5] = -std::numeric_limits<float>::infinity();
  in.values[11] = std::numeric_limits<float>::quiet_NaN();
  in.values[12] = 65504.0f;
  in.values[20] = -3e38f;
  for (int level = 0; level < kCacheGenLevels; ++level) {
    const Bytes stream = codec->encode(in, level);
    const KVChunk out = codec->decode(stream);
    check_bounds(m, in, out, level);
    EXPECT_EQ(out.values[12], 65504.0f);
    EXPECT_EQ(out.values[20], -3e38f);
  }
  // An all-zero training set (ranges at their floor) still encodes real data.
  std::vector<KVChunk> zeros{KVChunk(s, DType::kF16, 0, 20)};
  const std::string zpath = write_model("zeros", zeros);
  const auto zcodec = paper(zpath);
  const KVChunk plain = correlated(s, 25, 8);
  check_bounds(parse(zpath), plain, zcodec->decode(zcodec->encode(plain, 3)), 3);
}

TEST(CacheGenPaper, TrainingIsDeterministic) {
  const KVShape s{3, 2, 4};
  const auto a = samples(s, 1), b = samples(s, 1), c = samples(s, 2);
  const std::string ma = train_cachegen_paper_model(a);
  EXPECT_EQ(ma, train_cachegen_paper_model(b));
  EXPECT_NE(ma, train_cachegen_paper_model(c));
  EXPECT_EQ(ma, make_codec("cachegen", {{{"scheme", "paper"}}, ""})->train_model(a));
  EXPECT_THROW(train_cachegen_paper_model({}), Error);
  std::vector<KVChunk> mixed{correlated(s, 10, 1), correlated({3, 2, 8}, 10, 1)};
  EXPECT_THROW(train_cachegen_paper_model(mixed), Error);
}

TEST(CacheGenPaper, HigherLevelsAreSmallerAndWorse) {
  const KVShape s{6, 2, 16};
  const std::string path = write_model("mono", samples(s, 20, 3, 200));
  const auto codec = paper(path);
  const KVChunk in = correlated(s, 200, 77);
  size_t prev_bytes = SIZE_MAX;
  double prev_mse = -1;
  for (int level = 0; level < kCacheGenLevels; ++level) {
    const Bytes stream = codec->encode(in, level);
    const double e = mse(in, codec->decode(stream));
    EXPECT_LT(stream.size(), prev_bytes) << "level " << level;
    EXPECT_GT(e, prev_mse) << "level " << level;
    prev_bytes = stream.size();
    prev_mse = e;
  }
}

TEST(CacheGenPaper, NeedsItsOwnModel) {
  const KVShape s{3, 1, 8};
  const std::string pa = write_model("a", samples(s, 1)), pb = write_model("b", samples(s, 5));
  const KVChunk in = correlated(s, 30, 3);
  const Bytes stream = paper(pa)->encode(in, 2);
  EXPECT_EQ(stream_model_hash(stream), parse(pa).hash);
  try {
    paper(pb)->decode(stream);
    FAIL() << "decoded with another model";
  } catch (const CorruptStream& e) {
    EXPECT_NE(std::string(e.what()).find(pb), std::string::npos) << e.what();
  }
  // Without a model: cannot encode; a scheme=code codec cannot decode a paper stream...
  EXPECT_THROW(make_codec("cachegen", {{{"scheme", "paper"}}, ""})->encode(in, 0), Error);
  EXPECT_THROW(make_codec("cachegen")->decode(stream), CorruptStream);
  // ...but can with the model file, and a paper codec decodes scheme=code streams.
  const KVChunk expected = paper(pa)->decode(stream);
  EXPECT_EQ(make_codec("cachegen", {{}, pa})->decode(stream).values, expected.values);
  const auto code = make_codec("cachegen");
  const Bytes code_stream = code->encode(in, 2);
  EXPECT_EQ(stream_model_hash(code_stream), 0u);
  EXPECT_EQ(paper(pa)->decode(code_stream).values, code->decode(code_stream).values);
  // A chunk of another shape is refused.
  EXPECT_THROW(paper(pa)->encode(correlated({3, 1, 4}, 30, 3), 0), Error);
  EXPECT_NE(paper(pa)->params().find("scheme=paper"), std::string::npos);
}

TEST(CacheGenPaper, CorruptModelFilesAreRefused) {
  const std::string path = write_model("good", samples({1, 1, 1}, 1));
  const std::string good = read_file(path);
  ASSERT_NO_THROW(parse(path));
  const std::string bad = temp_path("bad.cgm");
  auto expect_refused = [&](const std::string& bytes, const std::string& what) {
    try {
      parse_cachegen_paper_model({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, bad);
      ADD_FAILURE() << what << ": accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << what << ": " << e.what();
    }
  };
  for (size_t n : {size_t(0), size_t(10), size_t(56), good.size() / 2, good.size() - 1})
    expect_refused(good.substr(0, n), "truncated to " + std::to_string(n));
  expect_refused(good + "x", "extended");
  for (size_t pos = 0; pos < good.size(); ++pos) {
    std::string b = good;
    b[pos] = char(b[pos] ^ 0x10);
    expect_refused(b, "byte " + std::to_string(pos) + " flipped");
  }
  // Valid CRC, bad contents: a NaN range, a zero frequency.
  auto with_crc = [](std::string b) {
    const uint32_t crc = crc32({reinterpret_cast<const uint8_t*>(b.data()), b.size() - 4});
    for (int k = 0; k < 4; ++k) b[b.size() - 4 + size_t(k)] = char(uint8_t(crc >> (8 * k)));
    return b;
  };
  std::string nan_range = good;
  nan_range[56 + 3] = char(0x7f), nan_range[56 + 2] = char(0xc0);
  expect_refused(with_crc(nan_range), "NaN range");
  std::string zero_freq = good;
  zero_freq[56 + 8] = 0, zero_freq[56 + 9] = 0;
  expect_refused(with_crc(zero_freq), "zero frequency");
  // Through the codec factory, as the CLI loads it.
  write_file_atomic(bad, good.substr(0, 100));
  try {
    paper(bad);
    ADD_FAILURE() << "truncated file accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
  EXPECT_THROW(paper(temp_path("missing.cgm")), Error);
}

// decode_into writes every value of a reused chunk (it does not clear it
// first): a chunk poisoned with a NaN pattern, larger, smaller or of the same
// size, ends up bit-identical to decode()'s; a stream decode() refuses is
// refused with the same error; scheme=code streams go through decode().
TEST(CacheGenPaper, DecodeIntoWritesEveryValueOfAReusedChunk) {
  const KVShape s{3, 2, 8};
  const std::string path = write_model("into", samples(s, 1));
  const auto codec = paper(path);
  KVChunk in = correlated(s, 23, 4);
  in.token_begin = 77;
  in.values[3] = 1e6f;  // escapes, a NaN and an infinity
  in.values[40] = std::numeric_limits<float>::quiet_NaN();
  in.values[41] = -std::numeric_limits<float>::infinity();
  for (int level = 0; level < kCacheGenLevels; ++level) {
    const Bytes stream = codec->encode(in, level);
    const KVChunk expected = codec->decode(stream);
    for (KVChunk out : {KVChunk{}, poisoned_chunk(s, 23), poisoned_chunk(s, 40), poisoned_chunk({1, 1, 3}, 2)}) {
      codec->decode_into(stream, out);
      expect_same_chunk(out, expected);
      codec->decode_into(stream, out);  // again into the now equal chunk
      expect_same_chunk(out, expected);
    }
  }
  // Corrupted copies (valid CRC): the same error or the same values.
  const Bytes good = codec->encode(in, 0);
  KVChunk out = poisoned_chunk(s, 23);
  for (size_t pos = 4; pos + 4 < good.size(); ++pos) {
    Bytes b = good;
    b[pos] ^= uint8_t(1u << (pos % 8));
    fix_crc(b);
    std::string want, got;
    KVChunk expected;
    try {
      expected = codec->decode(b);
    } catch (const CorruptStream& e) {
      want = e.what();
    }
    try {
      codec->decode_into(b, out);
    } catch (const CorruptStream& e) {
      got = e.what();
    }
    EXPECT_EQ(got, want) << "byte " << pos;
    if (want.empty() && got.empty()) expect_same_chunk(out, expected);
  }
  // A scheme=code stream, and the default decode_into of another codec.
  const Bytes code_stream = make_codec("cachegen")->encode(correlated(s, 23, 4), 2);  // finite, in fp16 range
  codec->decode_into(code_stream, out);
  expect_same_chunk(out, make_codec("cachegen")->decode(code_stream));
  const auto raw = make_codec("raw");
  raw->decode_into(raw->encode(in, 0), out);
  expect_same_chunk(out, raw->decode(raw->encode(in, 0)));
}

TEST(CacheGenPaper, CorruptStreamsFailCleanly) {
  const KVShape s{3, 2, 4};
  const std::string path = write_model("corrupt", samples(s, 1));
  const auto codec = paper(path);
  KVChunk in = correlated(s, 23, 9);
  in.values[3] = 1e6f;  // an escape in the first substream
  std::mt19937_64 rng(3);
  for (int level : {0, 3, 6}) {
    const Bytes good = codec->encode(in, level);
    for (size_t n = 0; n < good.size(); n += 1 + good.size() / 300)
      EXPECT_THROW(codec->decode(Bytes(good.begin(), good.begin() + ptrdiff_t(n))), CorruptStream) << n;
    for (int i = 0; i < 200; ++i) {
      Bytes b = good;
      b[rng() % b.size()] ^= uint8_t(1u << (rng() % 8));
      EXPECT_THROW(codec->decode(b), CorruptStream);
    }
    // Valid CRC, mutated payload or header (a changed model hash included):
    // CorruptStream, else a chunk of the right shape.
    for (size_t pos = 4; pos + 4 < good.size(); ++pos) {
      Bytes b = good;
      b[pos] ^= uint8_t(1u << (pos % 8));
      fix_crc(b);
      try {
        const KVChunk out = codec->decode(b);
        EXPECT_EQ(out.values.size(), out.shape.elements_per_token() * out.tokens);
      } catch (const CorruptStream&) {
      }
    }
    // More escapes claimed than values: refused before reading them.
    Bytes b = good;
    const size_t sections = b[36] | b[37] << 8;
    const size_t first = kHeaderBytes + 4 * sections;
    b[first + 3] = 0x7f;
    fix_crc(b);
    EXPECT_THROW(codec->decode(b), CorruptStream);
  }
}

// Codec::layer_shares of a scheme=paper stream: per (layer, kind, head)
// substreams, so a layer's change in size is its own.
TEST(CacheGenPaper, LayerSharesFollowEachLayersSubstreams) {
  const KVShape s{4, 2, 16};
  const std::string model = write_model("shares", samples(s, 40));
  const auto codec = paper(model);
  const KVChunk a = correlated(s, 120, 77);
  KVChunk b = a;
  for (uint32_t h = 0; h < s.kv_heads; ++h)
    for (uint32_t t = 0; t < a.tokens; ++t)
      for (uint32_t d = 0; d < s.head_dim; ++d) b.at(1, Kind::kKey, h, t, d) = b.at(1, Kind::kValue, h, t, d) = 0.0f;
  for (int level : {0, 3, 6}) {
    const Bytes sa = codec->encode(a, level), sb = codec->encode(b, level);
    const std::vector<double> ha = codec->layer_shares(sa), hb = codec->layer_shares(sb);
    ASSERT_EQ(ha.size(), 4u);
    ASSERT_NE(sa.size(), sb.size());
    for (uint32_t l = 0; l < 4; ++l) {
      const double da = ha[l] * double(sa.size()), db = hb[l] * double(sb.size());
      EXPECT_NEAR(da - db, l == 1 ? double(sa.size()) - double(sb.size()) : 0.0, 1e-6) << level << " " << l;
    }
    // Without the model file too (the layout needs none), and through the scheme=code codec.
    EXPECT_EQ(make_codec("cachegen")->layer_shares(sa), ha);
  }
  std::filesystem::remove(model);
}

}  // namespace
}  // namespace kvs::codec
