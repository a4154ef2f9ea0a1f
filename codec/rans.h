// rANS entropy coding with static 16-bit frequency tables.
//
// 32-bit state, byte-wise renormalization (state kept in [2^23, 2^31)),
// probabilities quantized to 1/65536. The encoder runs backwards over the
// symbols and writes bytes backwards; the decoder reads forwards. Every
// function is KVS_HD plain C++ (no exceptions, no allocation) so the CPU and a
// CUDA kernel run the same code; decode errors are reported as return codes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "codec/hd.h"

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

// The symbol whose slot range [cum[s], cum[s+1]) holds `slot` (binary search).
KVS_HD inline uint32_t find_symbol(const Table& t, uint32_t slot) {
  uint32_t lo = 0, hi = t.symbols;  // invariant: cum[lo] <= slot < cum[hi]
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (t.cum[mid] <= slot) lo = mid; else hi = mid;
  }
  return lo;
}

// Encodes symbols[0..n) with one table into out[0..capacity). Bytes are
// produced at the end of `out`; returns the number of bytes written, which
// start at out + capacity - returned, or 0 when capacity is too small or a
// symbol is out of range. Worst case: 4 + 2 * n bytes.
KVS_HD inline size_t encode(const uint8_t* symbols, size_t n, const Table& t, uint8_t* out, size_t capacity) {
  uint8_t* ptr = out + capacity;
  uint32_t x = kLowerBound;
  for (size_t i = n; i-- > 0;) {
    const uint32_t s = symbols[i];
    if (s >= t.symbols) return 0;
    const uint32_t f = t.freq[s];
    const uint32_t x_max = ((kLowerBound >> kProbBits) << 8) * f;
    while (x >= x_max) {
      if (ptr == out) return 0;
      *--ptr = uint8_t(x & 0xff);
      x >>= 8;
    }
    x = ((x / f) << kProbBits) + (x % f) + t.cum[s];
  }
  for (int k = 0; k < 4; ++k) {
    if (ptr == out) return 0;
    *--ptr = uint8_t(x & 0xff);
    x >>= 8;
  }
  return size_t(out + capacity - ptr);
}

enum class DecodeStatus { kOk = 0, kTruncated, kBadState, kTrailingBytes };

// Decodes n symbols from in[0..size) into symbols[0..n). The stream must be
// consumed exactly and end in the initial state; anything else is an error.
KVS_HD inline DecodeStatus decode(const uint8_t* in, size_t size, const Table& t, uint8_t* symbols, size_t n) {
  if (size < 4) return DecodeStatus::kTruncated;
  size_t pos = 0;
  uint32_t x = 0;
  for (int k = 0; k < 4; ++k) x = (x << 8) | in[pos++];
  if (x < kLowerBound) return DecodeStatus::kBadState;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t slot = x & (kProbScale - 1);
    const uint32_t s = find_symbol(t, slot);
    symbols[i] = uint8_t(s);
    x = t.freq[s] * (x >> kProbBits) + slot - t.cum[s];
    while (x < kLowerBound) {
      if (pos >= size) return DecodeStatus::kTruncated;
      x = (x << 8) | in[pos++];
    }
  }
  if (x != kLowerBound) return DecodeStatus::kBadState;
  if (pos != size) return DecodeStatus::kTrailingBytes;
  return DecodeStatus::kOk;
}

}  // namespace kvs::codec::rans
