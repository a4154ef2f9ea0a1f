#include "codec/kvs.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>

#include <fmt/core.h>

#include "codec/baselines.h"
#include "codec/bitstream.h"
#include "codec/rans.h"

namespace kvs::codec {

namespace {

// Spread index j: sigma = 2^((j - 64) / 8) quantization steps, j in 0..255.
constexpr uint32_t kSpreadCenter = 64;
// Tables exist for j in [kFirstTable, kLastTable]; smaller j use kFirstTable
// (all mass on s = 0), larger j code s >> b with table j - 8b and b raw bits.
constexpr uint32_t kFirstTable = 42, kLastTable = 96;
constexpr uint32_t kTables = kLastTable - kFirstTable + 1;
constexpr int32_t kMaxRange = 120;  // a table covers s in [-R, R], R <= kMaxRange
constexpr uint32_t kEscapeBits = 32;
constexpr int64_t kMaxQ = int64_t(1) << 29;  // |x / step| and |m| at most this

// floor(exp(-1 / (2 sigma_j^2)) * 2^32) for j = kFirstTable..kLastTable
// (generated with Python's math.exp; the tables below use integers only, so
// every platform builds the same ones).
constexpr uint32_t kRatioQ32[kTables] = {
    0x00000000u, 0x00000017u, 0x000001e3u, 0x00001813u, 0x0000ccc1u, 0x0004d6c5u,
    0x0015fc21u, 0x004e81b5u, 0x00e4f306u, 0x02332393u, 0x04b0556eu, 0x08dc4319u,
    0x0f218de0u, 0x17bb0545u, 0x22a55547u, 0x2fa05396u, 0x3e3ce5f7u, 0x4df14256u,
    0x5e2d58d8u, 0x6e6b3af6u, 0x7e39bff0u, 0x8d418996u, 0x9b4597e3u, 0xa820ecbeu,
    0xb3c2a028u, 0xbe29706cu, 0xc75f7cf5u, 0xcf768ba8u, 0xd684ff70u, 0xdca38252u,
    0xe1eb5127u, 0xe6750e8bu, 0xea5800a6u, 0xeda99fd3u, 0xf07d5fdeu, 0xf2e4a209u,
    0xf4eec215u, 0xf6a93407u, 0xf81fab54u, 0xf95c464fu, 0xfa67ba65u, 0xfb497ef1u,
    0xfc07f55fu, 0xfca88de2u, 0xfd2fe870u, 0xfda1f215u, 0xfe01feabu, 0xfe52df45u,
    0xfe96f5a1u, 0xfed044dcu, 0xff007fd5u, 0xff29156cu, 0xff4b3afdu, 0xff67f547u,
    0xff801ffau,
};

// Table index (0..kTables-1) and raw low bits of spread index j.
struct Spread {
  uint32_t table;
  uint32_t raw_bits;
};
Spread split_spread(uint32_t j) {
  if (j <= kLastTable) return {std::max(j, kFirstTable) - kFirstTable, 0};
  const uint32_t b = (j - kLastTable + 7) / 8;
  return {j - 8 * b - kFirstTable, b};
}

// A discretized Gaussian: symbol 0 is the escape, 1 + R + s codes s in [-R, R].
struct GaussTable {
  rans::Table table;
  rans::SymbolIndex index;        // decoder's slot -> symbol lookup
  rans::EncodeTable encode_table;  // encoder's reciprocal form
  int32_t range = 1;
  float cost_bits[rans::kMaxSymbols] = {};  // encoder's cost of each symbol
  // Reconstruction: symbol -> s - offset, the centroid of s's bin under a
  // continuous Gaussian with the same P(1)/P(0) (0 for s = 0 and the escape).
  float offset[rans::kMaxSymbols] = {};
};

double gauss_cdf_upper(double x) { return 0.5 * std::erfc(x / std::sqrt(2.0)); }

// Centroid of [s - 1/2, s + 1/2] (s >= 1) under N(0, sigma^2).
double bin_centroid(int32_t s, double sigma) {
  const double a = (s - 0.5) / sigma, b = (s + 0.5) / sigma;
  const double mass = gauss_cdf_upper(a) - gauss_cdf_upper(b);
  if (a > 30 || !(mass > 1e-280)) return std::min(double(s), (s - 0.5) + sigma * sigma / (s - 0.5));
  const double pdf = (std::exp(-0.5 * a * a) - std::exp(-0.5 * b * b)) / std::sqrt(2 * M_PI);
  return std::clamp(sigma * pdf / mass, s - 0.5, s + 0.5);
}

// The continuous sigma whose bins 0 and 1 have the probability ratio `ratio`.
double matching_sigma(double ratio) {
  if (ratio <= 0) return 1e-3;
  double lo = 1e-3, hi = 1e3;
  for (int it = 0; it < 100; ++it) {
    const double mid = std::sqrt(lo * hi);
    const double p0 = 1 - 2 * gauss_cdf_upper(0.5 / mid), p1 = gauss_cdf_upper(0.5 / mid) - gauss_cdf_upper(1.5 / mid);
    (p1 / p0 < ratio ? lo : hi) = mid;
  }
  return std::sqrt(lo * hi);
}

std::vector<GaussTable> build_gauss_tables() {
  std::vector<GaussTable> out(kTables);
  for (uint32_t k = 0; k < kTables; ++k) {
    // w(s) = 2^31 r^(s^2) by w(s) = w(s-1) r^(2s-1), in 32-bit fixed point.
    const uint64_t r = kRatioQ32[k], r2 = (r * r) >> 32;
    uint64_t w[kMaxRange + 1] = {uint64_t(1) << 31};
    uint64_t a = r;  // r^(2s-1)
    int32_t range = 0;
    for (int32_t s = 1; s <= kMaxRange; ++s) {
      w[s] = (w[s - 1] * a) >> 32;
      if (w[s] == 0) break;
      range = s;
      a = (a * r2) >> 32;
    }
    range = std::max(range, 1);
    uint32_t counts[rans::kMaxSymbols] = {};
    for (int32_t s = -range; s <= range; ++s) counts[1 + range + s] = uint32_t(w[std::abs(s)]);
    GaussTable& g = out[k];
    g.range = range;
    rans::build_table(counts, uint32_t(2 * range + 2), &g.table);
    rans::build_index(g.table, &g.index);
    rans::build_encode_table(g.table, &g.encode_table);
    for (uint32_t s = 0; s < g.table.symbols; ++s)
      g.cost_bits[s] = float(std::log2(double(rans::kProbScale) / double(g.table.freq[s])));
    // Offsets rounded to 2^-16 steps (so a last-bit difference in erfc or exp
    // between platforms practically never changes them).
    const double sigma = matching_sigma(double(w[1]) / double(w[0]));
    for (int32_t s = 1; s <= range; ++s) {
      const double off = std::nearbyint((s - bin_centroid(s, sigma)) * 65536.0) / 65536.0;
      g.offset[1 + range + s] = float(off);
      g.offset[1 + range - s] = float(-off);
    }
  }
  return out;
}

uint32_t zigzag(int32_t v) { return (uint32_t(v) << 1) ^ uint32_t(v >> 31); }
int32_t unzigzag(uint32_t u) { return int32_t(u >> 1) ^ -int32_t(u & 1); }

void put_varint(Bytes& out, uint32_t v) {
  while (v >= 0x80) {
    out.push_back(uint8_t(v | 0x80));
    v >>= 7;
  }
  out.push_back(uint8_t(v));
}

uint32_t get_varint(std::span<const uint8_t> in, size_t* pos, const char* what) {
  uint32_t v = 0;
  for (int shift = 0; shift < 35; shift += 7) {
    if (*pos >= in.size()) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs {} truncated", what));
    const uint8_t b = in[(*pos)++];
    if (shift == 28 && b > 0x0f) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs {} varint too long", what));
    v |= uint32_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  throw CorruptStream(fmt::format("corrupt KV bitstream: kvs {} varint too long", what));
}

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
double rope_inv_freq(double rope_theta, uint32_t i, uint32_t head_dim) {
  return std::pow(rope_theta, -2.0 * double(i) / double(head_dim));
}
std::array<float, 2> rope_cos_sin_at(uint64_t position, double inv_freq) {
  const double angle = double(position) * inv_freq;
  return {float(std::cos(angle)), float(std::sin(angle))};
}

// Per chunk: cos/sin for every (token, pair); each pair's frequency computed once.
std::vector<std::array<float, 2>> rope_table(double theta, uint64_t token_begin, uint32_t tokens, uint32_t head_dim) {
  const uint32_t half = head_dim / 2;
  std::vector<double> inv_freq(half);
  for (uint32_t i = 0; i < half; ++i) inv_freq[i] = rope_inv_freq(theta, i, head_dim);
  std::vector<std::array<float, 2>> cs(size_t(tokens) * half);
  for (uint32_t t = 0; t < tokens; ++t)
    for (uint32_t i = 0; i < half; ++i) cs[size_t(t) * half + i] = rope_cos_sin_at(token_begin + t, inv_freq[i]);
  return cs;
}

// The channel model sent in the chunk: spread index and centre (in steps).
struct ChannelModel {
  uint32_t spread = 0;
  int32_t centre = 0;
};

// The decoder's view of one head's rows: its literal tokens in order (null:
// every token, 0..T-1) and each token's source row (null: itself).
struct HeadRows {
  const uint32_t* literal = nullptr;
  const uint32_t* source = nullptr;
  uint32_t literals = 0;
};

// The encoder's histogram counts for one channel; all zero between channels.
struct ChannelScratch {
  uint32_t part[4][2 * kMaxRange + 1] = {};
  uint32_t hist[2 * kMaxRange + 1] = {};
};

// Floats from one channel's first token to the next's in channel-major
// buffers: T rounded up to a cache line (16 values), plus one line when that is
// an even number of lines, so that a block of tokens of many channels (read
// or written column-wise) spreads over the cache's sets.
size_t channel_stride(uint32_t T) {
  const size_t stride = (size_t(T) + 15) / 16 * 16;
  return stride % 32 == 0 ? stride + 16 : stride;
}

// p rounded up to a 64-byte boundary (buffers allocated 64 bytes longer).
template <typename T>
T* aligned64(T* p) {
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
}

class KvsCodec final : public Codec {
 public:
  KvsCodec(double rope_theta, std::vector<float> weights, bool default_weights, bool centroid, double lambda,
           std::vector<float> ladder, bool rows)
      : rope_theta_(rope_theta), weights_(std::move(weights)), default_weights_(default_weights),
        centroid_(centroid), lambda_(lambda), ladder_(std::move(ladder)), rows_(rows), tables_(build_gauss_tables()) {
    build_encoder_tables();
  }

  std::string name() const override { return "kvs"; }
  std::string params() const override {
    std::string w;
    for (size_t i = 0; i < weights_.size(); ++i) w += fmt::format("{}{:g}", i ? ":" : "", weights_[i]);
    std::string ladder = "default";
    for (size_t i = 0; i < ladder_.size(); ++i) ladder = fmt::format("{}{:g}", i ? ladder + ":" : "", ladder_[i]);
    return fmt::format("rope_theta={:g},weights={},centroid={},rdo={:g},ladder={},rows={}", rope_theta_,
                       default_weights_ ? "default" : w, centroid_ ? 1 : 0, lambda_, ladder, rows_ ? 1 : 0);
  }
  int levels() const override { return ladder_.empty() ? kKvsLevels : int(ladder_.size()); }

  Bytes encode(const KVChunk& chunk, int level) const override;
  KVChunk decode(std::span<const uint8_t> stream) const override;

 private:
  std::vector<float> steps_for(int level, uint32_t layers) const {
    std::vector<float> w = default_weights_ ? kvs_default_weights(layers) : weights_;
    if (w.size() != 2 * size_t(layers))
      throw Error(fmt::format("codec kvs: {} weights given for a model of {} layers (need {})", w.size(), layers,
                              2 * size_t(layers)));
    for (float& x : w) x *= ladder_.empty() ? kvs_level_step(level) : ladder_[size_t(level)];
    return w;
  }

  // The spread index that codes s[0..n) (with its histogram over
  // [-kMaxRange, kMaxRange], `far` values outside, sum of squares `sumsq`) in
  // the fewest bits, searched near the sample deviation.
  uint32_t best_spread(const int32_t* s, uint32_t n, const uint32_t* hist, uint32_t far, double sumsq) const;
  // One channel from its literal tokens' values in steps y[0..n) (sum_y: their
  // sum in double, in order): its model (centre m, spread), s = q - m of each
  // value into out (with the rate-distortion choice if rdo) and its rANS
  // symbol into symbols. Returns whether the channel has raw bits or escapes.
  bool code_channel(const float* y, uint32_t n, double sum_y, bool rdo, ChannelScratch* scratch, int32_t* out,
                    uint8_t* symbols, ChannelModel* model) const;
  void build_encoder_tables();
  // An integer vector as: u8 spread, varint zigzag centre (its median), varint
  // rANS bytes, the rANS stream, varint extra bytes, the extras.
  void put_ints(Bytes& out, const std::vector<int32_t>& v) const;
  std::vector<int32_t> get_ints(std::span<const uint8_t> in, size_t* pos, size_t n, const char* what) const;

  double rope_theta_;
  std::vector<float> weights_;
  bool default_weights_;
  bool centroid_;
  double lambda_;
  std::vector<float> ladder_;  // level steps; empty: kvs_level_step
  bool rows_;                  // repeated rows may be sent as references
  std::vector<GaussTable> tables_;

  // Encoder-only, derived from tables_ and lambda_ (speed; the choices are the
  // ones the plain formulas make):
  // per table, the rate-distortion terms of q in [-range - 1, range + 1]
  // (index q + range + 1): reconstruction point and lambda x bits, computed
  // with the same operations as the per-value choice;
  struct RdTable {
    double rec[2 * kMaxRange + 3];
    double lambda_bits[2 * kMaxRange + 3];
  };
  std::vector<RdTable> rd_;
  // per spread index j with raw bits, the largest n for which a sum of n of
  // its per-value costs (cost_bits + raw bits as float, or the escape) is
  // exact in double whatever the order (0 when j has no raw bits).
  std::array<uint64_t, 256> exact_n_{};
};

void KvsCodec::build_encoder_tables() {
  rd_.resize(kTables);
  for (uint32_t k = 0; k < kTables; ++k) {
    const GaussTable& g = tables_[k];
    const double escape = g.cost_bits[0] + kEscapeBits;
    for (int32_t q = -g.range - 1; q <= g.range + 1; ++q) {
      const bool inside = q >= -g.range && q <= g.range;
      rd_[k].rec[q + g.range + 1] = inside ? double(q) - g.offset[1 + g.range + q] : double(q);
      rd_[k].lambda_bits[q + g.range + 1] = lambda_ * (inside ? g.cost_bits[1 + g.range + q] : escape);
    }
  }
  // Every cost is a multiple of the least ulp among them (the escape, float
  // cost + 32, of its float's ulp), and non-negative: with n x the largest at
  // most 2^53 x that ulp, every partial sum is exact.
  auto ulp = [](double x) {  // of a float x > 0
    int e = 0;
    std::frexp(x, &e);
    return std::ldexp(1.0, e - 24);
  };
  for (uint32_t j = kLastTable + 1; j < 256; ++j) {
    const Spread sp = split_spread(j);
    const GaussTable& g = tables_[sp.table];
    double least = ulp(g.cost_bits[0]), largest = g.cost_bits[0] + kEscapeBits;
    for (uint32_t s = 1; s < g.table.symbols; ++s) {
      const float term = g.cost_bits[s] + float(sp.raw_bits);
      least = std::min(least, ulp(term));
      largest = std::max(largest, double(term));
    }
    exact_n_[j] = uint64_t(std::floor(std::ldexp(least, 53) / largest));
  }
}

// Elias-gamma-like code of v >= 1: n ones and a zero (n = floor(log2 v)), then v's low n bits.
void put_gamma(BitWriter& w, uint32_t v) {
  uint32_t n = 0;
  while ((v >> n) > 1) ++n;
  for (uint32_t i = 0; i < n; ++i) w.put(1, 1);
  w.put(0, 1);
  w.put(v, n);
}
uint32_t get_gamma(BitReader& r) {
  uint32_t n = 0;
  while (r.get(1)) {
    if (++n > 24) throw CorruptStream("corrupt KV bitstream: kvs row reference too long");
  }
  return (1u << n) | r.get(n);
}

// lrint(v) for |v| <= 2^29 without a library call where it matters: for
// |v| <= 2^22, adding and subtracting 1.5 * 2^23 rounds to an integer in the
// current rounding mode (nearest even), exactly as lrint does (as cachegen's
// round_to_long).
constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23
int32_t round_to_int(float v) {
  if (std::fabs(v) <= 4194304.0f) return int32_t((v + kRoundMagic) - kRoundMagic);
  return int32_t(std::lrint(v));
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

// first[t] = the first token u <= t with equal(u, t), for T tokens with
// hashes hash[t] (equal values must have equal hashes; a hash decides only the
// speed).
template <typename Equal>
void first_occurrences(const uint64_t* hash, uint32_t T, Equal equal, uint32_t* first) {
  size_t size = 2;
  while (size < 2 * size_t(T)) size *= 2;
  std::vector<uint32_t> slots(size, 0);  // open addressing: token + 1, 0 empty
  const size_t mask = size - 1;
  for (uint32_t t = 0; t < T; ++t) {
    size_t i = size_t((hash[t] * 0xD6E8FEB86659FD93ull) >> 32) & mask;
    uint32_t source = t;
    for (; slots[i]; i = (i + 1) & mask) {
      const uint32_t u = slots[i] - 1;
      if (hash[u] == hash[t] && equal(u, t)) {
        source = u;
        break;
      }
    }
    if (source == t) slots[i] = t + 1;
    first[t] = source;
  }
}

// One more 32-bit value into a running hash.
inline uint64_t hash_step(uint64_t h, uint32_t v) {
  h = (h ^ v) * 0x9E3779B97F4A7C15ull;
  return h ^ (h >> 32);
}

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

// A plan from each token's first occurrence: literal tokens, move-to-front
// ranks (0 for a literal row, r for the r-th most recently used one), their cost.
RowPlan plan_from_first(const uint32_t* first, uint32_t T, double row_bits) {
  RowPlan plan;
  plan.row_bits = row_bits;
  plan.ranks.resize(T);
  RecencyList recent(T);
  std::vector<uint32_t> last_use(T);  // per distinct row (its first token): when it was last used
  for (uint32_t t = 0; t < T; ++t) {
    const uint32_t source = first[t];
    uint32_t rank = 0;
    if (source == t) {
      plan.literal.push_back(t);
    } else {
      rank = recent.rank(last_use[source]);
      recent.remove(last_use[source]);
    }
    recent.add(t);
    last_use[source] = t;
    plan.ranks[t] = rank;
    uint32_t n = 0;
    while (((rank + 1) >> n) > 1) ++n;
    plan.ref_bits += 2 * n + 1;
  }
  return plan;
}

// Row modes and the plan of each of a layer's `heads` heads, from their
// values in steps y[(head * D + dim) * stride + token] (a row is the head's D
// values at one token, rounded).
void plan_layer(const float* y, size_t stride, uint32_t heads, uint32_t T, uint32_t D, bool allow,
                std::vector<uint8_t>* modes, std::vector<RowPlan>* plans) {
  modes->assign(heads, 0);
  plans->assign(heads, RowPlan{});
  if (allow) {
    // A row's estimated cost from each dimension's spread: the entropy of a
    // rounded Gaussian, at least 0.05 bits. Per head, each token's first
    // occurrence of its row; jointly, a token repeats where every head's
    // first occurrence is the same.
    std::vector<double> dim_bits(size_t(heads) * D);
    std::vector<uint64_t> hash(T);
    std::vector<uint32_t> first(size_t(heads) * T), joint_first(T);
    for (uint32_t h = 0; h < heads; ++h) {
      std::fill(hash.begin(), hash.end(), 0);
      for (uint32_t d = 0; d < D; ++d) {
        const float* col = y + (size_t(h) * D + d) * stride;
        // s1 and s2: the sums in double of the rounded values and their
        // squares in token order, which are the integer sums when every
        // partial sum is below 2^53.
        int64_t sum = 0;
        uint64_t sumsq = 0;
        uint32_t max_abs = 0;
        for (uint32_t t = 0; t < T; ++t) {
          const int32_t v = round_to_int(col[t]);
          const uint32_t a = uint32_t(v < 0 ? -int64_t(v) : v);
          sum += v;
          sumsq += uint64_t(a) * a;
          max_abs = std::max(max_abs, a);
          hash[t] = hash_step(hash[t], uint32_t(v));
        }
        double s1 = 0, s2 = 0;
        if (max_abs <= (1u << 26) && uint64_t(max_abs) * max_abs <= (T ? (uint64_t(1) << 53) / T : 0)) {
          s1 = double(sum);
          s2 = double(sumsq);
        } else {
          for (uint32_t t = 0; t < T; ++t) {
            const int32_t v = round_to_int(col[t]);
            s1 += v, s2 += double(v) * v;
          }
        }
        const double var = std::max(0.0, s2 / T - (s1 / T) * (s1 / T));
        dim_bits[size_t(h) * D + d] = std::max(0.05, 0.5 * std::log2(2 * M_PI * M_E * var));
      }
      const float* head = y + size_t(h) * D * stride;
      first_occurrences(hash.data(), T,
                        [&](uint32_t u, uint32_t t) {
                          for (uint32_t d = 0; d < D; ++d)
                            if (round_to_int(head[d * stride + u]) != round_to_int(head[d * stride + t])) return false;
                          return true;
                        },
                        first.data() + size_t(h) * T);
    }
    std::fill(hash.begin(), hash.end(), 0);
    for (uint32_t h = 0; h < heads; ++h)
      for (uint32_t t = 0; t < T; ++t) hash[t] = hash_step(hash[t], first[size_t(h) * T + t]);
    first_occurrences(hash.data(), T,
                      [&](uint32_t u, uint32_t t) {
                        for (uint32_t h = 0; h < heads; ++h)
                          if (first[size_t(h) * T + u] != first[size_t(h) * T + t]) return false;
                        return true;
                      },
                      joint_first.data());
    double joint_row_bits = 0;
    for (size_t hd = 0; hd < size_t(heads) * D; ++hd) joint_row_bits += dim_bits[hd];
    const RowPlan joint = plan_from_first(joint_first.data(), T, joint_row_bits);
    const double joint_bits = joint.ref_bits + double(joint.literal.size()) * joint.row_bits;
    std::vector<RowPlan> own(heads);
    std::vector<uint8_t> own_modes(heads, 0);
    double own_bits = 0;
    const RowPlan* previous = nullptr;
    for (uint32_t h = 0; h < heads; ++h) {
      double row_bits = 0;
      for (uint32_t d = 0; d < D; ++d) row_bits += dim_bits[size_t(h) * D + d];
      own[h] = plan_from_first(first.data() + size_t(h) * T, T, row_bits);
      const bool shared = previous && previous->ranks == own[h].ranks;
      const double copy_bits = (shared ? 0.0 : own[h].ref_bits) + double(own[h].literal.size()) * own[h].row_bits;
      if (copy_bits < double(T) * own[h].row_bits) {
        own_modes[h] = shared ? 2 : 1;
        own_bits += copy_bits;
        previous = &own[h];
      } else {
        own_bits += double(T) * own[h].row_bits;
      }
    }
    const double plain_bits = double(T) * joint.row_bits;
    if (joint_bits < own_bits && joint_bits < plain_bits) {
      for (uint32_t h = 0; h < heads; ++h) (*modes)[h] = h == 0 ? 1 : 2, (*plans)[h] = joint;
    } else if (own_bits < plain_bits) {
      *modes = own_modes;
      *plans = own;
    }
  }
  for (uint32_t h = 0; h < heads; ++h)
    if ((*modes)[h] == 0) {
      (*plans)[h].literal.resize(T);
      for (uint32_t t = 0; t < T; ++t) (*plans)[h].literal[t] = t;
    }
}

uint32_t KvsCodec::best_spread(const int32_t* s, uint32_t n, const uint32_t* hist, uint32_t far, double sumsq) const {
  const double sd = std::sqrt(sumsq / n);
  const int j0 = sd > 0 ? int(std::lrint(kSpreadCenter + 8 * std::log2(sd))) : 0;
  int32_t lo = -kMaxRange, hi = kMaxRange;  // the histogram's occupied range
  while (lo < hi && !hist[lo + kMaxRange]) ++lo;
  while (hi > lo && !hist[hi + kMaxRange]) --hi;
  // Spreads with raw bits b: the histogram of s >> b (built once per b).
  uint32_t shifted[2 * kMaxRange + 1];
  int32_t shifted_lo = 0, shifted_hi = -1;  // its occupied range within [-kMaxRange, kMaxRange]
  uint32_t shifted_b = 0;
  uint32_t best_j = 0;
  double best_bits = INFINITY;
  for (int j = std::max(0, j0 - 4); j <= std::min(255, j0 + 4); ++j) {
    const Spread sp = split_spread(uint32_t(j));
    const GaussTable& g = tables_[sp.table];
    const double escape = g.cost_bits[0] + kEscapeBits;
    double bits = 0;
    if (sp.raw_bits == 0) {
      bits = far * escape;
      for (int32_t v = lo; v <= hi; ++v)
        if (hist[v + kMaxRange]) bits += hist[v + kMaxRange] * (std::abs(v) <= g.range ? g.cost_bits[1 + g.range + v] : escape);
    } else if (n <= exact_n_[size_t(j)]) {
      // The per-value sum below, as counts x costs: exact either way (exact_n_).
      if (shifted_b != sp.raw_bits) {
        std::fill(shifted, shifted + 2 * kMaxRange + 1, 0u);
        shifted_lo = kMaxRange, shifted_hi = -kMaxRange;
        for (uint32_t i = 0; i < n; ++i) {
          const int32_t v = std::clamp(s[i] >> sp.raw_bits, -kMaxRange - 1, kMaxRange + 1);
          if (v >= -kMaxRange && v <= kMaxRange) ++shifted[v + kMaxRange];
          shifted_lo = std::min(shifted_lo, v), shifted_hi = std::max(shifted_hi, v);
        }
        shifted_lo = std::max(shifted_lo, -kMaxRange), shifted_hi = std::min(shifted_hi, kMaxRange);
        shifted_b = sp.raw_bits;
      }
      uint64_t inside = 0;
      for (int32_t v = std::max(shifted_lo, -g.range); v <= std::min(shifted_hi, g.range); ++v) {
        const uint32_t count = shifted[v + kMaxRange];
        inside += count;
        bits += double(count) * double(g.cost_bits[1 + g.range + v] + float(sp.raw_bits));
      }
      bits += double(n - inside) * escape;
    } else {
      for (uint32_t i = 0; i < n; ++i) {
        const int64_t hi = int64_t(s[i]) >> sp.raw_bits;
        bits += (hi < -g.range || hi > g.range) ? escape : g.cost_bits[1 + g.range + hi] + sp.raw_bits;
      }
    }
    if (bits < best_bits) best_bits = bits, best_j = uint32_t(j);
  }
  return best_j;
}

void KvsCodec::put_ints(Bytes& out, const std::vector<int32_t>& v) const {
  std::vector<int32_t> sorted = v;
  std::nth_element(sorted.begin(), sorted.begin() + ptrdiff_t(sorted.size() / 2), sorted.end());
  const int32_t centre = sorted[sorted.size() / 2];
  std::vector<int32_t> s(v.size());
  uint32_t hist[2 * kMaxRange + 1] = {};
  uint32_t far = 0;
  double sumsq = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    s[i] = int32_t(int64_t(v[i]) - centre);  // |v| <= 2^29
    sumsq += double(s[i]) * s[i];
    if (s[i] >= -kMaxRange && s[i] <= kMaxRange) ++hist[s[i] + kMaxRange]; else ++far;
  }
  const uint32_t j = best_spread(s.data(), uint32_t(s.size()), hist, far, sumsq);
  const Spread sp = split_spread(j);
  const GaussTable& g = tables_[sp.table];
  std::vector<uint8_t> symbols(s.size());
  BitWriter extras;
  for (size_t i = 0; i < s.size(); ++i) {
    const int64_t hi = int64_t(s[i]) >> sp.raw_bits;
    if (hi < -g.range || hi > g.range) {
      symbols[i] = 0;
      extras.put(uint32_t(s[i]), kEscapeBits);
    } else {
      symbols[i] = uint8_t(1 + g.range + hi);
      extras.put(uint32_t(s[i]), sp.raw_bits);
    }
  }
  std::vector<uint8_t> buffer(4 + 2 * s.size() + 16);
  const size_t written = rans::encode(symbols.data(), symbols.size(), 1, g.encode_table, buffer.data(), buffer.size());
  if (written == 0) throw Error("codec kvs: internal error: rANS buffer too small");
  Bytes extra_bytes;
  extras.finish(extra_bytes);
  out.push_back(uint8_t(j));
  put_varint(out, zigzag(centre));
  put_varint(out, uint32_t(written));
  out.insert(out.end(), buffer.end() - ptrdiff_t(written), buffer.end());
  put_varint(out, uint32_t(extra_bytes.size()));
  out.insert(out.end(), extra_bytes.begin(), extra_bytes.end());
}

std::vector<int32_t> KvsCodec::get_ints(std::span<const uint8_t> in, size_t* pos, size_t n, const char* what) const {
  if (*pos >= in.size()) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs {} truncated", what));
  const uint32_t j = in[(*pos)++];
  const int64_t centre = unzigzag(get_varint(in, pos, what));
  const uint32_t rans_bytes = get_varint(in, pos, what);
  if (rans_bytes > in.size() - *pos) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs {} truncated", what));
  const auto rans_part = in.subspan(*pos, rans_bytes);
  *pos += rans_bytes;
  const uint32_t extra_bytes = get_varint(in, pos, what);
  if (extra_bytes > in.size() - *pos) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs {} truncated", what));
  BitReader extras(in.subspan(*pos, extra_bytes));
  *pos += extra_bytes;
  const Spread sp = split_spread(j);
  const GaussTable& g = tables_[sp.table];
  std::vector<uint8_t> symbols(n);
  if (rans::decode(rans_part.data(), rans_part.size(), g.table, g.index, symbols.data(), n) != rans::DecodeStatus::kOk)
    throw CorruptStream(fmt::format("corrupt KV bitstream: kvs {} do not decode", what));
  std::vector<int32_t> v(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t s = symbols[i] == 0 ? int64_t(int32_t(extras.get(kEscapeBits)))
                                      : ((int64_t(symbols[i]) - 1 - g.range) << sp.raw_bits) + extras.get(sp.raw_bits);
    const int64_t x = centre + s;
    if (x > kMaxQ || x < -kMaxQ) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs {} out of range", what));
    v[i] = int32_t(x);
  }
  extras.expect_end();
  return v;
}

bool KvsCodec::code_channel(const float* y, uint32_t n, double sum_y, bool rdo, ChannelScratch* scratch, int32_t* out,
                            uint8_t* symbols, ChannelModel* model) const {
  const int32_t m = int32_t(std::lrint(sum_y / n));
  // Rounded values relative to the centre, their histogram (four partial
  // counts, so that repeated values do not wait on one counter) and sum of squares.
  uint32_t(*part)[2 * kMaxRange + 1] = scratch->part;
  uint32_t* hist = scratch->hist;
  uint32_t far = 0;  // |s| > kMaxRange
  uint64_t sumsq = 0;
  uint32_t max_abs = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const int64_t r = int64_t(round_to_int(y[i])) - int64_t(m);  // |r| <= 2^30
    out[i] = int32_t(r);
    sumsq += uint64_t(r * r);
    max_abs = std::max(max_abs, uint32_t(r < 0 ? -r : r));
    if (r >= -kMaxRange && r <= kMaxRange) ++part[i & 3][r + kMaxRange]; else ++far;
  }
  const int32_t occupied = int32_t(std::min<uint32_t>(max_abs, kMaxRange));  // counts in [-occupied, occupied]
  for (int32_t v = kMaxRange - occupied; v <= kMaxRange + occupied; ++v) {
    hist[v] = part[0][v] + part[1][v] + part[2][v] + part[3][v];
    part[0][v] = part[1][v] = part[2][v] = part[3][v] = 0;
  }
  // The variance as the plain sum of double(r)^2 in order: the integer sum
  // when every partial sum is below 2^53 (then that sum is exact), else that loop.
  double var = 0;
  if (n > 0 && max_abs <= (1u << 26) && uint64_t(max_abs) * max_abs <= (uint64_t(1) << 53) / n) {
    var = double(sumsq);
  } else {
    for (uint32_t i = 0; i < n; ++i) var += double(out[i]) * double(out[i]);
  }
  const uint32_t best_j = best_spread(out, n, hist, far, var);
  std::fill(hist + kMaxRange - occupied, hist + kMaxRange + occupied + 1, 0u);
  // With centroid reconstruction each value takes whichever of its two
  // neighbouring reconstruction points costs less in distortion + lambda x bits,
  // among those within one step of it.
  const Spread sp = split_spread(best_j);
  if (rdo && sp.raw_bits == 0) {
    const GaussTable& g = tables_[sp.table];
    const RdTable& rd = rd_[sp.table];
    const double escape = g.cost_bits[0] + kEscapeBits;
    constexpr double kLimit = 1.0 + 1e-6;  // keeps |error| <= 1 step (the nearer point always qualifies)
    for (uint32_t i = 0; i < n; ++i) {
      const double dd = double(y[i]) - m;
      const int64_t whole = int64_t(dd);
      const int64_t q0 = whole - int64_t(double(whole) > dd);  // floor(dd)
      if (q0 >= -g.range - 1 && q0 <= g.range) {
        // Both points from the table: the same operations as below.
        const size_t k = size_t(q0 + g.range + 1);
        const double e0 = (dd - rd.rec[k]) * (dd - rd.rec[k]), e1 = (dd - rd.rec[k + 1]) * (dd - rd.rec[k + 1]);
        const bool ok0 = !(e0 > kLimit), ok1 = !(e1 > kLimit);
        const double c0 = e0 + rd.lambda_bits[k], c1 = e1 + rd.lambda_bits[k + 1];
        // Without branches (the choice is data-dependent): q0 + 1 if it
        // qualifies and q0 does not or costs more, else q0 if it qualifies.
        const bool take1 = ok1 & (!ok0 | (c1 < c0));
        const int32_t chosen = int32_t(q0) + int32_t(take1);
        out[i] = (ok0 | ok1) ? chosen : out[i];
        continue;
      }
      double best_c = INFINITY;
      for (int64_t q = q0; q <= q0 + 1; ++q) {
        const bool inside = q >= -g.range && q <= g.range;
        const double rec = inside ? double(q) - g.offset[1 + g.range + q] : double(q);
        const double e = (dd - rec) * (dd - rec);
        if (e > kLimit) continue;
        const double cost = e + lambda_ * (inside ? g.cost_bits[1 + g.range + q] : escape);
        if (cost < best_c) best_c = cost, out[i] = int32_t(q);
      }
    }
  }
  *model = {best_j, m};
  // Symbols: 1 + range + (s >> raw bits) in the table, else 0 (an escape).
  const int32_t range = tables_[sp.table].range;
  if (sp.raw_bits == 0) {
    bool escapes = false;
    for (uint32_t i = 0; i < n; ++i) {
      const uint32_t u = uint32_t(out[i] + range);  // in the table iff u <= 2 range
      symbols[i] = u <= uint32_t(2 * range) ? uint8_t(u + 1) : 0;
      escapes |= symbols[i] == 0;
    }
    return escapes;
  }
  for (uint32_t i = 0; i < n; ++i) {
    const int32_t hi = out[i] >> sp.raw_bits;
    symbols[i] = hi < -range || hi > range ? 0 : uint8_t(1 + range + hi);
  }
  return true;
}

Bytes KvsCodec::encode(const KVChunk& chunk, int level) const {
  if (level < 0 || level >= levels())
    throw Error(fmt::format("codec kvs: level {} out of range (0..{})", level, levels() - 1));
  const KVShape& sh = chunk.shape;
  const uint32_t T = chunk.tokens, C = uint32_t(sh.channels()), D = sh.head_dim, H = sh.kv_heads;
  const std::vector<float> steps = steps_for(level, sh.layers);
  const double theta = (D % 2 == 0) ? rope_theta_ : 0.0;
  const auto rope = theta > 0 ? rope_table(theta, chunk.token_begin, T, D) : std::vector<std::array<float, 2>>{};
  const uint32_t half = D / 2;
  const size_t planes = 2 * size_t(sh.layers), channels = planes * C, layer_channels = 2 * size_t(C);

  // A bad value of layer l: the error for the first one in chunk order.
  auto throw_bad_value = [&](uint32_t l) {
    for (Kind k : {Kind::kKey, Kind::kValue}) {
      const float step = steps[2 * size_t(l) + size_t(k)];
      for (uint32_t h = 0; h < H; ++h)
        for (uint32_t t = 0; t < T; ++t) {
          const float* in = &chunk.at(l, k, h, t, 0);
          for (uint32_t d = 0; d < D; ++d) {
            float x = in[d];
            if (k == Kind::kKey && theta > 0) {
              const auto& cs = rope[size_t(t) * half + (d % half)];
              const float o1 = in[d % half], o2 = in[d % half + half];
              x = d < half ? o1 * cs[0] + o2 * cs[1] : o2 * cs[0] - o1 * cs[1];
            }
            if (!std::isfinite(x)) throw Error("codec kvs: the chunk holds a value that is not finite");
            const float y = x / step;
            if (!(std::fabs(y) <= float(kMaxQ)))
              throw Error(fmt::format("codec kvs: value {} is too large for step {}", x, step));
          }
        }
    }
    throw Error("codec kvs: internal error: no bad value found");
  };

  Bytes params, models;
  put_f32(params, float(theta));
  for (float s : steps) put_f32(params, s);
  std::vector<RowPlan> plans;  // per head (layer, kind, head)
  BitWriter refs;
  std::vector<ChannelModel> model(channels);
  std::vector<size_t> first_symbol(channels + 1, 0);
  // Of each channel's literal tokens, channel after channel: s = q - m and its symbol.
  std::unique_ptr<int32_t[]> svals(new int32_t[channels * T]);
  std::unique_ptr<uint8_t[]> channel_symbols(new uint8_t[channels * T]);
  std::vector<uint8_t> has_extras(channels);

  // Per layer: the values to quantize, in steps, channel-major (channel = kind
  // * C + head * D + dim; keys pre-RoPE), and per channel their sum (as
  // double, in token order). Channels start every channel_stride(T) values.
  const size_t stride = channel_stride(T);
  std::unique_ptr<float[]> yl_buffer(new float[layer_channels * stride + 16]);  // every value used is written
  float* const yl = aligned64(yl_buffer.get());
  std::vector<double> sum_y(layer_channels);
  // Rows are read and rotated kBlock tokens at a time, then written channel-major.
  constexpr uint32_t kBlock = 16;
  std::vector<float> tile_y(size_t(kBlock) * D), rotated(D);
  std::vector<float> gathered_y(T);
  std::vector<uint8_t> modes;
  std::vector<RowPlan> layer_plans;
  ChannelScratch scratch;
  for (uint32_t l = 0; l < sh.layers; ++l) {
    std::fill(sum_y.begin(), sum_y.end(), 0.0);
    for (Kind k : {Kind::kKey, Kind::kValue}) {
      const float step = steps[2 * size_t(l) + size_t(k)];
      const bool rotate = k == Kind::kKey && theta > 0;
      for (uint32_t h = 0; h < H; ++h) {
        const size_t c0 = size_t(k) * C + size_t(h) * D;  // the layer channel of dim 0
        double* const sy = sum_y.data() + c0;
        for (uint32_t t0 = 0; t0 < T; t0 += kBlock) {
          const uint32_t nb = std::min(kBlock, T - t0);
          for (uint32_t b = 0; b < nb; ++b) {
            const uint32_t t = t0 + b;
            const float* in = &chunk.at(l, k, h, t, 0);
            const float* x = in;
            if (rotate) {
              const std::array<float, 2>* cs = &rope[size_t(t) * half];
              for (uint32_t i = 0; i < half; ++i) {
                rotated[i] = in[i] * cs[i][0] + in[i + half] * cs[i][1];
                rotated[i + half] = in[i + half] * cs[i][0] - in[i] * cs[i][1];
              }
              x = rotated.data();
            }
            float* ty = &tile_y[size_t(b) * D];
            bool bad = false;
            for (uint32_t d = 0; d < D; ++d) {
              const float v = x[d] / step;
              ty[d] = v;
              bad |= !std::isfinite(x[d]) || !(std::fabs(v) <= float(kMaxQ));
            }
            if (bad) throw_bad_value(l);
            for (uint32_t d = 0; d < D; ++d) sy[d] += double(ty[d]);
          }
          for (uint32_t d = 0; d < D; ++d) {
            float* dy = yl + (c0 + d) * stride + t0;
            for (uint32_t b = 0; b < nb; ++b) dy[b] = tile_y[size_t(b) * D + d];
          }
        }
      }
    }

    // Row references.
    plan_layer(yl, stride, 2 * H, T, D, rows_, &modes, &layer_plans);
    for (uint32_t k = 0; k < 2 * H; ++k) {
      params.push_back(modes[k]);
      if (modes[k] == 1)
        for (uint32_t r : layer_plans[k].ranks) put_gamma(refs, r + 1);
      plans.push_back(std::move(layer_plans[k]));
    }

    // Per channel: centre, spread and symbols over the head's literal tokens.
    const size_t ch0 = 2 * size_t(l) * C;
    for (size_t c = 0; c < layer_channels; ++c)
      first_symbol[ch0 + c + 1] = first_symbol[ch0 + c] + plans[(ch0 + c) / D].literal.size();
    for (size_t c = 0; c < layer_channels; ++c) {
      const size_t ch = ch0 + c;
      const RowPlan& plan = plans[ch / D];
      const uint32_t n = uint32_t(plan.literal.size());
      const float* y = yl + c * stride;
      double sum = sum_y[c];
      if (n != T) {  // some rows are references: the literal ones
        sum = 0;
        for (uint32_t i = 0; i < n; ++i) {
          gathered_y[i] = y[plan.literal[i]];
          sum += gathered_y[i];
        }
        y = gathered_y.data();
      }
      // Rows of heads that copy rows keep plain rounding, so a copy (whose
      // rounded values equal its source's) is also within one step.
      has_extras[ch] = code_channel(y, n, sum, centroid_ && plan.ranks.empty(), &scratch,
                                    svals.get() + first_symbol[ch], channel_symbols.get() + first_symbol[ch],
                                    &model[ch]);
    }
  }
  Bytes refs_bytes;
  refs.finish(refs_bytes);

  // Channel models, per plane: the spreads, then the centres, each an integer
  // vector coded like the values (centre, spread, rANS symbols).
  std::vector<int32_t> side(C);
  for (size_t p = 0; p < planes; ++p) {
    for (uint32_t c = 0; c < C; ++c) side[c] = int32_t(model[p * C + c].spread);
    put_ints(models, side);
    for (uint32_t c = 0; c < C; ++c) side[c] = model[p * C + c].centre;
    put_ints(models, side);
  }

  // Channels grouped by table, in channel order; each group's symbols cut into
  // substreams of kKvsStreamSymbols, each with its raw bits and escapes.
  std::vector<std::vector<uint32_t>> groups(kTables);
  for (size_t ch = 0; ch < channels; ++ch) groups[split_spread(model[ch].spread).table].push_back(uint32_t(ch));
  struct Piece {
    uint32_t table;
    size_t begin;  // in symbols
    uint32_t n;
    Bytes extras;
  };
  std::vector<Piece> pieces;
  std::unique_ptr<uint8_t[]> symbols(new uint8_t[first_symbol[channels]]);  // in substream order
  {
    size_t pos = 0;
    for (uint32_t g = 0; g < kTables; ++g) {
      BitWriter extras;
      size_t begin = pos;
      auto close_piece = [&] {
        Bytes bytes;
        extras.finish(bytes);
        pieces.push_back({g, begin, uint32_t(pos - begin), std::move(bytes)});
        begin = pos;
      };
      for (uint32_t ch : groups[g]) {
        const uint32_t b = split_spread(model[ch].spread).raw_bits;
        size_t i = first_symbol[ch];
        while (i < first_symbol[ch + 1]) {
          // Up to the channel's end or the piece's.
          const size_t end = std::min(first_symbol[ch + 1], i + (begin + kKvsStreamSymbols - pos));
          std::memcpy(symbols.get() + pos, channel_symbols.get() + i, end - i);
          if (has_extras[ch])
            for (size_t j = i; j < end; ++j) extras.put(uint32_t(svals[j]), channel_symbols[j] ? b : kEscapeBits);
          pos += end - i;
          i = end;
          if (pos - begin == kKvsStreamSymbols) close_piece();
        }
      }
      if (pos != begin) close_piece();
    }
  }

  std::vector<Bytes> sections;
  sections.reserve(3 + pieces.size());
  sections.push_back(std::move(params));
  sections.push_back(std::move(refs_bytes));
  sections.push_back(std::move(models));
  // rANS, four substreams side by side (independent chains that one core
  // overlaps; each substream's bytes are those of encoding it alone).
  constexpr size_t kWays = 4;
  const size_t capacity = 4 + 2 * size_t(kKvsStreamSymbols) + 16;
  std::vector<uint8_t> buffer(kWays * capacity);
  for (size_t p0 = 0; p0 < pieces.size(); p0 += kWays) {
    const size_t np = std::min(kWays, pieces.size() - p0);
    rans::Encoder enc[kWays];
    uint32_t nmin = kKvsStreamSymbols;
    for (size_t k = 0; k < np; ++k) nmin = std::min(nmin, pieces[p0 + k].n);
    bool ok = true;
    for (size_t k = 0; k < np; ++k) {  // symbols [nmin, n) one substream at a time, the rest side by side
      const Piece& pc = pieces[p0 + k];
      const rans::EncodeTable& e = tables_[pc.table].encode_table;
      rans::encoder_init(buffer.data() + k * capacity, capacity, &enc[k]);
      for (uint32_t i = pc.n; i-- > nmin;) ok &= rans::encode_step(&enc[k], e.sym[symbols[pc.begin + i]]);
    }
    if (np == kWays) {
      const rans::EncodeTable &e0 = tables_[pieces[p0].table].encode_table,
                              &e1 = tables_[pieces[p0 + 1].table].encode_table,
                              &e2 = tables_[pieces[p0 + 2].table].encode_table,
                              &e3 = tables_[pieces[p0 + 3].table].encode_table;
      const uint8_t *s0 = symbols.get() + pieces[p0].begin, *s1 = symbols.get() + pieces[p0 + 1].begin,
                    *s2 = symbols.get() + pieces[p0 + 2].begin, *s3 = symbols.get() + pieces[p0 + 3].begin;
      for (uint32_t i = nmin; i-- > 0;) {
        ok &= rans::encode_step(&enc[0], e0.sym[s0[i]]);
        ok &= rans::encode_step(&enc[1], e1.sym[s1[i]]);
        ok &= rans::encode_step(&enc[2], e2.sym[s2[i]]);
        ok &= rans::encode_step(&enc[3], e3.sym[s3[i]]);
      }
    } else {
      for (size_t k = 0; k < np; ++k) {
        const Piece& pc = pieces[p0 + k];
        const rans::EncodeTable& e = tables_[pc.table].encode_table;
        for (uint32_t i = nmin; i-- > 0;) ok &= rans::encode_step(&enc[k], e.sym[symbols[pc.begin + i]]);
      }
    }
    for (size_t k = 0; k < np; ++k) {
      const size_t written = ok ? rans::encoder_finish(&enc[k], capacity) : 0;
      if (written == 0) throw Error("codec kvs: internal error: rANS buffer too small");
      const uint8_t* end = buffer.data() + (k + 1) * capacity;
      Bytes sec;
      sec.reserve(5 + written + pieces[p0 + k].extras.size());
      put_varint(sec, uint32_t(written));
      sec.insert(sec.end(), end - written, end);
      sec.insert(sec.end(), pieces[p0 + k].extras.begin(), pieces[p0 + k].extras.end());
      sections.push_back(std::move(sec));
    }
  }
  StreamHeader header = header_for(chunk, CodecId::kKvs, level);
  header.flags = centroid_ ? 1 : 0;
  return write_stream(header, sections);
}

KVChunk KvsCodec::decode(std::span<const uint8_t> stream) const {
  const ParsedStream ps = parse_stream(stream, CodecId::kKvs);
  const StreamHeader& hd = ps.header;
  if (hd.flags > 1) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs flags {} (expected 0 or 1)", hd.flags));
  const bool centroid = hd.flags & 1;
  const KVShape& sh = hd.shape;
  const uint32_t T = hd.tokens, C = uint32_t(sh.channels()), D = sh.head_dim, H = sh.kv_heads, half = D / 2;
  const size_t planes = 2 * size_t(sh.layers), channels = planes * C, heads = planes * H;
  if (ps.sections.size() < 3) throw CorruptStream("corrupt KV bitstream: kvs has fewer than 3 sections");

  SectionReader params(ps.sections[0], "kvs parameters");
  const float theta = params.f32();
  if (!std::isfinite(theta) || (theta != 0 && !(theta > 1 && D % 2 == 0)))
    throw CorruptStream(fmt::format("corrupt KV bitstream: kvs rope_theta {}", theta));
  std::vector<float> steps(planes);
  for (float& s : steps) {
    s = params.f32();
    if (!(s >= 1e-20f && s <= 1e20f)) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs step {}", s));
  }
  const auto modes = params.bytes(heads);
  params.expect_end();

  // Row references, per head in mode 1: its literal tokens and each token's
  // source (itself for a literal row). A head in mode 2 points at the lists
  // of the head it shares; one in mode 0 has none (every token literal), so
  // the lists grow with the references read (T codes per list), not with
  // the number of heads times T.
  std::vector<std::vector<uint32_t>> literal_lists, source_lists;  // one per head in mode 1
  std::vector<HeadRows> rows(heads);
  {
    BitReader refs(ps.sections[1]);
    size_t previous = heads;  // the last head in copy mode
    std::vector<size_t> list_of(heads, 0);
    for (size_t ph = 0; ph < heads; ++ph) {
      if (modes[ph] > 2) throw CorruptStream(fmt::format("corrupt KV bitstream: kvs row mode {}", modes[ph]));
      if (!modes[ph]) continue;
      if (modes[ph] == 2) {
        if (previous == heads) throw CorruptStream("corrupt KV bitstream: kvs shares the references of no head");
        list_of[ph] = list_of[previous];
        previous = ph;
        continue;
      }
      previous = ph;
      list_of[ph] = literal_lists.size();
      std::vector<uint32_t>& literal = literal_lists.emplace_back();
      std::vector<uint32_t>& source = source_lists.emplace_back(T);
      RecencyList recent(T);
      for (uint32_t t = 0; t < T; ++t) {
        const uint32_t rank = get_gamma(refs) - 1;
        if (rank == 0) {
          literal.push_back(t);
          source[t] = t;
        } else {
          if (rank > recent.size()) throw CorruptStream("corrupt KV bitstream: kvs row reference out of range");
          const uint32_t last = recent.time_of(rank);
          recent.remove(last);
          source[t] = source[last];  // the row used at `last` (its source is the row's first token)
        }
        recent.add(t);
      }
    }
    refs.expect_end();
    for (size_t ph = 0; ph < heads; ++ph)
      if (modes[ph]) {
        const size_t k = list_of[ph];
        rows[ph] = {literal_lists[k].data(), source_lists[k].data(), uint32_t(literal_lists[k].size())};
      } else {
        rows[ph] = {nullptr, nullptr, T};
      }
  }

  std::vector<ChannelModel> model(channels);
  std::vector<std::vector<uint32_t>> groups(kTables);
  std::vector<uint64_t> group_symbols(kTables, 0);
  {
    const auto sec = ps.sections[2];
    size_t pos = 0;
    for (size_t p = 0; p < planes; ++p) {
      const std::vector<int32_t> spread = get_ints(sec, &pos, C, "channel spreads");
      const std::vector<int32_t> centre = get_ints(sec, &pos, C, "channel centres");
      for (uint32_t c = 0; c < C; ++c) {
        if (spread[c] < 0 || spread[c] > 255)
          throw CorruptStream(fmt::format("corrupt KV bitstream: kvs spread index {}", spread[c]));
        const size_t ch = p * C + c;
        model[ch] = {uint32_t(spread[c]), centre[c]};
        const uint32_t g = split_spread(model[ch].spread).table;
        groups[g].push_back(uint32_t(ch));
        group_symbols[g] += rows[ch / D].literals;
      }
    }
    if (pos != sec.size()) throw CorruptStream("corrupt KV bitstream: kvs channel models have extra bytes");
  }
  uint64_t expected = 3;
  for (uint64_t n : group_symbols) expected += (n + kKvsStreamSymbols - 1) / kKvsStreamSymbols;
  if (ps.sections.size() != expected)
    throw CorruptStream(
        fmt::format("corrupt KV bitstream: kvs has {} sections, expected {}", ps.sections.size(), expected));

  // The substreams, in order: per table, its symbols cut every kKvsStreamSymbols;
  // each with the channel and literal token where its symbols start.
  struct Piece {
    uint32_t table, n;
    size_t section;
    std::span<const uint8_t> rans, extras;
    size_t first_channel;    // index into groups[table]
    uint32_t first_literal;  // literal tokens of that channel coded in earlier pieces
  };
  std::vector<Piece> pieces;
  {
    size_t next = 3;
    for (uint32_t g = 0; g < kTables; ++g) {
      size_t gi = 0;
      uint32_t done = 0;
      for (uint64_t start = 0; start < group_symbols[g]; start += kKvsStreamSymbols, ++next) {
        const auto sec = ps.sections[next];
        size_t pos = 0;
        const uint32_t rans_bytes = get_varint(sec, &pos, "substream");
        if (rans_bytes > sec.size() - pos)
          throw CorruptStream(
              fmt::format("corrupt KV bitstream: kvs substream {} rANS size {} too large", next, rans_bytes));
        const uint32_t n = uint32_t(std::min<uint64_t>(kKvsStreamSymbols, group_symbols[g] - start));
        pieces.push_back({g, n, next, sec.subspan(pos, rans_bytes), sec.subspan(pos + rans_bytes), gi, done});
        for (uint32_t left = n; left > 0;) {  // where the next piece starts
          const uint32_t literals = rows[groups[g][gi] / D].literals;
          const uint32_t count = std::min(left, literals - done);
          left -= count;
          done += count;
          if (done == literals) ++gi, done = 0;
        }
      }
    }
  }

  // Only now, with every section's size checked, the output (the header alone
  // can ask for 2^28 values).
  KVChunk out = chunk_for(hd);
  // [channel][token], channels `stride` apart, before rotation; every value used is written.
  const size_t stride = channel_stride(T);
  std::unique_ptr<float[]> tmp_buffer(new float[channels * stride + 16]);
  float* const tmp = aligned64(tmp_buffer.get());

  // A decoded piece's values into the channel-major buffer.
  float lut[rans::kMaxSymbols];
  auto piece_values = [&](const Piece& pc, const uint8_t* piece_sym) {
    const GaussTable& gt = tables_[pc.table];
    const uint32_t n = pc.n;
    size_t gi = pc.first_channel;
    uint32_t done = pc.first_literal;
    BitReader extras(pc.extras);
    uint32_t i = 0;
    while (i < n) {
      const uint32_t ch = groups[pc.table][gi];
      const HeadRows& hr = rows[ch / D];
      const uint32_t count = std::min(n - i, hr.literals - done);
      const uint32_t b = split_spread(model[ch].spread).raw_bits;
      const int64_t m = model[ch].centre;
      const float step = steps[ch / C];
      float* base = tmp + size_t(ch) * stride;
      const float* offset = centroid && b == 0 ? gt.offset : nullptr;
      const uint32_t* lit = hr.literal ? hr.literal + done : nullptr;  // null: literal j is token done + j
      const uint8_t* sy = piece_sym + i;
      auto slow = [&](uint32_t j) {  // escapes and raw low bits
        const int64_t s = sy[j] == 0 ? int64_t(int32_t(extras.get(kEscapeBits)))
                                     : ((int64_t(sy[j]) - 1 - gt.range) << b) + int64_t(extras.get(b));
        const int64_t q = m + s;
        if (q > 2 * kMaxQ || q < -2 * kMaxQ)
          throw CorruptStream(fmt::format("corrupt KV bitstream: kvs substream {} value out of range", pc.section));
        base[lit ? lit[j] : done + j] = (offset ? float(q) - offset[sy[j]] : float(q)) * step;
      };
      if (b == 0) {
        // Table symbols through a per-channel lookup table (the same float
        // operations as the slow path, so the same values).
        lut[0] = 0;  // escapes are filled in afterwards
        for (int32_t v = 1; v <= 2 * gt.range + 1; ++v) {
          const float q = float(m + v - 1 - gt.range);
          lut[size_t(v)] = (offset ? q - offset[v] : q) * step;
        }
        uint32_t escapes = 0;
        if (!lit) {
          float* dst = base + done;
          for (uint32_t j = 0; j < count; ++j) dst[j] = lut[sy[j]], escapes += sy[j] == 0;
        } else {
          for (uint32_t j = 0; j < count; ++j) base[lit[j]] = lut[sy[j]], escapes += sy[j] == 0;
        }
        if (escapes)
          for (uint32_t j = 0; j < count; ++j)
            if (sy[j] == 0) slow(j);
      } else {
        // Raw low bits (no centroid offsets): the slow path's operations, inline.
        const int64_t range = gt.range;
        for (uint32_t j = 0; j < count; ++j) {
          const uint32_t sym = sy[j];
          const int64_t s = sym == 0 ? int64_t(int32_t(extras.get(kEscapeBits)))
                                     : ((int64_t(sym) - 1 - range) << b) + int64_t(extras.get(b));
          const int64_t q = m + s;
          if (q > 2 * kMaxQ || q < -2 * kMaxQ)
            throw CorruptStream(fmt::format("corrupt KV bitstream: kvs substream {} value out of range", pc.section));
          base[lit ? lit[j] : done + j] = float(q) * step;
        }
      }
      i += count;
      done += count;
      if (done == hr.literals) ++gi, done = 0;
    }
    extras.expect_end();
  };

  // The rANS substreams, kLanes side by side (independent chains that one
  // core overlaps): each lane takes the next piece, longest first, as soon as
  // its own ends, so lanes stay busy although pieces differ in length (a
  // small chunk has tens of pieces of a few hundred to 16,384 symbols). Each
  // piece writes only its own channels' values, so the order is free.
  std::vector<uint32_t> order(pieces.size());
  for (uint32_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return pieces[a].n > pieces[b].n; });
  constexpr size_t kLanes = 4;
  std::vector<uint8_t> symbols(kLanes * kKvsStreamSymbols);
  struct Lane {
    const Piece* piece = nullptr;  // null: idle
    const GaussTable* table = nullptr;
    uint8_t* symbols = nullptr;
    uint32_t done = 0;  // symbols decoded
    bool ok = true;     // no step ran out of bytes
    rans::Decoder dec;
  };
  Lane lanes[kLanes];
  size_t next_piece = 0;
  auto start = [&](Lane& lane) {
    lane.piece = nullptr;
    if (next_piece == order.size()) return;
    const Piece& pc = pieces[order[next_piece++]];
    if (rans::decoder_init(pc.rans.data(), pc.rans.size(), &lane.dec) != rans::DecodeStatus::kOk)
      throw CorruptStream(fmt::format("corrupt KV bitstream: kvs substream {} does not decode", pc.section));
    lane.piece = &pc;
    lane.table = &tables_[pc.table];
    lane.done = 0;
    lane.ok = true;
  };
  auto finish = [&](Lane& lane) {
    if (!lane.ok || rans::decoder_finish(lane.dec) != rans::DecodeStatus::kOk)
      throw CorruptStream(fmt::format("corrupt KV bitstream: kvs substream {} does not decode", lane.piece->section));
    piece_values(*lane.piece, lane.symbols);
  };
  for (size_t k = 0; k < kLanes; ++k) {
    lanes[k].symbols = symbols.data() + k * kKvsStreamSymbols;
    start(lanes[k]);
  }
  auto all_busy = [&] {
    for (const Lane& lane : lanes)
      if (!lane.piece) return false;
    return true;
  };
  uint32_t sym;
  while (all_busy()) {  // a lane goes idle only when no piece is left
    uint32_t steps = kKvsStreamSymbols;
    for (const Lane& lane : lanes) steps = std::min(steps, lane.piece->n - lane.done);
    rans::Decoder d0 = lanes[0].dec, d1 = lanes[1].dec, d2 = lanes[2].dec, d3 = lanes[3].dec;
    const GaussTable &g0 = *lanes[0].table, &g1 = *lanes[1].table, &g2 = *lanes[2].table, &g3 = *lanes[3].table;
    uint8_t *s0 = lanes[0].symbols + lanes[0].done, *s1 = lanes[1].symbols + lanes[1].done,
            *s2 = lanes[2].symbols + lanes[2].done, *s3 = lanes[3].symbols + lanes[3].done;
    bool ok0 = true, ok1 = true, ok2 = true, ok3 = true;
    for (uint32_t i = 0; i < steps; ++i) {
      ok0 &= rans::decode_step(&d0, g0.table, g0.index, &sym), s0[i] = uint8_t(sym);
      ok1 &= rans::decode_step(&d1, g1.table, g1.index, &sym), s1[i] = uint8_t(sym);
      ok2 &= rans::decode_step(&d2, g2.table, g2.index, &sym), s2[i] = uint8_t(sym);
      ok3 &= rans::decode_step(&d3, g3.table, g3.index, &sym), s3[i] = uint8_t(sym);
    }
    lanes[0].dec = d0, lanes[1].dec = d1, lanes[2].dec = d2, lanes[3].dec = d3;
    lanes[0].ok &= ok0, lanes[1].ok &= ok1, lanes[2].ok &= ok2, lanes[3].ok &= ok3;
    for (Lane& lane : lanes) {
      lane.done += steps;
      if (lane.done == lane.piece->n) finish(lane), start(lane);
    }
  }
  for (Lane& lane : lanes) {  // the last pieces, one at a time
    if (!lane.piece) continue;
    const GaussTable& gt = *lane.table;
    for (uint32_t i = lane.done; i < lane.piece->n; ++i)
      lane.ok &= rans::decode_step(&lane.dec, gt.table, gt.index, &sym), lane.symbols[i] = uint8_t(sym);
    finish(lane);
  }
  // Channel-major values to [token][dim] rows, in blocks of tokens that stay in
  // cache; copied rows take their source's values; keys rotate back to their positions.
  const auto rope = theta > 0 ? rope_table(theta, hd.token_begin, T, D) : std::vector<std::array<float, 2>>{};
  constexpr uint32_t kBlock = 16;
  uint32_t src[kBlock];
  for (size_t ph = 0; ph < heads; ++ph) {
    const size_t p = ph / H;
    const bool key = p % 2 == 0 && theta > 0;
    const float* in = tmp + ph * size_t(D) * stride;
    float* base = out.values.data() + out.plane_offset(uint32_t(p / 2), Kind(p % 2)) + (ph % H) * size_t(T) * D;
    for (uint32_t t0 = 0; t0 < T; t0 += kBlock) {
      // A block's [D][kBlock] input tile stays in L1 while its rows are written in order.
      const uint32_t nb = std::min(kBlock, T - t0);
      for (uint32_t k = 0; k < nb; ++k) src[k] = rows[ph].source ? rows[ph].source[t0 + k] : t0 + k;
      for (uint32_t k = 0; k < nb; ++k) {
        float* row = base + size_t(t0 + k) * D;
        const float* col = in + src[k];
        if (!key) {
          for (uint32_t d = 0; d < D; ++d) row[d] = col[size_t(d) * stride];
          continue;
        }
        const auto* cs = &rope[size_t(t0 + k) * half];
        for (uint32_t i = 0; i < half; ++i) {
          const float x1 = col[size_t(i) * stride], x2 = col[size_t(i + half) * stride];
          row[i] = x1 * cs[i][0] - x2 * cs[i][1];
          row[i + half] = x2 * cs[i][0] + x1 * cs[i][1];
        }
      }
    }
  }
  return out;
}

}  // namespace

