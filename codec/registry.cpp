// The codec registry: one line per codec.
#include <functional>
#include <map>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include "codec/baselines.h"
#include "codec/cachegen.h"
#include "codec/bitstream.h"
#include "codec/codec.h"
#include "codec/kivi.h"
#include "codec/kvs.h"
#include "codec/registry.h"

namespace kvs::codec {

namespace {

using Factory = std::unique_ptr<Codec> (*)(const CodecOptions&);

struct Entry {
  CodecId id;
  Factory make;
};

const std::map<std::string, Entry>& registry() {
  static const std::map<std::string, Entry> kRegistry = {
      {"raw", {CodecId::kRaw, make_raw_codec}},
      {"zstd", {CodecId::kZstd, make_zstd_codec}},
      {"quant8", {CodecId::kQuant8, make_quant8_codec}},
      {"cachegen", {CodecId::kCacheGen, make_cachegen_codec}},
      {"kivi2", {CodecId::kKivi2, make_kivi2_codec}},
      {"kivi4", {CodecId::kKivi4, make_kivi4_codec}},
      {"kvs", {CodecId::kKvs, make_kvs_codec}},
  };
  return kRegistry;
}

}  // namespace

std::vector<std::string> codec_names() {
  std::vector<std::string> names;
  for (const auto& [name, entry] : registry()) names.push_back(name);
  return names;
}

std::unique_ptr<Codec> make_codec(const std::string& name, const CodecOptions& options) {
  auto it = registry().find(name);
  if (it == registry().end())
    throw Error(fmt::format("unknown codec '{}' (known: {})", name, fmt::join(codec_names(), ", ")));
  if (auto own = options.codec_params.find(name); own != options.codec_params.end()) {
    CodecOptions merged = options;
    for (const auto& [key, value] : own->second) merged.params[key] = value;
    return it->second.make(merged);
  }
  return it->second.make(options);
}

std::string codec_for_stream(std::span<const uint8_t> stream) {
  if (stream.size() < kHeaderBytes) throw CorruptStream("corrupt KV bitstream: shorter than a header");
  const uint16_t id = uint16_t(stream[6] | stream[7] << 8);
  for (const auto& [name, entry] : registry())
    if (uint16_t(entry.id) == id) return name;
  throw CorruptStream(fmt::format("corrupt KV bitstream at byte 6: no registered codec has id {}", id));
}

}  // namespace kvs::codec
