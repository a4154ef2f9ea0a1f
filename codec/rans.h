// rANS entropy coding with static 16-bit frequency tables.
//
// 32-bit state, byte-wise renormalization (state kept in [2^23, 2^31)),
// probabilities quantized to 1/65536. The encoder runs backwards over the
// symbols and writes bytes backwards; the decoder reads forwards. Every
// function is KVS_HD plain C++ (no exceptions, no allocation) so the CPU and a
// CUDA kernel run the same code; decode errors are reported as return codes.
//
// Speed without changing a byte of the format: decoding finds symbols through
// a small per-table index (SymbolIndex) instead of a binary search, encoding
// multiplies by an exact reciprocal (EncodeTable) instead of dividing, and
// Decoder / Encoder hold one stream's state so that a caller can step several
// independent streams in turn (codec/cachegen.cpp steps four). PackedTable
// and CumTable are compact forms for decoders that switch tables on every
// symbol.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "codec/hd.h"

#if defined(__SSE2__) && !defined(__CUDA_ARCH__)
#include <emmintrin.h>
#define KVS_RANS_SSE2 1
#endif

namespace kvs::codec::rans {

inline constexpr uint32_t kProbBits = 16;
inline constexpr uint32_t kProbScale = 1u << kProbBits;
inline constexpr uint32_t kLowerBound = 1u << 23;
inline constexpr uint32_t kMaxSymbols = 256;

// A normalized table: freq[s] > 0 for symbols that may occur, sum == 2^16;
// cum[s] = sum of freq[0..s).
struct Table {
  uint32_t symbols = 0;
  uint32_t freq[kMaxSymbols] = {};
  uint32_t cum[kMaxSymbols + 1] = {};
};

// Builds a table from counts: every symbol in [0, symbols) gets at least 1/65536
// (so any symbol is encodable), the rest proportionally to its count. Returns
// false when symbols is 0 or more than kMaxSymbols.
KVS_HD inline bool build_table(const uint32_t* counts, uint32_t symbols, Table* t) {
  if (symbols == 0 || symbols > kMaxSymbols) return false;
  t->symbols = symbols;
  uint64_t total = 0;
  for (uint32_t s = 0; s < symbols; ++s) total += counts[s];
  const uint32_t spare = kProbScale - symbols;  // after the 1 each symbol gets
  uint32_t assigned = 0;
  uint32_t largest = 0;
  for (uint32_t s = 0; s < symbols; ++s) {
    const uint32_t extra = total ? uint32_t((uint64_t(counts[s]) * spare) / total) : spare / symbols;
    t->freq[s] = 1 + extra;
    assigned += t->freq[s];
    if (t->freq[s] > t->freq[largest]) largest = s;
  }
  t->freq[largest] += kProbScale - assigned;  // rounding remainder to the most likely symbol
  t->cum[0] = 0;
  for (uint32_t s = 0; s < symbols; ++s) t->cum[s + 1] = t->cum[s] + t->freq[s];
  return true;
}

// Checks a table read from a stream: 1 <= symbols <= 256, every freq >= 1,
// sum == 2^16. Fills cum.
KVS_HD inline bool finish_table(Table* t) {
  if (t->symbols == 0 || t->symbols > kMaxSymbols) return false;
  uint32_t sum = 0;
  t->cum[0] = 0;
  for (uint32_t s = 0; s < t->symbols; ++s) {
    if (t->freq[s] == 0 || t->freq[s] > kProbScale) return false;
    sum += t->freq[s];
    t->cum[s + 1] = sum;
  }
  return sum == kProbScale;
}

// The symbol whose slot range [cum[s], cum[s+1]) holds `slot` (binary
// search): the reference that the indexed lookup below must agree with.
KVS_HD inline uint32_t find_symbol(const Table& t, uint32_t slot) {
  uint32_t lo = 0, hi = t.symbols;  // invariant: cum[lo] <= slot < cum[hi]
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (t.cum[mid] <= slot) lo = mid; else hi = mid;
  }
  return lo;
}