std::vector<float> kvs_default_weights(uint32_t layers) {
  // Measured on models/default (4 layers) with analysis/kvs_sensitivity.py
  // --max-loss 0.05: loss increase per unit squared error of each plane, on 10
  // contexts of 2,047 bytes (+ 512 scored) from contexts-4096 text that the
  // profiling contexts do not contain; weight = 1 / sqrt(sensitivity),
  // geometric mean 1, sensitivities below 1 % of the largest raised to it
  // (docs/codecs.md). Layer 0 matters most; its rows repeat, so it is cheap.
  if (layers == 4) return {0.25f, 0.245f, 2.45f, 2.45f, 1.07f, 1.17f, 0.9f, 2.45f};
  return std::vector<float>(2 * size_t(layers), 1.0f);
}

float kvs_level_step(int level) { return kKvsStep0 * float(std::exp2(kKvsLevelLog2Ratio * level)); }

std::array<float, 2> kvs_rope_cos_sin(double rope_theta, uint64_t position, uint32_t i, uint32_t head_dim) {
  return rope_cos_sin_at(position, rope_inv_freq(rope_theta, i, head_dim));
}

namespace {
// ':'-separated numbers in [lo, hi].
std::vector<float> parse_list(const std::string& key, const std::string& v, float lo, float hi) {
  std::vector<float> out;
  size_t begin = 0;
  while (begin <= v.size()) {
    const size_t end = std::min(v.find(':', begin), v.size());
    float w = 0;
    auto [p, ec] = std::from_chars(v.data() + begin, v.data() + end, w);
    if (ec != std::errc() || p != v.data() + end || !(w >= lo && w <= hi))
      throw Error(fmt::format("codec kvs: {}: expected ':'-separated numbers in [{:g}, {:g}], got '{}'", key, lo, hi, v));
    out.push_back(w);
    begin = end + 1;
  }
  return out;
}
}  // namespace

