// Internals of the kvs codec (codec/kvs.h), shared by its parts:
//   kvs_format.cpp  the pieces of the bitstream both sides use: Gaussian
//                   rANS tables, varints, RoPE tables;
//   kvs_rows.cpp    the encoder's plan for repeated rows;
//   kvs_encode.cpp  KvsCodec::encode and its rate-distortion choices;
//   kvs_decode.cpp  KvsCodec::decode;
//   kvs.cpp         parameters, default weights and the factory.
// Not an interface: only these files include it.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "codec/bitstream.h"
#include "codec/codec.h"
#include "codec/kvs.h"
#include "codec/kvs_encode_core.h"
#include "codec/rans.h"

namespace kvs::codec::kvs_detail {

// The shared encoder core (codec/kvs_encode_core.h) defines the constants,
// the Gaussian tables' layout and the per-channel work; the decoder core
// (codec/kvs_core.h) kEscapeBits and kMaxQ.
using kvs_core::kEscapeBits;
using kvs_core::kFirstTable;
using kvs_core::kLastTable;
using kvs_core::kMaxQ;  // |x / step| and |m| at most this
using kvs_core::kMaxRange;
using kvs_core::kSpreadCenter;
using kvs_core::kTables;
using kvs_core::split_spread;
using kvs_core::Spread;
using kvs_core::GaussTable;
using kvs_core::ChannelModel;
using kvs_core::round_to_int;

// The tables for j = kFirstTable..kLastTable, built from integer constants
// (the same on every platform).
std::vector<GaussTable> build_gauss_tables();

inline uint32_t zigzag(int32_t v) { return (uint32_t(v) << 1) ^ uint32_t(v >> 31); }
inline int32_t unzigzag(uint32_t u) { return int32_t(u >> 1) ^ -int32_t(u & 1); }

void put_varint(Bytes& out, uint32_t v);
uint32_t get_varint(std::span<const uint8_t> in, size_t* pos, const char* what);

// LSB-first bit packing of raw low bits and escape values.
class BitWriter {
 public:
  void put(uint32_t value, uint32_t bits) {
    if (bits == 0) return;
    acc_ |= uint64_t(value & uint32_t((uint64_t(1) << bits) - 1)) << n_;
    n_ += bits;
    while (n_ >= 8) {
      out_.push_back(uint8_t(acc_));
      acc_ >>= 8;
      n_ -= 8;
    }
  }
  void finish(Bytes& out) {
    if (n_) out_.push_back(uint8_t(acc_));
    out.insert(out.end(), out_.begin(), out_.end());
    out_.clear();
    acc_ = 0;
    n_ = 0;
  }

 private:
  Bytes out_;
  uint64_t acc_ = 0;
  uint32_t n_ = 0;
};

class BitReader {
 public:
  explicit BitReader(std::span<const uint8_t> in) : in_(in) {}
  uint32_t get(uint32_t bits) {  // bits <= 32
    if (bits == 0) return 0;
    if (n_ < bits) {
      if (in_.size() - pos_ >= 8) {
        // As many whole bytes as the accumulator holds (at least 4), at once.
        uint64_t word = 0;
        for (int k = 7; k >= 0; --k) word = (word << 8) | in_[pos_ + size_t(k)];  // little-endian load
        const uint32_t take = (63 - n_) / 8;
        acc_ |= (word & ((uint64_t(1) << (8 * take)) - 1)) << n_;
        pos_ += take;
        n_ += 8 * take;
      } else {
        while (n_ < bits) {
          if (pos_ >= in_.size()) throw CorruptStream("corrupt KV bitstream: kvs raw bits truncated");
          acc_ |= uint64_t(in_[pos_++]) << n_;
          n_ += 8;
        }
      }
    }
    const uint32_t v = uint32_t(acc_ & ((uint64_t(1) << bits) - 1));
    acc_ >>= bits;
    n_ -= bits;
    return v;
  }
  // Everything read, padding bits zero (whole bytes read ahead do not count
  // as read).
  void expect_end() const {
    if (pos_ - n_ / 8 != in_.size() || (acc_ & ((uint64_t(1) << (n_ % 8)) - 1)) != 0)
      throw CorruptStream("corrupt KV bitstream: kvs raw bits have extra data");
  }

