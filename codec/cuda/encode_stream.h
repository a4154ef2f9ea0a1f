// The host side of a GPU encoder's last step (codec/cuda/encode.h): its
// stream assembled in one device buffer (codec/cuda/stream_layout.h, the
// kernels' bodies in codec/cuda/stream_threads.h). Not an interface: encode.h is.
#pragma once

#include <cstdint>
#include <span>

#include <cuda_runtime_api.h>

#include "codec/cuda/decode.h"
#include "codec/cuda/stream_layout.h"

namespace kvs::codec::cuda::detail {

struct DeviceStreamBuild {
  DeviceBuffer stream;   // layout.buffer_bytes()
  DeviceBuffer scratch;  // the payload offsets, then the CRC register
  uint64_t payload_sections = 0;
  uint8_t* at(uint64_t pos) const { return static_cast<uint8_t*>(stream.get()) + pos; }
  const uint64_t* offsets() const { return static_cast<const uint64_t*>(scratch.get()); }
  uint32_t* crc_acc() const { return reinterpret_cast<uint32_t*>(static_cast<uint64_t*>(scratch.get()) + payload_sections + 1); }
};

// Allocates the stream and enqueues the uploads of layout.head, `prefix`
// (the prefix's sections, to prefix_at) and the payload's offsets; the host
// memory must stay until the stream is synchronised. The encoder then
// enqueues its gather into at(layout.payload_at) (offsets()), and its own
// copies of device-made prefix sections.
DeviceStreamBuild begin_device_stream(const StreamLayout& layout, std::span<const uint8_t> prefix,
                                      std::span<const uint64_t> offsets, cudaStream_t stream);
// Enqueues the payload's table entries and the CRC (tables in device memory).
void finish_device_stream(const StreamLayout& layout, const DeviceStreamBuild& b, const CrcTables* crc,
                          cudaStream_t stream);

}  // namespace kvs::codec::cuda::detail
