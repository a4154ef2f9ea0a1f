// The codec's fast paths against straightforward references: the indexed
// and packed rANS symbol lookups against binary search, the reciprocal
// encoder step against division, slicing-by-8 CRC-32 against the bytewise
// one, the whole cachegen encoder and decoder against a plain transcription
// of the scheme, and the paper scheme's decoder against one of its own,
// errors included (the golden streams pin only a tiny chunk; this covers odd
// shapes, several token blocks and special values).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>

#include <fmt/core.h>
#include <gtest/gtest.h>

#include "base/files.h"
#include "codec/bitstream.h"
#include "codec/cachegen.h"
#include "codec/cachegen_paper.h"
#include "codec/codec.h"
#include "tests/codec/corrupt.h"
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

// The 16-bit frequencies of `t` (symbols >= 2, so each fits).
std::vector<uint16_t> freq16(const rans::Table& t) {
  std::vector<uint16_t> f(t.symbols);
  for (uint32_t s = 0; s < t.symbols; ++s) f[s] = uint16_t(t.freq[s]);
  return f;
}

TEST(RansFast, PackedLookupAgreesWithBinarySearchForEverySlot) {
  int checked = 0;
  for (const rans::Table& t : random_tables(5)) {
    if (t.symbols < 2) continue;
    const std::vector<uint16_t> f = freq16(t);
    rans::PackedTable p;
    ASSERT_TRUE(rans::build_packed(f.data(), t.symbols, &p));
    for (uint32_t s = 0; s < t.symbols; ++s) {
      ASSERT_EQ(p.entry[s] & 0xffff, t.cum[s]);
      ASSERT_EQ(p.entry[s] >> 16, t.freq[s]);
    }
    auto c = std::make_unique<rans::CumTable>();  // the 16-bit form
    ASSERT_TRUE(rans::build_cum(f.data(), t.symbols, c.get()));
    for (uint32_t slot = 0; slot < rans::kProbScale; ++slot) {
      const uint32_t s = rans::find_symbol(t, slot);
      ASSERT_EQ(rans::find_symbol(p, slot), s) << "symbols " << t.symbols << " slot " << slot;
      uint32_t freq = 0, start = 0;
      ASSERT_EQ(rans::find_symbol(*c, slot, &freq, &start), s) << "symbols " << t.symbols << " slot " << slot;
      ASSERT_EQ(freq, t.freq[s]);
      ASSERT_EQ(start, t.cum[s]);
    }
    ++checked;
  }
  EXPECT_GE(checked, 30);
}

TEST(RansFast, PackedBuildRefusesBadTablesWithoutWritingOutside) {
  struct Guarded {
    rans::PackedTable table;
    uint8_t guard[64];
  };
  const auto refused = [](std::vector<uint16_t> f, uint32_t symbols) {
    Guarded g;
    std::memset(g.guard, 0xa5, sizeof g.guard);
    f.resize(std::max<size_t>(f.size(), 300), 0);
    const bool ok = rans::build_packed(f.data(), symbols, &g.table);
    for (uint8_t b : g.guard) EXPECT_EQ(b, 0xa5);
    return !ok;
  };
  EXPECT_TRUE(refused({65535, 1}, 0));
  EXPECT_TRUE(refused({65535}, 1));                     // one symbol: freq 2^16 does not fit
  EXPECT_TRUE(refused(std::vector<uint16_t>(257, 255), 257));  // more than 256 symbols
  EXPECT_TRUE(refused({65535, 0, 1}, 3));               // a zero frequency
  EXPECT_TRUE(refused({30000, 30000}, 2));              // sum below 2^16
  EXPECT_TRUE(refused({65535, 65535, 65535, 65535, 65535, 65535, 65535, 65535}, 8));  // far above
  EXPECT_FALSE(refused({65535, 1}, 2));
  EXPECT_FALSE(refused({1, 1, 1, 1, 1, 1, 1, 65529}, 8));
}