 private:
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  uint64_t acc_ = 0;  // n_ bits not yet returned, the rest zero
  uint32_t n_ = 0;
};

// RoPE's frequency of pair i and the (cos, sin) of a position at it: the two
// halves of kvs_rope_cos_sin (below), whose values they give exactly.
inline double rope_inv_freq(double rope_theta, uint32_t i, uint32_t head_dim) {
  return std::pow(rope_theta, -2.0 * double(i) / double(head_dim));
}
inline std::array<float, 2> rope_cos_sin_at(uint64_t position, double inv_freq) {
  const double angle = double(position) * inv_freq;
  return {float(std::cos(angle)), float(std::sin(angle))};
}


// The frequencies of a RoPE base for head dimension D: D / 2 values, pair i's
// rope_inv_freq(theta, i, D).
std::vector<double> rope_inv_freqs(double rope_theta, uint32_t head_dim);

// Per chunk: cos/sin for every (token, pair), pair i at inv_freq[i].
std::vector<std::array<float, 2>> rope_table(const std::vector<double>& inv_freq, uint64_t token_begin, uint32_t tokens);

// The RoPE a stream's keys are rotated back with, per layer: its tables
// (D / 2 frequencies each; an empty table: keys as given) and each layer's
// table. One table for every layer unless the stream has per-layer RoPE
// (flags bit 2: e.g. gemma3's sliding layers at their own base).
struct KvsStreamRope {
  std::vector<std::vector<double>> tables;
  std::vector<uint8_t> layer_table;  // per layer: an index into tables
  bool used(size_t table) const { return std::find(layer_table.begin(), layer_table.end(), table) != layer_table.end(); }
};
// Per table of `rope`, rope_table(table, token_begin, tokens) (empty for an
// empty table, and for one no layer uses: a stream may describe four).
std::vector<std::vector<std::array<float, 2>>> rope_tables(const KvsStreamRope& rope, uint64_t token_begin,
                                                          uint32_t tokens);

// The decoder's view of one head's rows: its literal tokens in order (null:
// every token, 0..T-1) and each token's source row (null: itself).
struct HeadRows {
  const uint32_t* literal = nullptr;
  const uint32_t* source = nullptr;
  uint32_t literals = 0;
};

// The CPU encoder's histogram counts for one channel (four partial counts).
using ChannelScratch = kvs_core::ChannelScratch<4>;

// Floats from one channel's first token to the next's in channel-major
// buffers: T rounded up to a cache line (16 values), plus one line when that is
// an even number of lines, so that a block of tokens of many channels (read
// or written column-wise) spreads over the cache's sets.
inline size_t channel_stride(uint32_t T) {
  const size_t stride = (size_t(T) + 15) / 16 * 16;
  return stride % 32 == 0 ? stride + 16 : stride;
}

// p rounded up to a 64-byte boundary (buffers allocated 64 bytes longer).
template <typename T>
T* aligned64(T* p) {
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
}

// A kvs stream's structure, parsed and checked on the host (KvsCodec::parse):
// everything but the substreams' payloads, which the CPU decoder or a GPU
// kernel decodes piece by piece (codec/kvs_core.h).
struct KvsPiece {
  uint32_t table, n;                    // Gaussian table, symbols
  size_t section;                       // its section in the stream
  std::span<const uint8_t> rans, extras;
  size_t first_channel;                 // index into the table's group (KvsLayout::group)
  uint32_t first_literal;               // literal tokens of that channel coded in earlier pieces
};
struct KvsLayout {
  StreamHeader header;
  bool centroid = false;
  // Keys rotated back per layer at these per-pair frequencies, from the
  // stream's RoPE base, its table (flags bit 1) or its per-layer tables (bit 2).
  KvsStreamRope rope;
  std::vector<float> steps;                                     // per plane (layer, kind)
  std::vector<std::vector<uint32_t>> literal_lists, source_lists;  // one per head in row mode 1
  std::vector<HeadRows> rows;                                   // per head (pointing into the lists)
  // The channel models as the stream codes them: per plane (layer, kind) its
  // C channels' spreads, then their centres (channel ch = plane * C + c).
  std::unique_ptr<int32_t[]> channel_ints;
  uint32_t C = 0;
  const int32_t* spreads(size_t plane) const { return channel_ints.get() + 2 * plane * C; }
  const int32_t* centres(size_t plane) const { return channel_ints.get() + (2 * plane + 1) * C; }
  ChannelModel model(size_t ch) const {
    const size_t plane = ch / C, c = ch % C;
    return {uint32_t(spreads(plane)[c]), centres(plane)[c]};
  }
  // Per table, its channels in order: group_channels[group_offset[table]..
  // group_offset[table + 1]) (one array of group_offset[kTables] channels,
  // as the GPU kernels read it): in owned_group_channels or where parse's
  // caller asked.
  uint32_t* group_channels = nullptr;
  std::unique_ptr<uint32_t[]> owned_group_channels;
  std::array<uint32_t, kTables + 1> group_offset{};
  std::vector<KvsPiece> pieces;                                 // the substreams, in section order
  const uint32_t* group(uint32_t table) const { return group_channels + group_offset[table]; }
};

// kvs's RoPE tables (parameters rope_inv_freq, rope_inv_freq_long,
// rope_long_after): a chunk of a context of more than long_after_tokens
// tokens (LongRoPE's long factors) is coded with inv_freq_long, any other
// (a shorter or unknown context) with inv_freq. The layers alt_layers
// (parameter rope_alt_layers; none: every layer rotates alike) rotate with a
// second RoPE instead: the base alt_theta (rope_alt_theta; 0: no RoPE) or
// the table alt_inv_freq (rope_alt_inv_freq).
struct KvsRopeTables {
  std::vector<float> inv_freq, inv_freq_long;
  uint64_t long_after_tokens = 0;
  double alt_theta = 0;
  std::vector<float> alt_inv_freq;
  std::vector<uint32_t> alt_layers;  // ascending, distinct
  const std::vector<float>& for_context(uint64_t context_tokens) const {
    return !inv_freq_long.empty() && context_tokens > long_after_tokens ? inv_freq_long : inv_freq;
  }
};
// Tables a stream with per-layer RoPE may carry (the format's limit).
inline constexpr uint32_t kKvsMaxRopeTables = kvs_core::kMaxRopeTables;

class KvsCodec final : public Codec {
 public:
  // rope.inv_freq, when not empty, replaces rope_theta: the per-pair
  // frequencies written into the stream (a scaled RoPE's).
  KvsCodec(double rope_theta, KvsRopeTables rope, std::vector<float> weights, bool default_weights, bool centroid,
           double lambda, std::vector<float> ladder, bool rows)
      : rope_theta_(rope_theta), rope_(std::move(rope)), weights_(std::move(weights)),
        default_weights_(default_weights), centroid_(centroid), lambda_(lambda), ladder_(std::move(ladder)),
        rows_(rows), tables_(build_gauss_tables()) {
    build_encoder_tables();
  }