// Coarse slot -> symbol index for decoding. The 2^16 slots fall into
// 2^kIndexBits buckets; first[b] is the symbol holding bucket b's first slot,
// so a slot's symbol is first[slot >> kIndexShift] or a few after it (more
// than one step only where several rare symbols start inside one bucket).
// CacheGen ships a table per channel and chunk, so the index is rebuilt as
// often as tables are read: it is kept small (1 KiB, one pass to build)
// rather than a full 64 Ki-entry slot table.
inline constexpr uint32_t kIndexBits = 10;
inline constexpr uint32_t kIndexShift = kProbBits - kIndexBits;

struct SymbolIndex {
  uint8_t first[1u << kIndexBits] = {};
};

// `t` must be valid (build_table or finish_table returned true).
KVS_HD inline void build_index(const Table& t, SymbolIndex* index) {
  // Symbol s holds the buckets whose first slot lies in [cum[s], cum[s+1]).
  uint32_t b = 0;
  for (uint32_t s = 0; s < t.symbols; ++s) {
    const uint32_t end = (t.cum[s + 1] + (1u << kIndexShift) - 1) >> kIndexShift;  // first bucket at or after cum[s+1]
    for (; b < end; ++b) index->first[b] = uint8_t(s);
  }
}

// Same result as find_symbol(t, slot) for slot < 2^16.
KVS_HD inline uint32_t find_symbol(const Table& t, const SymbolIndex& index, uint32_t slot) {
  uint32_t s = index.first[slot >> kIndexShift];
  while (t.cum[s + 1] <= slot) ++s;
  return s;
}

// Encoder form of one symbol: the division by freq replaced by a multiply
// with a precomputed reciprocal (F. Giesen's ryg_rans, after Alverson,
// "Integer division using reciprocals"). Exact for every state the encoder
// holds (x < 2^31), so the output is byte-identical to dividing.
struct EncSymbol {
  uint32_t x_max = 0;      // renormalize while x >= x_max
  uint32_t rcp_freq = 0;   // fixed-point reciprocal of freq
  uint32_t rcp_shift = 0;  // right shift after the 32-bit multiply-high
  uint32_t bias = 0;       // cum, adjusted when freq == 1
  uint32_t cmpl_freq = 0;  // kProbScale - freq
};

struct EncodeTable {
  uint32_t symbols = 0;
  EncSymbol sym[kMaxSymbols];
};

// The encoder form of a symbol of frequency f (>= 1) starting at cum.
KVS_HD inline EncSymbol make_enc_symbol(uint32_t f, uint32_t cum) {
  EncSymbol es;
  es.x_max = ((kLowerBound >> kProbBits) << 8) * f;
  es.cmpl_freq = kProbScale - f;
  if (f < 2) {
    // 1 has no reciprocal below 1; rcp = 2^32 - 1 gives q = x - 1 (x >= 1),
    // and bias = cum + 2^16 - 1 makes x + bias + q * cmpl = x * 2^16 + cum.
    es.rcp_freq = ~0u;
    es.rcp_shift = 0;
    es.bias = cum + kProbScale - 1;
  } else {
    uint32_t shift = 0;  // ceil(log2(f))
    while (f > (1u << shift)) ++shift;
    es.rcp_freq = uint32_t(((1ull << (shift + 31)) + f - 1) / f);
    es.rcp_shift = shift - 1;
    es.bias = cum;
  }
  return es;
}

// `t` must be valid.
KVS_HD inline void build_encode_table(const Table& t, EncodeTable* e) {
  e->symbols = t.symbols;
  for (uint32_t s = 0; s < t.symbols; ++s) e->sym[s] = make_enc_symbol(t.freq[s], t.cum[s]);
}

