#include "codec/bitstream.h"

#include <array>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define KVS_CRC_FOLD 1
#endif

#include <fmt/core.h>

namespace kvs::codec {

namespace {

// CRC-32 (IEEE, reflected) tables for slicing-by-8: t[0] is the classic
// byte-at-a-time table; t[k][b] is the CRC of byte b followed by k zero bytes,
// so eight bytes are folded per step with eight independent lookups.
using CrcTables = std::array<std::array<uint32_t, 256>, 8>;
CrcTables make_crc_tables() {
  CrcTables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; ++i)
    for (size_t k = 1; k < 8; ++k) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
  return t;
}

uint16_t get_u16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t get_u32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
uint64_t get_u64(const uint8_t* p) { return uint64_t(get_u32(p)) | uint64_t(get_u32(p + 4)) << 32; }
void put_u64(Bytes& out, uint64_t v) {
  put_u32(out, uint32_t(v));
  put_u32(out, uint32_t(v >> 32));
}

[[noreturn]] void corrupt(size_t offset, const std::string& what) {
  throw CorruptStream(fmt::format("corrupt KV bitstream at byte {}: {}", offset, what));
}

}  // namespace

namespace {

// Continues the CRC register c (pre-inverted, not yet finally inverted) over
// p[0..n) by slicing-by-8.
uint32_t crc_slicing8(uint32_t c, const uint8_t* p, size_t n) {
  static const CrcTables kT = make_crc_tables();  // immutable, computed once
  for (; n >= 8; n -= 8, p += 8) {
    const uint32_t lo = c ^ (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
    const uint32_t hi = uint32_t(p[4]) | uint32_t(p[5]) << 8 | uint32_t(p[6]) << 16 | uint32_t(p[7]) << 24;
    c = kT[7][lo & 0xff] ^ kT[6][(lo >> 8) & 0xff] ^ kT[5][(lo >> 16) & 0xff] ^ kT[4][lo >> 24] ^
        kT[3][hi & 0xff] ^ kT[2][(hi >> 8) & 0xff] ^ kT[1][(hi >> 16) & 0xff] ^ kT[0][hi >> 24];
  }
  for (; n > 0; --n, ++p) c = kT[0][(c ^ *p) & 0xff] ^ (c >> 8);
  return c;
}

#ifdef KVS_CRC_FOLD
// CRC folding with carry-less multiplies (V. Gopal et al., "Fast CRC
// Computation for Generic Polynomials Using PCLMULQDQ Instruction", Intel,
// 2009), in the bit-reflected domain of CRC-32's polynomial 0x04C11DB7:
// four 128-bit accumulators each fold 64 bytes ahead (by x^(512+-64) mod P),
// then fold into one (x^(128+-64) mod P), then 16 bytes at a time; the final
// 128 bits are reduced to 64, to 32 by x^64 mod P, and to the CRC by a
// Barrett reduction (mu = x^64 / P). Continues the register c over p[0..n),
// n >= 64 and a multiple of 16.
#define KVS_CRC_TARGET __attribute__((target("pclmul,sse4.1")))
KVS_CRC_TARGET inline __m128i load(const uint8_t* q) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(q)); }
// Replaces a 128-bit accumulator a by a.lo * k.lo ^ a.hi * k.hi (the
// constants' 33-bit reflected forms), xored with the data it moves onto.
KVS_CRC_TARGET inline __m128i fold(__m128i a, __m128i k, __m128i data) {
  return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(a, k, 0x00), _mm_clmulepi64_si128(a, k, 0x11)), data);
}
// Four 128-bit lanes (a0 first in the data) folded into one, then p[0..n)
// 16 bytes at a time (n a multiple of 16), reduced to the CRC register.
KVS_CRC_TARGET inline uint32_t crc_finish(__m128i a0, __m128i a1, __m128i a2, __m128i a3, const uint8_t* p, size_t n) {
  const __m128i k_128 = _mm_set_epi64x(0x00ccaa009e, 0x01751997d0);  // k4 : k3
  const __m128i k_64 = _mm_set_epi64x(0, 0x0163cd6124);              // k5
  const __m128i barrett = _mm_set_epi64x(0x01f7011641, 0x01db710641);  // mu : P'
  const __m128i low32 = _mm_setr_epi32(-1, 0, -1, 0);
  __m128i a = fold(fold(fold(a0, k_128, a1), k_128, a2), k_128, a3);
  for (; n >= 16; p += 16, n -= 16) a = fold(a, k_128, load(p));
  // 128 -> 64 bits.
  a = _mm_xor_si128(_mm_srli_si128(a, 8), _mm_clmulepi64_si128(a, k_128, 0x10));
  a = _mm_xor_si128(_mm_srli_si128(a, 4), _mm_clmulepi64_si128(_mm_and_si128(a, low32), k_64, 0x00));
  // Barrett: 64 -> 32 bits.
  __m128i t = _mm_clmulepi64_si128(_mm_and_si128(a, low32), barrett, 0x10);
  t = _mm_clmulepi64_si128(_mm_and_si128(t, low32), barrett, 0x00);
  return uint32_t(_mm_extract_epi32(_mm_xor_si128(a, t), 1));
}
KVS_CRC_TARGET uint32_t crc_fold(uint32_t c, const uint8_t* p, size_t n) {
  const __m128i k_512 = _mm_set_epi64x(0x01c6e41596, 0x0154442bd4);  // k2 : k1
  __m128i a0 = _mm_xor_si128(load(p), _mm_cvtsi32_si128(int(c)));
  __m128i a1 = load(p + 16), a2 = load(p + 32), a3 = load(p + 48);
  p += 64;
  n -= 64;
  for (; n >= 64; p += 64, n -= 64) {
    a0 = fold(a0, k_512, load(p));
    a1 = fold(a1, k_512, load(p + 16));
    a2 = fold(a2, k_512, load(p + 32));
    a3 = fold(a3, k_512, load(p + 48));
  }
  return crc_finish(a0, a1, a2, a3, p, n);
}