// The unchecked state update (a 4-byte window) equals the checked one for
// every state, including those only a corrupt stream reaches (below 2^23 or
// at or above 2^31 before the update, or wrapping in it), and never consumes
// more than two bytes.
TEST(RansFast, UncheckedAdvanceEqualsCheckedForAnyState) {
  std::mt19937_64 rng(11);
  const uint8_t bytes[6] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc};
  const uint32_t states[] = {0u, 1u, 127u, 128u, 0x7fffu, 0x8000u, 0x7fffffu, 0x800000u, 0x7fffffffu, 0x80000000u,
                             0xffffffffu};
  for (int i = 0; i < 200000; ++i) {
    rans::Decoder a, b;
    a.ptr = b.ptr = bytes;
    a.end = b.end = bytes + 6;
    a.x = b.x = i < 11 * 11 ? states[i % 11] : uint32_t(rng());
    const uint32_t freq = i < 11 * 11 ? states[i / 11] & 0xffff : uint32_t(rng() % 0x10000);
    const uint32_t start = uint32_t(rng() % 0x10000), slot = uint32_t(rng() % 0x10000);
    ASSERT_TRUE(rans::decode_advance(&a, freq, start, slot));
    rans::decode_advance_unchecked(&b, freq, start, slot);
    ASSERT_EQ(b.x, a.x) << "state " << i;
    ASSERT_EQ(b.ptr, a.ptr) << "state " << i;
    ASSERT_LE(b.ptr - bytes, 2);
  }
}

