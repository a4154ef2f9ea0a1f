// Where a GPU encoder's stream (codec/bitstream.h: header, u32 size table,
// sections back to back, CRC-32) puts each part, so that the encoder builds
// it in one buffer in device memory: the host writes the header, the table's
// first entries and the sections it made itself (the "prefix": kvs's
// parameters, references and models, or nothing) from `head`; cachegen's
// device-made scales and tables are copied in on the device; the gather
// kernel writes the payload (the substreams' sections, back to back) at
// payload_at; the finishing kernels (codec/cuda/stream_threads.h) write the
// payload's table entries and the CRC. Plain C++ (no CUDA):
// finish_stream_on_host runs the finishing thread bodies on the CPU, and the
// encoders' *_on_host paths (tests) assemble their streams through it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "codec/bitstream.h"
#include "codec/cuda/stream_threads.h"

namespace kvs::codec::cuda::detail {

struct StreamLayout {
  // prefix_sizes: the sizes of the sections before the payload's;
  // payload_offsets: the payload's sections' offsets (count + 1 entries, the
  // last the payload's size). Throws kvs::Error for a stream of 4 GiB or
  // more (the device CRC's limit; a chunk within kMaxElements stays far below).
  StreamLayout(const StreamHeader& header, std::span<const uint64_t> prefix_sizes,
               std::span<const uint64_t> payload_offsets);

  Bytes head;                     // bytes [0, head.size()): the header and the prefix's table entries
  uint32_t sections = 0;          // in all
  uint32_t prefix_sections = 0;   // the payload's first table entry
  uint32_t payload_sections = 0;
  uint64_t prefix_at = 0;         // where the prefix's sections start (after the table), back to back
  uint64_t payload_at = 0;        // where the payload starts
  uint32_t body = 0;              // the bytes before the CRC
  uint32_t crc_init = 0;          // the CRC's initial register moved past the body (verify_threads.h)

  size_t bytes() const { return size_t(body) + 4; }
  // The buffer to allocate: a multiple of 16 bytes, as cuda::Decoder asks of
  // a stream staged in device memory (decode.h).
  size_t buffer_bytes() const { return (bytes() + 15) / 16 * 16; }
  // The finishing kernels' launch over `stream` (the payload's offsets, CRC
  // tables and a zeroed CRC register where the kernels read them).
  StreamFinishLaunch bind(uint8_t* stream, const uint64_t* payload_offsets, const CrcTables* crc,
                          uint32_t* crc_acc) const;
};

// Host scratch filled with 0xff bytes (NaN as floats) before the thread
// bodies run on the CPU: device memory from cudaMalloc holds whatever was
// there, so a body that reads scratch nobody wrote must differ from the CPU
// codec in the *_on_host tests rather than read zeros.
template <class T>
void poison_scratch(std::vector<T>& v) {
  if (!v.empty()) std::memset(static_cast<void*>(v.data()), 0xff, sizeof(T) * v.size());
}

// The finishing thread bodies on the CPU, over `stream` (layout.bytes() or
// more) where head, prefix and payload have been written.
void finish_stream_on_host(const StreamLayout& layout, const uint64_t* payload_offsets, uint8_t* stream);

// The whole assembly on the CPU as the GPU encoders do it on the device (for
// their *_on_host paths): head, `prefix` (the prefix's sections back to back),
// `gather(payload)` writing the payload's sections at payload_offsets, then
// finish_stream_on_host. Returns the stream.
template <class Gather>
Bytes assemble_on_host(const StreamLayout& layout, std::span<const uint8_t> prefix,
                       std::span<const uint64_t> payload_offsets, Gather&& gather) {
  Bytes out(layout.buffer_bytes());
  poison_scratch(out);  // the device's buffer: every byte of the body must be written
  std::copy(layout.head.begin(), layout.head.end(), out.begin());
  std::copy(prefix.begin(), prefix.end(), out.begin() + std::ptrdiff_t(layout.prefix_at));
  gather(out.data() + layout.payload_at);
  finish_stream_on_host(layout, payload_offsets.data(), out.data());
  out.resize(layout.bytes());
  return out;
}

}  // namespace kvs::codec::cuda::detail