// The same with 512-bit carry-less multiplies (VPCLMULQDQ, AVX-512): four
// 512-bit accumulators (sixteen 128-bit lanes) each fold 256 bytes ahead (by
// x^(2048+-32) mod P), then fold into one by 64 bytes (crc_fold's
// constants), whose four lanes crc_fold's tail finishes. n >= 256, a
// multiple of 16.
#define KVS_CRC512_TARGET __attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.1")))
KVS_CRC512_TARGET inline __m512i load512(const uint8_t* q) { return _mm512_loadu_si512(q); }
KVS_CRC512_TARGET inline __m512i fold512(__m512i a, __m512i k, __m512i data) {
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(a, k, 0x00), _mm512_clmulepi64_epi128(a, k, 0x11), data,
                                   0x96);  // a ^ b ^ c
}
KVS_CRC512_TARGET uint32_t crc_fold512(uint32_t c, const uint8_t* p, size_t n) {
  const __m512i k_2048 = _mm512_set_epi64(0x01322d1430, 0x011542778a, 0x01322d1430, 0x011542778a, 0x01322d1430,
                                          0x011542778a, 0x01322d1430, 0x011542778a);
  const __m512i k_512 = _mm512_set_epi64(0x01c6e41596, 0x0154442bd4, 0x01c6e41596, 0x0154442bd4, 0x01c6e41596,
                                         0x0154442bd4, 0x01c6e41596, 0x0154442bd4);
  __m512i x0 = _mm512_xor_si512(load512(p), _mm512_maskz_set1_epi32(1, int(c)));
  __m512i x1 = load512(p + 64), x2 = load512(p + 128), x3 = load512(p + 192);
  p += 256;
  n -= 256;
  for (; n >= 256; p += 256, n -= 256) {
    x0 = fold512(x0, k_2048, load512(p));
    x1 = fold512(x1, k_2048, load512(p + 64));
    x2 = fold512(x2, k_2048, load512(p + 128));
    x3 = fold512(x3, k_2048, load512(p + 192));
  }
  __m512i x = fold512(fold512(fold512(x0, k_512, x1), k_512, x2), k_512, x3);
  for (; n >= 64; p += 64, n -= 64) x = fold512(x, k_512, load512(p));
  alignas(64) __m128i lanes[4];
  _mm512_store_si512(lanes, x);
  return crc_finish(lanes[0], lanes[1], lanes[2], lanes[3], p, n);
}

// AVX-512 F and VL, VPCLMULQDQ, and the OS saving the ZMM registers.
bool cpu_has_crc_fold512() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & bit_OSXSAVE)) return false;
  uint32_t xcr0_lo, xcr0_hi;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0xe6) != 0xe6) return false;  // SSE, AVX, opmask, ZMM upper halves, ZMM16-31
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  return (ebx & bit_AVX512F) && (ebx & bit_AVX512VL) && (ecx & bit_VPCLMULQDQ);
}

bool cpu_has_crc_fold() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  return (ecx & bit_PCLMUL) && (ecx & bit_SSE4_1);
}
#endif

}  // namespace

uint32_t crc32_slicing8(std::span<const uint8_t> data) {
  return crc_slicing8(0xffffffffu, data.data(), data.size()) ^ 0xffffffffu;
}

