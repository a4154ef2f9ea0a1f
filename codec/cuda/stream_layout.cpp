// Where a GPU encoder's stream puts each part (codec/cuda/stream_layout.h).
#include "codec/cuda/stream_layout.h"

#include <fmt/core.h>

#include "base/error.h"
#include "codec/cuda/plan.h"

namespace kvs::codec::cuda::detail {

StreamLayout::StreamLayout(const StreamHeader& header, std::span<const uint64_t> prefix_sizes,
                           std::span<const uint64_t> payload_offsets) {
  const uint64_t count = prefix_sizes.size() + payload_offsets.size() - 1;
  uint64_t prefix_bytes = 0;
  for (uint64_t s : prefix_sizes) prefix_bytes += s;
  const uint64_t table_end = kHeaderBytes + 4 * count, body_bytes = table_end + prefix_bytes + payload_offsets.back();
  if (body_bytes + 4 > 0xffffffffull)
    throw Error(fmt::format("CUDA encode: a stream of {} bytes is beyond the GPU encoder's 4 GiB", body_bytes + 4));
  sections = uint32_t(count);
  prefix_sections = uint32_t(prefix_sizes.size());
  payload_sections = uint32_t(payload_offsets.size() - 1);
  prefix_at = table_end;
  payload_at = table_end + prefix_bytes;
  body = uint32_t(body_bytes);
  crc_init = crc_shift(crc_tables().x8pow, ~0u, body);
  head.reserve(kHeaderBytes + 4 * prefix_sizes.size());
  write_header(header, sections, head);
  for (uint64_t s : prefix_sizes) put_u32(head, uint32_t(s));
}

StreamFinishLaunch StreamLayout::bind(uint8_t* stream, const uint64_t* payload_offsets, const CrcTables* crc,
                                      uint32_t* crc_acc) const {
  StreamFinishLaunch p{};
  p.stream = stream;
  p.offsets = payload_offsets;
  p.first_entry = prefix_sections;
  p.payload_sections = payload_sections;
  p.crc.stream = stream;
  p.crc.body = body;
  p.crc.crc_init = crc_init;
  p.crc.crc = crc;
  p.crc.crc_acc = crc_acc;
  return p;
}

void finish_stream_on_host(const StreamLayout& layout, const uint64_t* payload_offsets, uint8_t* stream) {
  uint32_t acc = 0;
  const StreamFinishLaunch p = layout.bind(stream, payload_offsets, &crc_tables(), &acc);
  for (uint32_t k = 0; k < p.payload_sections; ++k) stream_table_entry(p, k);
  crc_tiles_on_host(p.crc);  // after the table: the CRC covers it
  stream_crc_store(p);
}

}  // namespace kvs::codec::cuda::detail