  std::string name() const override { return "kvs"; }
  std::string params() const override {
    std::string w;
    for (size_t i = 0; i < weights_.size(); ++i) w += fmt::format("{}{:g}", i ? ":" : "", weights_[i]);
    std::string ladder = "default";
    for (size_t i = 0; i < ladder_.size(); ++i) ladder = fmt::format("{}{:g}", i ? ladder + ":" : "", ladder_[i]);
    std::string rope = fmt::format("rope_theta={:g}", rope_theta_);
    if (!rope_.inv_freq.empty()) rope = "rope_inv_freq=" + kvs_param_list(rope_.inv_freq);
    if (!rope_.inv_freq_long.empty())
      rope += fmt::format(",rope_inv_freq_long={},rope_long_after={}", kvs_param_list(rope_.inv_freq_long),
                          rope_.long_after_tokens);
    if (!rope_.alt_layers.empty()) {
      rope += rope_.alt_inv_freq.empty() ? fmt::format(",rope_alt_theta={}", rope_.alt_theta)
                                         : ",rope_alt_inv_freq=" + kvs_param_list(rope_.alt_inv_freq);
      std::string layers;
      for (size_t i = 0; i < rope_.alt_layers.size(); ++i) layers += fmt::format("{}{}", i ? ":" : "", rope_.alt_layers[i]);
      rope += ",rope_alt_layers=" + layers;
    }
    return fmt::format("{},weights={},centroid={},rdo={:g},ladder={},rows={}", rope, default_weights_ ? "default" : w,
                       centroid_ ? 1 : 0, lambda_, ladder, rows_ ? 1 : 0);
  }
  int levels() const override { return ladder_.empty() ? kKvsLevels : int(ladder_.size()); }

