// kvs: the parts of the bitstream both encoder and decoder use (codec/kvs_internal.h).
#include "codec/kvs_internal.h"

#include "codec/bitstream.h"

namespace kvs::codec::kvs_detail {

namespace {


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


}  // namespace

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


std::vector<double> rope_inv_freqs(double rope_theta, uint32_t head_dim) {
  std::vector<double> inv_freq(head_dim / 2);
  for (uint32_t i = 0; i < head_dim / 2; ++i) inv_freq[i] = rope_inv_freq(rope_theta, i, head_dim);
  return inv_freq;
}

std::vector<std::array<float, 2>> rope_table(const std::vector<double>& inv_freq, uint64_t token_begin, uint32_t tokens) {
  const size_t half = inv_freq.size();
  std::vector<std::array<float, 2>> cs(size_t(tokens) * half);
  for (uint32_t t = 0; t < tokens; ++t)
    for (size_t i = 0; i < half; ++i) cs[size_t(t) * half + i] = rope_cos_sin_at(token_begin + t, inv_freq[i]);
  return cs;
}

std::vector<std::vector<std::array<float, 2>>> rope_tables(const KvsStreamRope& rope, uint64_t token_begin,
                                                          uint32_t tokens) {
  std::vector<std::vector<std::array<float, 2>>> out;
  out.reserve(rope.tables.size());
  for (size_t i = 0; i < rope.tables.size(); ++i)
    out.push_back(rope.used(i) ? rope_table(rope.tables[i], token_begin, tokens) : std::vector<std::array<float, 2>>{});
  return out;
}

namespace {

// A table parameter's frequencies for head dimension D, checked.
std::vector<double> table_freqs(const std::vector<float>& table, uint32_t D, const char* key) {
  if (2 * table.size() != D)
    throw Error(fmt::format("codec kvs: {} has {} frequencies; keys of head_dim {} need {}", key, table.size(), D,
                            D % 2 ? "an even head_dim (RoPE rotates pairs)" : std::to_string(D / 2)));
  return {table.begin(), table.end()};
}

// A base as the stream stores it (a float; 0 for an odd D, which RoPE cannot
// rotate): the decoder's frequencies are these.
float stored_theta(double theta, uint32_t D) { return D % 2 == 0 ? float(theta) : 0.0f; }
std::vector<double> theta_freqs(double theta, uint32_t D) {
  const float stored = stored_theta(theta, D);
  return stored > 0 ? rope_inv_freqs(stored, D) : std::vector<double>{};
}

}  // namespace

KvsStreamRope KvsCodec::coded_rope(uint32_t D, uint32_t layers, uint64_t context_tokens) const {
  KvsStreamRope r;
  r.tables.push_back(rope_.inv_freq.empty() ? theta_freqs(rope_theta_, D)
                                            : table_freqs(rope_.for_context(context_tokens), D, "rope_inv_freq"));
  r.layer_table.assign(layers, 0);
  if (rope_.alt_layers.empty()) return r;
  r.tables.push_back(rope_.alt_inv_freq.empty() ? theta_freqs(rope_.alt_theta, D)
                                                : table_freqs(rope_.alt_inv_freq, D, "rope_alt_inv_freq"));
  for (uint32_t l : rope_.alt_layers) {
    if (l >= layers)
      throw Error(fmt::format("codec kvs: rope_alt_layers names layer {}; the chunk has {} layers (0..{})", l, layers,
                              layers - 1));
    r.layer_table[l] = 1;
  }
  return r;
}

Bytes KvsCodec::params_section(uint32_t D, uint32_t layers, uint64_t context_tokens,
                               const std::vector<float>& steps) const {
  (void)coded_rope(D, layers, context_tokens);  // its checks of the tables against D and the layers
  Bytes params;
  if (rope_.alt_layers.empty()) {
    if (rope_.inv_freq.empty()) {
      put_f32(params, stored_theta(rope_theta_, D));
    } else {
      for (float f : rope_.for_context(context_tokens)) put_f32(params, f);
    }
  } else {
    // Per-layer RoPE (flags bit 2): the tables, each a form byte (0: a base,
    // 1: D / 2 frequencies) and its data, then each layer's table.
    params.push_back(2);
    auto put_table = [&](double theta, const std::vector<float>& table) {
      params.push_back(table.empty() ? 0 : 1);
      if (table.empty()) put_f32(params, stored_theta(theta, D));
      for (float f : table) put_f32(params, f);
    };
    put_table(rope_theta_, rope_.inv_freq.empty() ? rope_.inv_freq : rope_.for_context(context_tokens));
    put_table(rope_.alt_theta, rope_.alt_inv_freq);
    std::vector<uint8_t> of_layer(layers, 0);
    for (uint32_t l : rope_.alt_layers) of_layer[l] = 1;
    params.insert(params.end(), of_layer.begin(), of_layer.end());
  }
  for (float s : steps) put_f32(params, s);
  return params;
}


}  // namespace kvs::codec::kvs_detail
