// `cachegen` scheme "paper" (codec/cachegen_paper.h): anchors and deltas,
// static per-(layer, kind, channel) tables from a codec model file.
#include "codec/cachegen_paper.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <fmt/core.h>

#include "base/error.h"
#include "base/files.h"
#include "codec/baselines.h"
#include "codec/bitstream.h"
#include "codec/cachegen.h"
#include "codec/cachegen_paper_core.h"
#include "codec/cachegen_paper_encode_core.h"
#include "codec/rans.h"

namespace kvs::codec {

namespace {

// Delta bins per level and depth group (first, middle, last third).
constexpr int kBins[kCacheGenLevels][3] = {
    {64, 64, 64}, {32, 32, 32}, {32, 16, 16}, {16, 16, 12}, {12, 8, 8}, {8, 6, 6}, {6, 4, 4},
};

constexpr uint32_t kModelMagic = 0x4D43564Bu;  // "KVCM"
constexpr uint16_t kModelVersion = 1;
constexpr uint8_t kSchemePaper = 1;
constexpr size_t kModelHeaderBytes = 56;
constexpr uint32_t kAnchorSymbols = 2 * kPaperAnchorM + 2;  // 255 in range + escape
constexpr uint32_t kAnchorEscape = kAnchorSymbols - 1;

// ---- quantizers (shared by training, encoder and decoder) ----

// The quantizers and the rANS coding of a substream: KVS_HD functions the
// GPU encoder runs too (codec/cachegen_paper_encode_core.h).
using cachegen_paper_core::anchor_symbol;
using cachegen_paper_core::delta_symbol;
// Dequantization: the KVS_HD functions a GPU decoder runs too.
using cachegen_paper_core::anchor_value;
using cachegen_paper_core::delta_value;
static_assert(cachegen_paper_core::kAnchorEscape == kAnchorEscape && cachegen_paper_core::kAnchorM == kPaperAnchorM &&
              cachegen_paper_core::kGroupTokens == kPaperGroupTokens);

// A rans::Table from stored frequencies (validated when the model was parsed).
void fill_table(std::span<const uint16_t> freqs, rans::Table* t) {
  t->symbols = uint32_t(freqs.size());
  for (size_t s = 0; s < freqs.size(); ++s) t->freq[s] = freqs[s];
  rans::finish_table(t);
}

// The tables and steps of one (layer, kind, head) at a level, channel by
// channel, as the encoder uses them.
struct HeadCoding {
  explicit HeadCoding(uint32_t head_dim) : tables(2 * size_t(head_dim)), step_a(head_dim), step_d(head_dim) {}
  void load(const CacheGenPaperModel& m, uint32_t l, Kind k, uint32_t h, int level) {
    const uint32_t D = uint32_t(step_a.size());
    for (uint32_t d = 0; d < D; ++d) {
      const size_t r = m.record(l, k, h * D + d);
      fill_table(m.anchor_table(r), &tables[d]);
      fill_table(m.delta_table(r, level), &tables[D + d]);
      step_a[d] = m.anchor_step(r);
      step_d[d] = m.delta_step(r, level, l);
    }
  }
  std::vector<rans::Table> tables;  // [d]: anchor, [D + d]: delta at this level
  std::vector<float> step_a, step_d;
};

// What the decoder reads for one channel of one substream: its steps, the
// anchor it decoded last, its anchor table (built once per codec:
// CacheGenPaperCodec::anchors_) and its delta table at the stream's level in
// packed form (codec/rans.h: few cache lines per symbol, so that a row of
// many channels' tables stays in cache; built per chunk in one pass over the
// model's frequencies, which the parser has validated). The fields a delta
// symbol reads come first.
struct ChannelDecoding {
  float step_d = 0;
  float anchor_value = 0;  // decoded anchor of the current group
  float step_a = 0;
  const rans::CumTable* anchor = nullptr;
  rans::BasicPackedTable<64> delta;  // at most 64 delta bins (level 0)

  const rans::CumTable& anchor_table() const { return *anchor; }
  const rans::BasicPackedTable<64>& delta_table() const { return delta; }