uint32_t crc32(std::span<const uint8_t> data) {
  uint32_t c = 0xffffffffu;
  const uint8_t* p = data.data();
  size_t n = data.size();
#ifdef KVS_CRC_FOLD
  static const bool kFold = cpu_has_crc_fold();        // immutable, checked once
  static const bool kFold512 = cpu_has_crc_fold512();  // the same
  if (kFold512 && n >= 256) {
    const size_t blocks = n & ~size_t(15);
    c = crc_fold512(c, p, blocks);
    p += blocks;
    n -= blocks;
  } else if (kFold && n >= 64) {
    const size_t blocks = n & ~size_t(15);
    c = crc_fold(c, p, blocks);
    p += blocks;
    n -= blocks;
  }
#endif
  return crc_slicing8(c, p, n) ^ 0xffffffffu;
}

void put_u16(Bytes& out, uint16_t v) {
  out.push_back(uint8_t(v));
  out.push_back(uint8_t(v >> 8));
}
void put_u32(Bytes& out, uint32_t v) {
  for (int k = 0; k < 4; ++k) out.push_back(uint8_t(v >> (8 * k)));
}
void put_f32(Bytes& out, float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  put_u32(out, u);
}

StreamHeader header_for(const KVChunk& chunk, CodecId codec, int level) {
  StreamHeader h;
  h.codec = codec;
  h.level = uint8_t(level);
  h.dtype = chunk.dtype;
  h.shape = chunk.shape;
  h.token_begin = chunk.token_begin;
  h.tokens = chunk.tokens;
  return h;
}

void check_writable(const StreamHeader& h, uint32_t section_count) {
  const auto refuse = [&](const std::string& what) {
    throw Error(fmt::format("cannot write a KV bitstream for the chunk at token {}: {}", h.token_begin, what));
  };
  if (h.shape.layers == 0 || h.shape.layers > kMaxLayers)
    refuse(fmt::format("layers {} (a stream holds 1 to {})", h.shape.layers, kMaxLayers));
  if (h.shape.kv_heads == 0 || h.shape.kv_heads > kMaxKvHeads)
    refuse(fmt::format("kv_heads {} (a stream holds 1 to {})", h.shape.kv_heads, kMaxKvHeads));
  if (h.shape.head_dim == 0 || h.shape.head_dim > kMaxHeadDim)
    refuse(fmt::format("head_dim {} (a stream holds 1 to {})", h.shape.head_dim, kMaxHeadDim));
  if (h.tokens == 0 || h.tokens > kMaxTokens)
    refuse(fmt::format("{} tokens (a stream holds 1 to {})", h.tokens, kMaxTokens));
  if (h.elements() > kMaxElements) refuse(fmt::format("{} values (a stream holds at most {})", h.elements(), kMaxElements));
  if (section_count > kMaxSections) refuse(fmt::format("{} sections (at most {})", section_count, kMaxSections));
}

void check_writable(const KVChunk& chunk) { check_writable(header_for(chunk, CodecId::kRaw, 0)); }

void write_header(const StreamHeader& h, uint32_t section_count, Bytes& out) {
  check_writable(h, section_count);
  put_u32(out, kStreamMagic);
  put_u16(out, kFormatVersion);
  put_u16(out, uint16_t(h.codec));
  out.push_back(h.level);
  out.push_back(uint8_t(h.dtype));
  put_u16(out, h.flags);
  put_u32(out, h.shape.layers);
  put_u32(out, h.shape.kv_heads);
  put_u32(out, h.shape.head_dim);
  put_u64(out, h.token_begin);
  put_u32(out, h.tokens);
  put_u32(out, section_count);
  put_u64(out, h.model_hash);
}

Bytes write_stream(const StreamHeader& h, const std::vector<Bytes>& sections) {
  const std::vector<std::span<const uint8_t>> views(sections.begin(), sections.end());
  return write_stream(h, views);
}

Bytes write_stream(const StreamHeader& h, std::span<const std::span<const uint8_t>> sections) {
  size_t total = kHeaderBytes + 4 * sections.size() + 4;
  for (const auto& s : sections) total += s.size();
  Bytes out;
  out.reserve(total);
  write_header(h, uint32_t(sections.size()), out);
  for (const auto& s : sections) put_u32(out, uint32_t(s.size()));
  for (const auto& s : sections) out.insert(out.end(), s.begin(), s.end());
  put_u32(out, crc32(out));
  return out;
}

