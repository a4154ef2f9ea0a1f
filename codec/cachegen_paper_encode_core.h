// The per-substream work of `cachegen` scheme=paper encoding
// (codec/cachegen_paper.h) as KVS_HD code: the CPU encoder and the model
// training (codec/cachegen_paper.cpp) and the GPU encoder's thread bodies
// (codec/cuda/paper_encode_threads.h) run these same functions, so that a
// GPU-encoded stream equals the CPU's byte for byte (DESIGN.md, "The codec on
// CPU and GPU"). A substream is one (layer, kind, kv head): T tokens x D dims,
// one rANS stream over its symbols in [token][dim] order, each symbol coded
// with its channel's anchor or delta table, and its escaped values in the
// same order.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "codec/cachegen_paper_core.h"
#include "codec/hd.h"
#include "codec/rans.h"

namespace kvs::codec::cachegen_paper_core {

// round(v) to the nearest integer, ties to even, as lrint in the default
// rounding mode, for |v| < 2^22: adding and subtracting 1.5 * 2^23 leaves
// the integer (the ulp there is 1; the constant is even, so ties go to even).
KVS_HD inline int round_small(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return int((v + kMagic) - kMagic);
}

// Anchor symbol of x: q + 127 for q = round(x / step) in -127..127, else the
// escape (also for x or x / step not finite).
KVS_HD inline uint32_t anchor_symbol(float x, float step) {
  const float v = x / step;
  if (!(fabsf(v) < float(kAnchorM) + 0.5f)) return kAnchorEscape;
  return uint32_t(round_small(v) + kAnchorM);
}

// Delta symbol of x against the decoded anchor a: q + M for q = round((x -
// a) / step) in -M..M, else 2M + 1 (the escape).
KVS_HD inline uint32_t delta_symbol(float x, float a, float step, int M) {
  const float v = (x - a) / step;
  if (!(fabsf(v) < float(M) + 0.5f)) return uint32_t(2 * M + 1);
  return uint32_t(round_small(v) + M);
}

// The symbol of value x of one channel at a token that is an anchor (t %
// kGroupTokens == 0) or not. At an anchor, *anchor becomes what the decoder
// will decode (the escaped x itself for an escape); other tokens are coded
// against it.
KVS_HD inline uint32_t quantize(float x, bool is_anchor, float step_a, float step_d, int M, float* anchor) {
  if (is_anchor) {
    const uint32_t sym = anchor_symbol(x, step_a);
    *anchor = sym == kAnchorEscape ? x : anchor_value(sym, step_a);
    return sym;
  }
  return delta_symbol(x, *anchor, step_d, M);
}

// Whether `sym` at token t is an escape (its value is stored as fp32).
KVS_HD inline bool is_escape(uint32_t sym, uint32_t t, int M) {
  return sym == (t % kGroupTokens == 0 ? kAnchorEscape : uint32_t(2 * M + 1));
}

// Calls put(i, t, d) for the i-th escape of a substream's symbols ([t][d],
// T x D) in coding order; returns how many there are.
template <class Put>
KVS_HD inline uint32_t for_each_escape(const uint8_t* symbols, uint32_t T, uint32_t D, int M, Put&& put) {
  uint32_t count = 0;
  for (uint32_t t = 0; t < T; ++t) {
    const uint32_t escape = t % kGroupTokens == 0 ? kAnchorEscape : uint32_t(2 * M + 1);
    const uint8_t* row = symbols + size_t(t) * D;
    for (uint32_t d = 0; d < D; ++d)
      if (row[d] == escape) put(count++, t, d);
  }
  return count;
}

// Writes f as fp32, little-endian, at p.
KVS_HD inline void put_escaped_value(uint8_t* p, float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  p[0] = uint8_t(u), p[1] = uint8_t(u >> 8), p[2] = uint8_t(u >> 16), p[3] = uint8_t(u >> 24);
}

// One rANS encoding step with the symbol's frequency f (>= 1) and cumulative
// frequency cum: codec/rans.h's state and byte format, the state divided by
// f (rans::encode_step's reciprocal form gives the same bytes, but needs a
// table per symbol that a channel's 256-symbol table cannot afford on a GPU).
// False when out of room.
KVS_HD inline bool encode_step_div(rans::Encoder* e, uint32_t f, uint32_t cum) {
  uint32_t x = e->x;
  const uint32_t x_max = ((rans::kLowerBound >> rans::kProbBits) << 8) * f;
  while (x >= x_max) {
    if (e->ptr == e->out) return false;
    *--e->ptr = uint8_t(x & 0xff);
    x >>= 8;
  }
  e->x = ((x / f) << rans::kProbBits) + (x % f) + cum;
  return true;
}

// rANS-codes a substream's symbols ([t][d], T x D; the last first) into
// out[0 .. capacity), from its end: freq_cum(t, d, sym, &f, &cum) gives
// the frequency and cumulative frequency of `sym` in channel d's anchor
// table (t % kGroupTokens == 0) or delta table. Returns the bytes written
// (they end at out + capacity), or 0 when out of room or a frequency is 0.
// Worst case: 4 + 2 * T * D bytes.
template <class FreqCum>
KVS_HD inline size_t code_symbols(const uint8_t* symbols, uint32_t T, uint32_t D, FreqCum&& freq_cum, uint8_t* out,
                                  size_t capacity) {
  rans::Encoder enc;
  rans::encoder_init(out, capacity, &enc);
  for (uint32_t t = T; t-- > 0;) {
    const uint8_t* row = symbols + size_t(t) * D;
    for (uint32_t d = D; d-- > 0;) {
      uint32_t f = 0, cum = 0;
      freq_cum(t, d, uint32_t(row[d]), &f, &cum);
      if (f == 0 || !encode_step_div(&enc, f, cum)) return 0;
    }
  }
  return rans::encoder_finish(&enc, capacity);
}

// Frequency and cumulative frequency of `sym` in the decoder's table forms
// (codec/rans.h), which a GPU encoder shares with the GPU decoder: a
// CumTable (cum[symbols] wraps to 0, so the last symbol's frequency is
// 2^16 - cum) and a BasicPackedTable (entry = cum | freq << 16).
KVS_HD inline void freq_cum(const rans::CumTable& t, uint32_t sym, uint32_t* f, uint32_t* cum) {
  *cum = t.cum[sym];
  *f = (uint32_t(t.cum[sym + 1]) - *cum) & (rans::kProbScale - 1);
}
template <uint32_t MaxSymbols>
KVS_HD inline void freq_cum(const rans::BasicPackedTable<MaxSymbols>& t, uint32_t sym, uint32_t* f, uint32_t* cum) {
  const uint32_t e = t.entry[sym];
  *cum = e & (rans::kProbScale - 1);
  *f = e >> rans::kProbBits;
}
KVS_HD inline void freq_cum(const rans::Table& t, uint32_t sym, uint32_t* f, uint32_t* cum) {
  *f = t.freq[sym];
  *cum = t.cum[sym];
}

}  // namespace kvs::codec::cachegen_paper_core
