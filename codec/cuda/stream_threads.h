// The last steps of the GPU encoders (codec/cuda/encode.h): a chunk's stream
// (codec/bitstream.h) finished in the one buffer where the encoder's gather
// kernel wrote the payload's sections, so that the host neither copies the
// sections nor computes the CRC. KVS_HD bodies as in codec/cuda/threads.h:
// the kernels (codec/cuda/kernels.cu, launch_stream_finish) add launch
// geometry; finish_stream_on_host (codec/cuda/stream_layout.h) runs the same
// bodies on the CPU for tests.
//   stream_table_entry (per payload section): its u32 size into the table.
//   The CRC tiles of codec/cuda/verify_threads.h over the body (header,
//   table and sections), then stream_crc_store (once): the CRC after them.
// The host writes the header, the table's entries of the sections before the
// payload, and those sections (codec/cuda/stream_layout.h, StreamLayout).
#pragma once

#include <cstdint>

#include "codec/cuda/verify_threads.h"
#include "codec/hd.h"

namespace kvs::codec::cuda::detail {

struct StreamFinishLaunch {
  uint8_t* stream;            // the whole stream (device: 16-byte aligned, writable to a multiple of 16)
  const uint64_t* offsets;    // [payload_sections + 1]: the payload's sections, from the payload's start
  uint32_t first_entry;       // the table index of payload section 0
  uint32_t payload_sections;
  VerifyLaunch crc;           // the CRC tiles' launch over the body (stream, body, crc_init, crc, crc_acc)
};

KVS_HD inline void put_le32(uint8_t* q, uint32_t v) {
  q[0] = uint8_t(v), q[1] = uint8_t(v >> 8), q[2] = uint8_t(v >> 16), q[3] = uint8_t(v >> 24);
}

// Payload section k's size into the table (48: kHeaderBytes, the table follows the header).
KVS_HD inline void stream_table_entry(const StreamFinishLaunch& p, uint32_t k) {
  put_le32(p.stream + 48 + 4 * (size_t(p.first_entry) + k), uint32_t(p.offsets[k + 1] - p.offsets[k]));
}

// After the CRC tiles: the CRC-32 of the body, stored after it.
KVS_HD inline void stream_crc_store(const StreamFinishLaunch& p) {
  put_le32(p.stream + p.crc.body, ~(*p.crc.crc_acc ^ p.crc.crc_init));
}

}  // namespace kvs::codec::cuda::detail
