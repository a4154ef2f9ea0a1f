#include "codec/cachegen.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include <fmt/core.h>

#include "codec/baselines.h"
#include "codec/bitstream.h"
#include "codec/cachegen_core.h"
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

using cachegen_core::kHalfMax;
using cachegen_core::round_up_scale;  // KVS_HD: the GPU encoder's too

// max(0, |x| over the non-NaN x of row[0..n)): the same value as folding
// std::max(max, std::fabs(x)) in order (max ignores NaN and is associative
// otherwise), with four independent accumulators so the loop does not wait on
// one dependency chain.
float abs_max(const float* row, uint32_t n) {
  float m[4] = {0, 0, 0, 0};
  uint32_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (uint32_t j = 0; j < 4; ++j) m[j] = cachegen_core::abs_max_fold(m[j], row[i + j]);
  for (; i < n; ++i) m[0] = cachegen_core::abs_max_fold(m[0], row[i]);
  return std::max(std::max(m[0], m[1]), std::max(m[2], m[3]));
}

// Quantizer symbols of one row (cachegen_core::quantize_symbol, which a GPU
// encoder runs too): q = clamp(lrint(x * M / scale) + M, 0, 2M).
void quantize_row(const float* row, uint32_t n, float scale, int M, uint8_t* out) {
  if (!(scale > 0)) {
    std::fill(out, out + n, uint8_t(M));
    return;
  }
  for (uint32_t i = 0; i < n; ++i) out[i] = cachegen_core::quantize_symbol(row[i], M, scale);
}

// counts[s] = occurrences of s (< nsym) among column[0], column[stride], ...
// (n of them). Four partial histograms, so that runs of one symbol (the
// common case) do not serialize on incrementing the same counter.
void count_symbols(const uint8_t* column, uint32_t n, size_t stride, uint32_t nsym, uint32_t counts[rans::kMaxSymbols]) {
  uint32_t part[4][rans::kMaxSymbols];
  for (auto& p : part) std::fill(p, p + nsym, 0u);
  uint32_t t = 0;
  for (; t + 4 <= n; t += 4)
    for (uint32_t j = 0; j < 4; ++j) ++part[j][column[(t + j) * stride]];
  for (; t < n; ++t) ++part[0][column[t * stride]];
  for (uint32_t s = 0; s < nsym; ++s) counts[s] = part[0][s] + part[1][s] + part[2][s] + part[3][s];
}

// Streams encoded and decoded side by side (channels c .. c + kLanes - 1):
// independent rANS chains that one core overlaps.
constexpr uint32_t kLanes = 4;

// Encodes tokens [0, n) of Lanes consecutive channels: channel j's symbol of
// token t is rows[t * stride + j]. Stream j is written at the end of
// buffer[j * capacity, (j + 1) * capacity), written[j] bytes long.
template <uint32_t Lanes>
void encode_block(const uint8_t* rows, size_t stride, uint32_t n, const rans::EncodeTable* tables, uint8_t* buffer,
                  size_t capacity, size_t written[]) {
  rans::Encoder enc[Lanes];
  for (uint32_t j = 0; j < Lanes; ++j) rans::encoder_init(buffer + j * capacity, capacity, &enc[j]);
  for (uint32_t i = n; i-- > 0;) {
    const uint8_t* row = rows + size_t(i) * stride;
#pragma GCC unroll 8  // unrolled, each lane's state stays in registers
    for (uint32_t j = 0; j < Lanes; ++j)
      if (!rans::encode_step(&enc[j], tables[j].sym[row[j]]))
        throw Error("codec cachegen: internal error: rANS buffer too small");
  }
  for (uint32_t j = 0; j < Lanes; ++j) {
    written[j] = rans::encoder_finish(&enc[j], capacity);
    if (written[j] == 0) throw Error("codec cachegen: internal error: rANS buffer too small");
  }
}

struct ChannelTable {
  rans::Table table;
  rans::SymbolIndex index;
};

