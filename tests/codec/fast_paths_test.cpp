// The codec's fast paths against straightforward references: the indexed
// rANS symbol lookup against binary search, the reciprocal encoder step
// against division, slicing-by-8 CRC-32 against the bytewise one, and the
// whole cachegen encoder and decoder against a plain transcription of the
// scheme (the golden streams pin only a tiny chunk; this covers odd shapes,
// several token blocks and special values).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include <gtest/gtest.h>

#include "codec/bitstream.h"
#include "codec/cachegen.h"
#include "codec/codec.h"
#include "codec/rans.h"

namespace kvs::codec {
namespace {

// Random normalized tables of every shape the codecs use, plus extremes:
// many frequency-1 symbols (several symbols starting in one index bucket) and
// one symbol holding almost every slot.
std::vector<rans::Table> random_tables(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<rans::Table> out;
  for (uint32_t symbols : {1u, 2u, 3u, 5u, 11u, 31u, 63u, 200u, 256u})
    for (int shape = 0; shape < 4; ++shape) {
      std::vector<uint32_t> counts(symbols);
      for (auto& c : counts) {
        switch (shape) {
          case 0: c = uint32_t(rng() % 1000); break;              // uniform-ish
          case 1: c = rng() % 4 == 0 ? uint32_t(rng() % 100000) : 0; break;  // sparse: most at freq 1
          case 2: c = uint32_t(std::exp(double(rng() % 20))); break;          // heavy tail
          default: c = 0; break;                                    // all minimal but one
        }
      }
      if (shape == 3) counts[rng() % symbols] = 1000000;
      rans::Table t;
      EXPECT_TRUE(rans::build_table(counts.data(), symbols, &t));
      out.push_back(t);
    }
  return out;
}

TEST(RansFast, IndexedLookupAgreesWithBinarySearchForEverySlot) {
  for (const rans::Table& t : random_tables(1)) {
    rans::SymbolIndex index;
    rans::build_index(t, &index);
    for (uint32_t slot = 0; slot < rans::kProbScale; ++slot)
      ASSERT_EQ(rans::find_symbol(t, index, slot), rans::find_symbol(t, slot)) << "symbols " << t.symbols << " slot " << slot;
  }
}

TEST(RansFast, ReciprocalStepEqualsDivisionForEveryFrequency) {
  std::mt19937_64 rng(2);
  for (uint32_t f = 1; f < rans::kProbScale; ++f) {
    rans::Table t;  // two symbols: f at cum 0 and the rest, and the same at the top
    t.symbols = 2;
    t.freq[0] = f;
    t.freq[1] = rans::kProbScale - f;
    ASSERT_TRUE(rans::finish_table(&t));
    rans::EncodeTable e;
    rans::build_encode_table(t, &e);
    for (uint32_t s = 0; s < 2; ++s) {
      const uint32_t freq = t.freq[s];
      const uint32_t x_max = ((rans::kLowerBound >> rans::kProbBits) << 8) * freq;  // the encoder keeps x < x_max
      ASSERT_EQ(e.sym[s].x_max, x_max);
      for (uint32_t x : {1u, freq - 1 + (freq == 1), freq, x_max / 2, x_max - 1, uint32_t(1 + rng() % (x_max - 1)),
                         uint32_t(1 + rng() % (x_max - 1))}) {
        const uint32_t expect = ((x / freq) << rans::kProbBits) + x % freq + t.cum[s];
        ASSERT_EQ(rans::encode_put(x, e.sym[s]), expect) << "freq " << freq << " x " << x;
      }
    }
  }
}

TEST(RansFast, StridedEncodeEqualsContiguousAndDecodesBack) {
  std::mt19937_64 rng(3);
  for (const rans::Table& t : random_tables(4)) {
    const size_t n = 1 + rng() % 700, stride = 1 + rng() % 5;
    std::vector<uint8_t> spread(n * stride, 0xee), packed(n);
    for (size_t i = 0; i < n; ++i) {
      // Draw symbols from the table's own distribution so rare ones appear too.
      const uint32_t slot = uint32_t(rng() % rans::kProbScale);
      packed[i] = spread[i * stride] = uint8_t(rans::find_symbol(t, slot));
    }
    rans::EncodeTable e;
    rans::build_encode_table(t, &e);
    std::vector<uint8_t> a(4 + 2 * n), b(4 + 2 * n);
    const size_t na = rans::encode(spread.data(), n, stride, e, a.data(), a.size());
    const size_t nb = rans::encode(packed.data(), n, t, b.data(), b.size());
    ASSERT_GT(na, 0u);
    ASSERT_EQ(std::vector<uint8_t>(a.end() - ptrdiff_t(na), a.end()), std::vector<uint8_t>(b.end() - ptrdiff_t(nb), b.end()));
    // Exactly enough room (the last bytes are written one at a time) works;
    // one byte less is reported, not overrun.
    std::vector<uint8_t> exact(na);
    ASSERT_EQ(rans::encode(spread.data(), n, stride, e, exact.data(), na), na);
    EXPECT_TRUE(std::equal(exact.begin(), exact.end(), a.end() - ptrdiff_t(na)));
    EXPECT_EQ(rans::encode(spread.data(), n, stride, e, exact.data(), na - 1), 0u);
    std::vector<uint8_t> back(n);
    const uint8_t* in = a.data() + a.size() - na;
    ASSERT_EQ(rans::decode(in, na, t, back.data(), n), rans::DecodeStatus::kOk);
    EXPECT_EQ(back, packed);
    // Every shorter prefix and one extra byte are errors, not crashes.
    for (size_t cut = 0; cut < na; cut += 1 + na / 16)
      EXPECT_NE(rans::decode(in, cut, t, back.data(), n), rans::DecodeStatus::kOk) << cut;
    std::vector<uint8_t> longer(in, in + na);
    longer.push_back(0);
    EXPECT_NE(rans::decode(longer.data(), longer.size(), t, back.data(), n), rans::DecodeStatus::kOk);
  }
}

uint32_t crc32_bytewise(const uint8_t* p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return c ^ 0xffffffffu;
}

TEST(Crc32, CheckValueAndEveryLengthAgainstBitwise) {
  const std::string check = "123456789";
  EXPECT_EQ(crc32({reinterpret_cast<const uint8_t*>(check.data()), check.size()}), 0xCBF43926u);
  std::mt19937_64 rng(5);
  std::vector<uint8_t> data(300);
  for (auto& b : data) b = uint8_t(rng());
  for (size_t offset : {0u, 1u, 3u})
    for (size_t n = 0; n + offset <= data.size(); ++n)
      ASSERT_EQ(crc32({data.data() + offset, n}), crc32_bytewise(data.data() + offset, n)) << offset << " " << n;
}

// ---- cachegen against a plain transcription of its scheme ------------------

uint32_t ref_find_symbol(const uint32_t* cum, uint32_t symbols, uint32_t slot) {
  uint32_t s = 0;
  while (s + 1 < symbols && cum[s + 1] <= slot) ++s;
  return s;
}

// rANS with a division per symbol, bytes written backwards.
Bytes ref_rans_encode(const uint8_t* sym, size_t n, const rans::Table& t) {
  Bytes rev;
  uint32_t x = rans::kLowerBound;
  for (size_t i = n; i-- > 0;) {
    const uint32_t f = t.freq[sym[i]];
    while (x >= ((rans::kLowerBound >> rans::kProbBits) << 8) * f) {
      rev.push_back(uint8_t(x));
      x >>= 8;
    }
    x = ((x / f) << rans::kProbBits) + x % f + t.cum[sym[i]];
  }
  for (int k = 0; k < 4; ++k, x >>= 8) rev.push_back(uint8_t(x));
  return Bytes(rev.rbegin(), rev.rend());
}

float ref_round_up_scale(float max) {
  if (!(max > 0)) return 0.0f;
  uint16_t h = float_to_half_bits(max);
  if (half_bits_to_float(h) < max) ++h;
  return half_bits_to_float(h);
}

Bytes ref_cachegen_encode(const KVChunk& chunk, int level, uint32_t stream_tokens) {
  const KVShape& s = chunk.shape;
  const uint32_t T = chunk.tokens, C = uint32_t(s.channels());
  Bytes scales, tables;
  std::vector<Bytes> streams;
  for (uint32_t l = 0; l < s.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue}) {
      const int M = cachegen_bins(level, k, l, s.layers) / 2 - 1, nsym = 2 * M + 1;
      std::vector<float> scale(T);
      for (uint32_t t = 0; t < T; ++t) {
        float max = 0;
        for (uint32_t h = 0; h < s.kv_heads; ++h)
          for (uint32_t d = 0; d < s.head_dim; ++d) max = std::max(max, std::fabs(chunk.at(l, k, h, t, d)));
        scale[t] = ref_round_up_scale(max);
        put_u16(scales, float_to_half_bits(scale[t]));
      }
      for (uint32_t c = 0; c < C; ++c) {
        std::vector<uint8_t> sym(T);
        uint32_t counts[rans::kMaxSymbols] = {};
        for (uint32_t t = 0; t < T; ++t) {
          const float x = chunk.at(l, k, c / s.head_dim, t, c % s.head_dim);
          const long q = scale[t] > 0 ? std::lrint(x * float(M) / scale[t]) + M : M;
          sym[t] = uint8_t(std::clamp<long>(q, 0, nsym - 1));
          ++counts[sym[t]];
        }
        rans::Table table;
        rans::build_table(counts, uint32_t(nsym), &table);
        for (int q = 0; q < nsym; ++q) put_u16(tables, uint16_t(table.freq[q]));
        for (uint32_t b = 0; b < T; b += stream_tokens)
          streams.push_back(ref_rans_encode(sym.data() + b, std::min(stream_tokens, T - b), table));
      }
    }
  std::vector<Bytes> sections{scales, tables};
  sections.insert(sections.end(), streams.begin(), streams.end());
  StreamHeader header = header_for(chunk, CodecId::kCacheGen, level);
  header.flags = uint16_t(stream_tokens);
  return write_stream(header, sections);
}

// Decodes a stream known to be valid (produced by the reference encoder).
KVChunk ref_cachegen_decode(const Bytes& stream) {
  const ParsedStream ps = parse_stream(stream, CodecId::kCacheGen);
  const StreamHeader& hd = ps.header;
  const KVShape& s = hd.shape;
  const uint32_t T = hd.tokens, C = uint32_t(s.channels()), st = hd.flags;
  KVChunk out = chunk_for(hd);
  SectionReader scales(ps.sections[0], "scales"), tables(ps.sections[1], "tables");
  size_t next = 2;
  for (uint32_t l = 0; l < s.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue}) {
      const int M = cachegen_bins(hd.level, k, l, s.layers) / 2 - 1, nsym = 2 * M + 1;
      std::vector<float> scale(T);
      for (auto& v : scale) v = half_bits_to_float(scales.u16());
      for (uint32_t c = 0; c < C; ++c) {
        rans::Table t;
        t.symbols = uint32_t(nsym);
        for (int q = 0; q < nsym; ++q) t.freq[q] = tables.u16();
        EXPECT_TRUE(rans::finish_table(&t));
        for (uint32_t b = 0; b < T; b += st) {
          const auto sec = ps.sections[next++];
          size_t pos = 4;
          uint32_t x = uint32_t(sec[0]) << 24 | uint32_t(sec[1]) << 16 | uint32_t(sec[2]) << 8 | sec[3];
          for (uint32_t tok = b; tok < std::min(T, b + st); ++tok) {
            const uint32_t slot = x & (rans::kProbScale - 1);
            const uint32_t q = ref_find_symbol(t.cum, t.symbols, slot);
            x = t.freq[q] * (x >> rans::kProbBits) + slot - t.cum[q];
            while (x < rans::kLowerBound) x = (x << 8) | sec[pos++];
            out.at(l, k, c / s.head_dim, tok, c % s.head_dim) =
                scale[tok] > 0 ? float(int(q) - M) * scale[tok] / float(M) : 0.0f;
          }
          EXPECT_EQ(pos, sec.size());
          EXPECT_EQ(x, rans::kLowerBound);
        }
      }
    }
  return out;
}

