#include "codec/kivi.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include <fmt/core.h>

#include "codec/baselines.h"
#include "codec/bitstream.h"

namespace kvs::codec {

namespace {

constexpr uint32_t kMaxGroup = 65535;
constexpr float kHalfMax = 65504.0f;

// Nearest fp16 at or below x (x finite, |x| <= 65504).
uint16_t half_floor_bits(float x) {
  uint16_t h = float_to_half_bits(x);
  if (half_bits_to_float(h) > x) h = (h & 0x8000u) ? uint16_t(h + 1) : (h == 0 ? uint16_t(0x8001u) : uint16_t(h - 1));
  return h;
}

// Nearest fp16 at or above x (0 <= x <= 65504).
uint16_t half_ceil_bits(float x) {
  uint16_t h = float_to_half_bits(x);
  if (half_bits_to_float(h) < x) ++h;
  return h;
}

// Scale and zero point of one group, as stored and as used.
struct GroupParams {
  uint16_t scale_bits = 0, zero_bits = 0;
  float scale = 0, zero = 0;
};

uint32_t parse_param(const CodecParams& params, const char* codec, const char* key, uint32_t fallback, uint32_t lo,
                     uint32_t hi) {
  auto it = params.find(key);
  if (it == params.end()) return fallback;
  const std::string& v = it->second;
  uint32_t out = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size() || out < lo || out > hi)
    throw Error(fmt::format("codec {}: {}: expected an integer in {}..{}, got '{}'", codec, key, lo, hi, v));
  return out;
}

class KiviCodec final : public Codec {
 public:
  KiviCodec(int bits, uint32_t group, uint32_t residual, bool context_scope)
      : bits_(bits), max_code_(float((1 << bits) - 1)), group_(group), residual_(residual),
        context_scope_(context_scope) {}

  std::string name() const override { return fmt::format("kivi{}", bits_); }
  std::string params() const override {
    return fmt::format("bits={},group={},residual={},residual_scope={},scale=fp16,zero=fp16", bits_, group_, residual_,
                       context_scope_ ? "context" : "chunk");
  }
  int levels() const override { return 1; }
  std::string level_name(int) const override { return fmt::format("int{}", bits_); }

  Bytes encode_chunk(const KVChunk& chunk, int level) const override {
    if (level != 0) throw Error(fmt::format("codec {}: level {} out of range (1 level)", name(), level));
    const KVShape& s = chunk.shape;
    const uint32_t T = chunk.tokens, D = s.head_dim;
    const KiviSplit split = split_of(chunk);
    std::vector<Bytes> sections;
    sections.reserve(1 + 6 * size_t(s.layers));
    Bytes header_section;
    put_u32(header_section, group_);
    put_u32(header_section, residual_);
    // The split travels only when it is not the stand-alone chunk's (so a
    // stand-alone chunk's stream is as before).
    const KiviSplit alone = kivi_split(T, group_, residual_);
    if (split.key_tokens != alone.key_tokens || split.value_tokens != alone.value_tokens) {
      put_u32(header_section, split.key_tokens);
      put_u32(header_section, split.value_tokens);
    }
    sections.push_back(std::move(header_section));
    std::vector<float> x(std::max(group_, 1u));
    for (uint32_t l = 0; l < s.layers; ++l)
      for (Kind k : {Kind::kKey, Kind::kValue}) {
        Bytes params, codes, residual;
        uint64_t index = 0;  // codes written so far
        auto quantize_group = [&](std::span<const float> values) {
          const GroupParams p = group_params(values, l, k);
          put_u16(params, p.scale_bits);
          put_u16(params, p.zero_bits);
          for (float v : values) {
            const uint32_t q = p.scale > 0 ? uint32_t(std::clamp(std::nearbyint((v - p.zero) / p.scale), 0.0f, max_code_)) : 0;
            const uint32_t shift = uint32_t(index * uint64_t(bits_) % 8);
            if (shift == 0) codes.push_back(0);
            codes.back() = uint8_t(codes.back() | (q << shift));
            ++index;
          }
        };
        if (k == Kind::kKey) {
          for (uint32_t h = 0; h < s.kv_heads; ++h)
            for (uint32_t g0 = 0; g0 < split.key_tokens; g0 += group_)
              for (uint32_t d = 0; d < D; ++d) {
                const uint32_t n = std::min(group_, split.key_tokens - g0);
                for (uint32_t i = 0; i < n; ++i) x[i] = chunk.at(l, k, h, g0 + i, d);
                quantize_group({x.data(), n});
              }
        } else {
          for (uint32_t h = 0; h < s.kv_heads; ++h)
            for (uint32_t t = 0; t < split.value_tokens; ++t)
              for (uint32_t d = 0; d < D; d += group_) quantize_group({&chunk.at(l, k, h, t, d), std::min(group_, D - d)});
        }
        const uint32_t first = k == Kind::kKey ? split.key_tokens : split.value_tokens;
        residual.reserve(size_t(s.kv_heads) * (T - first) * D * dtype_bytes(chunk.dtype));
        for (uint32_t h = 0; h < s.kv_heads; ++h)
          for (uint32_t t = first; t < T; ++t)
            for (uint32_t d = 0; d < D; ++d) {
              const float v = chunk.at(l, k, h, t, d);
              switch (chunk.dtype) {
                case DType::kF32: put_f32(residual, v); break;
                case DType::kF16: put_u16(residual, float_to_half_bits(v)); break;
                case DType::kBF16: put_u16(residual, float_to_bf16_bits(v)); break;
              }
            }
        sections.push_back(std::move(params));
        sections.push_back(std::move(codes));
        sections.push_back(std::move(residual));
      }
    return write_stream(header_for(chunk, id(), 0), sections);
  }