  void load(const CacheGenPaperModel& m, const rans::CumTable* anchors, size_t record, int level, uint32_t layer) {
    const auto d = m.delta_table(record, level);
    // Cannot fail: the parser checked every table (2 to 64 symbols, each
    // frequency >= 1, sum 2^16).
    rans::build_packed(d.data(), uint32_t(d.size()), &delta);
    anchor = anchors + record;
    step_a = m.anchor_step(record);
    step_d = m.delta_step(record, level, layer);
  }
};

// Substreams decoded side by side: kLanes consecutive ones, independent rANS
// chains that one core overlaps.
constexpr uint32_t kLanes = 4;

// ---- model file ----

uint64_t record_bytes(int group) {
  uint64_t b = 8 + 2ull * kAnchorSymbols;
  for (int level = 0; level < kCacheGenLevels; ++level) b += 2ull * uint64_t(kBins[level][group]);
  return b;
}

uint64_t expected_model_bytes(const KVShape& s) {
  uint64_t total = kModelHeaderBytes + 4;
  for (uint32_t l = 0; l < s.layers; ++l)
    total += 2 * s.channels() * record_bytes(cachegen_paper_depth_group(l, s.layers));
  return total;
}

uint16_t get_u16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t get_u32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
float get_f32(const uint8_t* p) {
  const uint32_t u = get_u32(p);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
void put_u64(Bytes& out, uint64_t v) {
  put_u32(out, uint32_t(v));
  put_u32(out, uint32_t(v >> 32));
}

void check_shape(const KVShape& s, const std::string& where) {
  if (s.layers == 0 || s.layers > kMaxLayers || s.kv_heads == 0 || s.kv_heads > kMaxKvHeads || s.head_dim == 0 ||
      s.head_dim > kMaxHeadDim)
    throw Error(fmt::format("{}: shape {} layers x {} kv heads x {} dims out of range (1..{}, 1..{}, 1..{})", where,
                            s.layers, s.kv_heads, s.head_dim, kMaxLayers, kMaxKvHeads, kMaxHeadDim));
}

// Decodes substreams first .. first + Lanes - 1 (section order: (layer, kind,
// head), head fastest) into `out`, stepping their rANS chains side by side
// and dequantizing each symbol as it is decoded. A substream's faults are
// reported in the order of decoding it whole and then dequantizing it (a
// stream that does not decode, then more escape symbols than escaped values,
// then fewer), but with Lanes > 1 the error thrown may be a later
// substream's: the caller then decodes them again one by one, so that the
// error reported is always the first faulty substream's.
//   channels: [d * Lanes + j] is lane j's channel d (D * Lanes of them).
template <uint32_t Lanes>
void decode_substreams(const CacheGenPaperModel& m, const rans::CumTable* anchors, const ParsedStream& ps,
                       size_t first, int level, ChannelDecoding* channels, KVChunk& out) {
  {
    // These substreams' anchor tables (records first * D .. (first + Lanes)
    // * D - 1, contiguous) are read into cache before their first row: read
    // cold, every lookup of that row would wait on memory twice. With loads
    // (one byte per line, a sequential run the hardware streams) rather than
    // a prefetch instruction per line, decoding is 3-8 % faster: the
    // prefetches (about 6,500 per group for the bench's shape) did not all
    // take effect.
    const uint8_t* p = reinterpret_cast<const uint8_t*>(anchors + first * m.shape.head_dim);
    const size_t bytes = Lanes * m.shape.head_dim * sizeof(rans::CumTable);
    uint8_t any = 0;
    for (size_t i = 0; i < bytes; i += 64) any |= p[i];
    asm volatile("" : : "r"(any));  // the loads are kept
  }
  const KVShape& s = m.shape;
  const uint32_t T = out.tokens, D = s.head_dim;
  const size_t n = size_t(T) * D;
  int M[Lanes];                   // delta symbols q + M in 0..2M, 2M + 1 the escape
  float* plane[Lanes];            // the substream's [token][dim] in `out`
  const uint8_t* escapes[Lanes];  // its escaped values, fp32 each
  uint32_t count[Lanes];
  rans::Decoder dec[Lanes];
  for (uint32_t j = 0; j < Lanes; ++j) {
    const size_t index = first + j;
    const uint32_t h = uint32_t(index % s.kv_heads), l = uint32_t(index / s.kv_heads / 2);
    const Kind k = Kind(index / s.kv_heads % 2);
    M[j] = cachegen_paper_bins(level, l, s.layers) / 2 - 1;
    plane[j] = &out.at(l, k, h, 0, 0);
    const size_t records = m.table_offset.size() / (1 + kCacheGenLevels);
    for (uint32_t d = 0; d < D; ++d) {
      const size_t r = m.record(l, k, h * D + d);
      // The model's delta tables at one level lie one per record, hundreds of
      // bytes apart (a stride the hardware does not fetch ahead): fetched 16
      // records ahead (up to 128 bytes each), so that a build does not wait.
      if (r + 16 < records) {
        const char* next = reinterpret_cast<const char*>(
            m.freqs.data() + m.table_offset[(r + 16) * (1 + kCacheGenLevels) + 1 + size_t(level)]);
        __builtin_prefetch(next);
        __builtin_prefetch(next + 64);
        __builtin_prefetch(next + 127);
      }
      channels[d * Lanes + j].load(m, anchors, r, level, l);
    }
    SectionReader reader(ps.sections[index], "cachegen paper substream");
    count[j] = reader.u32();
    if (count[j] > n)
      throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen paper substream {} has {} escapes for {} values",
                                      index, count[j], n));
    escapes[j] = reader.bytes(4 * size_t(count[j])).data();
    const auto coded = ps.sections[index].subspan(4 + 4 * size_t(count[j]));
    if (rans::decoder_init(coded.data(), coded.size(), &dec[j]) != rans::DecodeStatus::kOk)
      throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen paper substream {} does not decode", index));
  }
  // The rows: cachegen_paper_core::decode_rows, the code a GPU thread runs.
  uint32_t lane = 0, used = 0;
  const auto fault = cachegen_paper_core::decode_rows<Lanes>(
      dec, channels, M, escapes, count, T, D,
      [&](uint32_t j, uint32_t t, uint32_t d, float v) { plane[j][size_t(t) * D + d] = v; }, &lane, &used);
  switch (fault) {
    case cachegen_paper_core::Fault::kNone: return;
    case cachegen_paper_core::Fault::kDoesNotDecode:
      throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen paper substream {} does not decode", first + lane));
    case cachegen_paper_core::Fault::kTooManyEscapes:
      throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen paper substream {} has more escape "
                                      "symbols than its {} escaped values",
                                      first + lane, count[lane]));
    case cachegen_paper_core::Fault::kUnusedEscapes:
      throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen paper substream {} stores {} escaped values "
                                      "but codes {} escapes",
                                      first + lane, count[lane], used));
  }
}