// KV-like values with the awkward cases mixed in: zero tokens, fp16
// subnormals, negative zeros, one outlier token per plane.
KVChunk awkward_chunk(KVShape shape, uint32_t tokens, uint64_t seed) {
  KVChunk c(shape, DType::kF16, 7, tokens);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (uint32_t l = 0; l < shape.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue})
      for (uint32_t h = 0; h < shape.kv_heads; ++h)
        for (uint32_t t = 0; t < tokens; ++t)
          for (uint32_t d = 0; d < shape.head_dim; ++d) {
            float v = (d % 5 == 0 ? 3.0f : 0.4f) * n(rng);
            if (t % 17 == 3) v = 0.0f;                     // an all-zero token
            if (t % 17 == 5) v *= 1e-6f;                   // subnormal range in fp16
            if (t % 17 == 6 && d == 1) v = -0.0f;
            if (t == tokens / 2 && h == 0 && d == 0) v = 900.0f;  // outlier
            c.at(l, k, h, t, d) = round_to_dtype(v, DType::kF16);
          }
  return c;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(CacheGenFast, EncoderAndDecoderEqualThePlainScheme) {
  struct Case {
    KVShape shape;
    uint32_t tokens, stream_tokens;
  };
  // Odd channel counts (not a multiple of the decoder's lanes), fewer and
  // more channels than symbols, partial and several token blocks, one token.
  for (const Case& cs : {Case{{3, 3, 5}, 70, 32}, Case{{2, 1, 1}, 1, 256}, Case{{4, 2, 6}, 300, 256}, Case{{1, 5, 3}, 9, 4},
                        Case{{2, 4, 32}, 300, 128}}) {
    const auto codec = make_codec("cachegen", {{{"stream_tokens", std::to_string(cs.stream_tokens)}}, ""});
    const KVChunk chunk = awkward_chunk(cs.shape, cs.tokens, cs.tokens);
    for (int level = 0; level < codec->levels(); ++level) {
      const Bytes fast = codec->encode(chunk, level);
      const Bytes ref = ref_cachegen_encode(chunk, level, cs.stream_tokens);
      ASSERT_EQ(fast, ref) << "level " << level << " tokens " << cs.tokens;
      ASSERT_TRUE(same_bits(codec->decode(fast).values, ref_cachegen_decode(ref).values)) << "level " << level;
    }
  }
}

