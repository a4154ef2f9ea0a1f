#include "codec/kv.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace kvs::codec {

const char* to_string(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "fp32";
    case DType::kF16: return "fp16";
    case DType::kBF16: return "bf16";
  }
  return "unknown";
}

DType dtype_from_string(const std::string& name) {
  if (name == "fp32" || name == "f32" || name == "float32" || name == "F32") return DType::kF32;
  if (name == "fp16" || name == "f16" || name == "float16" || name == "F16") return DType::kF16;
  if (name == "bf16" || name == "bfloat16" || name == "BF16") return DType::kBF16;
  throw std::invalid_argument("unknown dtype '" + name + "' (expected fp32, fp16 or bf16)");
}

uint32_t dtype_bytes(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

KVChunk KVChunk::slice(uint32_t begin, uint32_t n) const {
  if (uint64_t(begin) + n > tokens) throw std::out_of_range("KVChunk::slice: token range out of bounds");
  KVChunk out(shape, dtype, token_begin + begin, n);
  out.context_tokens = context_tokens;
  const uint64_t row = shape.head_dim;
  for (uint32_t layer = 0; layer < shape.layers; ++layer)
    for (Kind kind : {Kind::kKey, Kind::kValue})
      for (uint32_t head = 0; head < shape.kv_heads; ++head)
        std::memcpy(&out.at(layer, kind, head, 0, 0), &at(layer, kind, head, begin, 0),
                    sizeof(float) * row * n);
  return out;
}

KVChunk KVChunk::concat(std::span<const KVChunk> parts) {
  if (parts.empty()) return {};
  uint64_t total = 0;
  for (const auto& p : parts) {
    if (!(p.shape == parts[0].shape) || p.dtype != parts[0].dtype)
      throw std::invalid_argument("KVChunk::concat: chunks differ in shape or dtype");
    if (p.token_begin != parts[0].token_begin + total)
      throw std::invalid_argument("KVChunk::concat: chunks are not contiguous in token order");
    total += p.tokens;
  }
  KVChunk out(parts[0].shape, parts[0].dtype, parts[0].token_begin, uint32_t(total));
  out.context_tokens = parts[0].context_tokens;
  const uint64_t row = out.shape.head_dim;
  uint32_t offset = 0;
  for (const auto& p : parts) {
    for (uint32_t layer = 0; layer < out.shape.layers; ++layer)
      for (Kind kind : {Kind::kKey, Kind::kValue})
        for (uint32_t head = 0; head < out.shape.kv_heads; ++head)
          std::memcpy(&out.at(layer, kind, head, offset, 0), &p.at(layer, kind, head, 0, 0),
                      sizeof(float) * row * p.tokens);
    offset += p.tokens;
  }
  return out;
}

uint16_t float_to_half_bits(float x) {
  const uint32_t f = std::bit_cast<uint32_t>(x);
  const uint32_t sign = (f >> 16) & 0x8000u;
  uint32_t abs = f & 0x7fffffffu;
  if (abs >= 0x7f800000u) return uint16_t(sign | (abs > 0x7f800000u ? 0x7e00u : 0x7c00u));  // NaN / Inf
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: overflow to Inf
  if (abs < 0x38800000u) {  // subnormal half (or zero)
    // value = abs as float; half subnormal unit = 2^-24
    const float v = std::bit_cast<float>(abs);
    const float scaled = v * 16777216.0f;  // / 2^-24, exact
    const uint32_t m = uint32_t(std::nearbyint(scaled));  // round half to even (default mode)
    return uint16_t(sign | m);
  }
  // normal: rebias exponent 127 -> 15 and round mantissa 23 -> 10 bits, nearest even
  const uint32_t mant_round = ((abs >> 13) & 1u) + 0xfffu;
  abs += mant_round;
  return uint16_t(sign | ((abs - 0x38000000u) >> 13));
}

float half_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    const float v = std::ldexp(float(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t float_to_bf16_bits(float x) {
  uint32_t f = std::bit_cast<uint32_t>(x);
  if ((f & 0x7fffffffu) > 0x7f800000u) return uint16_t((f >> 16) | 0x40u);  // quiet NaN
  f += 0x7fffu + ((f >> 16) & 1u);
  return uint16_t(f >> 16);
}

float bf16_bits_to_float(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }

float round_to_dtype(float x, DType dtype) {
  switch (dtype) {
    case DType::kF32: return x;
    case DType::kF16: return half_bits_to_float(float_to_half_bits(x));
    case DType::kBF16: return bf16_bits_to_float(float_to_bf16_bits(x));
  }
  return x;
}

}  // namespace kvs::codec
