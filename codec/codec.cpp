// The checks every encoder shares, and the default layer split (codec/codec.h).
#include "codec/codec.h"

#include <fmt/format.h>

#include "codec/bitstream.h"
#include "codec/registry.h"

namespace kvs::codec {

Bytes Codec::encode(const KVChunk& chunk, int level) const {
  check_writable(chunk);
  return encode_chunk(chunk, level);
}

std::vector<double> Codec::layer_shares(std::span<const uint8_t> stream) const {
  const std::string of = codec_for_stream(stream);  // (checks the stream holds a header)
  if (of != name())
    throw CorruptStream(fmt::format("corrupt KV bitstream: a {} stream given to codec {}", of, name()));
  uint32_t sections = 0;
  const auto id = CodecId(uint16_t(stream[6] | uint16_t(stream[7]) << 8));
  const StreamHeader header = parse_stream_header(stream, id, &sections);
  return layer_shares_from_bytes(stream.size(), std::vector<double>(header.shape.layers, 0.0));
}

std::vector<double> layer_shares_from_bytes(uint64_t stream_bytes, std::vector<double> layer_bytes) {
  double known = 0;
  for (double b : layer_bytes) known += b;
  const double even = (double(stream_bytes) - known) / double(layer_bytes.size());
  for (double& b : layer_bytes) b = (b + even) / double(stream_bytes);
  return layer_bytes;
}

}  // namespace kvs::codec
