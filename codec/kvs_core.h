// The per-substream work of `kvs` decoding (codec/kvs.h) as KVS_HD code: the
// CPU decoder (codec/kvs_decode.cpp) and the CUDA kernels (codec/cuda/) run
// these same functions (DESIGN.md, "The codec on CPU and GPU"). What they
// read about channels and heads comes through small views that each side
// fills from its own memory. No exceptions: faults are return codes, which
// the CPU turns into the CorruptStream messages it always gave.
#pragma once

#include <cstddef>
#include <cstdint>

#include "codec/hd.h"

namespace kvs::codec::kvs_core {

constexpr uint32_t kEscapeBits = 32;
constexpr uint32_t kMaxRopeTables = 4;  // RoPE tables a stream may carry (per-layer RoPE)
constexpr int64_t kMaxQ = int64_t(1) << 29;  // as kvs_detail::kMaxQ

enum class Fault : uint32_t {
  kNone = 0,
  kBadInitialState = 1,   // a substream's rANS state
  kDoesNotDecode = 2,     // ran out of bytes or ended in the wrong state
  kRawBitsTruncated = 3,  // the raw low bits / escapes ran out
  kOutOfRange = 4,        // a value beyond 2 * kMaxQ steps
  kRawBitsExtra = 5,      // raw bits left over, or non-zero padding
};

// LSB-first bit reader over in[0 .. size) (raw low bits and escape values):
// the same reads as kvs_detail::BitReader, with a flag instead of a throw.
struct BitReader {
  const uint8_t* in = nullptr;
  size_t size = 0;
  size_t pos = 0;
  uint64_t acc = 0;  // n bits not yet returned, the rest zero
  uint32_t n = 0;
  bool ok = true;  // false once a read ran past the end (it then returns 0)

  KVS_HD BitReader() = default;
  KVS_HD BitReader(const uint8_t* data, size_t bytes) : in(data), size(bytes) {}