// A packed decoder, checked and unchecked steps, reads exactly what the
// Table + SymbolIndex decoder reads, switching tables on every symbol.
TEST(RansFast, PackedDecodeEqualsIndexedDecodeSwitchingTables) {
  std::mt19937_64 rng(7);
  std::vector<rans::Table> tables;
  for (const rans::Table& t : random_tables(8))
    if (t.symbols >= 2) tables.push_back(t);
  std::vector<rans::SymbolIndex> index(tables.size());
  std::vector<rans::EncodeTable> enc(tables.size());
  std::vector<rans::PackedTable> packed(tables.size());
  for (size_t i = 0; i < tables.size(); ++i) {
    rans::build_index(tables[i], &index[i]);
    rans::build_encode_table(tables[i], &enc[i]);
    const std::vector<uint16_t> f = freq16(tables[i]);
    ASSERT_TRUE(rans::build_packed(f.data(), tables[i].symbols, &packed[i]));
  }
  for (int round = 0; round < 20; ++round) {
    const size_t n = 1 + rng() % 2000;
    std::vector<size_t> which(n);
    std::vector<uint8_t> symbols(n);
    for (size_t i = 0; i < n; ++i) {
      which[i] = rng() % tables.size();
      symbols[i] = uint8_t(rans::find_symbol(tables[which[i]], uint32_t(rng() % rans::kProbScale)));
    }
    std::vector<uint8_t> buf(4 + 2 * n);
    rans::Encoder e;
    rans::encoder_init(buf.data(), buf.size(), &e);
    for (size_t i = n; i-- > 0;) ASSERT_TRUE(rans::encode_step(&e, enc[which[i]].sym[symbols[i]]));
    const size_t size = rans::encoder_finish(&e, buf.size());
    ASSERT_GT(size, 0u);
    const uint8_t* in = buf.data() + buf.size() - size;
    rans::Decoder a, b;
    ASSERT_EQ(rans::decoder_init(in, size, &a), rans::DecodeStatus::kOk);
    ASSERT_EQ(rans::decoder_init(in, size, &b), rans::DecodeStatus::kOk);
    for (size_t i = 0; i < n; ++i) {
      uint32_t sa, sb;
      ASSERT_TRUE(rans::decode_step(&a, tables[which[i]], index[which[i]], &sa));
      if (b.end - b.ptr >= 4 && i % 2 == 0) {
        sb = rans::decode_step_unchecked(&b, packed[which[i]]);
      } else {
        ASSERT_TRUE(rans::decode_step(&b, packed[which[i]], &sb));
      }
      ASSERT_EQ(sa, symbols[i]);
      ASSERT_EQ(sb, sa);
      ASSERT_EQ(b.x, a.x);
      ASSERT_EQ(b.ptr, a.ptr);
    }
    EXPECT_EQ(rans::decoder_finish(b), rans::DecodeStatus::kOk);
    // A stream cut short: the packed decoder reports it where the indexed one does.
    const size_t cut = size / 2;
    rans::Decoder c, d;
    const bool init_c = rans::decoder_init(in, cut, &c) == rans::DecodeStatus::kOk;
    ASSERT_EQ(rans::decoder_init(in, cut, &d) == rans::DecodeStatus::kOk, init_c);
    if (!init_c) continue;
    for (size_t i = 0; i < n; ++i) {
      uint32_t sc, sd;
      const bool ok_c = rans::decode_step(&c, tables[which[i]], index[which[i]], &sc);
      ASSERT_EQ(rans::decode_step(&d, packed[which[i]], &sd), ok_c) << i;
      if (!ok_c) break;
      ASSERT_EQ(sd, sc);
    }
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

// crc32 (carry-less folding from 64 bytes where the CPU has it) and
// crc32_slicing8 against the bitwise definition: every length up to 600
// bytes (the folding's 64-byte blocks, its 16-byte tail steps and the
// leftover bytes), at odd offsets, plus a few long inputs and all-ones data.
TEST(Crc32, CheckValueAndEveryLengthAgainstBitwise) {
  const std::string check = "123456789";
  EXPECT_EQ(crc32({reinterpret_cast<const uint8_t*>(check.data()), check.size()}), 0xCBF43926u);
  EXPECT_EQ(crc32_slicing8({reinterpret_cast<const uint8_t*>(check.data()), check.size()}), 0xCBF43926u);
  std::mt19937_64 rng(5);
  std::vector<uint8_t> data(70000);
  for (auto& b : data) b = uint8_t(rng());
  for (size_t offset : {0u, 1u, 3u, 8u})
    for (size_t n = 0; n <= 600; ++n) {
      const uint32_t want = crc32_bytewise(data.data() + offset, n);
      ASSERT_EQ(crc32({data.data() + offset, n}), want) << offset << " " << n;
      ASSERT_EQ(crc32_slicing8({data.data() + offset, n}), want) << offset << " " << n;
    }
  for (size_t n : {4096u, 65535u, 69999u})
    ASSERT_EQ(crc32({data.data() + 1, n}), crc32_bytewise(data.data() + 1, n)) << n;
  const std::vector<uint8_t> ones(1000, 0xff);
  ASSERT_EQ(crc32(ones), crc32_bytewise(ones.data(), ones.size()));
}

// raw and zstd decode fp16 bytes with an inline conversion for normal
// numbers: every fp16 bit pattern decodes to half_bits_to_float's bits.
TEST(RawFast, EveryHalfDecodesAsTheScalarConversion) {
  KVChunk c({1, 1, 1}, DType::kF16, 0, 32768);  // K and V: 65,536 values
  for (uint32_t h = 0; h < 65536; ++h) c.values[h] = half_bits_to_float(uint16_t(h));
  for (const char* name : {"raw", "zstd"}) {
    const auto codec = make_codec(name);
    const Bytes stream = codec->encode(c, 0);
    const KVChunk out = codec->decode(stream);
    const Bytes raw = make_codec("raw")->encode(c, 0);  // the fp16 bits the stream holds
    const ParsedStream ps = parse_stream(raw, CodecId::kRaw);
    ASSERT_EQ(ps.sections[0].size(), 2 * out.values.size());
    int distinct = 0;
    for (size_t i = 0; i < out.values.size(); ++i) {
      const uint16_t h = uint16_t(ps.sections[0][2 * i] | ps.sections[0][2 * i + 1] << 8);
      const float expect = half_bits_to_float(h);
      ASSERT_EQ(std::memcmp(&out.values[i], &expect, 4), 0) << name << " bits " << h;
      distinct += h == i;
    }
    EXPECT_GE(distinct, 63488) << name;  // every pattern but NaN payloads survives the encoder
  }
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
    fix_crc(b);
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

// ---- cachegen scheme=paper against a plain transcription of its decoder ----

// Decodes the substreams of a paper-scheme stream one at a time, with
// rans::Table, binary search and the state update written out, as the scheme
// reads (header and section table as the codec has checked them). Throws the
// codec's messages for faulty substreams, in its order: every substream's
// escape count and sizes first, then each substream decoded in turn.
KVChunk ref_paper_decode(const CacheGenPaperModel& m, const Bytes& stream) {
  const ParsedStream ps = parse_stream(stream, CodecId::kCacheGen);
  const StreamHeader& hd = ps.header;
  const KVShape& s = hd.shape;
  const int level = hd.level;
  const uint32_t T = hd.tokens, D = s.head_dim, G = kPaperGroupTokens;
  const size_t n = size_t(T) * D;
  for (size_t index = 0; index < ps.sections.size(); ++index) {
    SectionReader reader(ps.sections[index], "cachegen paper substream");
    const uint32_t count = reader.u32();
    if (count > n)
      throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen paper substream {} has {} escapes for {} values",
                                      index, count, n));
    (void)reader.bytes(4 * size_t(count));
    if (reader.remaining() < 4)
      throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen paper substream {} does not decode", index));
  }
  KVChunk out = chunk_for(hd);
  std::vector<rans::Table> tables(2 * D);
  std::vector<float> anchor(D);
  std::vector<uint32_t> symbols(n);
  size_t index = 0;
  for (uint32_t l = 0; l < s.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue})
      for (uint32_t h = 0; h < s.kv_heads; ++h, ++index) {
        const int M = cachegen_paper_bins(level, l, s.layers) / 2 - 1;
        for (uint32_t d = 0; d < D; ++d) {
          const size_t r = m.record(l, k, h * D + d);
          for (int j = 0; j < 2; ++j) {
            const auto f = j == 0 ? m.anchor_table(r) : m.delta_table(r, level);
            rans::Table& t = tables[j * D + d];
            t.symbols = uint32_t(f.size());
            for (size_t q = 0; q < f.size(); ++q) t.freq[q] = f[q];
            EXPECT_TRUE(rans::finish_table(&t));
          }
        }
        SectionReader reader(ps.sections[index], "cachegen paper substream");
        const uint32_t count = reader.u32();
        if (count > n)
          throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen paper substream {} has {} escapes for {} values",
                                          index, count, n));
        const auto escapes = reader.bytes(4 * size_t(count));
        const auto coded = ps.sections[index].subspan(4 + 4 * size_t(count));
        bool ok = coded.size() >= 4;
        size_t pos = 0;
        uint32_t x = 0;
        for (int b = 0; ok && b < 4; ++b) x = (x << 8) | coded[pos++];
        ok = ok && x >= rans::kLowerBound;
        for (size_t i = 0; ok && i < n; ++i) {
          const rans::Table& t = tables[(i / D) % G == 0 ? i % D : D + i % D];
          const uint32_t slot = x & 0xffff;
          const uint32_t sym = rans::find_symbol(t, slot);
          symbols[i] = sym;
          x = t.freq[sym] * (x >> 16) + slot - t.cum[sym];
          while (ok && x < rans::kLowerBound) {
            if (pos == coded.size()) ok = false;
            else x = (x << 8) | coded[pos++];
          }
        }
        if (!ok || x != rans::kLowerBound || pos != coded.size())
          throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen paper substream {} does not decode", index));
        uint32_t used = 0;
        for (uint32_t t = 0; t < T; ++t)
          for (uint32_t d = 0; d < D; ++d) {
            const size_t r = m.record(l, k, h * D + d);
            const uint32_t sym = symbols[size_t(t) * D + d];
            const bool anchor_token = t % G == 0;
            float v;
            if (sym == (anchor_token ? 2u * kPaperAnchorM + 1 : uint32_t(2 * M + 1))) {
              if (used == count)
                throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen paper substream {} has more escape "
                                                "symbols than its {} escaped values",
                                                index, count));
              uint32_t u = 0;
              for (int b = 0; b < 4; ++b) u |= uint32_t(escapes[4 * size_t(used) + size_t(b)]) << (8 * b);
              std::memcpy(&v, &u, 4);
              ++used;
            } else if (anchor_token) {
              v = float(int(sym) - kPaperAnchorM) * m.anchor_step(r);
            } else {
              v = anchor[d] + float(int(sym) - M) * m.delta_step(r, level, l);
            }
            if (anchor_token) anchor[d] = v;
            out.at(l, k, h, t, d) = v;
          }
        if (used != count)
          throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen paper substream {} stores {} escaped values "
                                          "but codes {} escapes",
                                          index, count, used));
      }
  return out;
}