  Bytes encode_chunk(const KVChunk& chunk, int level) const override;
  KVChunk decode(std::span<const uint8_t> stream) const override;
  // Each substream (a table's channels, across layers) split over layers by
  // the symbols each layer's channels have in it: they share one Gaussian
  // table, so each symbol costs the same bits in expectation. The
  // parameters, row references and channel models (a few per cent) are split
  // evenly.
  std::vector<double> layer_shares(std::span<const uint8_t> stream) const override;
  // Parses and checks everything but the substreams' payloads (throws
  // CorruptStream as decode() does, before anything is allocated for the output).
  KvsLayout parse(std::span<const uint8_t> stream) const;
  // The same after parse_stream (e.g. one that deferred the CRC to the GPU).
  // Without locate_pieces the pieces' sections (beyond the first three) are
  // not read: their rans and extras stay empty and unchecked (the GPU
  // decoder splits and checks them on the device).
  // `group_channels_to` (may be empty) is called once every array's size is
  // known (the layout's header, steps, rows, channel models and the number
  // of pieces final; the pieces not yet written) and returns where to write
  // the group_offset[kTables] group channels (e.g. straight into the GPU
  // decoder's metadata, instead of a copy); null: parse allocates them.
  KvsLayout parse(const ParsedStream& ps, bool locate_pieces = true,
                  const std::function<uint32_t*(const KvsLayout&)>& group_channels_to = {}) const;
  const std::vector<GaussTable>& gauss_tables() const { return tables_; }

  // What the GPU encoder (codec/cuda/kvs_encode_plan.h) needs to take the
  // same steps as encode(), with each row's, channel's and piece's work (the
  // KVS_HD functions of codec/kvs_encode_core.h) on the device:
  // the step per plane (layer, kind) at `level`, with encode()'s errors for a
  // bad level or weights;
  std::vector<float> level_steps(int level, uint32_t layers) const {
    if (level < 0 || level >= levels())
      throw Error(fmt::format("codec kvs: level {} out of range (0..{})", level, levels() - 1));
    return steps_for(level, layers);
  }
  // the frequencies at which keys of head dimension D of each of `layers`
  // layers in a chunk of a context of `context_tokens` (0: unknown) are
  // rotated back, with encode()'s errors for a table that does not fit D or
  // a per-layer RoPE naming a layer the chunk lacks; the header's flags; and
  // the parameters section (the RoPE description, then the level's `steps`)
  // for them, as both encoders write it;
  KvsStreamRope coded_rope(uint32_t D, uint32_t layers, uint64_t context_tokens) const;
  uint8_t header_flags() const {
    return uint8_t((centroid_ ? 1 : 0) | (!rope_.alt_layers.empty() ? 4 : rope_.inv_freq.empty() ? 0 : 2));
  }
  Bytes params_section(uint32_t D, uint32_t layers, uint64_t context_tokens, const std::vector<float>& steps) const;
  bool centroid() const { return centroid_; }
  bool rows() const { return rows_; }
  // the tables of the per-channel choices (kTables Gaussian and RD tables, 256
  // exact_n entries);
  kvs_core::EncoderTables encoder_tables() const { return {tables_.data(), rd_.data(), exact_n_.data(), lambda_}; }
  // the channel models section: per plane the spreads, then the centres, each
  // an integer vector (put_ints).
  Bytes models_section(std::span<const ChannelModel> model, size_t planes, uint32_t C) const;

