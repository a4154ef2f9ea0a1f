#include "codec/baselines.h"

#include <bit>
#include <cmath>
#include <cstring>

#include <fmt/core.h>
#include <zstd.h>

#include "codec/bitstream.h"

namespace kvs::codec {

void check_params(const std::string& codec, const CodecParams& params, std::initializer_list<const char*> known) {
  for (const auto& [key, value] : params) {
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    if (!ok) throw Error(fmt::format("codec {}: unknown parameter '{}'", codec, key));
  }
}

namespace {

// The chunk's values at its dtype (4 or 2 bytes each, little-endian), in element order.
Bytes dtype_bytes_of(const KVChunk& chunk) {
  Bytes data;
  data.reserve(chunk.values.size() * dtype_bytes(chunk.dtype));
  for (float v : chunk.values) {
    switch (chunk.dtype) {
      case DType::kF32: put_f32(data, v); break;
      case DType::kF16: put_u16(data, float_to_half_bits(v)); break;
      case DType::kBF16: put_u16(data, float_to_bf16_bits(v)); break;
    }
  }
  return data;
}

// The bytes of the header's values at its dtype (the shape is bounded, so no overflow).
uint64_t value_bytes(const StreamHeader& h) { return h.elements() * dtype_bytes(h.dtype); }

// Checks, before the chunk is allocated, that a section of `size` bytes holds
// the header's values at its dtype; `what` names the section in errors.
void check_dtype_bytes(size_t size, const StreamHeader& h, const char* what) {
  if (size != value_bytes(h))
    throw CorruptStream(
        fmt::format("corrupt KV bitstream: {} of {} bytes, expected {}", what, size, value_bytes(h)));
}

// half_bits_to_float(h), inline for normal numbers (the same bits), the
// call for zeros, subnormals, infinities and NaNs.
inline float half_to_float(uint16_t h) {
  const uint32_t exp = (h >> 10) & 0x1fu;
  if (exp == 0 || exp == 31) return half_bits_to_float(h);
  return std::bit_cast<float>(uint32_t(h & 0x8000u) << 16 | (exp + 112) << 23 | uint32_t(h & 0x3ffu) << 13);
}

// Fills `out.values` from dtype bytes (their size already checked; checked
// again here, `what` naming them), one loop per dtype.
void values_from_dtype_bytes(std::span<const uint8_t> data, KVChunk& out, const char* what) {
  const size_t n = out.values.size();
  if (data.size() != n * dtype_bytes(out.dtype))
    throw CorruptStream(fmt::format("corrupt KV bitstream: {} of {} bytes, expected {}", what, data.size(),
                                    n * dtype_bytes(out.dtype)));
  const uint8_t* p = data.data();
  float* v = out.values.data();
  switch (out.dtype) {
    case DType::kF32:
      for (size_t i = 0; i < n; ++i, p += 4)
        v[i] = std::bit_cast<float>(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
      break;
    case DType::kF16:
      for (size_t i = 0; i < n; ++i, p += 2) v[i] = half_to_float(uint16_t(p[0] | p[1] << 8));
      break;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i, p += 2) v[i] = bf16_bits_to_float(uint16_t(p[0] | p[1] << 8));
      break;
  }
}

// A zstd block regenerates at most 128 KiB and has a 3-byte header (RFC 8878,
// 3.1.1.2), so a frame of `content` bytes is at least this long.
uint64_t zstd_min_frame_bytes(uint64_t content) { return 3 * ((content + (128u << 10) - 1) / (128u << 10)); }

class RawCodec final : public Codec {
 public:
  std::string name() const override { return "raw"; }
  std::string params() const override { return ""; }
  int levels() const override { return 1; }
  std::string level_name(int) const override { return "exact"; }

  Bytes encode_chunk(const KVChunk& chunk, int level) const override {
    if (level != 0) throw Error(fmt::format("codec raw: level {} out of range (1 level)", level));
    Bytes data = dtype_bytes_of(chunk);
    return write_stream(header_for(chunk, CodecId::kRaw, 0), {data});
  }

  KVChunk decode(std::span<const uint8_t> stream) const override {
    const ParsedStream ps = parse_stream(stream, CodecId::kRaw);
    if (ps.sections.size() != 1) throw CorruptStream("corrupt KV bitstream: raw expects 1 section");
    check_dtype_bytes(ps.sections[0].size(), ps.header, "raw values");
    KVChunk out = chunk_for(ps.header);
    values_from_dtype_bytes(ps.sections[0], out, "raw values");
    return out;
  }
};

// Lossless zstd (level 3) over the same bytes as `raw`; one level.
class ZstdCodec final : public Codec {
 public:
  std::string name() const override { return "zstd"; }
  std::string params() const override { return "zstd_level=3"; }
  int levels() const override { return 1; }
  std::string level_name(int) const override { return "zstd3"; }

  Bytes encode_chunk(const KVChunk& chunk, int level) const override {
    if (level != 0) throw Error(fmt::format("codec zstd: level {} out of range (1 level)", level));
    const Bytes data = dtype_bytes_of(chunk);
    Bytes packed(ZSTD_compressBound(data.size()));
    const size_t n = ZSTD_compress(packed.data(), packed.size(), data.data(), data.size(), 3);
    if (ZSTD_isError(n)) throw Error(fmt::format("codec zstd: {}", ZSTD_getErrorName(n)));
    packed.resize(n);
    return write_stream(header_for(chunk, CodecId::kZstd, 0), {packed});
  }

