// fp16 <-> fp32 (and fp32 -> bf16) conversions as KVS_HD integer code: a GPU
// decoder writes fp16 output with exactly the rounding the CPU's float_to_half_bits
// (codec/kv.h) applies (round to nearest even, overflow to Inf, any NaN to
// 0x7e00), and reads the fp16 scales of a stream as the CPU does.
#pragma once

#include <cstdint>
#include <cstring>

#include "codec/hd.h"

namespace kvs::codec {

KVS_HD inline uint32_t fp16_float_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}
KVS_HD inline float fp16_bits_float(uint32_t u) {
  float x;
  memcpy(&x, &u, 4);
  return x;
}

// Same result as float_to_half_bits(x) for every x (tested on the CPU).
KVS_HD inline uint16_t f32_to_f16_bits(float x) {
  const uint32_t f = fp16_float_bits(x);
  const uint32_t sign = (f >> 16) & 0x8000u;
  uint32_t abs = f & 0x7fffffffu;
  if (abs >= 0x7f800000u) return uint16_t(sign | (abs > 0x7f800000u ? 0x7e00u : 0x7c00u));  // NaN / Inf
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: Inf
  if (abs < 0x38800000u) {  // a subnormal half (or zero): round abs * 2^24 to an integer, half to even
    if (abs <= 0x33000000u) return uint16_t(sign);  // at most 2^-25: rounds to 0
    const uint32_t e = abs >> 23;                   // 102..112
    const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return uint16_t(sign | q);
  }
  abs += ((abs >> 13) & 1u) + 0xfffu;  // normal: 23 -> 10 mantissa bits, nearest even
  return uint16_t(sign | ((abs - 0x38000000u) >> 13));
}

// Same result as float_to_bf16_bits(x): round to nearest even, NaN quieted.
KVS_HD inline uint16_t f32_to_bf16_bits(float x) {
  uint32_t f = fp16_float_bits(x);
  if ((f & 0x7fffffffu) > 0x7f800000u) return uint16_t((f >> 16) | 0x40u);
  f += 0x7fffu + ((f >> 16) & 1u);
  return uint16_t(f >> 16);
}

// Same result as half_bits_to_float(h).
KVS_HD inline float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {
    const float v = float(mant) * 5.9604644775390625e-8f;  // mant * 2^-24, exact
    return sign ? -v : v;
  }
  if (exp == 31) return fp16_bits_float(sign | 0x7f800000u | (mant << 13));
  return fp16_bits_float(sign | ((exp + 112) << 23) | (mant << 13));
}

}  // namespace kvs::codec
