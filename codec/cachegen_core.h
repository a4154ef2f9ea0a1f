// The per-substream work of `cachegen` scheme=code decoding (codec/cachegen.h)
// as KVS_HD code: the CPU decoder (codec/cachegen.cpp) and the CUDA kernel
// (codec/cuda/) run these same functions, so the CPU tests exercise what a
// GPU runs (DESIGN.md, "The codec on CPU and GPU").
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "codec/fp16.h"
#include "codec/hd.h"
#include "codec/rans.h"

// Unrolled loops over lanes: nvcc and GCC spell it differently.
#if defined(__CUDA_ARCH__)
#define KVS_UNROLL _Pragma("unroll")
#elif defined(__CUDACC__)
#define KVS_UNROLL  // nvcc's host pass (its front end rejects GCC's spelling)
#else
#define KVS_UNROLL _Pragma("GCC unroll 8")
#endif

namespace kvs::codec::cachegen_core {

// The dequantized value of symbol q (0..2M) at a token of scale `scale`:
// (q - M) * scale / M, evaluated exactly as written (IEEE float multiply
// then divide, no fused operation possible), 0 for a scale of 0.
KVS_HD inline float dequantize(int q, int M, float scale) {
  return scale > 0 ? float(q - M) * scale / float(M) : 0.0f;
}

// ---- encoding ----

inline constexpr float kHalfMax = 65504.0f;  // the largest finite fp16: per-token scales are fp16

// max(m, |x|), ignoring a NaN x (as std::max(m, std::fabs(x)) does).
KVS_HD inline float abs_max_fold(float m, float x) {
  const float a = fabsf(x);
  return m < a ? a : m;
}

// The fp16 value >= max (so |x| <= scale for every x of the token); 0 for
// max <= 0. max must be <= kHalfMax.
KVS_HD inline float round_up_scale(float max) {
  if (!(max > 0)) return 0.0f;
  uint16_t h = f32_to_f16_bits(max);
  if (f16_bits_to_f32(h) < max) ++h;
  return f16_bits_to_f32(h);
}

// The quantizer symbol of x at a token of scale `scale` > 0:
// clamp(lrint(x * M / scale) + M, 0, 2M), x * M first, then / scale. For
// |v| <= 2^22, adding and subtracting 1.5 * 2^23 rounds to the nearest
// integer, ties to even, as lrint does; a NaN gives symbol 0 (lrint's
// LONG_MIN, clamped, on x86-64); larger |v| (not reached: |x| <= scale) use llrintf.
KVS_HD inline uint8_t quantize_symbol(float x, int M, float scale) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  const float v = x * float(M) / scale;
  long long q;
  if (fabsf(v) <= 4194304.0f)
    q = (long long)((v + kMagic) - kMagic);
  else if (v != v)
    return 0;
  else
    q = llrintf(v);
  q += M;
  return uint8_t(q < 0 ? 0 : q > 2 * M ? 2 * M : q);
}

// What went wrong with a substream.
enum class Fault : uint32_t { kNone = 0, kBadInitialState = 1, kTruncated = 2, kDoesNotDecode = 3 };

// Decodes `Lanes` independent rANS streams of n symbols each, stepped side by
// side (independent chains that one CPU core overlaps; a GPU thread uses
// Lanes = 1): stream j is data[j][0 .. size[j]) under table[j] / index[j].
// Each symbol goes out as store(j, i, value(j, i, symbol)). Faults are found
// in the order the CPU decoder always reported them (every lane's initial
// state, then the first step that runs out of bytes, then each lane's final
// state); *lane gets the faulty lane.
template <uint32_t Lanes, class Value, class Store>
KVS_HD inline Fault decode_streams(const uint8_t* const data[], const size_t size[], const rans::Table* const table[],
                                   const rans::SymbolIndex* const index[], uint32_t n, Value&& value, Store&& store,
                                   uint32_t* lane) {
  rans::Decoder dec[Lanes];
  for (uint32_t j = 0; j < Lanes; ++j)
    if (rans::decoder_init(data[j], size[j], &dec[j]) != rans::DecodeStatus::kOk) {
      *lane = j;
      return Fault::kBadInitialState;
    }
  for (uint32_t i = 0; i < n; ++i) {
    KVS_UNROLL  // each lane's state stays in registers
    for (uint32_t j = 0; j < Lanes; ++j) {
      uint32_t sym;
      if (!rans::decode_step(&dec[j], *table[j], *index[j], &sym)) {
        *lane = j;
        return Fault::kTruncated;
      }
      store(j, i, value(j, i, sym));
    }
  }
  for (uint32_t j = 0; j < Lanes; ++j)
    if (rans::decoder_finish(dec[j]) != rans::DecodeStatus::kOk) {
      *lane = j;
      return Fault::kDoesNotDecode;
    }
  return Fault::kNone;
}

// Reads a channel's frequency table (nsym little-endian u16) into `t` and
// builds its index; false when the table is invalid.
KVS_HD inline bool load_table(const uint8_t* freq, uint32_t nsym, rans::Table* t, rans::SymbolIndex* index) {
  t->symbols = nsym;
  for (uint32_t q = 0; q < nsym; ++q) t->freq[q] = uint32_t(freq[2 * q]) | uint32_t(freq[2 * q + 1]) << 8;
  if (!rans::finish_table(t)) return false;
  rans::build_index(*t, index);
  return true;
}

}  // namespace kvs::codec::cachegen_core