// The 0.999 quantile of `mags` (reordered), at least kPaperMinRange.
float range_of(std::vector<float>& mags) {
  if (mags.empty()) return kPaperMinRange;
  const size_t k = size_t(double(kPaperRangeQuantile) * double(mags.size() - 1));
  std::nth_element(mags.begin(), mags.begin() + ptrdiff_t(k), mags.end());
  return std::max(mags[k], kPaperMinRange);
}

// ---- the codec ----

std::string shape_text(const KVShape& s) { return fmt::format("{}x{}x{}", s.layers, s.kv_heads, s.head_dim); }

class CacheGenPaperCodec final : public Codec {
 public:
  CacheGenPaperCodec(std::shared_ptr<const CacheGenPaperModel> model, std::string model_file)
      : model_(std::move(model)), model_file_(std::move(model_file)) {
    // The anchor tables do not depend on the level, so decoding looks them
    // up here instead of rebuilding a 256-symbol table per channel for every
    // chunk (where each decodes only one token in ten). 794 bytes per
    // (layer, kind, channel): 1.5x the model's anchor frequencies (13.0 MB
    // for 8 layers x 8 KV heads x 128 dims), built in about as long as the
    // model takes to parse.
    if (model_) {
      const CacheGenPaperModel& m = *model_;
      const size_t records = size_t(m.shape.layers) * 2 * m.shape.channels();
      anchors_.resize(records);
      for (size_t r = 0; r < records; ++r) {
        const auto a = m.anchor_table(r);
        rans::build_cum(a.data(), uint32_t(a.size()), &anchors_[r]);  // cannot fail: the parser checked it
      }
    }
  }

