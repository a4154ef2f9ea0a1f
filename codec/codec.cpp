// The checks every encoder shares (codec/codec.h).
#include "codec/codec.h"

#include "codec/bitstream.h"

namespace kvs::codec {

Bytes Codec::encode(const KVChunk& chunk, int level) const {
  check_writable(chunk);
  return encode_chunk(chunk, level);
}

}  // namespace kvs::codec