// x -> (x / freq) * 2^16 + x % freq + cum, for a renormalized x < 2^31.
KVS_HD inline uint32_t encode_put(uint32_t x, const EncSymbol& es) {
  const uint32_t q = uint32_t((uint64_t(x) * es.rcp_freq) >> 32) >> es.rcp_shift;
  return x + es.bias + q * es.cmpl_freq;
}

// One stream being encoded: bytes go backwards from the end of
// [out, out + capacity); ptr is the first byte written so far. As with
// decoding, several Encoders stepped in turn overlap their chains.
struct Encoder {
  uint8_t* out = nullptr;
  uint8_t* ptr = nullptr;
  uint32_t x = kLowerBound;
};

KVS_HD inline void encoder_init(uint8_t* out, size_t capacity, Encoder* e) {
  e->out = out;
  e->ptr = out + capacity;
  e->x = kLowerBound;
}

// Encodes one symbol (streams are encoded last symbol first); false when out
// of room.
KVS_HD inline bool encode_step(Encoder* e, const EncSymbol& es) {
  uint32_t x = e->x;
  if (e->ptr - e->out >= 2) {
    // x < 2^31 and x_max >= 2^15, so at most two bytes leave: one when
    // x >= x_max, two when x >= x_max * 2^8. Both are stored, the pointer
    // moves by the count (a byte stored below it is overwritten later or
    // lies outside the stream).
    const uint32_t bytes = uint32_t(x >= es.x_max) + uint32_t(uint64_t(x) >= (uint64_t(es.x_max) << 8));
    e->ptr[-1] = uint8_t(x);
    e->ptr[-2] = uint8_t(x >> 8);
    e->ptr -= bytes;
    x >>= 8 * bytes;
  } else {
    while (x >= es.x_max) {
      if (e->ptr == e->out) return false;
      *--e->ptr = uint8_t(x & 0xff);
      x >>= 8;
    }
  }
  e->x = encode_put(x, es);
  return true;
}

// Writes the final state; returns the stream's size in bytes (it starts at
// e->ptr), or 0 when out of room.
KVS_HD inline size_t encoder_finish(Encoder* e, size_t capacity) {
  for (int k = 0; k < 4; ++k) {
    if (e->ptr == e->out) return 0;
    *--e->ptr = uint8_t(e->x & 0xff);
    e->x >>= 8;
  }
  return size_t(e->out + capacity - e->ptr);
}

// Encodes symbols[0], symbols[stride], ..., symbols[(n - 1) * stride] into
// out[0..capacity). Bytes are produced at the end of `out`; returns the
// number of bytes written, which start at out + capacity - returned, or 0
// when capacity is too small or a symbol is out of range. Worst case:
// 4 + 2 * n bytes.
KVS_HD inline size_t encode(const uint8_t* symbols, size_t n, size_t stride, const EncodeTable& e, uint8_t* out,
                            size_t capacity) {
  Encoder enc;
  encoder_init(out, capacity, &enc);
  for (size_t i = n; i-- > 0;) {
    const uint32_t s = symbols[i * stride];
    if (s >= e.symbols || !encode_step(&enc, e.sym[s])) return 0;
  }
  return encoder_finish(&enc, capacity);
}

// Contiguous symbols with a plain table (builds the encoder table per call).
KVS_HD inline size_t encode(const uint8_t* symbols, size_t n, const Table& t, uint8_t* out, size_t capacity) {
  EncodeTable e;
  build_encode_table(t, &e);
  return encode(symbols, n, 1, e, out, capacity);
}

enum class DecodeStatus { kOk = 0, kTruncated, kBadState, kTrailingBytes };

// One stream being decoded: next byte *ptr of [ptr, end), state x.
// Stepping several Decoders in turn (independent streams) keeps a core busy
// while each waits on its own chain of dependent operations.
struct Decoder {
  const uint8_t* ptr = nullptr;
  const uint8_t* end = nullptr;
  uint32_t x = 0;
};