  std::string name() const override { return "cachegen"; }
  std::string params() const override {
    return model_ ? fmt::format("scheme=paper,model={:016x}", model_->hash) : "scheme=paper,model=none";
  }
  int levels() const override { return kCacheGenLevels; }
  bool needs_model() const override { return true; }
  std::string train_model(std::span<const KVChunk> samples) const override {
    return train_cachegen_paper_model(samples);
  }

  Bytes encode_chunk(const KVChunk& chunk, int level) const override {
    check_cachegen_paper_encode(chunk.shape, level, model_.get(), model_file_);
    const CacheGenPaperModel& m = *model_;
    const KVShape& s = chunk.shape;
    const uint32_t T = chunk.tokens, D = s.head_dim, G = kPaperGroupTokens;
    const size_t n = size_t(T) * D;
    HeadCoding coding(D);
    const std::vector<rans::Table>& tables = coding.tables;
    const std::vector<float>& step_a = coding.step_a;
    const std::vector<float>& step_d = coding.step_d;
    std::vector<float> anchor(D);
    std::vector<uint8_t> symbols(n), buffer(4 + 2 * n);
    std::vector<Bytes> sections;
    sections.reserve(size_t(s.layers) * 2 * s.kv_heads);
    // Per substream, the KVS_HD steps the GPU encoder's threads run
    // (codec/cachegen_paper_encode_core.h): symbols, escapes, rANS.
    for (uint32_t l = 0; l < s.layers; ++l) {
      const int M = cachegen_paper_bins(level, l, s.layers) / 2 - 1;
      for (Kind k : {Kind::kKey, Kind::kValue})
        for (uint32_t h = 0; h < s.kv_heads; ++h) {
          coding.load(m, l, k, h, level);
          const float* plane = chunk.values.data() + sections.size() * n;  // [token][dim] of substream (l, k, h)
          for (uint32_t t = 0; t < T; ++t) {
            const bool is_anchor = t % G == 0;
            for (uint32_t d = 0; d < D; ++d)
              symbols[size_t(t) * D + d] = uint8_t(cachegen_paper_core::quantize(
                  plane[size_t(t) * D + d], is_anchor, step_a[d], step_d[d], M, &anchor[d]));
          }
          const uint32_t escapes =
              cachegen_paper_core::for_each_escape(symbols.data(), T, D, M, [](uint32_t, uint32_t, uint32_t) {});
          const size_t written = cachegen_paper_core::code_symbols(
              symbols.data(), T, D,
              [&](uint32_t t, uint32_t d, uint32_t sym, uint32_t* f, uint32_t* cum) {
                cachegen_paper_core::freq_cum(t % G == 0 ? tables[d] : tables[D + d], sym, f, cum);
              },
              buffer.data(), buffer.size());
          if (written == 0) throw Error("codec cachegen: internal error: rANS buffer too small");
          Bytes sec(4 + 4 * size_t(escapes) + written);
          sec[0] = uint8_t(escapes), sec[1] = uint8_t(escapes >> 8), sec[2] = uint8_t(escapes >> 16),
          sec[3] = uint8_t(escapes >> 24);
          cachegen_paper_core::for_each_escape(symbols.data(), T, D, M, [&](uint32_t i, uint32_t t, uint32_t d) {
            cachegen_paper_core::put_escaped_value(sec.data() + 4 + 4 * size_t(i), plane[size_t(t) * D + d]);
          });
          std::memcpy(sec.data() + 4 + 4 * size_t(escapes), buffer.data() + buffer.size() - written, written);
          sections.push_back(std::move(sec));
        }
    }
    StreamHeader header = header_for(chunk, CodecId::kCacheGen, level);
    header.flags = uint16_t(G);
    header.model_hash = m.hash;
    return write_stream(header, sections);
  }

  KVChunk decode(std::span<const uint8_t> stream) const override {
    KVChunk out;
    decode_into(stream, out);
    return out;
  }

  std::vector<double> layer_shares(std::span<const uint8_t> stream) const override {
    if (stream_model_hash(stream) == 0) return make_cachegen_codec({})->layer_shares(stream);  // scheme=code
    return cachegen_paper_layer_shares(stream);
  }