StreamHeader parse_stream_header(std::span<const uint8_t> in, CodecId expected, uint32_t* section_count, Crc crc) {
  if (in.size() < kHeaderBytes + 4) corrupt(in.size(), fmt::format("stream of {} bytes is shorter than a header", in.size()));
  const uint8_t* p = in.data();
  if (get_u32(p) != kStreamMagic) corrupt(0, "bad magic (not a kvstream chunk)");
  if (get_u16(p + 4) != kFormatVersion) corrupt(4, fmt::format("unsupported format version {}", get_u16(p + 4)));
  const uint32_t stored_crc = get_u32(p + in.size() - 4);
  if (crc == Crc::kCheck && crc32(in.first(in.size() - 4)) != stored_crc) corrupt(in.size() - 4, "checksum mismatch");
  StreamHeader h;
  h.codec = CodecId(get_u16(p + 6));
  if (h.codec != expected)
    corrupt(6, fmt::format("codec id {} but this decoder is codec {}", get_u16(p + 6), uint16_t(expected)));
  h.level = p[8];
  if (p[9] > uint8_t(DType::kBF16)) corrupt(9, fmt::format("unknown dtype {}", p[9]));
  h.dtype = DType(p[9]);
  h.flags = get_u16(p + 10);
  h.shape = {get_u32(p + 12), get_u32(p + 16), get_u32(p + 20)};
  h.token_begin = get_u64(p + 24);
  h.tokens = get_u32(p + 32);
  const uint32_t count = get_u32(p + 36);
  h.model_hash = get_u64(p + 40);
  if (h.shape.layers == 0 || h.shape.layers > kMaxLayers) corrupt(12, fmt::format("layers {} out of range", h.shape.layers));
  if (h.shape.kv_heads == 0 || h.shape.kv_heads > kMaxKvHeads) corrupt(16, fmt::format("kv_heads {} out of range", h.shape.kv_heads));
  if (h.shape.head_dim == 0 || h.shape.head_dim > kMaxHeadDim) corrupt(20, fmt::format("head_dim {} out of range", h.shape.head_dim));
  if (h.tokens == 0 || h.tokens > kMaxTokens) corrupt(32, fmt::format("tokens {} out of range", h.tokens));
  if (h.elements() > kMaxElements) corrupt(12, fmt::format("{} elements exceed the limit of {}", h.elements(), kMaxElements));
  const size_t body = in.size() - 4;
  if (count > kMaxSections || kHeaderBytes + 4ull * count > body) corrupt(36, fmt::format("section count {} does not fit", count));
  *section_count = count;
  return h;
}

namespace {

// The offset table's checks (after parse_stream_header): visit(i, offset, size) per section.
template <class Visit>
void walk_sections(std::span<const uint8_t> in, uint32_t count, Visit visit) {
  const uint8_t* p = in.data();
  const size_t body = in.size() - 4;
  size_t offset = kHeaderBytes + 4ull * count;
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t size = get_u32(p + kHeaderBytes + 4ull * i);
    if (size > body - offset) corrupt(kHeaderBytes + 4ull * i, fmt::format("section {} of {} bytes runs past the end", i, size));
    visit(i, offset, size);
    offset += size;
  }
  if (offset != body) corrupt(offset, fmt::format("{} unexpected bytes after the last section", body - offset));
}

}  // namespace

void section_offsets(std::span<const uint8_t> in, uint32_t count, uint32_t* offsets) {
  if (in.size() > 0xffffffffull) throw Error(fmt::format("section_offsets: a stream of {} bytes is beyond 4 GiB", in.size()));
  walk_sections(in, count, [&](uint32_t i, size_t offset, uint32_t) { offsets[i] = uint32_t(offset); });
  offsets[count] = uint32_t(in.size() - 4);
}

ParsedStream parse_stream(std::span<const uint8_t> in, CodecId expected, Crc crc) {
  ParsedStream ps;
  uint32_t count = 0;
  ps.header = parse_stream_header(in, expected, &count, crc);
  ps.sections.reserve(count);
  walk_sections(in, count, [&](uint32_t, size_t offset, uint32_t size) { ps.sections.push_back(in.subspan(offset, size)); });
  return ps;
}

KVChunk chunk_for(const StreamHeader& h) { return KVChunk(h.shape, h.dtype, h.token_begin, h.tokens); }
void reshape_for(const StreamHeader& h, KVChunk& out) {
  out.shape = h.shape;
  out.dtype = h.dtype;
  out.token_begin = h.token_begin;
  out.tokens = h.tokens;
  out.values.resize(h.shape.elements_per_token() * h.tokens);
}

uint16_t SectionReader::u16() { const auto b = bytes(2); return get_u16(b.data()); }
uint32_t SectionReader::u32() { const auto b = bytes(4); return get_u32(b.data()); }
float SectionReader::f32() {
  const uint32_t u = u32();
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
std::span<const uint8_t> SectionReader::bytes(size_t n) {
  if (n > remaining()) throw CorruptStream(fmt::format("corrupt KV bitstream: {} truncated ({} bytes needed, {} left)", what_, n, remaining()));
  auto out = data_.subspan(pos_, n);
  pos_ += n;
  return out;
}
void SectionReader::expect_end() const {
  if (remaining()) throw CorruptStream(fmt::format("corrupt KV bitstream: {} has {} extra bytes", what_, remaining()));
}

}  // namespace kvs::codec