// Reads the initial state of the stream in[0..size).
KVS_HD inline DecodeStatus decoder_init(const uint8_t* in, size_t size, Decoder* d) {
  d->ptr = in;
  d->end = in + size;
  d->x = 0;
  if (size < 4) return DecodeStatus::kTruncated;
  for (int k = 0; k < 4; ++k) d->x = (d->x << 8) | *d->ptr++;
  if (d->x < kLowerBound) return DecodeStatus::kBadState;
  return DecodeStatus::kOk;
}

// The state update once the symbol of `slot` (the state's low 16 bits) is
// known, from its freq and cum (`start`), and the renormalization. After the
// update x >= 2^7 (freq >= 1, x was >= 2^23), so at most two bytes bring it
// back to >= 2^23: two below 2^15, one below 2^23.
//
// With at least four bytes left (the caller checked): the bytes are read
// without a branch, as a 4-byte big-endian window shifted in by 0, 8 or 16
// bits (the window's other bytes are not consumed).
KVS_HD inline void decode_advance_unchecked(Decoder* d, uint32_t freq, uint32_t start, uint32_t slot) {
  const uint32_t x = freq * (d->x >> kProbBits) + (slot - start);
  // Counted by comparisons, not leading zeros: a corrupt stream's state can
  // leave [2^23, 2^31) (its first four bytes are any value >= 2^23, and the
  // update wraps), and at most two bytes may be consumed whatever x is.
  const uint32_t bytes = uint32_t(x < (1u << 15)) + uint32_t(x < kLowerBound);
  const uint8_t* p = d->ptr;
  const uint32_t window = uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
  d->x = uint32_t(((uint64_t(x) << 32 | window) << (8 * bytes)) >> 32);
  d->ptr += bytes;
}

// The same, checking for the end of the stream: false when it ends too early.
KVS_HD inline bool decode_advance(Decoder* d, uint32_t freq, uint32_t start, uint32_t slot) {
  uint32_t x = freq * (d->x >> kProbBits) + (slot - start);
  if (d->end - d->ptr >= 2) {
    const uint32_t bytes = uint32_t(x < (1u << 15)) + uint32_t(x < kLowerBound);
    const uint32_t next = (uint32_t(d->ptr[0]) << 8) | d->ptr[1];
    x = (x << (8 * bytes)) | (next >> (16 - 8 * bytes));
    d->ptr += bytes;
  } else {
    while (x < kLowerBound) {
      if (d->ptr == d->end) return false;
      x = (x << 8) | *d->ptr++;
    }
  }
  d->x = x;
  return true;
}

// Decodes one symbol; false when the stream ends too early.
KVS_HD inline bool decode_step(Decoder* d, const Table& t, const SymbolIndex& index, uint32_t* symbol) {
  const uint32_t slot = d->x & (kProbScale - 1);
  const uint32_t s = find_symbol(t, index, slot);
  *symbol = s;
  return decode_advance(d, t.freq[s], t.cum[s], slot);
}

// ---- Packed tables: for decoders that switch tables on every symbol ----
//
// CacheGen's paper scheme codes every channel with its own static table, so
// consecutive symbols come from different tables (a row of 128 channels of
// four streams cycles through 512). Table + SymbolIndex keep freq, cum and a
// 1 KiB index in three places, so each symbol touches three cache lines that
// other tables have evicted, and building a 1 KiB index costs more than the
// few symbols each table decodes per chunk. PackedTable keeps
// entry[s] = cum[s] | freq[s] << 16 (one load gives both; a 32-symbol table's
// entries are two cache lines) and a 256-byte slot -> symbol index, built
// from 16-bit frequencies (entries, then the index). It decodes exactly what
// Table + SymbolIndex decode. CumTable (below) is the same index with 16-bit
// cum entries, for tables kept across chunks.
inline constexpr uint32_t kPackedIndexBits = 8;
inline constexpr uint32_t kPackedIndexShift = kProbBits - kPackedIndexBits;