  // Every value of `out` is written (each substream's rows, anchors and
  // deltas, cover its plane), so a reused chunk is not cleared first.
  void decode_into(std::span<const uint8_t> stream, KVChunk& out) const override {
    if (stream_model_hash(stream) == 0) {  // scheme=code stream
      make_cachegen_codec({})->decode_into(stream, out);
      return;
    }
    const ParsedStream ps = parse_stream(stream, CodecId::kCacheGen);
    check_cachegen_paper_stream(ps, model_.get(), model_file_);
    const StreamHeader& hd = ps.header;
    const CacheGenPaperModel& m = *model_;
    const KVShape& s = hd.shape;
    const uint64_t substreams = uint64_t(s.layers) * 2 * s.kv_heads;
    const int level = hd.level;
    const uint32_t T = hd.tokens, D = s.head_dim;
    const size_t n = size_t(T) * D;
    // Each substream's escape count and sizes, before the output is allocated.
    for (size_t index = 0; index < substreams; ++index) (void)parse_cachegen_paper_substream(ps.sections[index], index, n);
    reshape_for(hd, out);
    std::vector<ChannelDecoding> channels(size_t(kLanes) * D);
    for (size_t first = 0; first < substreams;) {
      if (substreams - first < kLanes) {
        decode_substreams<1>(m, anchors_.data(), ps, first++, level, channels.data(), out);
        continue;
      }
      try {
        decode_substreams<kLanes>(m, anchors_.data(), ps, first, level, channels.data(), out);
      } catch (const CorruptStream&) {
        for (uint32_t j = 0; j < kLanes; ++j)  // the first faulty substream's error
          decode_substreams<1>(m, anchors_.data(), ps, first + j, level, channels.data(), out);
        throw;
      }
      first += kLanes;
    }
  }

 private:
  std::shared_ptr<const CacheGenPaperModel> model_;
  std::string model_file_;
  std::vector<rans::CumTable> anchors_;  // [record]: the model's anchor tables, for decoding (empty without a model)
};

}  // namespace

int cachegen_paper_depth_group(uint32_t layer, uint32_t layers) {
  return layers == 0 ? 0 : int(std::min<uint64_t>(2, 3ull * layer / layers));
}

int cachegen_paper_bins(int level, uint32_t layer, uint32_t layers) {
  return kBins[level][cachegen_paper_depth_group(layer, layers)];
}

uint64_t fnv1a64(std::span<const uint8_t> data) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint8_t b : data) {
    h ^= b;
    h *= 0x100000001b3ull;
  }
  return h == 0 ? 1 : h;
}

float CacheGenPaperModel::delta_step(size_t record, int level, uint32_t layer) const {
  return delta_range[record] / float(cachegen_paper_bins(level, layer, shape.layers) / 2 - 1);
}

std::span<const uint16_t> CacheGenPaperModel::anchor_table(size_t record) const {
  return {freqs.data() + table_offset[record * (1 + kCacheGenLevels)], kAnchorSymbols};
}

std::span<const uint16_t> CacheGenPaperModel::delta_table(size_t record, int level) const {
  const uint32_t layer = uint32_t(record / (2 * shape.channels()));
  return {freqs.data() + table_offset[record * (1 + kCacheGenLevels) + 1 + size_t(level)],
          size_t(cachegen_paper_bins(level, layer, shape.layers))};
}