// One block of tokens [token0, token0 + n) of up to kLanes consecutive channels.
struct BlockJob {
  const ParsedStream* ps;
  size_t section;              // the first channel's stream; the next channel's is `blocks` later
  uint32_t blocks;             // streams per channel
  uint32_t n;                  // tokens in the block
  const ChannelTable* tables;  // one per channel
  const float* values;         // [token - token0][symbol]: dequantized values
  uint32_t nsym;
  float* dst[kLanes] = {};     // each channel's value at token0
  uint32_t stride;             // floats from one token to the next in dst
};

[[noreturn]] void stream_error(const BlockJob& job, uint32_t lane, const char* what) {
  throw CorruptStream(
      fmt::format("corrupt KV bitstream: cachegen stream {} {}", job.section + lane * size_t(job.blocks), what));
}

// Decodes the first Lanes channels of `job`, their streams stepped side by
// side (cachegen_core::decode_streams, the code a GPU thread runs).
template <uint32_t Lanes>
void decode_block(const BlockJob& job) {
  const uint8_t* data[Lanes];
  size_t size[Lanes];
  const rans::Table* table[Lanes];
  const rans::SymbolIndex* index[Lanes];
  for (uint32_t j = 0; j < Lanes; ++j) {
    const auto sec = job.ps->sections[job.section + j * size_t(job.blocks)];
    data[j] = sec.data();
    size[j] = sec.size();
    table[j] = &job.tables[j].table;
    index[j] = &job.tables[j].index;
  }
  uint32_t lane = 0;
  const auto fault = cachegen_core::decode_streams<Lanes>(
      data, size, table, index, job.n,
      [&](uint32_t, uint32_t i, uint32_t sym) { return job.values[size_t(i) * job.nsym + sym]; },
      [&](uint32_t j, uint32_t i, float v) { job.dst[j][size_t(i) * job.stride] = v; }, &lane);
  switch (fault) {
    case cachegen_core::Fault::kNone: return;
    case cachegen_core::Fault::kBadInitialState: stream_error(job, lane, "has a bad initial state");
    case cachegen_core::Fault::kTruncated: stream_error(job, lane, "is truncated");
    case cachegen_core::Fault::kDoesNotDecode: stream_error(job, lane, "does not decode");
  }
}

class CacheGenCodec final : public Codec {
 public:
  // `paper` (may be null) decodes scheme=paper streams (those naming a codec model).
  CacheGenCodec(uint32_t stream_tokens, std::unique_ptr<Codec> paper)
      : stream_tokens_(stream_tokens), paper_(std::move(paper)) {}
  std::string name() const override { return "cachegen"; }
  std::string params() const override { return fmt::format("scheme=code,stream_tokens={}", stream_tokens_); }
  int levels() const override { return kCacheGenLevels; }

