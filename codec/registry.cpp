// The codec registry: one line per codec.
#include <functional>
#include <map>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include "codec/baselines.h"
#include "codec/cachegen.h"
#include "codec/codec.h"

namespace kvs::codec {

namespace {

using Factory = std::unique_ptr<Codec> (*)(const CodecOptions&);

const std::map<std::string, Factory>& registry() {
  static const std::map<std::string, Factory> kRegistry = {
      {"raw", make_raw_codec},
      {"quant8", make_quant8_codec},
      {"cachegen", make_cachegen_codec},
  };
  return kRegistry;
}

}  // namespace

std::vector<std::string> codec_names() {
  std::vector<std::string> names;
  for (const auto& [name, f] : registry()) names.push_back(name);
  return names;
}

std::unique_ptr<Codec> make_codec(const std::string& name, const CodecOptions& options) {
  auto it = registry().find(name);
  if (it == registry().end())
    throw Error(fmt::format("unknown codec '{}' (known: {})", name, fmt::join(codec_names(), ", ")));
  return it->second(options);
}

}  // namespace kvs::codec