CacheGenPaperModel parse_cachegen_paper_model(std::span<const uint8_t> in, const std::string& name) {
  const auto fail = [&](size_t offset, const std::string& what) {
    throw Error(fmt::format("{}: codec model file: at byte {}: {}", name, offset, what));
  };
  if (in.size() < kModelHeaderBytes + 4)
    fail(in.size(), fmt::format("{} bytes is shorter than a header (truncated?)", in.size()));
  const uint8_t* p = in.data();
  if (get_u32(p) != kModelMagic) fail(0, "bad magic (not a kvstream codec model file)");
  if (get_u16(p + 4) != kModelVersion) fail(4, fmt::format("unsupported version {}", get_u16(p + 4)));
  if (get_u16(p + 6) != uint16_t(CodecId::kCacheGen))
    fail(6, fmt::format("codec id {}, not cachegen ({})", get_u16(p + 6), uint16_t(CodecId::kCacheGen)));
  if (p[8] != kSchemePaper) fail(8, fmt::format("scheme {}, not the paper scheme ({})", p[8], kSchemePaper));
  if (p[9] != kCacheGenLevels) fail(9, fmt::format("{} levels, expected {}", p[9], kCacheGenLevels));
  if (p[10] != kPaperGroupTokens) fail(10, fmt::format("groups of {} tokens, expected {}", p[10], kPaperGroupTokens));
  if (p[11] != kPaperAnchorM) fail(11, fmt::format("anchor range {}, expected {}", p[11], kPaperAnchorM));
  CacheGenPaperModel m;
  m.shape = {get_u32(p + 12), get_u32(p + 16), get_u32(p + 20)};
  try {
    check_shape(m.shape, "shape");
  } catch (const Error& e) {
    fail(12, e.what());
  }
  m.training_tokens = uint64_t(get_u32(p + 24)) | uint64_t(get_u32(p + 28)) << 32;
  for (int level = 0; level < kCacheGenLevels; ++level)
    for (int g = 0; g < 3; ++g)
      if (p[32 + 3 * level + g] != kBins[level][g])
        fail(size_t(32 + 3 * level + g), fmt::format("level {} depth group {} has {} bins, this codec uses {}", level,
                                                     g, p[32 + 3 * level + g], kBins[level][g]));
  const uint64_t expected = expected_model_bytes(m.shape);
  if (in.size() != expected)
    fail(in.size() < expected ? in.size() : expected,
         fmt::format("{} bytes, but a model of shape {} has {} (truncated or extended?)", in.size(),
                     shape_text(m.shape), expected));
  if (crc32(in.first(in.size() - 4)) != get_u32(p + in.size() - 4)) fail(in.size() - 4, "checksum mismatch");
  m.hash = fnv1a64(in);
  const size_t records = size_t(m.shape.layers) * 2 * m.shape.channels();
  m.anchor_range.resize(records);
  m.delta_range.resize(records);
  m.table_offset.resize(records * (1 + kCacheGenLevels));
  m.freqs.resize((expected - kModelHeaderBytes - 4 - 8 * records) / 2);
  size_t pos = kModelHeaderBytes, f = 0;
  for (size_t r = 0; r < records; ++r) {
    const uint32_t layer = uint32_t(r / (2 * m.shape.channels()));
    const int g = cachegen_paper_depth_group(layer, m.shape.layers);
    m.anchor_range[r] = get_f32(p + pos);
    m.delta_range[r] = get_f32(p + pos + 4);
    for (int j = 0; j < 2; ++j) {
      const float v = j ? m.delta_range[r] : m.anchor_range[r];
      if (!std::isfinite(v) || !(v >= kPaperMinRange))
        fail(pos + 4 * size_t(j), fmt::format("record {}: {} range {} is not finite or below {}", r,
                                              j ? "delta" : "anchor", v, kPaperMinRange));
    }
    pos += 8;
    for (int j = 0; j <= kCacheGenLevels; ++j) {
      const size_t symbols = j == 0 ? kAnchorSymbols : size_t(kBins[j - 1][g]);
      m.table_offset[r * (1 + kCacheGenLevels) + size_t(j)] = f;
      uint32_t sum = 0;
      for (size_t s = 0; s < symbols; ++s) {
        const uint16_t q = get_u16(p + pos + 2 * s);
        if (q == 0) fail(pos + 2 * s, fmt::format("record {} table {}: zero frequency", r, j));
        sum += q;
        m.freqs[f++] = q;
      }
      if (sum != rans::kProbScale)
        fail(pos, fmt::format("record {} table {}: frequencies sum to {}, not {}", r, j, sum, rans::kProbScale));
      pos += 2 * symbols;
    }
  }
  return m;
}

std::shared_ptr<const CacheGenPaperModel> load_cachegen_paper_model(const std::string& path) {
  const std::string data = read_file(path);
  return std::make_shared<const CacheGenPaperModel>(parse_cachegen_paper_model(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()), path));
}