  Bytes encode_chunk(const KVChunk& chunk, int level) const override {
    if (level < 0 || level >= kCacheGenLevels)
      throw Error(fmt::format("codec cachegen: level {} out of range (0..{})", level, kCacheGenLevels - 1));
    const KVShape& s = chunk.shape;
    const uint32_t T = chunk.tokens, C = uint32_t(s.channels()), D = s.head_dim;
    const uint32_t blocks = (T + stream_tokens_ - 1) / stream_tokens_;
    Bytes scales, tables, payload;  // payload: every rANS stream, back to back
    std::vector<uint32_t> stream_sizes;
    stream_sizes.reserve(2ull * s.layers * C * blocks);
    payload.reserve(chunk.values.size() / 2);
    // Symbols of one (layer, kind) as [token][channel], rows `row` bytes apart:
    // channels are read down a column, and a row length of an odd number of
    // cache lines spreads a column over every L1 set (C = 1024 would put it
    // in 4 of 64 sets and miss L1 on every read).
    const size_t row = ((size_t(C) + 63) / 64 | 1) * 64;
    std::vector<uint8_t> symbols(row * T);
    std::vector<float> max(T), scale(T);
    const size_t capacity = 4 + 2 * size_t(stream_tokens_) + 16;  // per stream: worst case 4 + 2 * tokens
    std::vector<uint8_t> buffer(kLanes * capacity);
    std::vector<rans::EncodeTable> etables(kLanes);
    Bytes lane_streams[kLanes];  // a channel group's streams, until they are appended in section order
    std::vector<uint32_t> lane_sizes[kLanes];
    for (uint32_t l = 0; l < s.layers; ++l)
      for (Kind k : {Kind::kKey, Kind::kValue}) {
        const int bins = cachegen_bins(level, k, l, s.layers);
        const int M = bins / 2 - 1, nsym = 2 * M + 1;
        const float* plane = chunk.plane(l, k).data();  // [head][token][dim]
        std::fill(max.begin(), max.end(), 0.0f);
        for (uint32_t h = 0; h < s.kv_heads; ++h)
          for (uint32_t t = 0; t < T; ++t) max[t] = std::max(max[t], abs_max(plane + (size_t(h) * T + t) * D, D));
        for (uint32_t t = 0; t < T; ++t) {
          // The scale travels as fp16 (as in the released code): a token whose
          // largest |x| fp16 cannot carry would make an undecodable stream.
          if (!(max[t] <= kHalfMax))
            throw Error(fmt::format("cachegen: layer {} {} token {} has |x| = {} (or not finite), beyond {}, the "
                                    "largest per-token scale fp16 carries; use raw or zstd for such a cache",
                                    l, k == Kind::kKey ? "K" : "V", chunk.token_begin + t, max[t], kHalfMax));
          scale[t] = round_up_scale(max[t]);
          put_u16(scales, float_to_half_bits(scale[t]));
        }
        for (uint32_t h = 0; h < s.kv_heads; ++h)
          for (uint32_t t = 0; t < T; ++t)
            quantize_row(plane + (size_t(h) * T + t) * D, D, scale[t], M, &symbols[size_t(t) * row + size_t(h) * D]);
        for (uint32_t c0 = 0; c0 < C;) {
          const uint32_t lanes = C - c0 >= kLanes ? kLanes : 1;
          for (uint32_t j = 0; j < lanes; ++j) {
            uint32_t counts[rans::kMaxSymbols];
            count_symbols(&symbols[c0 + j], T, row, uint32_t(nsym), counts);
            rans::Table table;
            rans::build_table(counts, uint32_t(nsym), &table);
            for (int q = 0; q < nsym; ++q) put_u16(tables, uint16_t(table.freq[q]));
            rans::build_encode_table(table, &etables[j]);
          }
          for (uint32_t b = 0; b < T; b += stream_tokens_) {
            const uint32_t n = std::min(stream_tokens_, T - b);
            size_t written[kLanes];
            if (lanes == kLanes)
              encode_block<kLanes>(&symbols[size_t(b) * row + c0], row, n, etables.data(), buffer.data(), capacity, written);
            else
              encode_block<1>(&symbols[size_t(b) * row + c0], row, n, etables.data(), buffer.data(), capacity, written);
            for (uint32_t j = 0; j < lanes; ++j) {
              const uint8_t* end = buffer.data() + (j + 1) * capacity;
              lane_streams[j].insert(lane_streams[j].end(), end - written[j], end);
              lane_sizes[j].push_back(uint32_t(written[j]));
            }
          }
          for (uint32_t j = 0; j < lanes; ++j) {  // sections go channel by channel
            payload.insert(payload.end(), lane_streams[j].begin(), lane_streams[j].end());
            stream_sizes.insert(stream_sizes.end(), lane_sizes[j].begin(), lane_sizes[j].end());
            lane_streams[j].clear();
            lane_sizes[j].clear();
          }
          c0 += lanes;
        }
      }
    std::vector<std::span<const uint8_t>> sections;
    sections.reserve(2 + stream_sizes.size());
    sections.emplace_back(scales);
    sections.emplace_back(tables);
    size_t offset = 0;
    for (uint32_t size : stream_sizes) {
      sections.emplace_back(payload.data() + offset, size);
      offset += size;
    }
    StreamHeader header = header_for(chunk, CodecId::kCacheGen, level);
    header.flags = uint16_t(stream_tokens_);
    return write_stream(header, sections);
  }