  KVChunk decode(std::span<const uint8_t> stream) const override {
    const ParsedStream ps = parse_stream(stream, id());
    const StreamHeader& hd = ps.header;
    const std::string what = name();
    auto corrupt = [&](const std::string& msg) { throw CorruptStream(fmt::format("corrupt KV bitstream: {} {}", what, msg)); };
    if (hd.level != 0) corrupt(fmt::format("level {} (only 0)", hd.level));
    if (hd.flags != 0) corrupt(fmt::format("flags {} (expected 0)", hd.flags));
    const KVShape& s = hd.shape;
    if (ps.sections.size() != 1 + 6ull * s.layers)
      corrupt(fmt::format("has {} sections, expected {}", ps.sections.size(), 1 + 6ull * s.layers));
    SectionReader head(ps.sections[0], "kivi parameters");
    const uint32_t group = head.u32(), residual = head.u32();
    if (group == 0 || group > kMaxGroup) corrupt(fmt::format("group {} out of range", group));
    if (residual > kMaxTokens || residual % group != 0) corrupt(fmt::format("residual {} invalid for group {}", residual, group));
    const uint32_t T = hd.tokens, D = s.head_dim, H = s.kv_heads;
    KiviSplit split = kivi_split(T, group, residual);
    if (head.remaining() > 0) {  // a chunk of a longer context: its split
      split.key_tokens = head.u32();
      split.value_tokens = head.u32();
      if (split.key_tokens > T || split.value_tokens > T)
        corrupt(fmt::format("quantizes {} key and {} value tokens of {}", split.key_tokens, split.value_tokens, T));
    }
    head.expect_end();
    // Every section's size follows from the shape: check them all before allocating.
    for (uint32_t l = 0; l < s.layers; ++l)
      for (Kind k : {Kind::kKey, Kind::kValue}) {
        const uint32_t quantized = k == Kind::kKey ? split.key_tokens : split.value_tokens;
        const uint64_t groups = k == Kind::kKey ? uint64_t(H) * ((uint64_t(quantized) + group - 1) / group) * D
                                                : uint64_t(H) * quantized * ((D + group - 1) / group);
        const uint64_t code_bits = uint64_t(H) * quantized * D * uint64_t(bits_);
        const size_t first = 1 + 6 * size_t(l) + 3 * size_t(k);
        const auto codes = ps.sections[first + 1];
        if (ps.sections[first].size() != 4 * groups || codes.size() != (code_bits + 7) / 8 ||
            ps.sections[first + 2].size() != uint64_t(H) * (T - quantized) * D * dtype_bytes(hd.dtype))
          corrupt(fmt::format("sections {}..{} (layer {}, {}) do not match the shape", first, first + 2, l,
                              k == Kind::kKey ? "K" : "V"));
        if (code_bits % 8 != 0 && (codes.back() >> (code_bits % 8)) != 0)
          corrupt(fmt::format("layer {} code padding bits are not zero", l));
      }
    KVChunk out = chunk_for(hd);
    size_t next = 1;
    for (uint32_t l = 0; l < s.layers; ++l)
      for (Kind k : {Kind::kKey, Kind::kValue}) {
        const uint32_t quantized = k == Kind::kKey ? split.key_tokens : split.value_tokens;
        const auto params = ps.sections[next], codes = ps.sections[next + 1], residual_bytes = ps.sections[next + 2];
        next += 3;
        SectionReader pr(params, "kivi scales");
        uint64_t index = 0;
        const uint32_t mask = (1u << bits_) - 1;
        auto dequantize_group = [&](float* first, uint32_t n, size_t stride) {
          const uint16_t scale_bits = pr.u16(), zero_bits = pr.u16();
          const float scale = half_bits_to_float(scale_bits), zero = half_bits_to_float(zero_bits);
          if (!std::isfinite(scale) || (scale_bits & 0x8000u) || !std::isfinite(zero))
            corrupt(fmt::format("layer {} scale {} or zero point {} invalid", l, scale, zero));
          for (uint32_t i = 0; i < n; ++i, ++index) {
            const uint64_t bit = index * uint64_t(bits_);
            const uint32_t q = (codes[bit / 8] >> (bit % 8)) & mask;
            first[i * stride] = float(q) * scale + zero;
          }
        };
        if (k == Kind::kKey) {
          for (uint32_t h = 0; h < H; ++h)
            for (uint32_t g0 = 0; g0 < quantized; g0 += group)
              for (uint32_t d = 0; d < D; ++d) dequantize_group(&out.at(l, k, h, g0, d), std::min(group, quantized - g0), D);
        } else {
          for (uint32_t h = 0; h < H; ++h)
            for (uint32_t t = 0; t < quantized; ++t)
              for (uint32_t d = 0; d < D; d += group) dequantize_group(&out.at(l, k, h, t, d), std::min(group, D - d), 1);
        }
        SectionReader rr(residual_bytes, "kivi residual");
        for (uint32_t h = 0; h < H; ++h)
          for (uint32_t t = quantized; t < T; ++t)
            for (uint32_t d = 0; d < D; ++d) {
              float& v = out.at(l, k, h, t, d);
              switch (hd.dtype) {
                case DType::kF32: v = rr.f32(); break;
                case DType::kF16: v = half_bits_to_float(rr.u16()); break;
                case DType::kBF16: v = bf16_bits_to_float(rr.u16()); break;
              }
            }
      }
    return out;
  }

