// The per-substream work of `cachegen` scheme=paper decoding
// (codec/cachegen_paper.h) as KVS_HD code: the CPU decoder
// (codec/cachegen_paper.cpp) and the CUDA kernel (codec/cuda/) run these
// same functions (DESIGN.md, "The codec on CPU and GPU").
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "codec/cachegen_core.h"  // KVS_UNROLL
#include "codec/hd.h"
#include "codec/rans.h"

namespace kvs::codec::cachegen_paper_core {

inline constexpr uint32_t kGroupTokens = 10;                 // kPaperGroupTokens
inline constexpr int kAnchorM = 127;                         // kPaperAnchorM
inline constexpr uint32_t kAnchorEscape = 2 * kAnchorM + 1;  // symbol 255

// Anchor symbol q + 127 -> (q) x step; delta symbol q + M against the
// decoded anchor a -> a + q x step (no fused multiply-add on either side).
KVS_HD inline float anchor_value(uint32_t symbol, float step) { return float(int(symbol) - kAnchorM) * step; }
KVS_HD inline float delta_value(uint32_t symbol, float a, float step, int M) {
  return a + float(int(symbol) - M) * step;
}

// The escaped value i of a substream (fp32, little-endian).
KVS_HD inline float escaped_value(const uint8_t* escapes, uint32_t i) {
  const uint8_t* p = escapes + 4 * size_t(i);
  const uint32_t u = uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

enum class Fault : uint32_t { kNone = 0, kDoesNotDecode = 1, kTooManyEscapes = 2, kUnusedEscapes = 3 };

// Decodes the rows of Lanes substreams (tokens 0..T-1, dims 0..D-1 each),
// their rANS chains (dec[j], initialized) stepped side by side, each symbol
// dequantized as it is decoded: anchors (every kGroupTokens-th token) with
// the channel's anchor table and step, the other tokens as deltas to the
// channel's decoded anchor. channels[d * Lanes + j] is lane j's channel d: a
// Channel has step_d, anchor_value (updated here), step_a, and
// anchor_table() / delta_table() (a rans::CumTable and a
// rans::BasicPackedTable). store(j, t, d, value) writes a value. Faults in
// the order the CPU decoder reports them: a lane that runs out of bytes (at
// the first such step) or does not end in the initial state, then per lane
// more escape symbols than escaped values, then fewer; *lane gets the lane
// and *used its escapes used.
template <uint32_t Lanes, class Channel, class Store>
KVS_HD inline Fault decode_rows(rans::Decoder* dec, Channel* channels, const int* M, const uint8_t* const* escapes,
                                const uint32_t* count, uint32_t T, uint32_t D, Store&& store, uint32_t* lane,
                                uint32_t* used_out) {
  uint32_t used[Lanes] = {};
  bool too_many[Lanes] = {};
  uint32_t delta_escape[Lanes];
  for (uint32_t j = 0; j < Lanes; ++j) delta_escape[j] = uint32_t(2 * M[j] + 1);
  // The next escaped value of lane j (0 when there is none: reported after decoding).
  const auto escaped = [&](uint32_t j) {
    if (used[j] == count[j]) {
      too_many[j] = true;
      return 0.0f;
    }
    return escaped_value(escapes[j], used[j]++);
  };
  for (uint32_t t = 0; t < T; ++t) {
    // With two bytes per symbol and two more left in every lane, the row
    // needs no check of the streams' ends (an unchecked step reads four).
    bool room = true;
    for (uint32_t j = 0; j < Lanes; ++j) room &= dec[j].end - dec[j].ptr >= 2 * ptrdiff_t(D) + 2;
    if (t % kGroupTokens == 0) {
      if (room) {
        for (uint32_t d = 0; d < D; ++d) {
          Channel* row = channels + size_t(d) * Lanes;
          KVS_UNROLL  // each lane's state stays in registers
          for (uint32_t j = 0; j < Lanes; ++j) {
            Channel& c = row[j];
            const uint32_t sym = rans::decode_step_unchecked(&dec[j], c.anchor_table());
            c.anchor_value = sym == kAnchorEscape ? escaped(j) : anchor_value(sym, c.step_a);
            store(j, t, d, c.anchor_value);
          }
        }
      } else {
        for (uint32_t d = 0; d < D; ++d) {
          KVS_UNROLL
          for (uint32_t j = 0; j < Lanes; ++j) {
            Channel& c = channels[d * Lanes + j];
            uint32_t sym;
            if (!rans::decode_step(&dec[j], c.anchor_table(), &sym)) {
              *lane = j;
              return Fault::kDoesNotDecode;
            }
            c.anchor_value = sym == kAnchorEscape ? escaped(j) : anchor_value(sym, c.step_a);
            store(j, t, d, c.anchor_value);
          }
        }
      }
      continue;
    }
    if (room) {
      for (uint32_t d = 0; d < D; ++d) {
        const Channel* row = channels + size_t(d) * Lanes;
        KVS_UNROLL
        for (uint32_t j = 0; j < Lanes; ++j) {
          const Channel& c = row[j];
          const uint32_t sym = rans::decode_step_unchecked(&dec[j], c.delta_table());
          store(j, t, d, sym == delta_escape[j] ? escaped(j) : delta_value(sym, c.anchor_value, c.step_d, M[j]));
        }
      }
    } else {
      for (uint32_t d = 0; d < D; ++d) {
        KVS_UNROLL
        for (uint32_t j = 0; j < Lanes; ++j) {
          const Channel& c = channels[d * Lanes + j];
          uint32_t sym;
          if (!rans::decode_step(&dec[j], c.delta_table(), &sym)) {
            *lane = j;
            return Fault::kDoesNotDecode;
          }
          store(j, t, d, sym == delta_escape[j] ? escaped(j) : delta_value(sym, c.anchor_value, c.step_d, M[j]));
        }
      }
    }
  }
  for (uint32_t j = 0; j < Lanes; ++j)
    if (rans::decoder_finish(dec[j]) != rans::DecodeStatus::kOk) {
      *lane = j;
      return Fault::kDoesNotDecode;
    }
  for (uint32_t j = 0; j < Lanes; ++j) {
    *lane = j;
    *used_out = used[j];
    if (too_many[j]) return Fault::kTooManyEscapes;
    if (used[j] != count[j]) return Fault::kUnusedEscapes;
  }
  return Fault::kNone;
}

}  // namespace kvs::codec::cachegen_paper_core