  KVS_HD uint32_t get(uint32_t bits) {  // bits <= 32
    if (bits == 0) return 0;
    if (n < bits) {
      if (size - pos >= 8) {
        // As many whole bytes as the accumulator holds (at least 4), at once.
        uint64_t word = 0;
        for (int k = 7; k >= 0; --k) word = (word << 8) | in[pos + size_t(k)];
        const uint32_t take = (63 - n) / 8;
        acc |= (word & ((uint64_t(1) << (8 * take)) - 1)) << n;
        pos += take;
        n += 8 * take;
      } else {
        while (n < bits) {
          if (pos >= size) {
            ok = false;
            return 0;
          }
          acc |= uint64_t(in[pos++]) << n;
          n += 8;
        }
      }
    }
    const uint32_t v = uint32_t(acc & ((uint64_t(1) << bits) - 1));
    acc >>= bits;
    n -= bits;
    return v;
  }
  // Everything read and the padding bits zero.
  KVS_HD bool at_end() const { return pos - n / 8 == size && (acc & ((uint64_t(1) << (n % 8)) - 1)) == 0; }
};

// The value of a coded s = q - centre in steps: (q - offset) * step, with
// the centroid offset of the symbol (offset null: bin centres).
KVS_HD inline float value_of(int64_t q, const float* offset, uint32_t symbol, float step) {
  return (offset ? float(q) - offset[symbol] : float(q)) * step;
}

// One channel as a piece's decoder sees it.
struct ChannelView {
  float* base;             // the channel's values by token (channel-major buffer)
  const uint32_t* literal; // its head's literal tokens in order (null: every token)
  uint32_t literals;       // how many
  uint32_t raw_bits;       // low bits sent raw (split_spread)
  int64_t centre;          // m, in steps
  float step;
};

// A Gaussian table as the values need it (the rANS part is decoded before).
struct GaussView {
  int32_t range;
  const float* offset;  // centroid offsets per symbol
};

// The values of one decoded piece (its symbols sy[0 .. n)): consecutive
// channels of one table, from channel index first_channel (channel(gi) gives
// the view of the gi-th channel of the table's group) at its literal
// first_literal. UseLut fills a per-channel table of the table symbols'
// values first (faster on a CPU; a GPU thread computes each value): both
// evaluate value_of with the same operands, so the floats are the same.
template <bool UseLut, class ChannelOf>
KVS_HD inline Fault piece_values(const uint8_t* sy_all, uint32_t n, size_t first_channel, uint32_t first_literal,
                                 ChannelOf&& channel, const GaussView& gt, bool centroid, BitReader* extras) {
  size_t gi = first_channel;
  uint32_t done = first_literal;
  uint32_t i = 0;
  while (i < n) {
    const ChannelView c = channel(gi);
    const uint32_t count = n - i < c.literals - done ? n - i : c.literals - done;
    const uint32_t b = c.raw_bits;
    const int64_t m = c.centre;
    const float* offset = centroid && b == 0 ? gt.offset : nullptr;
    const uint32_t* lit = c.literal ? c.literal + done : nullptr;  // null: literal j is token done + j
    const uint8_t* sy = sy_all + i;
    // Escapes and raw low bits.
    auto slow = [&](uint32_t j) -> bool {
      const int64_t s = sy[j] == 0 ? int64_t(int32_t(extras->get(kEscapeBits)))
                                   : ((int64_t(sy[j]) - 1 - gt.range) << b) + int64_t(extras->get(b));
      const int64_t q = m + s;
      if (q > 2 * kMaxQ || q < -2 * kMaxQ) return false;
      c.base[lit ? lit[j] : done + j] = value_of(q, offset, sy[j], c.step);
      return true;
    };
    if (b == 0) {
      // Table symbols first (their q is m + symbol - 1 - range, never out of
      // range), then the escapes in order (their 32 bits each, in order).
      uint32_t escapes = 0;
      if constexpr (UseLut) {
        float lut[256];
        lut[0] = 0;  // escapes are filled in afterwards
        for (int32_t v = 1; v <= 2 * gt.range + 1; ++v) lut[v] = value_of(m + v - 1 - gt.range, offset, uint32_t(v), c.step);
        if (!lit) {
          float* dst = c.base + done;
          for (uint32_t j = 0; j < count; ++j) dst[j] = lut[sy[j]], escapes += sy[j] == 0;
        } else {
          for (uint32_t j = 0; j < count; ++j) c.base[lit[j]] = lut[sy[j]], escapes += sy[j] == 0;
        }
      } else {
        for (uint32_t j = 0; j < count; ++j) {
          const uint32_t v = sy[j];
          if (v == 0) {
            ++escapes;
            continue;
          }
          c.base[lit ? lit[j] : done + j] = value_of(m + int32_t(v) - 1 - gt.range, offset, v, c.step);
        }
      }
      if (escapes)
        for (uint32_t j = 0; j < count; ++j)
          if (sy[j] == 0) {
            const bool in_range = slow(j);
            if (!extras->ok) return Fault::kRawBitsTruncated;
            if (!in_range) return Fault::kOutOfRange;
          }
    } else {
      for (uint32_t j = 0; j < count; ++j) {
        const bool in_range = slow(j);
        if (!extras->ok) return Fault::kRawBitsTruncated;
        if (!in_range) return Fault::kOutOfRange;
      }
    }
    i += count;
    done += count;
    if (done == c.literals) ++gi, done = 0;
  }
  return extras->at_end() ? Fault::kNone : Fault::kRawBitsExtra;
}

// Output value d (0 <= d < D) of one row from its channel-major source
// column col (dimension k at col[k * stride]): copied, or for keys rotated
// back by RoPE with cs = {cos, sin} of pair d mod D/2 at the row's position.
KVS_HD inline float output_value(const float* col, size_t stride, uint32_t d, uint32_t half, bool key,
                                 const float* cs) {
  if (!key) return col[size_t(d) * stride];
  if (d < half) {
    const float x1 = col[size_t(d) * stride], x2 = col[size_t(d + half) * stride];
    return x1 * cs[0] - x2 * cs[1];
  }
  const float x1 = col[size_t(d - half) * stride], x2 = col[size_t(d) * stride];
  return x2 * cs[0] + x1 * cs[1];
}

}  // namespace kvs::codec::kvs_core
