#include "codec/cachegen.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include <fmt/core.h>

#include "codec/baselines.h"
#include "codec/bitstream.h"
#include "codec/cachegen_paper.h"
#include "codec/rans.h"

namespace kvs::codec {

namespace {

struct LevelBins {
  int key[3];
  int value[2];
};
constexpr LevelBins kLadder[kCacheGenLevels] = {
    {{64, 64, 64}, {64, 64}}, {{32, 32, 32}, {32, 32}}, {{32, 16, 16}, {32, 16}}, {{16, 16, 12}, {16, 12}},
    {{12, 8, 8}, {12, 8}},    {{8, 6, 6}, {8, 6}},      {{6, 4, 4}, {6, 4}},
};

// fp16 value >= max (so |x| <= scale for every x of the token).
float round_up_scale(float max) {
  if (!(max > 0)) return 0.0f;
  uint16_t h = float_to_half_bits(max);
  if (half_bits_to_float(h) < max) ++h;
  return half_bits_to_float(h);
}

class CacheGenCodec final : public Codec {
 public:
  // `paper` (may be null) decodes scheme=paper streams (those naming a codec model).
  CacheGenCodec(uint32_t stream_tokens, std::unique_ptr<Codec> paper)
      : stream_tokens_(stream_tokens), paper_(std::move(paper)) {}
  std::string name() const override { return "cachegen"; }
  std::string params() const override { return fmt::format("scheme=code,stream_tokens={}", stream_tokens_); }
  int levels() const override { return kCacheGenLevels; }

  Bytes encode(const KVChunk& chunk, int level) const override {
    if (level < 0 || level >= kCacheGenLevels)
      throw Error(fmt::format("codec cachegen: level {} out of range (0..{})", level, kCacheGenLevels - 1));
    const KVShape& s = chunk.shape;
    const uint32_t T = chunk.tokens, C = uint32_t(s.channels());
    Bytes scales, tables;
    std::vector<Bytes> streams;
    std::vector<uint8_t> symbols(size_t(C) * T);
    std::vector<float> scale(T);
    std::vector<uint8_t> buffer(4 + 2 * size_t(stream_tokens_) + 16);
    for (uint32_t l = 0; l < s.layers; ++l)
      for (Kind k : {Kind::kKey, Kind::kValue}) {
        const int bins = cachegen_bins(level, k, l, s.layers);
        const int M = bins / 2 - 1, nsym = 2 * M + 1;
        for (uint32_t t = 0; t < T; ++t) {
          float max = 0;
          for (uint32_t h = 0; h < s.kv_heads; ++h)
            for (uint32_t d = 0; d < s.head_dim; ++d) max = std::max(max, std::fabs(chunk.at(l, k, h, t, d)));
          scale[t] = round_up_scale(max);
          put_u16(scales, float_to_half_bits(scale[t]));
        }
        for (uint32_t h = 0; h < s.kv_heads; ++h)
          for (uint32_t t = 0; t < T; ++t) {
            for (uint32_t d = 0; d < s.head_dim; ++d) {
              // q = round(x * M / max) + M, computed exactly as written (a reference can repeat it).
              const long q = scale[t] > 0 ? std::lrint(chunk.at(l, k, h, t, d) * float(M) / scale[t]) + M : M;
              symbols[size_t(h * s.head_dim + d) * T + t] = uint8_t(std::clamp<long>(q, 0, nsym - 1));
            }
          }
        for (uint32_t c = 0; c < C; ++c) {
          const uint8_t* sym = &symbols[size_t(c) * T];
          uint32_t counts[rans::kMaxSymbols] = {};
          for (uint32_t t = 0; t < T; ++t) ++counts[sym[t]];
          rans::Table table;
          rans::build_table(counts, uint32_t(nsym), &table);
          for (int q = 0; q < nsym; ++q) put_u16(tables, uint16_t(table.freq[q]));
          for (uint32_t b = 0; b < T; b += stream_tokens_) {
            const uint32_t n = std::min(stream_tokens_, T - b);
            const size_t written = rans::encode(sym + b, n, table, buffer.data(), buffer.size());
            if (written == 0) throw Error("codec cachegen: internal error: rANS buffer too small");
            streams.emplace_back(buffer.end() - ptrdiff_t(written), buffer.end());
          }
        }
      }
    std::vector<Bytes> sections;
    sections.reserve(2 + streams.size());
    sections.push_back(std::move(scales));
    sections.push_back(std::move(tables));
    for (auto& st : streams) sections.push_back(std::move(st));
    StreamHeader header = header_for(chunk, CodecId::kCacheGen, level);
    header.flags = uint16_t(stream_tokens_);
    return write_stream(header, sections);
  }