TEST(CacheGenFast, NonFiniteInputEncodesAsThePlainSchemeDoes) {
  // NaN is skipped by the scale and quantizes as lrint(NaN) does.
  KVChunk chunk = awkward_chunk({2, 2, 4}, 40, 9);
  chunk.at(0, Kind::kKey, 1, 3, 2) = std::numeric_limits<float>::quiet_NaN();
  const auto codec = make_codec("cachegen");
  for (int level = 0; level < codec->levels(); ++level)
    ASSERT_EQ(codec->encode(chunk, level), ref_cachegen_encode(chunk, level, 256)) << level;
}

TEST(CacheGenFast, ValuesBeyondTheFp16ScaleAreAnEncodeError) {
  // An infinite value, or one above 65504, would need a per-token scale that
  // fp16 cannot carry: the encoder refuses rather than write a stream the
  // decoder rejects. 65504 itself still encodes and decodes.
  const auto codec = make_codec("cachegen");
  for (float bad : {std::numeric_limits<float>::infinity(), -1e6f, 65505.0f}) {
    KVChunk chunk = awkward_chunk({2, 2, 4}, 40, 9);
    chunk.at(1, Kind::kValue, 0, 7, 0) = bad;
    EXPECT_THROW(codec->encode(chunk, 2), kvs::Error) << bad;
  }
  KVChunk edge = awkward_chunk({2, 2, 4}, 40, 9);
  edge.at(1, Kind::kKey, 0, 8, 1) = 65504.0f;
  EXPECT_EQ(codec->decode(codec->encode(edge, 2)).values.size(), edge.values.size());
}