 private:
  std::vector<float> steps_for(int level, uint32_t layers) const {
    std::vector<float> w = default_weights_ ? kvs_default_weights(layers) : weights_;
    if (w.size() != 2 * size_t(layers))
      throw Error(fmt::format("codec kvs: {} weights given for a model of {} layers (need {})", w.size(), layers,
                              2 * size_t(layers)));
    for (float& x : w) x *= ladder_.empty() ? kvs_level_step(level) : ladder_[size_t(level)];
    return w;
  }

  void build_encoder_tables();
  // An integer vector as: u8 spread, varint zigzag centre (its median), varint
  // rANS bytes, the rANS stream, varint extra bytes, the extras.
  void put_ints(Bytes& out, const std::vector<int32_t>& v) const;
  std::vector<int32_t> get_ints(std::span<const uint8_t> in, size_t* pos, size_t n, const char* what) const;

  double rope_theta_;
  KvsRopeTables rope_;  // inv_freq not empty: replaces rope_theta_
  std::vector<float> weights_;
  bool default_weights_;
  bool centroid_;
  double lambda_;
  std::vector<float> ladder_;  // level steps; empty: kvs_level_step
  bool rows_;                  // repeated rows may be sent as references
  std::vector<GaussTable> tables_;

  // Encoder-only, derived from tables_ and lambda_ (speed; the choices are the
  // ones the plain formulas make):
  // per table, the rate-distortion terms (kvs_core::RdTable);
  std::vector<kvs_core::RdTable> rd_;
  // per spread index j with raw bits, the largest n for which a sum of n of
  // its per-value costs (cost_bits + raw bits as float, or the escape) is
  // exact in double whatever the order (0 when j has no raw bits).
  std::array<uint64_t, 256> exact_n_{};
};

// Elias-gamma-like code of v >= 1: n ones and a zero (n = floor(log2 v)), then v's low n bits.
inline void put_gamma(BitWriter& w, uint32_t v) {
  uint32_t n = 0;
  while ((v >> n) > 1) ++n;
  for (uint32_t i = 0; i < n; ++i) w.put(1, 1);
  w.put(0, 1);
  w.put(v, n);
}
inline uint32_t get_gamma(BitReader& r) {
  uint32_t n = 0;
  while (r.get(1)) {
    if (++n > 24) throw CorruptStream("corrupt KV bitstream: kvs row reference too long");
  }
  return (1u << n) | r.get(n);
}


// Repeated rows. A row (a head's D values at one token; keys before RoPE)
// that repeats an earlier token's after rounding can be sent as a reference:
// layer 0's K and V depend only on the token, so on a byte-level model most of
// its rows repeat. References are move-to-front ranks over the distinct rows
// so far: 0 for a new one, r for the r-th most recently used. Row mode per
// head: 0 all rows coded; 1 references of its own; 2 the references of the
// previous head in mode 1 or 2. Per layer the encoder takes the cheaper of one
// partition for all its heads jointly (a token repeats where every head
// repeats) and one per head (sharing identical ones).
struct RowPlan {
  std::vector<uint32_t> literal;  // tokens whose values are coded, in order
  std::vector<uint32_t> ranks;    // per token
  double ref_bits = 0;            // cost of the ranks
  double row_bits = 0;            // estimated cost of one row of every head together
};

// The move-to-front list of the distinct rows, in O(log T) per step so that
// no stream or input makes it quadratic: each row is represented by the time
// (token) of its last use, and a Fenwick tree over times counts the rows last
// used at or before a time. A row's rank (1 = the most recently used) is the
// number of rows last used at or after its time.
class RecencyList {
 public:
  explicit RecencyList(uint32_t T) : tree_(size_t(T) + 1, 0) {}
  void add(uint32_t time) {
    ++size_;
    for (size_t i = size_t(time) + 1; i < tree_.size(); i += i & (~i + 1)) ++tree_[i];
  }
  // add(0), ..., add(n - 1) on an empty list, in O(T).
  void add_first(uint32_t n) {
    size_ += n;
    for (size_t i = 1; i <= size_t(n); ++i) ++tree_[i];
    for (size_t i = 1; i < tree_.size(); ++i) {
      const size_t up = i + (i & (~i + 1));
      if (up < tree_.size()) tree_[up] += tree_[i];
    }
  }
  void remove(uint32_t time) {
    --size_;
    for (size_t i = size_t(time) + 1; i < tree_.size(); i += i & (~i + 1)) --tree_[i];
  }
  uint32_t size() const { return size_; }
  // Rank of the row last used at `time` (which must be in the list).
  uint32_t rank(uint32_t time) const { return size_ - at_or_before(time) + 1; }
  // The time of the row of rank `rank`, 1 <= rank <= size().
  uint32_t time_of(uint32_t rank) const {
    uint32_t k = size_ - rank + 1;  // its position among the times, smallest first
    size_t pos = 0, step = 1;
    while (step * 2 < tree_.size()) step *= 2;
    for (; step; step /= 2)
      if (pos + step < tree_.size() && tree_[pos + step] < k) {
        pos += step;
        k -= tree_[pos];
      }
    return uint32_t(pos);  // 1-based index pos + 1 is time pos
  }