  KVChunk decode(std::span<const uint8_t> stream) const override {
    if (const uint64_t hash = stream_model_hash(stream); hash != 0) {
      if (!paper_)
        throw CorruptStream(fmt::format("codec cachegen: the stream uses the paper scheme with codec model {:016x}; give that "
                                "codec model file (--codec-model)", hash));
      return paper_->decode(stream);
    }
    const ParsedStream ps = parse_stream(stream, CodecId::kCacheGen);
    const StreamHeader& hd = ps.header;
    if (hd.level >= kCacheGenLevels) throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen level {}", hd.level));
    const uint32_t stream_tokens = hd.flags;
    if (stream_tokens == 0) throw CorruptStream("corrupt KV bitstream: cachegen stream_tokens 0");
    const KVShape& s = hd.shape;
    const uint32_t T = hd.tokens, C = uint32_t(s.channels());
    const uint64_t blocks = (T + stream_tokens - 1) / stream_tokens;
    if (ps.sections.size() != 2 + 2ull * s.layers * C * blocks)
      throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen has {} sections, expected {}", ps.sections.size(),
                                      2 + 2ull * s.layers * C * blocks));
    KVChunk out = chunk_for(hd);
    SectionReader scales(ps.sections[0], "cachegen scales");
    SectionReader tables(ps.sections[1], "cachegen tables");
    if (scales.remaining() != 2ull * 2 * s.layers * T)
      throw CorruptStream("corrupt KV bitstream: cachegen scales do not match the shape");
    std::vector<float> scale(T);
    std::vector<uint8_t> symbols(stream_tokens);
    size_t next = 2;
    for (uint32_t l = 0; l < s.layers; ++l)
      for (Kind k : {Kind::kKey, Kind::kValue}) {
        const int bins = cachegen_bins(hd.level, k, l, s.layers);
        const int M = bins / 2 - 1, nsym = 2 * M + 1;
        for (uint32_t t = 0; t < T; ++t) {
          scale[t] = half_bits_to_float(scales.u16());
          if (!std::isfinite(scale[t]) || scale[t] < 0) throw CorruptStream("corrupt KV bitstream: cachegen scale not finite");
        }
        for (uint32_t c = 0; c < C; ++c) {
          rans::Table table;
          table.symbols = uint32_t(nsym);
          for (int q = 0; q < nsym; ++q) table.freq[q] = tables.u16();
          if (!rans::finish_table(&table)) throw CorruptStream("corrupt KV bitstream: cachegen frequency table invalid");
          const uint32_t h = c / s.head_dim, d = c % s.head_dim;
          for (uint32_t b = 0; b < T; b += stream_tokens) {
            const uint32_t n = std::min(stream_tokens, T - b);
            const auto sec = ps.sections[next++];
            if (rans::decode(sec.data(), sec.size(), table, symbols.data(), n) != rans::DecodeStatus::kOk)
              throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen stream {} does not decode", next - 1));
            for (uint32_t i = 0; i < n; ++i) {
              const uint32_t t = b + i;
              out.at(l, k, h, t, d) = scale[t] > 0 ? float(int(symbols[i]) - M) * scale[t] / float(M) : 0.0f;
            }
          }
        }
      }
    tables.expect_end();
    return out;
  }

 private:
  uint32_t stream_tokens_;
  std::unique_ptr<Codec> paper_;
};

}  // namespace

int cachegen_bins(int level, Kind kind, uint32_t layer, uint32_t layers) {
  const LevelBins& lb = kLadder[level];
  if (kind == Kind::kKey) {
    // Thirds of the depth, as [0,10) / [10,20) / [20,32) for 32 layers.
    const uint32_t first = (layers * 10 + 31) / 32, second = (layers * 20 + 31) / 32;
    return lb.key[layer < first ? 0 : layer < second ? 1 : 2];
  }
  const uint32_t first = std::max<uint32_t>(1, (layers * 2 + 31) / 32);  // [0,2) of 32
  return lb.value[layer < first ? 0 : 1];
}

std::unique_ptr<Codec> make_cachegen_codec(const CodecOptions& options) {
  const auto scheme = options.params.find("scheme");
  if (scheme != options.params.end() && scheme->second == "paper") return make_cachegen_paper_codec(options);
  if (scheme != options.params.end() && scheme->second != "code")
    throw Error(fmt::format("codec cachegen: scheme '{}' is unknown (expected 'code', the released code's scheme, or "
                            "'paper')",
                            scheme->second));
  check_params("cachegen", options.params, {"stream_tokens", "scheme"});
  uint32_t stream_tokens = 256;
  if (auto it = options.params.find("stream_tokens"); it != options.params.end()) {
    const std::string& v = it->second;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), stream_tokens);
    if (ec != std::errc() || p != v.data() + v.size() || stream_tokens == 0 || stream_tokens > 65535)
      throw Error(fmt::format("codec cachegen: stream_tokens: expected an integer in 1..65535, got '{}'", v));
  }
  // With a codec model file, scheme=code also decodes scheme=paper streams (`kvstream decode --codec-model`).
  std::unique_ptr<Codec> paper;
  if (!options.model_file.empty()) paper = make_cachegen_paper_codec({{{"scheme", "paper"}}, options.model_file});
  return std::make_unique<CacheGenCodec>(stream_tokens, std::move(paper));
}

}  // namespace kvs::codec
