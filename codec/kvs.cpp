// kvs: parameters, default weights and the factory. The codec itself is in
// kvs_encode.cpp and kvs_decode.cpp (codec/kvs_internal.h lists the parts).
#include "codec/kvs.h"

#include <algorithm>
#include <cfloat>
#include <charconv>
#include <cmath>

#include <fmt/core.h>

#include "codec/baselines.h"
#include "codec/kvs_internal.h"

namespace kvs::codec {

std::vector<float> kvs_default_weights(uint32_t layers) {
  // Measured on models/default (4 layers) with tools/codec/kvs_sensitivity.py
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
  return kvs_detail::rope_cos_sin_at(position, kvs_detail::rope_inv_freq(rope_theta, i, head_dim));
}

std::string kvs_param_list(const std::vector<float>& values) {
  std::string s;
  for (size_t i = 0; i < values.size(); ++i) s += fmt::format("{}{}", i ? ":" : "", values[i]);
  return s;
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
// A RoPE base: 0 (keys as given) or a number > 1 that a float holds (the
// stream stores it as one).
double parse_theta(const std::string& key, const std::string& v) {
  double theta = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), theta);
  if (ec != std::errc() || p != v.data() + v.size() || !(theta >= 0 && theta <= FLT_MAX) || (theta > 0 && theta <= 1))
    throw Error(fmt::format("codec kvs: {}: expected 0 or a number > 1, got '{}'", key, v));
  return theta;
}

// ':'-separated distinct layer indices (< 65536), sorted.
std::vector<uint32_t> parse_layers(const std::string& key, const std::string& v) {
  std::vector<uint32_t> out;
  size_t begin = 0;
  while (begin <= v.size()) {
    const size_t end = std::min(v.find(':', begin), v.size());
    uint32_t l = 0;
    auto [p, ec] = std::from_chars(v.data() + begin, v.data() + end, l);
    if (ec != std::errc() || p != v.data() + end || l > 65535)
      throw Error(fmt::format("codec kvs: {}: expected ':'-separated layer indices, got '{}'", key, v));
    out.push_back(l);
    begin = end + 1;
  }
  std::sort(out.begin(), out.end());
  if (std::adjacent_find(out.begin(), out.end()) != out.end())
    throw Error(fmt::format("codec kvs: {}: layer {} given twice", key, *std::adjacent_find(out.begin(), out.end())));
  return out;
}
}  // namespace

std::unique_ptr<Codec> make_kvs_codec(const CodecOptions& options) {
  check_params("kvs", options.params,
               {"rope_theta", "rope_inv_freq", "rope_inv_freq_long", "rope_long_after", "rope_alt_theta",
                "rope_alt_inv_freq", "rope_alt_layers", "weights", "centroid", "rdo", "ladder", "rows"});
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
  if (auto it = options.params.find("rope_theta"); it != options.params.end()) theta = parse_theta("rope_theta", it->second);
  kvs_detail::KvsRopeTables rope;
  if (auto it = options.params.find("rope_inv_freq"); it != options.params.end()) {
    if (options.params.count("rope_theta"))
      throw Error("codec kvs: rope_theta and rope_inv_freq both given (the table replaces the base)");
    rope.inv_freq = parse_list("rope_inv_freq", it->second, 0.0f, kKvsMaxInvFreq);
  }
  const auto long_table = options.params.find("rope_inv_freq_long");
  const auto long_after = options.params.find("rope_long_after");
  if ((long_table == options.params.end()) != (long_after == options.params.end()) ||
      (long_table != options.params.end() && rope.inv_freq.empty()))
    throw Error("codec kvs: rope_inv_freq_long and rope_long_after go together, with rope_inv_freq");
  if (long_table != options.params.end()) {
    rope.inv_freq_long = parse_list("rope_inv_freq_long", long_table->second, 0.0f, kKvsMaxInvFreq);
    if (rope.inv_freq_long.size() != rope.inv_freq.size())
      throw Error(fmt::format("codec kvs: rope_inv_freq_long has {} frequencies, rope_inv_freq {}",
                              rope.inv_freq_long.size(), rope.inv_freq.size()));
    const std::string& v = long_after->second;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), rope.long_after_tokens);
    if (ec != std::errc() || p != v.data() + v.size() || rope.long_after_tokens == 0)
      throw Error(fmt::format("codec kvs: rope_long_after: expected a number of tokens > 0, got '{}'", v));
  }
  const auto alt_theta = options.params.find("rope_alt_theta");
  const auto alt_table = options.params.find("rope_alt_inv_freq");
  const auto alt_layers = options.params.find("rope_alt_layers");
  const bool alt = alt_theta != options.params.end() || alt_table != options.params.end();
  if (alt_theta != options.params.end() && alt_table != options.params.end())
    throw Error("codec kvs: rope_alt_theta and rope_alt_inv_freq both given (the table replaces the base)");
  if (alt != (alt_layers != options.params.end()))
    throw Error("codec kvs: rope_alt_layers goes with rope_alt_theta or rope_alt_inv_freq (the layers' second RoPE)");
  if (alt) {
    if (alt_theta != options.params.end()) rope.alt_theta = parse_theta("rope_alt_theta", alt_theta->second);
    if (alt_table != options.params.end())
      rope.alt_inv_freq = parse_list("rope_alt_inv_freq", alt_table->second, 0.0f, kKvsMaxInvFreq);
    rope.alt_layers = parse_layers("rope_alt_layers", alt_layers->second);
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
  return std::make_unique<kvs_detail::KvsCodec>(theta, std::move(rope), std::move(weights), defaults, centroid,
                                                lambda, std::move(ladder), rows);
}

}  // namespace kvs::codec
