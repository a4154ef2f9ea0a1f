// Verifying a chunk's bitstream (codec/bitstream.h) on the GPU before the
// decode kernels read it, so that the host's work per chunk stays O(header +
// small sections): the CRC-32 of the stream and, for streams of many
// sections (cachegen scheme=code: a million), the walk of the section-size
// table. KVS_HD bodies as in codec/cuda/threads.h: the kernels
// (codec/cuda/kernels.cu) add launch geometry and shared memory; the host
// runs the same bodies in codec/cuda/plan.cpp (run_verify_on_host) for tests.
//
// CRC: the stream before its CRC is cut into pieces of kCrcPieceBytes, one
// per thread, kCrcTileThreads pieces per CUDA block (a tile). Each thread
// computes its piece's CRC register from zero (slicing-by-8), moves it past
// the bytes that follow the piece (x^(8n) mod P: zlib's crc32_combine), and
// the moved registers are xored together: by linearity over GF(2),
//   crc(M) = ~(shift(~0, |M|) ^ XOR_j shift(R_j, bytes after piece j)).
// Section table: each section's end is the inclusive prefix sum of the sizes
// (on the GPU: CUB's DeviceScan), checked as parse_stream checks it.
//
// Faults go to the chunk's fault slot (codec/cuda/threads.h) with bit 63 set
// and a rank that orders them as the CPU decoder meets them (checksum, then
// the table in section order, then the codec's per-section checks), so that
// the smallest is the CPU decoder's error; verify_fault_text (plan.h) gives
// its exact message. The decode kernels run after these in stream order and
// do nothing when verify_failed().
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

#include "codec/cuda/threads.h"
#include "codec/hd.h"

