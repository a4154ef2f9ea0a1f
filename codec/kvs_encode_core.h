// The per-row, per-channel and per-piece work of `kvs` encoding (codec/kvs.h)
// as KVS_HD code: the CPU encoder (codec/kvs_encode.cpp, kvs_rows.cpp) and the
// GPU encoder's thread bodies (codec/cuda/kvs_encode_threads.h) run these same
// functions, so their streams are the same bytes (DESIGN.md, "The codec on CPU
// and GPU"). Plain C++ without exceptions or allocation; what differs between
// the sides (where values, channels and scratch live) comes in through small
// views and callables. The decoder's half is codec/kvs_core.h.
#pragma once

#include <math.h>
#include <string.h>

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "codec/hd.h"
#include "codec/kvs_core.h"
#include "codec/rans.h"

namespace kvs::codec::kvs_core {

// Spread index j: sigma = 2^((j - 64) / 8) quantization steps, j in 0..255.
constexpr uint32_t kSpreadCenter = 64;
// Tables exist for j in [kFirstTable, kLastTable]; smaller j use kFirstTable
// (all mass on s = 0), larger j code s >> b with table j - 8b and b raw bits.
constexpr uint32_t kFirstTable = 42, kLastTable = 96;
constexpr uint32_t kTables = kLastTable - kFirstTable + 1;
constexpr int32_t kMaxRange = 120;  // a table covers s in [-R, R], R <= kMaxRange

// Table index (0..kTables-1) and raw low bits of spread index j.
struct Spread {
  uint32_t table;
  uint32_t raw_bits;
};
KVS_HD inline Spread split_spread(uint32_t j) {
  if (j <= kLastTable) return {(j > kFirstTable ? j : kFirstTable) - kFirstTable, 0};
  const uint32_t b = (j - kLastTable + 7) / 8;
  return {j - 8 * b - kFirstTable, b};
}

// A discretized Gaussian: symbol 0 is the escape, 1 + R + s codes s in [-R, R].
// Plain data (the GPU encoder copies the tables to the device as they are).
struct GaussTable {
  rans::Table table;
  rans::SymbolIndex index;        // decoder's slot -> symbol lookup
  rans::EncodeTable encode_table;  // encoder's reciprocal form
  int32_t range = 1;
  float cost_bits[rans::kMaxSymbols] = {};  // encoder's cost of each symbol
  // Reconstruction: symbol -> s - offset, the centroid of s's bin under a
  // continuous Gaussian with the same P(1)/P(0) (0 for s = 0 and the escape).
  float offset[rans::kMaxSymbols] = {};
};

// Per table, the rate-distortion terms of q in [-range - 1, range + 1]
// (index q + range + 1): reconstruction point and lambda x bits, computed with
// the same operations as the per-value choice (KvsCodec::build_encoder_tables).
struct RdTable {
  double rec[2 * kMaxRange + 3];
  double lambda_bits[2 * kMaxRange + 3];
};

// The encoder's tables, wherever they lie (host or device memory).
struct EncoderTables {
  const GaussTable* gauss;  // [kTables]
  const RdTable* rd;        // [kTables]
  // Per spread index j with raw bits, the largest n for which a sum of n of
  // its per-value costs is exact in double whatever the order (0: none).
  const uint64_t* exact_n;  // [256]
  double lambda;            // rdo: step^2 per bit
};

// The channel model sent in the chunk: spread index and centre (in steps).
struct ChannelModel {
  uint32_t spread = 0;
  int32_t centre = 0;
};

// The histogram counts of one channel, in Parts partial counts (a CPU keeps
// four, so that repeated values do not wait on one counter; a GPU thread one).
// All zero between channels.
template <int Parts>
struct ChannelScratch {
  uint32_t part[Parts][2 * kMaxRange + 1] = {};
  uint32_t hist[2 * kMaxRange + 1] = {};
};

// lrint(v) for |v| <= 2^29 without a library call where it matters: for
// |v| <= 2^22, adding and subtracting 1.5 * 2^23 rounds to an integer in the
// current rounding mode (nearest even), exactly as lrint does (as cachegen's
// round_to_long).
constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23
KVS_HD inline int32_t round_to_int(float v) {
  if (fabsf(v) <= 4194304.0f) return int32_t((v + kRoundMagic) - kRoundMagic);
  return int32_t(lrintf(v));
}

// One more 32-bit value into a running hash (of a row's rounded values).
KVS_HD inline uint64_t hash_step(uint64_t h, uint32_t v) {
  h = (h ^ v) * 0x9E3779B97F4A7C15ull;
  return h ^ (h >> 32);
}

// Value d of a row as coded: keys rotated back to before RoPE when cs is not
// null (cs[2i], cs[2i + 1]: cos and sin of pair i, HF's rotate-half pairing
// (i, i + half)); in(k) reads the row's value k.
template <class In>
KVS_HD inline float row_value(In&& in, const float* cs, uint32_t d, uint32_t half) {
  if (!cs) return in(d);
  if (d < half) return in(d) * cs[2 * d] + in(d + half) * cs[2 * d + 1];
  const uint32_t i = d - half;
  return in(d) * cs[2 * i] - in(i) * cs[2 * i + 1];
}

// A value the encoder refuses: x not finite, or |x / step| beyond kMaxQ.
KVS_HD inline bool value_is_bad(float x, float y) { return !(fabsf(x) <= FLT_MAX) || !(fabsf(y) <= float(kMaxQ)); }

// One row's D values in steps, out(d, x / step) with x as row_value gives
// it (the same operations; keys a pair (i, i + half) at a time); whether
// any is bad.
template <class In, class Out>
KVS_HD inline bool row_in_steps(In&& in, const float* cs, uint32_t D, float step, Out&& out) {
  bool bad = false;
  if (!cs) {
    for (uint32_t d = 0; d < D; ++d) {
      const float x = in(d), y = x / step;
      out(d, y);
      bad |= value_is_bad(x, y);
    }
    return bad;
  }
  const uint32_t half = D / 2;
  for (uint32_t i = 0; i < half; ++i) {
    const float a = in(i), b = in(i + half), c = cs[2 * i], s = cs[2 * i + 1];
    const float x1 = a * c + b * s, x2 = b * c - a * s;
    const float y1 = x1 / step, y2 = x2 / step;
    out(i, y1);
    out(i + half, y2);
    bad |= value_is_bad(x1, y1);
    bad |= value_is_bad(x2, y2);
  }
  return bad;
}

// The sums in double, in token order, of one column's rounded values col[0..T)
// and of their squares (the row planner's estimate of a dimension's spread):
// the integer sums when every partial sum is below 2^53 (then those sums are
// exact), else the loop. on_value(t, v) sees each rounded value.
template <class OnValue>
KVS_HD inline void column_sums(const float* col, uint32_t T, double* s1_out, double* s2_out, OnValue&& on_value) {
  int64_t sum = 0;
  uint64_t sumsq = 0;
  uint32_t max_abs = 0;
  for (uint32_t t = 0; t < T; ++t) {
    const int32_t v = round_to_int(col[t]);
    const uint32_t a = uint32_t(v < 0 ? -int64_t(v) : v);
    sum += v;
    sumsq += uint64_t(a) * a;
    max_abs = a > max_abs ? a : max_abs;
    on_value(t, v);
  }
  double s1 = 0, s2 = 0;
  if (max_abs <= (1u << 26) && uint64_t(max_abs) * max_abs <= (T ? (uint64_t(1) << 53) / T : 0)) {
    s1 = double(sum);
    s2 = double(sumsq);
  } else {
    for (uint32_t t = 0; t < T; ++t) {
      const int32_t v = round_to_int(col[t]);
      s1 += v, s2 += double(v) * v;
    }
  }
  *s1_out = s1;
  *s2_out = s2;
}

// The centre of the spread search: lrint(kSpreadCenter + 8 log2(sd)), sd =
// sqrt(sumsq / n) (0 when sd is not positive). log2 is the one place where a
// GPU's libm may differ from the CPU's in the last bit: on a device, a value
// within 1e-9 of a rounding tie sets *near_tie (the caller then leaves the
// chunk to the CPU; sumsq / n is rational, so no value is ever exactly a tie).
KVS_HD inline int spread_search_centre(double sumsq, uint32_t n, bool* near_tie) {
  const double sd = sqrt(sumsq / n);
  if (!(sd > 0)) return 0;
  const double x = kSpreadCenter + 8 * log2(sd);
#if defined(__CUDA_ARCH__)
  if (fabs(x - floor(x) - 0.5) < 1e-9) *near_tie = true;
#else
  (void)near_tie;
#endif
  return int(lrint(x));
}

// The spread index that codes s[0..n) (with its histogram over
// [-kMaxRange, kMaxRange], `far` values outside, sum of squares `sumsq`) in
// the fewest bits, searched near the sample deviation.
KVS_HD inline uint32_t best_spread(const EncoderTables& tb, const int32_t* s, uint32_t n, const uint32_t* hist,
                                   uint32_t far, double sumsq, bool* near_tie) {
  const int j0 = spread_search_centre(sumsq, n, near_tie);
  int32_t lo = -kMaxRange, hi = kMaxRange;  // the histogram's occupied range
  while (lo < hi && !hist[lo + kMaxRange]) ++lo;
  while (hi > lo && !hist[hi + kMaxRange]) --hi;
  // Spreads with raw bits b: the histogram of s >> b (built once per b).
  uint32_t shifted[2 * kMaxRange + 1];
  int32_t shifted_lo = 0, shifted_hi = -1;  // its occupied range within [-kMaxRange, kMaxRange]
  uint32_t shifted_b = 0;
  uint32_t best_j = 0;
  double best_bits = INFINITY;
  const int j_lo = j0 - 4 > 0 ? j0 - 4 : 0, j_hi = j0 + 4 < 255 ? j0 + 4 : 255;
  for (int j = j_lo; j <= j_hi; ++j) {
    const Spread sp = split_spread(uint32_t(j));
    const GaussTable& g = tb.gauss[sp.table];
    const double escape = g.cost_bits[0] + kEscapeBits;
    double bits = 0;
    if (sp.raw_bits == 0) {
      bits = far * escape;
      for (int32_t v = lo; v <= hi; ++v)
        if (hist[v + kMaxRange])
          bits += hist[v + kMaxRange] * ((v < 0 ? -v : v) <= g.range ? g.cost_bits[1 + g.range + v] : escape);
    } else if (n <= tb.exact_n[j]) {
      // The per-value sum below, as counts x costs: exact either way (exact_n).
      if (shifted_b != sp.raw_bits) {
        for (int32_t v = 0; v < 2 * kMaxRange + 1; ++v) shifted[v] = 0;
        shifted_lo = kMaxRange, shifted_hi = -kMaxRange;
        for (uint32_t i = 0; i < n; ++i) {
          int32_t v = s[i] >> sp.raw_bits;
          v = v < -kMaxRange - 1 ? -kMaxRange - 1 : v > kMaxRange + 1 ? kMaxRange + 1 : v;
          if (v >= -kMaxRange && v <= kMaxRange) ++shifted[v + kMaxRange];
          shifted_lo = v < shifted_lo ? v : shifted_lo, shifted_hi = v > shifted_hi ? v : shifted_hi;
        }
        shifted_lo = shifted_lo > -kMaxRange ? shifted_lo : -kMaxRange;
        shifted_hi = shifted_hi < kMaxRange ? shifted_hi : kMaxRange;
        shifted_b = sp.raw_bits;
      }
      uint64_t inside = 0;
      const int32_t v_lo = shifted_lo > -g.range ? shifted_lo : -g.range, v_hi = shifted_hi < g.range ? shifted_hi : g.range;
      for (int32_t v = v_lo; v <= v_hi; ++v) {
        const uint32_t count = shifted[v + kMaxRange];
        inside += count;
        bits += double(count) * double(g.cost_bits[1 + g.range + v] + float(sp.raw_bits));
      }
      bits += double(n - inside) * escape;
    } else {
      for (uint32_t i = 0; i < n; ++i) {
        const int64_t h = int64_t(s[i]) >> sp.raw_bits;
        bits += (h < -g.range || h > g.range) ? escape : g.cost_bits[1 + g.range + h] + sp.raw_bits;
      }
    }
    if (bits < best_bits) best_bits = bits, best_j = uint32_t(j);
  }
  return best_j;
}

// One channel from its literal tokens' values in steps y(0..n) (sum_y: their
// sum in double, in order): its model (centre m, spread), s = q - m of each
// value into out (with the rate-distortion choice if rdo) and its rANS symbol
// into symbols. Returns whether the channel has raw bits or escapes.
template <int Parts, class Y>
KVS_HD inline bool code_channel(const EncoderTables& tb, Y&& y, uint32_t n, double sum_y, bool rdo,
                                ChannelScratch<Parts>* scratch, int32_t* out, uint8_t* symbols, ChannelModel* model,
                                bool* near_tie) {
  const int32_t m = int32_t(lrint(sum_y / n));
  // Rounded values relative to the centre, their histogram and sum of squares.
  uint32_t(*part)[2 * kMaxRange + 1] = scratch->part;
  uint32_t* hist = scratch->hist;
  uint32_t far = 0;  // |s| > kMaxRange
  uint64_t sumsq = 0;
  uint32_t max_abs = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const int64_t r = int64_t(round_to_int(y(i))) - int64_t(m);  // |r| <= 2^30
    out[i] = int32_t(r);
    sumsq += uint64_t(r * r);
    const uint32_t a = uint32_t(r < 0 ? -r : r);
    max_abs = a > max_abs ? a : max_abs;
    if (r >= -kMaxRange && r <= kMaxRange) ++part[i % Parts][r + kMaxRange]; else ++far;
  }
  const int32_t occupied = int32_t(max_abs < uint32_t(kMaxRange) ? max_abs : uint32_t(kMaxRange));  // counts in [-occupied, occupied]
  for (int32_t v = kMaxRange - occupied; v <= kMaxRange + occupied; ++v) {
    uint32_t sum = 0;
    for (int k = 0; k < Parts; ++k) sum += part[k][v], part[k][v] = 0;
    hist[v] = sum;
  }
  // The variance as the plain sum of double(r)^2 in order: the integer sum
  // when every partial sum is below 2^53 (then that sum is exact), else that loop.
  double var = 0;
  if (n > 0 && max_abs <= (1u << 26) && uint64_t(max_abs) * max_abs <= (uint64_t(1) << 53) / n) {
    var = double(sumsq);
  } else {
    for (uint32_t i = 0; i < n; ++i) var += double(out[i]) * double(out[i]);
  }
  const uint32_t best_j = best_spread(tb, out, n, hist, far, var, near_tie);
  for (int32_t v = kMaxRange - occupied; v <= kMaxRange + occupied; ++v) hist[v] = 0;
  // With centroid reconstruction each value takes whichever of its two
  // neighbouring reconstruction points costs less in distortion + lambda x bits,
  // among those within one step of it.
  const Spread sp = split_spread(best_j);
  if (rdo && sp.raw_bits == 0) {
    const GaussTable& g = tb.gauss[sp.table];
    const RdTable& rd = tb.rd[sp.table];
    const double escape = g.cost_bits[0] + kEscapeBits;
    constexpr double kLimit = 1.0 + 1e-6;  // keeps |error| <= 1 step (the nearer point always qualifies)
    for (uint32_t i = 0; i < n; ++i) {
      const double dd = double(y(i)) - m;
      const int64_t whole = int64_t(dd);
      const int64_t q0 = whole - int64_t(double(whole) > dd);  // floor(dd)
      if (q0 >= -g.range - 1 && q0 <= g.range) {
        // Both points from the table: the same operations as below.
        const size_t k = size_t(q0 + g.range + 1);
        const double e0 = (dd - rd.rec[k]) * (dd - rd.rec[k]), e1 = (dd - rd.rec[k + 1]) * (dd - rd.rec[k + 1]);
        const bool ok0 = !(e0 > kLimit), ok1 = !(e1 > kLimit);
        const double c0 = e0 + rd.lambda_bits[k], c1 = e1 + rd.lambda_bits[k + 1];
        // Without branches (the choice is data-dependent): q0 + 1 if it
        // qualifies and q0 does not or costs more, else q0 if it qualifies.
        const bool take1 = ok1 & (!ok0 | (c1 < c0));
        const int32_t chosen = int32_t(q0) + int32_t(take1);
        out[i] = (ok0 | ok1) ? chosen : out[i];
        continue;
      }
      double best_c = INFINITY;
      for (int64_t q = q0; q <= q0 + 1; ++q) {
        const bool inside = q >= -g.range && q <= g.range;
        const double rec = inside ? double(q) - g.offset[1 + g.range + q] : double(q);
        const double e = (dd - rec) * (dd - rec);
        if (e > kLimit) continue;
        const double cost = e + tb.lambda * (inside ? g.cost_bits[1 + g.range + q] : escape);
        if (cost < best_c) best_c = cost, out[i] = int32_t(q);
      }
    }
  }
  model->spread = best_j;
  model->centre = m;
  // Symbols: 1 + range + (s >> raw bits) in the table, else 0 (an escape).
  const int32_t range = tb.gauss[sp.table].range;
  if (sp.raw_bits == 0) {
    bool escapes = false;
    for (uint32_t i = 0; i < n; ++i) {
      const uint32_t u = uint32_t(out[i] + range);  // in the table iff u <= 2 range
      symbols[i] = u <= uint32_t(2 * range) ? uint8_t(u + 1) : 0;
      escapes |= symbols[i] == 0;
    }
    return escapes;
  }
  for (uint32_t i = 0; i < n; ++i) {
    const int32_t h = out[i] >> sp.raw_bits;
    symbols[i] = h < -range || h > range ? 0 : uint8_t(1 + range + h);
  }
  return true;
}