std::string train_cachegen_paper_model(std::span<const KVChunk> samples) {
  if (samples.empty()) throw Error("codec cachegen: no sample chunks to learn a codec model from");
  const KVShape s = samples[0].shape;
  check_shape(s, "codec cachegen: sample chunk 0");
  uint64_t tokens = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    if (!(samples[i].shape == s))
      throw Error(fmt::format("codec cachegen: sample chunk {} has KV shape {}, sample chunk 0 has {}", i,
                              shape_text(samples[i].shape), shape_text(s)));
    tokens += samples[i].tokens;
  }
  if (tokens == 0) throw Error("codec cachegen: the sample chunks have no tokens");

  Bytes out;
  out.reserve(expected_model_bytes(s));
  put_u32(out, kModelMagic);
  put_u16(out, kModelVersion);
  put_u16(out, uint16_t(CodecId::kCacheGen));
  out.push_back(kSchemePaper);
  out.push_back(uint8_t(kCacheGenLevels));
  out.push_back(uint8_t(kPaperGroupTokens));
  out.push_back(uint8_t(kPaperAnchorM));
  put_u32(out, s.layers);
  put_u32(out, s.kv_heads);
  put_u32(out, s.head_dim);
  put_u64(out, tokens);
  for (const auto& level : kBins)
    for (int b : level) out.push_back(uint8_t(b));
  while (out.size() < kModelHeaderBytes) out.push_back(0);

  const uint32_t D = s.head_dim, G = kPaperGroupTokens;
  std::vector<float> mags;
  uint32_t counts[rans::kMaxSymbols];
  rans::Table table;
  const auto put_table = [&](uint32_t symbols) {
    rans::build_table(counts, symbols, &table);
    for (uint32_t q = 0; q < symbols; ++q) put_u16(out, uint16_t(table.freq[q]));
  };
  // Calls f(x, decoded anchor) for every non-anchor value of channel (l, k, h, d).
  const auto for_each_delta = [&](uint32_t l, Kind k, uint32_t h, uint32_t d, float step_a, auto&& f) {
    for (const KVChunk& c : samples) {
      float anchor = 0;
      for (uint32_t t = 0; t < c.tokens; ++t) {
        const float x = c.at(l, k, h, t, d);
        if (t % G == 0) {
          const uint32_t sym = anchor_symbol(x, step_a);
          anchor = sym == kAnchorEscape ? x : anchor_value(sym, step_a);
        } else {
          f(x, anchor);
        }
      }
    }
  };
  for (uint32_t l = 0; l < s.layers; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue})
      for (uint32_t h = 0; h < s.kv_heads; ++h)
        for (uint32_t d = 0; d < D; ++d) {
          mags.clear();
          for (const KVChunk& c : samples)
            for (uint32_t t = 0; t < c.tokens; ++t)
              if (const float x = c.at(l, k, h, t, d); std::isfinite(x)) mags.push_back(std::fabs(x));
          const float A = range_of(mags), step_a = A / float(kPaperAnchorM);
          mags.clear();
          for_each_delta(l, k, h, d, step_a, [&](float x, float a) {
            if (const float v = x - a; std::isfinite(v)) mags.push_back(std::fabs(v));
          });
          const float R = range_of(mags);
          put_f32(out, A);
          put_f32(out, R);
          std::fill(std::begin(counts), std::end(counts), 0u);
          for (const KVChunk& c : samples)
            for (uint32_t t = 0; t < c.tokens; t += G) ++counts[anchor_symbol(c.at(l, k, h, t, d), step_a)];
          put_table(kAnchorSymbols);
          for (int level = 0; level < kCacheGenLevels; ++level) {
            const int bins = cachegen_paper_bins(level, l, s.layers), M = bins / 2 - 1;
            const float step_d = R / float(M);
            std::fill(std::begin(counts), std::end(counts), 0u);
            for_each_delta(l, k, h, d, step_a, [&](float x, float a) { ++counts[delta_symbol(x, a, step_d, M)]; });
            put_table(uint32_t(bins));
          }
        }
  put_u32(out, crc32(out));
  return std::string(out.begin(), out.end());
}

