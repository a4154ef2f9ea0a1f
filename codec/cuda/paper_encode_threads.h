// What each thread of the GPU encoder for `cachegen` scheme=paper does, as
// KVS_HD functions over a plain launch struct (device pointers on a GPU, host
// pointers when codec/cuda/paper_encode_plan.h runs them on the CPU for
// tests): only indexing around the CPU encoder's per-substream code
// (codec/cachegen_paper_encode_core.h). Kernels
// (codec/cuda/paper_encode_kernels.cu) add launch geometry, nothing else.
//
// A chunk is encoded in three passes over its substreams (layer, kind, kv
// head; head fastest, as the stream's sections):
//   1. symbols: a thread per (substream, dim) quantises that channel's
//      tokens (each channel's anchors are its own state);
//   2. sizes: a thread per substream counts its escapes and rANS-codes its
//      symbols into its slot (from the slot's end, last symbol first);
//   3. write: once the host has the sizes and the sections' offsets, each
//      substream's section (escape count, escaped values, rANS bytes) is
//      written into the payload.
#pragma once

#include <cstddef>
#include <cstdint>

#include "codec/cachegen_paper_core.h"
#include "codec/cachegen_paper_encode_core.h"
#include "codec/fp16.h"
#include "codec/hd.h"
#include "codec/rans.h"

namespace kvs::codec::cuda::detail {

struct CachegenPaperEncodeLaunch {
  const void* in;  // [layer][kind][head][token][dim], fp16 bits or floats
  bool in_f16;
  uint32_t layers, kv_heads, head_dim, tokens, substreams;
  // The codec model's tables, as the GPU decoder reads them (plan.h PaperTables):
  const rans::CumTable* anchors;             // [record]: anchor tables
  const float* step_a;                       // [record]
  const rans::BasicPackedTable<64>* deltas;  // [record]: delta tables at the level
  const float* step_d;                       // [record] at the level
  const int32_t* M;                          // [layer] at the level
  uint8_t* symbols;  // scratch: [substream][token][dim]
  uint8_t* slots;    // scratch: per substream `capacity` bytes, its rANS stream at the end
  size_t capacity;   // 4 + 2 * tokens * head_dim: the rANS worst case
  uint32_t* sizes;   // per substream: its rANS stream's bytes (0: did not fit)
  uint32_t* escapes;  // per substream: its escapes
};

// Value i of the input.
KVS_HD inline float paper_load(const CachegenPaperEncodeLaunch& p, size_t i) {
  return p.in_f16 ? f16_bits_to_f32(static_cast<const uint16_t*>(p.in)[i]) : static_cast<const float*>(p.in)[i];
}

// The values of substream `sub` (tokens x head_dim each).
KVS_HD inline size_t paper_values(const CachegenPaperEncodeLaunch& p) { return size_t(p.tokens) * p.head_dim; }

// Pass 1: channel d of substream `sub`, its symbols for every token. Its
// record (layer, kind, channel) is sub * head_dim + d, since the records of
// a (layer, kind) are its heads' channels in order.
KVS_HD inline void cachegen_paper_encode_channel(const CachegenPaperEncodeLaunch& p, uint32_t sub, uint32_t d) {
  const uint32_t D = p.head_dim, T = p.tokens;
  const size_t r = size_t(sub) * D + d, base = size_t(sub) * paper_values(p) + d;
  const float step_a = p.step_a[r], step_d = p.step_d[r];
  const int M = p.M[sub / p.kv_heads / 2];
  float anchor = 0;
  for (uint32_t t = 0; t < T; ++t) {
    const size_t i = base + size_t(t) * D;
    p.symbols[i] = uint8_t(cachegen_paper_core::quantize(paper_load(p, i), t % cachegen_paper_core::kGroupTokens == 0,
                                                          step_a, step_d, M, &anchor));
  }
}

// Pass 2: substream `sub`'s escape count and rANS stream (into its slot).
KVS_HD inline void cachegen_paper_encode_substream(const CachegenPaperEncodeLaunch& p, uint32_t sub) {
  const uint32_t D = p.head_dim, T = p.tokens;
  const int M = p.M[sub / p.kv_heads / 2];
  const uint8_t* symbols = p.symbols + size_t(sub) * paper_values(p);
  p.escapes[sub] = cachegen_paper_core::for_each_escape(symbols, T, D, M, [](uint32_t, uint32_t, uint32_t) {});
  const rans::CumTable* anchors = p.anchors + size_t(sub) * D;
  const rans::BasicPackedTable<64>* deltas = p.deltas + size_t(sub) * D;
  const size_t written = cachegen_paper_core::code_symbols(
      symbols, T, D,
      [&](uint32_t t, uint32_t d, uint32_t sym, uint32_t* f, uint32_t* cum) {
        if (t % cachegen_paper_core::kGroupTokens == 0)
          cachegen_paper_core::freq_cum(anchors[d], sym, f, cum);
        else
          cachegen_paper_core::freq_cum(deltas[d], sym, f, cum);
      },
      p.slots + size_t(sub) * p.capacity, p.capacity);
  p.sizes[sub] = uint32_t(written);
}

// Pass 3a: substream `sub`'s escape count and escaped values (fp32 each, in
// coding order) at the start of its section, payload + offsets[sub].
KVS_HD inline void cachegen_paper_encode_escapes(const CachegenPaperEncodeLaunch& p, const uint64_t* offsets,
                                                 uint32_t sub, uint8_t* payload) {
  const uint32_t D = p.head_dim, T = p.tokens;
  const int M = p.M[sub / p.kv_heads / 2];
  uint8_t* out = payload + offsets[sub];
  const uint32_t count = p.escapes[sub];
  out[0] = uint8_t(count), out[1] = uint8_t(count >> 8), out[2] = uint8_t(count >> 16), out[3] = uint8_t(count >> 24);
  if (count == 0) return;
  const size_t base = size_t(sub) * paper_values(p);
  cachegen_paper_core::for_each_escape(p.symbols + base, T, D, M, [&](uint32_t i, uint32_t t, uint32_t d) {
    cachegen_paper_core::put_escaped_value(out + 4 + 4 * size_t(i), paper_load(p, base + size_t(t) * D + d));
  });
}

// Pass 3b: bytes i, i + step, ... of substream `sub`'s rANS stream, from its
// slot to the end of its section (after the escapes).
KVS_HD inline void cachegen_paper_encode_copy(const CachegenPaperEncodeLaunch& p, const uint64_t* offsets,
                                              uint32_t sub, uint32_t i, uint32_t step, uint8_t* payload) {
  const uint32_t size = p.sizes[sub];
  const uint8_t* src = p.slots + size_t(sub + 1) * p.capacity - size;
  uint8_t* dst = payload + offsets[sub] + 4 + 4 * size_t(p.escapes[sub]);
  for (uint32_t k = i; k < size; k += step) dst[k] = src[k];
}

}  // namespace kvs::codec::cuda::detail
