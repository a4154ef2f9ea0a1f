// The chunk bitstream container shared by every codec (docs/bitstream.md).
//
// Layout, all integers little-endian:
//   0  u32  magic "KVSC"            24 u64 token_begin
//   4  u16  format version (1)      32 u32 tokens
//   6  u16  codec id                36 u32 section count S
//   8  u8   level                   40 u64 codec-model hash (0: none)
//   9  u8   dtype (0 fp32, 1 fp16, 2 bf16)
//  10  u16  codec flags (codec-specific)
//  12  u32  layers   16 u32 kv_heads   20 u32 head_dim
//  48  u32  size of section i, for i < S (the offset table)
//  ..       the S sections, back to back
//  end u32  CRC-32 (IEEE) of every byte before it
// Sections are independent substreams (e.g. one per layer, kind, channel and
// token block), so a GPU can decode them in parallel.
//
// parse_stream() checks magic, version, codec id, CRC, shape limits and every
// size before anything is allocated or read; problems throw CorruptStream
// with the byte offset.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "codec/codec.h"
#include "codec/kv.h"

namespace kvs::codec {

// Stable codec ids (part of the format).
enum class CodecId : uint16_t { kRaw = 1, kZstd = 2, kQuant8 = 3, kKivi2 = 4, kCacheGen = 5, kKvs = 6, kKivi4 = 7 };

inline constexpr uint32_t kStreamMagic = 0x4353564Bu;  // "KVSC"
inline constexpr uint16_t kFormatVersion = 1;
inline constexpr size_t kHeaderBytes = 48;
// Limits checked before allocation: a chunk of a 70B-class model (80 layers x
// 8 heads x 128) of 1,500 tokens is 2.5e8 elements.
inline constexpr uint32_t kMaxLayers = 1024, kMaxKvHeads = 1024, kMaxHeadDim = 1024, kMaxTokens = 1u << 20;
inline constexpr uint64_t kMaxElements = 1ull << 28;
inline constexpr uint32_t kMaxSections = 1u << 24;

struct StreamHeader {
  CodecId codec = CodecId::kRaw;
  uint8_t level = 0;
  DType dtype = DType::kF16;
  uint16_t flags = 0;
  KVShape shape;
  uint64_t token_begin = 0;
  uint32_t tokens = 0;
  uint64_t model_hash = 0;

  uint64_t elements() const { return shape.elements_per_token() * tokens; }
};

// The header of `chunk` for `codec` at `level`.
StreamHeader header_for(const KVChunk& chunk, CodecId codec, int level);

// Throws kvs::Error, naming the chunk, for a header that parse_stream would
// refuse (a chunk of 0 tokens, a shape beyond the limits above): no stream
// this library writes is one it cannot read. Encoders may call it before
// their work; write_header always does.
void check_writable(const StreamHeader& header, uint32_t section_count = 0);
// The same for a chunk's shape and tokens (Codec::encode, before any work).
void check_writable(const KVChunk& chunk);
// Appends the kHeaderBytes-byte header of a stream of `section_count`
// sections to `out` (the GPU encoders assemble the rest on the device,
// codec/cuda/stream_layout.h). Throws as check_writable.
void write_header(const StreamHeader& header, uint32_t section_count, Bytes& out);
// Assembles header + offset table + sections + CRC.
Bytes write_stream(const StreamHeader& header, const std::vector<Bytes>& sections);
// The same from views (a codec with many small sections can keep them in one buffer).
Bytes write_stream(const StreamHeader& header, std::span<const std::span<const uint8_t>> sections);

struct ParsedStream {
  StreamHeader header;
  std::vector<std::span<const uint8_t>> sections;
};

// Whether parse_stream checks the CRC; kDeferred: the caller checks it
// later (the GPU decoders verify it on the device, codec/cuda/verify_threads.h).
enum class Crc : uint8_t { kCheck, kDeferred };

// Validates and splits a stream; `expected` is the decoding codec's id.
ParsedStream parse_stream(std::span<const uint8_t> stream, CodecId expected, Crc crc = Crc::kCheck);
// parse_stream in two steps, with its checks and messages, for a caller that
// needs no list of sections (the CUDA planner, codec/cuda/plan.h, on streams
// of a million sections): the header, CRC and section count; then where
// each section starts, written to offsets[0..count] (offsets[count]: where
// the last one ends, before the CRC). The stream must be under 4 GiB.
StreamHeader parse_stream_header(std::span<const uint8_t> stream, CodecId expected, uint32_t* section_count,
                                 Crc crc = Crc::kCheck);
void section_offsets(std::span<const uint8_t> stream, uint32_t section_count, uint32_t* offsets);

// An empty chunk of the header's (already validated) shape.
KVChunk chunk_for(const StreamHeader& header);
// The same in place: `out` takes the header's shape, dtype and token range,
// and its values are resized (kept, not zeroed, up to their old count), for
// decoders that write every value (Codec::decode_into).
void reshape_for(const StreamHeader& header, KVChunk& out);

// CRC-32 (IEEE 802.3, reflected, as zlib and gzip): on x86-64 CPUs with
// PCLMULQDQ and SSE4.1 (checked at run time) by carry-less multiply folding,
// 64 bytes per step, and with AVX-512 VPCLMULQDQ from 256 bytes, 256 bytes
// per step; elsewhere, and for inputs under 64 bytes, by crc32_slicing8.
// All give the bitwise definition's value (tested).
uint32_t crc32(std::span<const uint8_t> data);
// The portable form: slicing-by-8 tables, eight bytes per step.
uint32_t crc32_slicing8(std::span<const uint8_t> data);

// Little-endian helpers for section contents.
void put_u16(Bytes& out, uint16_t v);
void put_u32(Bytes& out, uint32_t v);
void put_f32(Bytes& out, float v);

// Reads little-endian values from a section with bounds checks (throws
// CorruptStream naming `what`).
class SectionReader {
 public:
  SectionReader(std::span<const uint8_t> data, const char* what) : data_(data), what_(what) {}
  uint16_t u16();
  uint32_t u32();
  float f32();
  std::span<const uint8_t> bytes(size_t n);
  size_t remaining() const { return data_.size() - pos_; }
  void expect_end() const;

 private:
  std::span<const uint8_t> data_;
  size_t pos_ = 0;
  const char* what_;
};

}  // namespace kvs::codec