// MaxSymbols bounds the table's symbols; a decoder whose tables are small
// (CacheGen's delta tables have at most 64 symbols) uses a smaller
// BasicPackedTable, so that its tables take fewer pages.
template <uint32_t MaxSymbols>
struct BasicPackedTable {
  static_assert(MaxSymbols >= 2 && MaxSymbols <= kMaxSymbols);
  static constexpr uint32_t kMax = MaxSymbols;
  // first[b]: the symbol holding the bucket's middle slot,
  // (b << kPackedIndexShift) + 2^(kPackedIndexShift - 1), so that a bucket
  // with one symbol boundary sends at most half its slots to a scan (about
  // half as many scans as indexing by the bucket's first slot); 8 spare bytes
  // because the build writes 8 at a time.
  uint8_t first[(1u << kPackedIndexBits) + 8];
  // entry[symbols] = 0 follows the last entry.
  uint32_t entry[MaxSymbols + 1];
};
using PackedTable = BasicPackedTable<kMaxSymbols>;

// Writes the slot -> symbol index of a table with cumulative frequencies
// cum_of(s) (s < symbols; cum_of(symbols) = 2^16 is implied) into
// first[0 .. 2^kPackedIndexBits + 8): symbol s holds the buckets whose slot
// (b << kPackedIndexShift) + Offset lies in [cum[s], cum[s+1]) (Offset 0:
// the bucket's first slot, for a scan that only goes forward; half a bucket:
// its middle slot). Each run is written eight bytes at a time
// and always at least once (no branch for the common short run); bytes past
// a run are overwritten by later symbols or land in the spare bytes. Bucket
// ends are clamped, so bad frequencies cannot write out of bounds.
template <uint32_t Offset, class CumOf>
KVS_HD inline void build_packed_index(uint32_t symbols, CumOf cum_of, uint8_t* first) {
  static_assert(Offset < (1u << kPackedIndexShift));
  uint32_t b = 0;
  for (uint32_t s = 0; s < symbols; ++s) {
    const uint32_t next = s + 1 < symbols ? cum_of(s + 1) : kProbScale;
    // The first bucket whose slot (b << shift) + Offset is >= next.
    uint32_t end = (next + (1u << kPackedIndexShift) - 1 - Offset) >> kPackedIndexShift;
    end = end < (1u << kPackedIndexBits) ? end : (1u << kPackedIndexBits);
    const uint64_t repeated = uint64_t(s) * 0x0101010101010101ull;
    uint32_t i = b;
    do {
      memcpy(first + i, &repeated, 8);
      i += 8;
    } while (i < end);
    b = end;
  }
}

// Builds `t` from a normalized table's frequencies (each >= 1, sum 2^16, so
// each < 2^16 when there are at least 2 symbols). Returns false when symbols
// is not in 2..MaxSymbols, a frequency is 0 or the sum is not 2^16.
template <uint32_t MaxSymbols>
KVS_HD inline bool build_packed(const uint16_t* freq, uint32_t symbols, BasicPackedTable<MaxSymbols>* t) {
  if (symbols < 2 || symbols > MaxSymbols) return false;
  uint32_t cum = 0;
  bool ok = true;  // checked without a branch per symbol; writes stay in bounds regardless
  for (uint32_t s = 0; s < symbols; ++s) {
    ok &= freq[s] != 0;
    t->entry[s] = (cum & (kProbScale - 1)) | uint32_t(freq[s]) << kProbBits;
    cum += freq[s];
  }
  t->entry[symbols] = 0;
  build_packed_index<(1u << kPackedIndexShift) / 2>(
      symbols, [&](uint32_t s) { return t->entry[s] & (kProbScale - 1); }, t->first);
  return ok && cum == kProbScale;
}