 private:
  uint32_t at_or_before(uint32_t time) const {
    uint32_t n = 0;
    for (size_t i = size_t(time) + 1; i; i -= i & (~i + 1)) n += tree_[i];
    return n;
  }
  std::vector<uint32_t> tree_;
  uint32_t size_ = 0;
};

// Row modes and the plan of each of a layer's `heads` heads, from their
// values in steps y[(head * D + dim) * stride + token] (a row is the head's D
// values at one token, rounded).
void plan_layer(const float* y, size_t stride, uint32_t heads, uint32_t T, uint32_t D, bool allow,
                std::vector<uint8_t>* modes, std::vector<RowPlan>* plans);
// plan_layer's two halves, for the GPU encoder (whose device reduces each row
// to a hash and each dimension to two sums, kvs_core::column_sums):
// a dimension's estimated bits per value from those sums over T tokens;
double dimension_bits(double s1, double s2, uint32_t T);
// per head h < heads, first[h * T + t] = the first token u <= t whose hash
// hash[h * T + u] equals t's (the first occurrence of t's row when no two
// different rows share a hash);
void first_by_hash(const uint64_t* hash, size_t heads, uint32_t T, uint32_t* first);
// the modes and plans from each head's first occurrences first[head * T + t]
// and each dimension's bits dim_bits[head * D + dim] (both unused unless allow).
void plan_layer_from(const uint32_t* first, const double* dim_bits, uint32_t heads, uint32_t T, uint32_t D,
                     bool allow, std::vector<uint8_t>* modes, std::vector<RowPlan>* plans);

// The encoder's host steps that KvsCodec::encode and the GPU encoder share.
// The error for a value the encoder refuses (kvs_core::value_is_bad).
[[noreturn]] void throw_bad_value(float x, float step);
// A layer's row modes into params and its references into refs; its plans
// moved to the end of plans (one per head of the chunk, in order).
void put_layer_rows(const std::vector<uint8_t>& modes, std::vector<RowPlan>* layer_plans, Bytes* params,
                    BitWriter* refs, std::vector<RowPlan>* plans);
// Channels grouped by table (in channel order), and those groups' symbols cut
// into substreams of kKvsStreamSymbols: piece k codes n symbols of table
// `table`, from the first_literal-th symbol of the first_channel-th channel of
// its group (first_symbol[ch]: where channel ch's symbols start, channel after channel).
struct PiecePlan {
  uint32_t table;
  uint32_t n;
  size_t first_channel;
  uint32_t first_literal;
};
struct TableGroups {
  std::array<uint32_t, kTables + 1> offset{};  // group t: channels[offset[t]..offset[t + 1])
  std::vector<uint32_t> channels;
  std::span<const uint32_t> group(uint32_t t) const {
    return std::span<const uint32_t>(channels).subspan(offset[t], offset[t + 1] - offset[t]);
  }
};
TableGroups table_groups(std::span<const ChannelModel> model);
std::vector<PiecePlan> plan_pieces(const TableGroups& groups, std::span<const uint64_t> first_symbol);

}  // namespace kvs::codec::kvs_detail