std::vector<double> cachegen_paper_layer_shares(std::span<const uint8_t> stream) {
  const ParsedStream ps = parse_stream(stream, CodecId::kCacheGen);
  const KVShape& s = ps.header.shape;
  const uint64_t per_layer = 2ull * s.kv_heads;
  if (ps.sections.size() != s.layers * per_layer)
    throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen paper stream has {} sections, expected {}",
                                    ps.sections.size(), s.layers * per_layer));
  std::vector<double> bytes(s.layers, 0.0);
  for (size_t i = 0; i < ps.sections.size(); ++i) bytes[i / per_layer] += double(ps.sections[i].size() + 4);
  return layer_shares_from_bytes(stream.size(), std::move(bytes));
}

uint64_t stream_model_hash(std::span<const uint8_t> stream) {
  if (stream.size() < kHeaderBytes) return 0;
  uint64_t h = 0;
  for (int k = 7; k >= 0; --k) h = (h << 8) | stream[40 + size_t(k)];
  return h;
}

CachegenPaperSubstream parse_cachegen_paper_substream(std::span<const uint8_t> section, size_t index, size_t values) {
  SectionReader reader(section, "cachegen paper substream");
  CachegenPaperSubstream sub;
  sub.escape_count = reader.u32();
  if (sub.escape_count > values)
    throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen paper substream {} has {} escapes for {} values",
                                    index, sub.escape_count, values));
  sub.escapes = reader.bytes(4 * size_t(sub.escape_count));
  if (reader.remaining() < 4)  // the rANS stream's initial state
    throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen paper substream {} does not decode", index));
  sub.coded = section.subspan(4 + sub.escapes.size());
  return sub;
}

void check_cachegen_paper_stream(const ParsedStream& ps, const CacheGenPaperModel* model, const std::string& model_file) {
  const StreamHeader& hd = ps.header;
  if (!model)
    throw CorruptStream(fmt::format("codec cachegen: the stream uses the paper scheme with codec model {:016x}; give that "
                                    "codec model file (--codec-model)",
                                    hd.model_hash));
  if (hd.model_hash != model->hash)
    throw CorruptStream(fmt::format("codec cachegen: the stream was encoded with codec model {:016x}, but codec model file "
                                    "{} has hash {:016x}",
                                    hd.model_hash, model_file, model->hash));
  if (hd.level >= kCacheGenLevels)
    throw CorruptStream(fmt::format("corrupt KV bitstream at byte 8: cachegen level {}", hd.level));
  if (hd.flags != kPaperGroupTokens)
    throw CorruptStream(fmt::format("corrupt KV bitstream at byte 10: cachegen paper group of {} tokens, expected {}",
                                    hd.flags, kPaperGroupTokens));
  const KVShape& s = hd.shape;
  if (!(s == model->shape))
    throw CorruptStream(fmt::format("corrupt KV bitstream at byte 12: shape {} but its codec model's is {}",
                                    shape_text(s), shape_text(model->shape)));
  const uint64_t substreams = uint64_t(s.layers) * 2 * s.kv_heads;
  if (ps.sections.size() != substreams)
    throw CorruptStream(fmt::format("corrupt KV bitstream: cachegen paper has {} sections, expected {}",
                                    ps.sections.size(), substreams));
}

void check_cachegen_paper_encode(const KVShape& shape, int level, const CacheGenPaperModel* model,
                                 const std::string& model_file) {
  if (level < 0 || level >= kCacheGenLevels)
    throw Error(fmt::format("codec cachegen: level {} out of range (0..{})", level, kCacheGenLevels - 1));
  if (!model)
    throw Error("codec cachegen: scheme=paper needs a codec model file (--codec-model); learn one with "
                "`kvstream codec-model train --codec cachegen --param scheme=paper`");
  if (!(shape == model->shape))
    throw Error(fmt::format("codec cachegen: codec model file {} is for KV shape {} (layers x kv heads x dims), "
                            "the chunk has {}",
                            model_file, shape_text(model->shape), shape_text(shape)));
}

std::unique_ptr<Codec> make_cachegen_paper_codec(const CodecOptions& options) {
  check_params("cachegen", options.params, {"scheme"});
  std::shared_ptr<const CacheGenPaperModel> model;
  if (!options.model_file.empty()) model = load_cachegen_paper_model(options.model_file);
  return std::make_unique<CacheGenPaperCodec>(std::move(model), options.model_file);
}

}  // namespace kvs::codec