  KVChunk decode(std::span<const uint8_t> stream) const override {
    KVChunk out;
    decode_into(stream, out);
    return out;
  }

  // Per layer: its scales, its frequency tables and its rANS streams (with
  // their offset-table entries).
  std::vector<double> layer_shares(std::span<const uint8_t> stream) const override {
    if (stream_model_hash(stream) != 0) return cachegen_paper_layer_shares(stream);
    const ParsedStream ps = parse_stream(stream, CodecId::kCacheGen);
    check_cachegen_stream(ps);
    const StreamHeader& hd = ps.header;
    const KVShape& s = hd.shape;
    const uint64_t T = hd.tokens, C = s.channels(), blocks = (T + hd.flags - 1) / hd.flags;
    std::vector<double> bytes(s.layers, 0.0);
    size_t section = 2;
    for (uint32_t l = 0; l < s.layers; ++l)
      for (Kind k : {Kind::kKey, Kind::kValue}) {
        const int bins = cachegen_bins(hd.level, k, l, s.layers);
        bytes[l] += double(2 * T + 2 * C * uint64_t(2 * (bins / 2 - 1) + 1));  // fp16 scales, u16 tables
        for (uint64_t i = 0; i < C * blocks; ++i) bytes[l] += double(ps.sections[section++].size() + 4);
      }
    return layer_shares_from_bytes(stream.size(), std::move(bytes));
  }

  // Every value of `out` is written (each channel's streams cover all its
  // tokens), so a reused chunk is not cleared first.
  void decode_into(std::span<const uint8_t> stream, KVChunk& out) const override {
    if (const uint64_t hash = stream_model_hash(stream); hash != 0) {
      if (!paper_)
        throw CorruptStream(fmt::format("codec cachegen: the stream uses the paper scheme with codec model {:016x}; give that "
                                "codec model file (--codec-model)", hash));
      paper_->decode_into(stream, out);
      return;
    }
    const ParsedStream ps = parse_stream(stream, CodecId::kCacheGen);
    check_cachegen_stream(ps);
    const StreamHeader& hd = ps.header;
    const uint32_t stream_tokens = hd.flags;
    const KVShape& s = hd.shape;
    const uint32_t T = hd.tokens, C = uint32_t(s.channels()), D = s.head_dim;
    const uint32_t blocks = (T + stream_tokens - 1) / stream_tokens;
    reshape_for(hd, out);
    SectionReader scales(ps.sections[0], "cachegen scales");
    SectionReader tables(ps.sections[1], "cachegen tables");
    std::vector<float> scale(T);
    std::vector<float> values;  // [token][symbol]: the dequantized value of each symbol at each token
    std::vector<ChannelTable> lane_tables(kLanes);
    size_t first_section = 2;  // of the current (layer, kind)
    for (uint32_t l = 0; l < s.layers; ++l)
      for (Kind k : {Kind::kKey, Kind::kValue}) {
        const int bins = cachegen_bins(hd.level, k, l, s.layers);
        const int M = bins / 2 - 1, nsym = 2 * M + 1;
        const auto scale_bits = scales.bytes(2 * size_t(T));  // fp16 each
        for (uint32_t t = 0; t < T; ++t) {
          scale[t] = half_bits_to_float(uint16_t(scale_bits[2 * t] | scale_bits[2 * t + 1] << 8));
          if (!std::isfinite(scale[t]) || scale[t] < 0) throw CorruptStream("corrupt KV bitstream: cachegen scale not finite");
        }
        // x' = (q - M) * scale / M, evaluated exactly as written, once per
        // (token, symbol) rather than per element. The table covers every
        // token unless it would be larger than the plane (fewer channels
        // than symbols: toy shapes); then it is refilled per block, so a
        // hostile header cannot make it grow beyond the output or
        // stream_tokens x nsym floats.
        const bool per_block = uint64_t(nsym) > C;
        auto fill_values = [&](uint32_t token0, uint32_t n) {
          values.resize(size_t(n) * nsym);
          for (uint32_t t = 0; t < n; ++t) {
            const float sc = scale[token0 + t];
            for (int q = 0; q < nsym; ++q) values[size_t(t) * nsym + q] = cachegen_core::dequantize(q, M, sc);
          }
        };
        if (!per_block) fill_values(0, T);
        float* plane = out.plane(l, k).data();  // [head][token][dim]
        for (uint32_t c0 = 0; c0 < C;) {
          const uint32_t lanes = C - c0 >= kLanes ? kLanes : 1;
          for (uint32_t j = 0; j < lanes; ++j) {
            const auto freq = tables.bytes(2 * size_t(nsym));  // u16 each
            if (!cachegen_core::load_table(freq.data(), uint32_t(nsym), &lane_tables[j].table, &lane_tables[j].index))
              throw CorruptStream("corrupt KV bitstream: cachegen frequency table invalid");
          }
          for (uint32_t b = 0; b < blocks; ++b) {
            const uint32_t token0 = b * stream_tokens, n = std::min(stream_tokens, T - token0);
            if (per_block) fill_values(token0, n);
            BlockJob job{&ps, first_section + size_t(c0) * blocks + b, blocks, n, lane_tables.data(),
                         values.data() + (per_block ? 0 : size_t(token0) * nsym), uint32_t(nsym), {}, D};
            for (uint32_t j = 0; j < lanes; ++j)
              job.dst[j] = plane + (size_t((c0 + j) / D) * T + token0) * D + (c0 + j) % D;
            if (lanes == kLanes)
              decode_block<kLanes>(job);
            else
              decode_block<1>(job);
          }
          c0 += lanes;
        }
        first_section += size_t(C) * blocks;
      }
    tables.expect_end();
  }

