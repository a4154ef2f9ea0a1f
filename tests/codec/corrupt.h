// Helpers for corrupt-stream tests of the codecs.
#pragma once

#include <cstdint>
#include <span>

#include "codec/bitstream.h"
#include "codec/codec.h"

namespace kvs::codec {

// Rewrites the last 4 bytes of `b` to the CRC of the rest, so that a mutation
// reaches the codec's own checks instead of failing the checksum.
inline void fix_crc(Bytes& b) {
  if (b.size() < 4) return;
  const uint32_t crc = crc32(std::span<const uint8_t>(b.data(), b.size() - 4));
  for (int k = 0; k < 4; ++k) b[b.size() - 4 + size_t(k)] = uint8_t(crc >> (8 * k));
}

}  // namespace kvs::codec