// LSB-first bit packing (raw low bits and escape values) into a buffer large
// enough for what is put (the same bytes as kvs_detail::BitWriter).
struct BitSink {
  uint8_t* out = nullptr;
  size_t size = 0;  // bytes written
  uint64_t acc = 0;
  uint32_t n = 0;

  KVS_HD explicit BitSink(uint8_t* buffer) : out(buffer) {}
  KVS_HD void put(uint32_t value, uint32_t bits) {
    if (bits == 0) return;
    acc |= uint64_t(value & uint32_t((uint64_t(1) << bits) - 1)) << n;
    n += bits;
    while (n >= 8) {
      out[size++] = uint8_t(acc);
      acc >>= 8;
      n -= 8;
    }
  }
  // The last partial byte; returns the bytes written.
  KVS_HD size_t finish() {
    if (n) out[size++] = uint8_t(acc);
    acc = 0;
    n = 0;
    return size;
  }
};

// One channel as a piece's gatherer sees it: its symbols and s values (its
// literal tokens in order), and whether it has raw bits or escapes.
struct PieceChannel {
  const uint8_t* symbols;
  const int32_t* svals;
  uint32_t count;
  uint32_t raw_bits;
  bool extras;
};

// A substream's n symbols into sym_out and its raw bits and escapes into
// extras: consecutive channels of one table from the first_channel-th of its
// group (channel(gi) gives the gi-th) at its symbol first_literal.
template <class ChannelOf>
KVS_HD inline void piece_gather(uint32_t n, size_t first_channel, uint32_t first_literal, ChannelOf&& channel,
                                uint8_t* sym_out, BitSink* extras) {
  size_t gi = first_channel;
  uint32_t done = first_literal;
  uint32_t i = 0;
  while (i < n) {
    const PieceChannel c = channel(gi);
    const uint32_t count = n - i < c.count - done ? n - i : c.count - done;
    memcpy(sym_out + i, c.symbols + done, count);
    if (c.extras) {
      BitSink sink = *extras;  // a local copy, which the byte stores cannot alias
      for (uint32_t j = done; j < done + count; ++j)
        sink.put(uint32_t(c.svals[j]), c.symbols[j] ? c.raw_bits : kEscapeBits);
      *extras = sink;
    }
    i += count;
    done += count;
    if (done == c.count) ++gi, done = 0;
  }
}

// Bytes of v as a varint (7 bits a byte, low first), and v written at out.
KVS_HD inline uint32_t varint_size(uint32_t v) {
  uint32_t n = 1;
  while (v >= 0x80) v >>= 7, ++n;
  return n;
}
KVS_HD inline uint8_t* put_varint(uint8_t* out, uint32_t v) {
  while (v >= 0x80) {
    *out++ = uint8_t(v | 0x80);
    v >>= 7;
  }
  *out++ = uint8_t(v);
  return out;
}

}  // namespace kvs::codec::kvs_core