std::unique_ptr<Codec> make_kvs_codec(const CodecOptions& options) {
  check_params("kvs", options.params, {"rope_theta", "weights", "centroid", "rdo", "ladder", "rows"});
  bool centroid = true, rows = true;
  if (auto it = options.params.find("rows"); it != options.params.end()) {
    if (it->second != "0" && it->second != "1")
      throw Error(fmt::format("codec kvs: rows: expected 0 or 1, got '{}'", it->second));
    rows = it->second == "1";
  }
  double lambda = 0.12;  // about ln(2) / 6: the high-rate slope of distortion (in steps^2) per bit
  if (auto it = options.params.find("centroid"); it != options.params.end()) {
    if (it->second != "0" && it->second != "1")
      throw Error(fmt::format("codec kvs: centroid: expected 0 or 1, got '{}'", it->second));
    centroid = it->second == "1";
  }
  if (auto it = options.params.find("rdo"); it != options.params.end()) {
    const std::string& v = it->second;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), lambda);
    if (ec != std::errc() || p != v.data() + v.size() || !(lambda >= 0 && lambda <= 10))
      throw Error(fmt::format("codec kvs: rdo: expected a number in [0, 10], got '{}'", v));
  }
  double theta = 10000.0;
  std::vector<float> weights;
  bool defaults = true;
  if (auto it = options.params.find("rope_theta"); it != options.params.end()) {
    const std::string& v = it->second;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), theta);
    if (ec != std::errc() || p != v.data() + v.size() || !std::isfinite(theta) || theta < 0 || (theta > 0 && theta <= 1))
      throw Error(fmt::format("codec kvs: rope_theta: expected 0 or a number > 1, got '{}'", v));
  }
  if (auto it = options.params.find("weights"); it != options.params.end() && it->second != "default") {
    defaults = false;
    weights = parse_list("weights", it->second, 1e-3f, 1e3f);
  }
  std::vector<float> ladder;
  if (auto it = options.params.find("ladder"); it != options.params.end() && it->second != "default") {
    ladder = parse_list("ladder", it->second, 1e-6f, 1e6f);
    if (ladder.size() > 255) throw Error("codec kvs: ladder: at most 255 levels");
  }
  return std::make_unique<KvsCodec>(theta, std::move(weights), defaults, centroid, lambda, std::move(ladder), rows);
}

}  // namespace kvs::codec