// The entry (cum | freq << 16) of the symbol holding `slot` (< 2^16) in a
// table build_packed accepted; *symbol gets the symbol. The usual case
// (the symbol of the bucket's middle slot) reads one entry and tests
// slot - cum < freq on it, which fails both for a slot before cum (the
// difference wraps) and for one past cum + freq; only then does a scan go
// backwards or forwards (it ends at symbol 0, whose cum is 0, or before the
// 0 entry after the last symbol, since slot < 2^16).
template <uint32_t MaxSymbols>
KVS_HD inline uint32_t find_entry(const BasicPackedTable<MaxSymbols>& t, uint32_t slot, uint32_t* symbol) {
  uint32_t s = t.first[slot >> kPackedIndexShift];
  uint32_t e = t.entry[s];
  if (__builtin_expect(slot - (e & (kProbScale - 1)) >= (e >> kProbBits), 0)) {
    if (slot < (e & (kProbScale - 1))) {
      do e = t.entry[--s];
      while (slot < (e & (kProbScale - 1)));
    } else {
      do e = t.entry[++s];
      while (slot - (e & (kProbScale - 1)) >= (e >> kProbBits));
    }
  }
  *symbol = s;
  return e;
}

// Same result as find_symbol(Table, slot) for slot < 2^16.
template <uint32_t MaxSymbols>
KVS_HD inline uint32_t find_symbol(const BasicPackedTable<MaxSymbols>& t, uint32_t slot) {
  uint32_t s;
  (void)find_entry(t, slot, &s);
  return s;
}

// Decodes one symbol; false when the stream ends too early.
template <uint32_t MaxSymbols>
KVS_HD inline bool decode_step(Decoder* d, const BasicPackedTable<MaxSymbols>& t, uint32_t* symbol) {
  const uint32_t slot = d->x & (kProbScale - 1);
  const uint32_t e = find_entry(t, slot, symbol);
  return decode_advance(d, e >> kProbBits, e & (kProbScale - 1), slot);
}

// The same with at least four bytes left in the stream (the caller checked).
template <uint32_t MaxSymbols>
KVS_HD inline uint32_t decode_step_unchecked(Decoder* d, const BasicPackedTable<MaxSymbols>& t) {
  const uint32_t slot = d->x & (kProbScale - 1);
  uint32_t s;
  const uint32_t e = find_entry(t, slot, &s);
  decode_advance_unchecked(d, e >> kProbBits, e & (kProbScale - 1), slot);
  return s;
}

// ---- Cumulative tables: PackedTable's index with 16-bit entries ----
//
// For tables that are kept rather than rebuilt per chunk (CacheGen's
// 256-symbol anchor tables, built once per codec model): cum[s] as 16 bits
// (cum[symbols] = 2^16 wraps to 0, which also ends the forward scan), so a
// 256-symbol table is 794 bytes instead of PackedTable's 1,292. The entries
// after cum[symbols] are 0 too: find_symbol compares eight entries at once
// and may read up to cum[s + 8] for any s < symbols.
inline constexpr uint32_t kCumWindow = 8;
struct CumTable {
  uint8_t first[(1u << kPackedIndexBits) + 8];
  uint16_t cum[kMaxSymbols + kCumWindow];
};

// As build_packed.
KVS_HD inline bool build_cum(const uint16_t* freq, uint32_t symbols, CumTable* t) {
  if (symbols < 2 || symbols > kMaxSymbols) return false;
  uint32_t cum = 0;
  bool ok = true;
  for (uint32_t s = 0; s < symbols; ++s) {
    ok &= freq[s] != 0;
    t->cum[s] = uint16_t(cum);
    cum += freq[s];
  }
  for (uint32_t s = symbols; s < kMaxSymbols + kCumWindow; ++s) t->cum[s] = 0;
  build_packed_index<0>(symbols, [&](uint32_t s) { return uint32_t(t->cum[s]); }, t->first);
  return ok && cum == kProbScale;
}

