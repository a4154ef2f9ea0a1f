// `cachegen` with `scheme=paper`: CacheGen's encoder as its paper describes it
// (Liu et al., SIGCOMM'24, §5), next to the released code's scheme
// (codec/cachegen.h, `scheme=code`, the default). docs/codecs.md has the
// measured comparison; docs/bitstream.md the stream and model-file layouts.
//
//   - Tokens in groups of 10 consecutive tokens, counted from the chunk's
//     first token (a chunk of 256 tokens has 25 groups of 10 and one of 6).
//     The first token of a group is the anchor, quantized on its own; every
//     other token is coded as its delta to the group's *decoded* anchor (not
//     to the previous token), so errors do not accumulate.
//   - Quantizers are per (layer, kind, channel), from the codec model file
//     (learned offline from sample chunks of one model's KV caches, as the
//     paper profiles its per-(channel, layer) distributions offline):
//       anchors: step_a = A / 127, symbol q = round(x / step_a) in -127..127,
//                8 bits (255 symbols), the same at every level;
//                |x - x'| <= step_a / 2 = A / 254.
//       deltas:  step_d = R / M with M = bins / 2 - 1, symbol
//                q = round((x - anchor') / step_d) in -M..M (bins - 1 symbols);
//                |x - x'| <= step_d / 2 = R / (2M).
//     A (R) is the 0.999 quantile of |x| (of |x - anchor'|) over the samples,
//     at least 2^-14.
//   - Escapes: a value outside a quantizer's range (|q| > 127 or > M, or not
//     finite) is coded as an escape symbol (one more symbol in every table)
//     and its value stored exactly as fp32, so a KV cache from any context
//     encodes, with the bounds above for every other value.
//   - Delta bins by depth group (layers split in thirds: group = 3 * layer /
//     layers), K and V alike, coarser for deeper layers (paper §5.2):
//       level  bins first/middle/last third
//       0      64/64/64
//       1      32/32/32
//       2      32/16/16   (CacheGen's default)
//       3      16/16/12
//       4      12/8/8
//       5      8/6/6
//       6      6/4/4
//   - Entropy coding with static 16-bit frequency tables per (layer, kind,
//     channel): one for anchors, one per level for deltas, all in the model
//     file (nothing per chunk). The stream names the model file by its hash
//     (FNV-1a 64 of the file's bytes) and decode() refuses another model.
//     One rANS substream per (layer, kind, kv head) over the chunk's tokens,
//     each symbol coded with its own channel's table.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "codec/codec.h"
#include "codec/kv.h"

namespace kvs::codec {

inline constexpr uint32_t kPaperGroupTokens = 10;
inline constexpr int kPaperAnchorM = 127;             // anchors: symbols -127..127
inline constexpr float kPaperRangeQuantile = 0.999f;  // of |x| and |delta| in training
inline constexpr float kPaperMinRange = 0x1p-14f;     // smallest fp16 normal

// 0, 1, 2: first, middle or last third of `layers`.
int cachegen_paper_depth_group(uint32_t layer, uint32_t layers);
// Delta bins (M = bins / 2 - 1; bins - 1 symbols plus the escape) at `level`.
int cachegen_paper_bins(int level, uint32_t layer, uint32_t layers);

// FNV-1a, 64 bit (offset basis 0xcbf29ce484222325, prime 0x100000001b3); a
// result of 0 is replaced by 1, since 0 in a stream header means "no model".
uint64_t fnv1a64(std::span<const uint8_t> data);

// A parsed and validated codec model file of the paper scheme.
struct CacheGenPaperModel {
  KVShape shape;
  uint64_t hash = 0;             // fnv1a64 of the file's bytes
  uint64_t training_tokens = 0;  // tokens in the sample chunks it was learned from
  // Per record r = (layer * 2 + kind) * channels + channel:
  std::vector<float> anchor_range;  // A
  std::vector<float> delta_range;   // R
  // Frequency tables (entries sum to 65536, each >= 1): record r's anchor table
  // (256 entries: symbols 0..254 are q + 127, 255 the escape), then one per
  // level (bins entries: 0..2M are q + M, 2M + 1 the escape).
  std::vector<uint16_t> freqs;
  std::vector<uint64_t> table_offset;  // [r * (1 + levels) + j], j = 0 anchor, 1 + level

  size_t record(uint32_t layer, Kind kind, uint32_t channel) const {
    return (size_t(layer) * 2 + size_t(kind)) * shape.channels() + channel;
  }
  float anchor_step(size_t record) const { return anchor_range[record] / float(kPaperAnchorM); }
  float delta_step(size_t record, int level, uint32_t layer) const;
  std::span<const uint16_t> anchor_table(size_t record) const;
  std::span<const uint16_t> delta_table(size_t record, int level) const;
};

// Parses a model file's bytes; `name` (its path) appears in every error.
// Checks magic, version, codec, scheme, the bins ladder, shape limits, the
// size expected from the shape (before allocating), CRC, every range (finite,
// > 0) and every table. Throws kvs::Error "<name>: codec model file: ...".
CacheGenPaperModel parse_cachegen_paper_model(std::span<const uint8_t> bytes, const std::string& name);
// Reads and parses a model file.
std::shared_ptr<const CacheGenPaperModel> load_cachegen_paper_model(const std::string& path);

// Learns a model from sample chunks (one shape; each chunk's groups start at
// its first token, as when encoding) and returns the model file's bytes.
// Deterministic: the same samples give the same bytes.
std::string train_cachegen_paper_model(std::span<const KVChunk> samples);

// The codec model hash a stream's header names (0 when the stream is shorter
// than a header or names none); the header is not validated here.
uint64_t stream_model_hash(std::span<const uint8_t> stream);
// Codec::layer_shares of a scheme=paper stream: its substreams are per
// (layer, kind, kv head), in that order; needs no codec model.
std::vector<double> cachegen_paper_layer_shares(std::span<const uint8_t> stream);

struct ParsedStream;  // codec/bitstream.h
// A parsed scheme=paper stream's header against its codec model (`model`
// null: none given; `model_file` names it in errors) and its section count:
// the CPU decoder's checks and messages, shared with the CUDA planner.
// Throws CorruptStream.
void check_cachegen_paper_stream(const ParsedStream& ps, const CacheGenPaperModel* model, const std::string& model_file);

// The encoder's checks of a chunk of `shape` at `level` against its codec
// model (`model` null: none given; `model_file` names it in errors): the CPU
// encoder's messages, shared with the CUDA encoder's planner. Throws kvs::Error.
void check_cachegen_paper_encode(const KVShape& shape, int level, const CacheGenPaperModel* model,
                                 const std::string& model_file);

// One scheme=paper substream (section `index` of a stream whose substreams
// hold `values` values each): its escapes (4 bytes each) and the rANS stream
// after them. Throws CorruptStream (the CPU decoder's messages, shared with
// the CUDA planner) when the escapes exceed the values or do not fit, or
// nothing is left for the rANS state.
struct CachegenPaperSubstream {
  uint32_t escape_count = 0;
  std::span<const uint8_t> escapes, coded;
};
CachegenPaperSubstream parse_cachegen_paper_substream(std::span<const uint8_t> section, size_t index, size_t values);

// `cachegen` with scheme=paper; options.model_file may be empty (then the codec
// can train a model but not encode). Its decode() also takes scheme=code streams.
std::unique_ptr<Codec> make_cachegen_paper_codec(const CodecOptions& options);

}  // namespace kvs::codec