struct PaperSetup {
  std::string path;
  CacheGenPaperModel model;
  std::unique_ptr<Codec> codec;
};

// A model learned from two chunks of `shape`, written to a temp file.
PaperSetup paper_setup(KVShape shape, const std::string& name) {
  const std::vector<KVChunk> train{awkward_chunk(shape, 60, 100), awkward_chunk(shape, 33, 101)};
  const std::string bytes = train_cachegen_paper_model(train);
  PaperSetup p;
  p.path = (std::filesystem::path(::testing::TempDir()) / ("kvs-fast-paper-" + name + ".cgm")).string();
  write_file_atomic(p.path, bytes);
  p.model = parse_cachegen_paper_model({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, p.path);
  p.codec = make_codec("cachegen", {{{"scheme", "paper"}}, p.path});
  return p;
}

// Escapes of every kind in the chunk: beyond the anchor range, beyond the
// delta range, infinite and NaN.
KVChunk with_escapes(KVChunk c) {
  std::mt19937_64 rng(c.tokens);
  const float specials[] = {3e4f, -2e4f, std::numeric_limits<float>::infinity(), std::nanf("")};
  for (int i = 0; i < 12; ++i) c.values[rng() % c.values.size()] = specials[i % 4];
  return c;
}

TEST(CacheGenPaperFast, DecoderEqualsThePlainScheme) {
  // Substream counts (layers x 2 x heads) that are and are not multiples of
  // the decoder's four lanes, lanes that cross layers and kinds, one token,
  // partial groups of 10, head_dim 1.
  struct Case {
    KVShape shape;
    uint32_t tokens;
  };
  int n = 0;
  for (const Case& cs : {Case{{3, 5, 7}, 23}, Case{{2, 4, 16}, 1}, Case{{2, 4, 16}, 11}, Case{{5, 3, 3}, 57},
                         Case{{1, 1, 1}, 31}, Case{{4, 2, 32}, 300}}) {
    const PaperSetup p = paper_setup(cs.shape, std::to_string(n++));
    const KVChunk chunk = with_escapes(awkward_chunk(cs.shape, cs.tokens, cs.tokens + 1));
    for (int level = 0; level < p.codec->levels(); ++level) {
      const Bytes stream = p.codec->encode(chunk, level);
      ASSERT_TRUE(same_bits(p.codec->decode(stream).values, ref_paper_decode(p.model, stream).values))
          << "level " << level << " tokens " << cs.tokens;
    }
  }
}

TEST(CacheGenPaperFast, CorruptSubstreamsReportTheFirstFaultyOne) {
  // Damage to the substreams (header and offset table intact, CRC fixed):
  // the codec names the same substream and fault as decoding them one by
  // one in order does, although it decodes four side by side.
  const KVShape shape{3, 3, 5};
  const PaperSetup p = paper_setup(shape, "corrupt");
  std::mt19937_64 rng(11);
  int faults = 0, decoded = 0;
  for (int level : {0, 2, 6}) {
    const Bytes good = p.codec->encode(with_escapes(awkward_chunk(shape, 37, 5)), level);
    const size_t body = kHeaderBytes + 4 * (3 * 2 * 3);
    for (int i = 0; i < 300; ++i) {
      Bytes b = good;
      const int edits = 1 + int(rng() % 4);
      for (int e = 0; e < edits; ++e) b[body + rng() % (b.size() - body - 4)] ^= uint8_t(1u << (rng() % 8));
      fix_crc(b);
      std::string fast, ref;
      KVChunk fast_out, ref_out;
      try {
        fast_out = p.codec->decode(b);
      } catch (const CorruptStream& e) {
        fast = e.what();
      }
      try {
        ref_out = ref_paper_decode(p.model, b);
      } catch (const CorruptStream& e) {
        ref = e.what();
      }
      ASSERT_EQ(fast, ref) << "level " << level << " case " << i;
      if (fast.empty()) {
        ASSERT_TRUE(same_bits(fast_out.values, ref_out.values));
        ++decoded;
      } else {
        ++faults;
      }
    }
  }
  EXPECT_GT(faults, 100);
  EXPECT_GT(decoded, 0);
}

}  // namespace
}  // namespace kvs::codec