// The symbol holding `slot` in a table build_cum accepted; *freq and *start
// get its frequency and cum. The scan tests cum[s + 1] <= slot as
// cum[s + 1] - 1 < slot, so that the 0 after the last entry stops it.
// With SSE2 the first eight steps are one comparison of cum[s + 1 .. s + 8]
// with the slot, without a branch: the entries that pass form a prefix (cum
// rises until the 0s after the last entry, which never pass), and their count
// is the number of steps. A 256-symbol table's bucket holds a symbol boundary
// often enough (about one lookup in five for CacheGen's anchor tables) that
// a data-dependent branch there mispredicts.
KVS_HD inline uint32_t find_symbol(const CumTable& t, uint32_t slot, uint32_t* freq, uint32_t* start) {
  uint32_t s = t.first[slot >> kPackedIndexShift];
#ifdef KVS_RANS_SSE2
  {
    // Unsigned 16-bit cum - 1 < slot as a signed comparison: both sides
    // biased by 2^15 ((cum - 1) ^ 2^15 == cum + 2^15 - 1 mod 2^16).
    const __m128i window = _mm_loadu_si128(reinterpret_cast<const __m128i*>(t.cum + s + 1));
    const __m128i lhs = _mm_add_epi16(window, _mm_set1_epi16(0x7fff));
    const __m128i rhs = _mm_set1_epi16(int16_t(uint16_t(slot ^ 0x8000u)));
    const uint32_t passed = uint32_t(_mm_movemask_epi8(_mm_cmpgt_epi16(rhs, lhs)));  // 2 bits per entry
    s += uint32_t(__builtin_ctz(~passed)) / 2;  // ~passed has bit 16 set
  }
#endif
  uint32_t next = t.cum[s + 1];
  while (__builtin_expect(next - 1u < slot, 0)) next = t.cum[++s + 1];  // rare with SSE2: past 8 steps
  *start = t.cum[s];
  *freq = (next - *start) & (kProbScale - 1);  // 2^16 - cum for the last symbol
  return s;
}

// Decodes one symbol; false when the stream ends too early.
KVS_HD inline bool decode_step(Decoder* d, const CumTable& t, uint32_t* symbol) {
  const uint32_t slot = d->x & (kProbScale - 1);
  uint32_t freq, start;
  *symbol = find_symbol(t, slot, &freq, &start);
  return decode_advance(d, freq, start, slot);
}

// The same with at least four bytes left in the stream (the caller checked).
KVS_HD inline uint32_t decode_step_unchecked(Decoder* d, const CumTable& t) {
  const uint32_t slot = d->x & (kProbScale - 1);
  uint32_t freq, start;
  const uint32_t s = find_symbol(t, slot, &freq, &start);
  decode_advance_unchecked(d, freq, start, slot);
  return s;
}

// A stream must be consumed exactly and end in the encoder's initial state.
KVS_HD inline DecodeStatus decoder_finish(const Decoder& d) {
  if (d.x != kLowerBound) return DecodeStatus::kBadState;
  if (d.ptr != d.end) return DecodeStatus::kTrailingBytes;
  return DecodeStatus::kOk;
}

// Decodes n symbols from in[0..size) into symbols[0..n).
KVS_HD inline DecodeStatus decode(const uint8_t* in, size_t size, const Table& t, const SymbolIndex& index,
                                  uint8_t* symbols, size_t n) {
  Decoder d;
  const DecodeStatus status = decoder_init(in, size, &d);
  if (status != DecodeStatus::kOk) return status;
  for (size_t i = 0; i < n; ++i) {
    uint32_t s;
    if (!decode_step(&d, t, index, &s)) return DecodeStatus::kTruncated;
    symbols[i] = uint8_t(s);
  }
  return decoder_finish(d);
}

// As above, building the index per call.
KVS_HD inline DecodeStatus decode(const uint8_t* in, size_t size, const Table& t, uint8_t* symbols, size_t n) {
  SymbolIndex index;
  build_index(t, &index);
  return decode(in, size, t, index, symbols, n);
}

}  // namespace kvs::codec::rans