 private:
  CodecId id() const { return bits_ == 2 ? CodecId::kKivi2 : CodecId::kKivi4; }

  KiviSplit split_of(const KVChunk& chunk) const {
    if (!context_scope_ || chunk.context_tokens == 0) return kivi_split(chunk.tokens, group_, residual_);
    if (chunk.context_tokens < chunk.token_begin + chunk.tokens)
      throw Error(fmt::format("codec {}: chunk of tokens {}..{} lies beyond its context of {} tokens", name(),
                              chunk.token_begin, chunk.token_begin + chunk.tokens, chunk.context_tokens));
    return kivi_split_in_context(chunk.token_begin, chunk.tokens, chunk.context_tokens, group_, residual_);
  }

  GroupParams group_params(std::span<const float> values, uint32_t layer, Kind kind) const {
    float mn = values[0], mx = values[0];
    for (float v : values) {
      if (!(std::fabs(v) <= kHalfMax))
        throw Error(fmt::format("codec {}: layer {} {}: value {} is outside the fp16 range of KIVI's scales and zero points",
                                name(), layer, kind == Kind::kKey ? "K" : "V", v));
      mn = std::min(mn, v);
      mx = std::max(mx, v);
    }
    GroupParams p;
    p.zero_bits = half_floor_bits(mn);
    p.zero = half_bits_to_float(p.zero_bits);
    p.scale_bits = half_ceil_bits((mx - p.zero) / max_code_);
    p.scale = half_bits_to_float(p.scale_bits);
    return p;
  }

  int bits_;
  float max_code_;
  uint32_t group_, residual_;
  bool context_scope_;  // residual at the context's end (else at every chunk's)
};

std::unique_ptr<Codec> make_kivi(int bits, const CodecOptions& options) {
  const std::string name = fmt::format("kivi{}", bits);
  check_params(name, options.params, {"group", "residual", "residual_scope"});
  const uint32_t group = parse_param(options.params, name.c_str(), "group", 32, 1, kMaxGroup);
  const uint32_t residual = parse_param(options.params, name.c_str(), "residual", 128, 0, kMaxTokens);
  if (residual % group != 0)
    throw Error(fmt::format("codec {}: residual {} is not a multiple of group {} (KIVI requires it)", name, residual, group));
  bool context_scope = true;
  if (auto it = options.params.find("residual_scope"); it != options.params.end()) {
    if (it->second != "context" && it->second != "chunk")
      throw Error(fmt::format("codec {}: residual_scope: expected context or chunk, got '{}'", name, it->second));
    context_scope = it->second == "context";
  }
  return std::make_unique<KiviCodec>(bits, group, residual, context_scope);
}

}  // namespace

KiviSplit kivi_split(uint32_t tokens, uint32_t group, uint32_t residual) {
  KiviSplit s;
  s.key_tokens = tokens - tokens % (residual > 0 ? residual : group);
  s.value_tokens = tokens > residual ? tokens - residual : 0;
  return s;
}

KiviSplit kivi_split_in_context(uint64_t begin, uint32_t tokens, uint64_t context_tokens, uint32_t group,
                                uint32_t residual) {
  const uint64_t block = residual > 0 ? residual : group;
  const uint64_t key_end = context_tokens - context_tokens % block;  // quantized keys: [0, key_end) of the context
  const uint64_t value_end = context_tokens > residual ? context_tokens - residual : 0;
  auto within = [&](uint64_t end) { return uint32_t(std::min<uint64_t>(end > begin ? end - begin : 0, tokens)); };
  return {within(key_end), within(value_end)};
}

std::unique_ptr<Codec> make_kivi2_codec(const CodecOptions& options) { return make_kivi(2, options); }
std::unique_ptr<Codec> make_kivi4_codec(const CodecOptions& options) { return make_kivi(4, options); }

}  // namespace kvs::codec