 private:
  uint32_t stream_tokens_;
  std::unique_ptr<Codec> paper_;
};

}  // namespace

namespace {

// check_cachegen_stream's checks over `count` sections, section i of size_of(i) bytes.
template <class SizeOf>
void check_cachegen_sections(const StreamHeader& hd, size_t count, SizeOf size_of) {
  if (hd.level >= kCacheGenLevels) throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen level {}", hd.level));
  const uint32_t stream_tokens = hd.flags;
  if (stream_tokens == 0) throw CorruptStream("corrupt KV bitstream: cachegen stream_tokens 0");
  const KVShape& s = hd.shape;
  const uint32_t T = hd.tokens, C = uint32_t(s.channels());
  const uint32_t blocks = (T + stream_tokens - 1) / stream_tokens;
  if (count != 2 + 2ull * s.layers * C * blocks)
    throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen has {} sections, expected {}", count,
                                    2 + 2ull * s.layers * C * blocks));
  if (size_of(0) != 2ull * 2 * s.layers * T)
    throw CorruptStream("corrupt KV bitstream: cachegen scales do not match the shape");
  uint64_t table_bytes = 0;
  for (uint32_t l = 0; l < s.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue}) {
      const int bins = cachegen_bins(hd.level, k, l, s.layers);
      table_bytes += 2ull * C * uint64_t(2 * (bins / 2 - 1) + 1);  // nsym u16 per channel
    }
  if (size_of(1) != table_bytes)
    throw CorruptStream("corrupt KV bitstream: cachegen tables do not match the shape");
  for (size_t i = 2; i < count; ++i)
    if (size_of(i) < 4)
      throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen stream {} is shorter than a rANS state", i));
}

}  // namespace

void check_cachegen_stream(const ParsedStream& ps) {
  check_cachegen_sections(ps.header, ps.sections.size(), [&](size_t i) -> uint64_t { return ps.sections[i].size(); });
}

void check_cachegen_offsets(const StreamHeader& header, std::span<const uint32_t> offsets) {
  check_cachegen_sections(header, offsets.size() - 1,
                          [&](size_t i) -> uint64_t { return uint64_t(offsets[i + 1] - offsets[i]); });
}

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