  KVChunk decode(std::span<const uint8_t> stream) const override {
    const ParsedStream ps = parse_stream(stream, CodecId::kZstd);
    if (ps.sections.size() != 1) throw CorruptStream("corrupt KV bitstream: zstd expects 1 section");
    // Before anything is allocated: the frame's content size and its length.
    const size_t expected = value_bytes(ps.header);
    const unsigned long long content = ZSTD_getFrameContentSize(ps.sections[0].data(), ps.sections[0].size());
    if (content != expected)
      throw CorruptStream(fmt::format("corrupt KV bitstream at byte {}: zstd frame content size is not {} bytes",
                                      kHeaderBytes + 4, expected));
    if (ps.sections[0].size() < zstd_min_frame_bytes(expected))
      throw CorruptStream(fmt::format("corrupt KV bitstream at byte {}: zstd frame of {} bytes is too short for {} bytes",
                                      kHeaderBytes + 4, ps.sections[0].size(), expected));
    KVChunk out = chunk_for(ps.header);
    Bytes data(expected);
    const size_t n = ZSTD_decompress(data.data(), data.size(), ps.sections[0].data(), ps.sections[0].size());
    if (ZSTD_isError(n) || n != expected)
      throw CorruptStream(fmt::format("corrupt KV bitstream at byte {}: zstd frame does not decode to {} bytes",
                                      kHeaderBytes + 4, expected));
    values_from_dtype_bytes(data, out, "zstd values");
    return out;
  }
};

class Quant8Codec final : public Codec {
 public:
  std::string name() const override { return "quant8"; }
  std::string params() const override { return "group=layer,kind,token;scale=fp32"; }
  int levels() const override { return 1; }
  std::string level_name(int) const override { return "int8"; }

  Bytes encode_chunk(const KVChunk& chunk, int level) const override {
    if (level != 0) throw Error(fmt::format("codec quant8: level {} out of range (1 level)", level));
    const KVShape& s = chunk.shape;
    Bytes scales, data(chunk.values.size());
    for (uint32_t l = 0; l < s.layers; ++l)
      for (Kind k : {Kind::kKey, Kind::kValue})
        for (uint32_t t = 0; t < chunk.tokens; ++t) {
          float max = 0;
          for (uint32_t h = 0; h < s.kv_heads; ++h)
            for (uint32_t d = 0; d < s.head_dim; ++d) {
              const float x = chunk.at(l, k, h, t, d);
              // An infinite scale would make a stream the decoder refuses, and
              // a NaN would silently decode as 0: refuse both here.
              if (!std::isfinite(x))
                throw Error(fmt::format("codec quant8: layer {} {} token {} holds {}, not a finite value; use raw or "
                                        "zstd for such a cache",
                                        l, k == Kind::kKey ? "K" : "V", chunk.token_begin + t, x));
              max = std::max(max, std::fabs(x));
            }
          put_f32(scales, max);
          // q = round(x * (127 / max)), as CacheGen's torch_quant; where
          // 127 / max overflows (max below 127 / FLT_MAX, fp32 caches only),
          // round(x * 127 / max) instead, which keeps q in -127..127.
          const float inv = max > 0 ? 127.0f / max : 0.0f;
          const bool tiny = !std::isfinite(inv);
          for (uint32_t h = 0; h < s.kv_heads; ++h)
            for (uint32_t d = 0; d < s.head_dim; ++d) {
              const size_t i = size_t(&chunk.at(l, k, h, t, d) - chunk.values.data());
              const float v = tiny ? chunk.values[i] * 127.0f / max : chunk.values[i] * inv;
              data[i] = uint8_t(int8_t(std::lrint(v)));
            }
        }
    return write_stream(header_for(chunk, CodecId::kQuant8, 0), {scales, data});
  }

  KVChunk decode(std::span<const uint8_t> stream) const override {
    const ParsedStream ps = parse_stream(stream, CodecId::kQuant8);
    if (ps.sections.size() != 2) throw CorruptStream("corrupt KV bitstream: quant8 expects 2 sections");
    const StreamHeader& hd = ps.header;
    if (ps.sections[0].size() != 4ull * 2 * hd.shape.layers * hd.tokens || ps.sections[1].size() != hd.elements())
      throw CorruptStream("corrupt KV bitstream: quant8 section sizes do not match the shape");
    KVChunk out = chunk_for(hd);
    const KVShape& s = out.shape;
    SectionReader scales(ps.sections[0], "quant8 scales");
    const uint8_t* q = ps.sections[1].data();
    for (uint32_t l = 0; l < s.layers; ++l)
      for (Kind k : {Kind::kKey, Kind::kValue})
        for (uint32_t t = 0; t < out.tokens; ++t) {
          const float max = scales.f32();
          if (!std::isfinite(max) || max < 0) throw CorruptStream("corrupt KV bitstream: quant8 scale not finite");
          const float step = max / 127.0f;
          for (uint32_t h = 0; h < s.kv_heads; ++h)
            for (uint32_t d = 0; d < s.head_dim; ++d) {
              float& v = out.at(l, k, h, t, d);
              v = float(int8_t(q[&v - out.values.data()])) * step;
            }
        }
    return out;
  }
};

}  // namespace

std::unique_ptr<Codec> make_raw_codec(const CodecOptions& options) {
  check_params("raw", options.params, {});
  return std::make_unique<RawCodec>();
}

std::unique_ptr<Codec> make_zstd_codec(const CodecOptions& options) {
  check_params("zstd", options.params, {});
  return std::make_unique<ZstdCodec>();
}

std::unique_ptr<Codec> make_quant8_codec(const CodecOptions& options) {
  check_params("quant8", options.params, {});
  return std::make_unique<Quant8Codec>();
}

}  // namespace kvs::codec