TEST(CacheGenFast, CorruptPayloadWithValidChecksumFailsCleanly) {
  // The container's CRC stops random damage before the rANS decoder; here the
  // CRC is recomputed so damaged tables and streams reach it.
  std::mt19937_64 rng(6);
  const auto codec = make_codec("cachegen", {{{"stream_tokens", "16"}}, ""});
  const Bytes good = codec->encode(awkward_chunk({2, 3, 3}, 40, 10), 2);
  const size_t body = kHeaderBytes + 4 * (2 + 2 * 2 * 9 * 3);  // header and offset table
  int decoded = 0, rejected = 0;
  for (int i = 0; i < 400; ++i) {
    Bytes b = good;
    const int edits = 1 + int(rng() % 3);
    for (int e = 0; e < edits; ++e) b[body + rng() % (b.size() - body - 4)] ^= uint8_t(1u << (rng() % 8));
    const uint32_t crc = crc32(std::span<const uint8_t>(b.data(), b.size() - 4));
    for (int k = 0; k < 4; ++k) b[b.size() - 4 + size_t(k)] = uint8_t(crc >> (8 * k));
    try {
      const KVChunk out = codec->decode(b);
      EXPECT_EQ(out.values.size(), out.shape.elements_per_token() * out.tokens);
      ++decoded;
    } catch (const CorruptStream&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_EQ(decoded + rejected, 400);
}

}  // namespace
}  // namespace kvs::codec