namespace kvs::codec::cuda::detail {

inline constexpr uint32_t kCrcPoly = 0xEDB88320u;  // CRC-32 (IEEE), reflected
inline constexpr uint32_t kCrcPieceBytes = 256;    // per thread (a multiple of 16)
inline constexpr uint32_t kCrcTileThreads = 128;   // pieces per CUDA block
inline constexpr uint32_t kCrcTileBytes = kCrcPieceBytes * kCrcTileThreads;

// Slicing-by-8 tables (slice[k][b]: the register of byte b followed by k
// zero bytes) and x8pow[k] = x^(8 * 2^k) mod P (moving a register past 2^k bytes).
struct CrcTables {
  uint32_t slice[8][256];
  uint32_t x8pow[64];
};

// a * b mod P in the reflected domain (zlib's multmodp; bit 31 is x^0).
KVS_HD inline uint32_t crc_multmodp(uint32_t a, uint32_t b) {
  uint32_t p = 0;
  for (uint32_t m = 1u << 31; m; m >>= 1) {
    p ^= b & (0u - uint32_t((a & m) != 0));
    b = (b >> 1) ^ (kCrcPoly & (0u - (b & 1)));
  }
  return p;
}

// The register c moved past n zero bytes: c * x^(8n) mod P.
KVS_HD inline uint32_t crc_shift(const uint32_t* x8pow, uint32_t c, uint64_t n) {
  for (uint32_t k = 0; n; ++k, n >>= 1)
    if (n & 1) c = crc_multmodp(x8pow[k], c);
  return c;
}

KVS_HD inline uint32_t load_le32(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const uint32_t*>(p);  // 4-byte aligned: the kernel's shared tiles
#else
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
#endif
}

// The register c continued over p[0..n) (no inversions), slicing-by-8.
// On the GPU p must be 4-byte aligned.
KVS_HD inline uint32_t crc_update(const uint32_t (*t)[256], uint32_t c, const uint8_t* p, size_t n) {
  for (; n >= 8; n -= 8, p += 8) {
    const uint32_t lo = c ^ load_le32(p), hi = load_le32(p + 4);
    c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^ t[3][hi & 0xff] ^
        t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
  }
  for (; n > 0; --n, ++p) c = t[0][(c ^ *p) & 0xff] ^ (c >> 8);
  return c;
}

// A piece's part of the stream's register: its bytes p[0..n) followed by `after` more.
KVS_HD inline uint32_t crc_piece(const uint32_t (*t)[256], const uint32_t* x8pow, const uint8_t* p, size_t n,
                                 uint64_t after) {
  return crc_shift(x8pow, crc_update(t, 0, p, n), after);
}

// The tables, computed on the host (the decoder copies them to the device once).
inline CrcTables make_crc_tables() {
  CrcTables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? kCrcPoly ^ (c >> 1) : c >> 1;
    t.slice[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; ++i)
    for (size_t k = 1; k < 8; ++k) t.slice[k][i] = (t.slice[k - 1][i] >> 8) ^ t.slice[0][t.slice[k - 1][i] & 0xff];
  uint32_t x8 = 1u << 23;  // x^8 (bit 31 is x^0)
  for (auto& p : t.x8pow) {
    p = x8;
    x8 = crc_multmodp(x8, x8);
  }
  return t;
}

// Verification faults: bit 63, a 3-bit rank (bits 60..62) in the CPU
// decoder's order, and the rank's details below.
inline constexpr unsigned long long kVerifyFault = 1ull << 63;
enum class VerifyRank : uint32_t {
  kChecksum = 0,        // no details
  kSectionPastEnd = 1,  // section << 32 | its size
  kTrailingBytes = 2,   // where the last section ends
  kSectionCheck = 3,    // the codec's own check of a section: section << 34 | what << 32 | a value
};
// kSectionCheck's `what`.
inline constexpr uint32_t kCheckShortStream = 0;      // cachegen: a stream shorter than a rANS state
inline constexpr uint32_t kCheckVarintTruncated = 1;  // kvs: a piece's rANS size runs past its section
inline constexpr uint32_t kCheckVarintTooLong = 2;    // kvs: the same longer than a u32
inline constexpr uint32_t kCheckRansTooLarge = 3;     // kvs: the rANS size (the value) beyond its section

KVS_HD inline unsigned long long verify_fault(VerifyRank rank, uint64_t details) {
  return kVerifyFault | (unsigned long long)(rank) << 60 | details;
}

KVS_HD inline void report_verify(unsigned long long* fault, unsigned long long v) {
#if defined(__CUDA_ARCH__)
  atomicMin(fault, v);
#else
  if (v < *fault) *fault = v;
#endif
}

// Whether the chunk's verification failed (then the decode kernels must not
// read the stream by its table). Decode faults (codec/cuda/threads.h) never
// set bit 63.
KVS_HD inline bool verify_failed(const unsigned long long* fault) {
  const unsigned long long v = *static_cast<const volatile unsigned long long*>(fault);
  return v != kNoFault && (v & kVerifyFault);
}

struct VerifyLaunch {
  const uint8_t* stream;     // the whole bitstream (device: 16-byte aligned; the CRC reads only its `body` bytes)
  uint32_t body;             // bytes before the stored CRC
  uint32_t stored_crc;       // the stream's last 4 bytes
  uint32_t crc_init;         // crc_shift(~0, body): the initial register's part
  const CrcTables* crc;      // the tables
  uint32_t* crc_acc;         // the pieces' registers xored (zero before the CRC kernel)
  // The section table, when the device walks it (sections: its length; 0
  // with walk false: the host walked it).
  bool walk;
  uint32_t sections;
  uint64_t* ends;            // [sections]: size of section i, then (after the scan) the inclusive sums
  uint32_t* offsets;         // out: [sections + 1], where section i starts; [sections]: the body's end
  uint32_t min_size_from, min_size;  // sections from min_size_from on must have min_size bytes (0: no check)
  unsigned long long* fault;
};

KVS_HD inline uint32_t section_size(const VerifyLaunch& p, uint32_t i) {
  const uint8_t* q = p.stream + 48 + 4 * size_t(i);  // kHeaderBytes: the table follows the 48-byte header
  return uint32_t(q[0]) | uint32_t(q[1]) << 8 | uint32_t(q[2]) << 16 | uint32_t(q[3]) << 24;
}

// Before the scan: section i's size, widened.
KVS_HD inline void verify_widen(const VerifyLaunch& p, uint32_t i) { p.ends[i] = section_size(p, i); }

// After the scan: section i checked as parse_stream's walk checks it (its end
// within the stream; after the last, no bytes left), then the codec's size
// check; its offset written.
KVS_HD inline void verify_section(const VerifyLaunch& p, uint32_t i) {
  const uint64_t first = 48 + 4ull * p.sections;
  const uint32_t size = section_size(p, i);
  const uint64_t end = first + p.ends[i];
  p.offsets[i] = uint32_t(end - size);
  if (end > p.body) report_verify(p.fault, verify_fault(VerifyRank::kSectionPastEnd, uint64_t(i) << 32 | size));
  if (i + 1 == p.sections && end < p.body) report_verify(p.fault, verify_fault(VerifyRank::kTrailingBytes, end));
  if (i >= p.min_size_from && size < p.min_size)
    report_verify(p.fault, verify_fault(VerifyRank::kSectionCheck, uint64_t(i) << 34 | uint64_t(kCheckShortStream) << 32));
}

// The tiles of a body of `body` bytes (in 64 bits: a body within 32 KiB of
// 4 GiB would wrap to 0 tiles in 32 and fail its CRC).
KVS_HD inline uint32_t crc_tile_count(uint32_t body) {
  return uint32_t((uint64_t(body) + kCrcTileBytes - 1) / kCrcTileBytes);
}

// The CRC of tile `tile` (kCrcTileBytes of the body from tile * kCrcTileBytes):
// its length; thread j's part (its piece at `piece`, moved to the tile's
// end); and the tile's part (the threads' xored), moved to the body's end
// and added to the chunk's register.
KVS_HD inline uint32_t crc_tile_bytes(const VerifyLaunch& p, uint32_t tile) {
  const uint32_t begin = tile * kCrcTileBytes;
  return p.body - begin < kCrcTileBytes ? p.body - begin : kCrcTileBytes;
}
KVS_HD inline uint32_t crc_thread(const uint32_t (*t)[256], const uint32_t* x8pow, const uint8_t* piece,
                                  uint32_t tile_bytes, uint32_t j) {
  const uint32_t begin = j * kCrcPieceBytes;
  if (begin >= tile_bytes) return 0;
  const uint32_t n = tile_bytes - begin < kCrcPieceBytes ? tile_bytes - begin : kCrcPieceBytes;
  return crc_piece(t, x8pow, piece, n, tile_bytes - begin - n);
}
KVS_HD inline void crc_tile_done(const VerifyLaunch& p, const uint32_t* x8pow, uint32_t tile, uint32_t tile_bytes,
                                 uint32_t x) {
  x = crc_shift(x8pow, x, p.body - tile * kCrcTileBytes - tile_bytes);
#if defined(__CUDA_ARCH__)
  atomicXor(p.crc_acc, x);
#else
  *p.crc_acc ^= x;
#endif
}

// The kernel stages a tile in shared rows, one per piece, each padded by a
// word (so that the threads' reads of their rows hit different banks): the
// word of the rows where the tile's 16-byte word w goes.
inline constexpr uint32_t kCrcRowWords = kCrcPieceBytes / 4 + 1;
KVS_HD inline uint32_t crc_row_word(uint32_t w) {
  constexpr uint32_t kWordsPerPiece = kCrcPieceBytes / 16;
  return (w / kWordsPerPiece) * kCrcRowWords + (w % kWordsPerPiece) * 4;
}
// The tile's 16-byte word w (of `bytes` bytes at `tile`) into row[0..4): a
// whole word with one 16-byte load (on the GPU `tile` is 16-byte aligned),
// the body's last word, when partial, byte by byte. So nothing after the
// body is read: not the stored CRC (an encoder stores it after this
// kernel), not a buffer's padding (which nobody wrote; compute-sanitizer
// initcheck reports reads of unwritten device memory). crc_thread reads
// only the body's bytes of the rows.
KVS_HD inline void crc_load_word(const uint8_t* tile, uint32_t bytes, uint32_t w, uint32_t* row) {
  if (16 * (w + 1) <= bytes) {
#if defined(__CUDA_ARCH__)
    const uint4 v = reinterpret_cast<const uint4*>(tile)[w];
    row[0] = v.x, row[1] = v.y, row[2] = v.z, row[3] = v.w;
#else
    std::memcpy(row, tile + 16 * size_t(w), 16);
#endif
    return;
  }
  uint8_t* r = reinterpret_cast<uint8_t*>(row);
  for (uint32_t i = 16 * w; i < bytes; ++i) r[i - 16 * w] = tile[i];
}

// The CRC tiles as the kernel cuts and stages them (crc_load_word into
// rows), one after another on the CPU (for tests and the host paths):
// p.crc_acc gets the pieces' registers xored.
inline void crc_tiles_on_host(const VerifyLaunch& p) {
  const uint32_t tiles = crc_tile_count(p.body);
  std::unique_ptr<uint32_t[]> rows(new uint32_t[size_t(kCrcTileThreads) * kCrcRowWords]);
  for (uint32_t tile = 0; tile < tiles; ++tile) {
    const uint32_t bytes = crc_tile_bytes(p, tile);
    const uint8_t* tile_bytes = p.stream + size_t(tile) * kCrcTileBytes;
    for (uint32_t w = 0; w < (bytes + 15) / 16; ++w) crc_load_word(tile_bytes, bytes, w, rows.get() + crc_row_word(w));
    uint32_t x = 0;
    for (uint32_t j = 0; j < kCrcTileThreads && j * kCrcPieceBytes < bytes; ++j)  // (the threads past the end add 0)
      x ^= crc_thread(p.crc->slice, p.crc->x8pow, reinterpret_cast<const uint8_t*>(rows.get() + j * kCrcRowWords),
                      bytes, j);
    crc_tile_done(p, p.crc->x8pow, tile, bytes, x);
  }
}

// Whether the checksum or the section table failed (kvs_locate's pieces'
// own faults, rank kSectionCheck, do not count: its threads run in any order,
// so a piece that skipped on a later piece's fault would hide its own).
KVS_HD inline bool table_failed(const unsigned long long* fault) {
  const unsigned long long v = *static_cast<const volatile unsigned long long*>(fault);
  return v != kNoFault && (v & kVerifyFault) && ((v >> 60) & 7) < uint32_t(VerifyRank::kSectionCheck);
}

// kvs, after the walk: piece k's section split as KvsCodec::parse splits
// it (a varint rANS size, the rANS bytes, the raw-bit extras), written into
// its descriptor. Skipped when the checksum or the table's check failed (its
// offsets may be anything).
KVS_HD inline void kvs_locate(const VerifyLaunch& p, KvsPieceDesc* pieces, uint32_t k) {
  if (table_failed(p.fault)) return;
  KvsPieceDesc& pc = pieces[k];
  const uint32_t begin = p.offsets[pc.section], size = p.offsets[pc.section + 1] - begin;
  const uint8_t* sec = p.stream + begin;
  const auto fail = [&](uint32_t what, uint32_t value) {
    report_verify(p.fault, verify_fault(VerifyRank::kSectionCheck,
                                        uint64_t(pc.section) << 34 | uint64_t(what) << 32 | value));
  };
  uint32_t v = 0, pos = 0;
  for (uint32_t shift = 0;; shift += 7) {  // get_varint (codec/kvs_format.cpp)
    if (shift >= 35) return fail(kCheckVarintTooLong, 0);
    if (pos >= size) return fail(kCheckVarintTruncated, 0);
    const uint8_t b = sec[pos++];
    if (shift == 28 && b > 0x0f) return fail(kCheckVarintTooLong, 0);
    v |= uint32_t(b & 0x7f) << shift;
    if (!(b & 0x80)) break;
  }
  if (v > size - pos) return fail(kCheckRansTooLarge, v);
  pc.rans_offset = begin + pos;
  pc.rans_size = v;
  pc.extras_offset = begin + pos + v;
  pc.extras_size = size - pos - v;
}

// Once per chunk, after the CRC pieces: the checksum compared; with the
// walk, the table's end (and an empty table checked).
KVS_HD inline void verify_final(const VerifyLaunch& p) {
  if (~(*p.crc_acc ^ p.crc_init) != p.stored_crc) report_verify(p.fault, verify_fault(VerifyRank::kChecksum, 0));
  if (!p.walk) return;
  p.offsets[p.sections] = p.body;
  const uint64_t first = 48 + 4ull * p.sections;
  if (p.sections == 0 && first != p.body) report_verify(p.fault, verify_fault(VerifyRank::kTrailingBytes, first));
}

}  // namespace kvs::codec::cuda::detail
