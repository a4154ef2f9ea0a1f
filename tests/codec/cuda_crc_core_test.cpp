// The CRC kernel's staging of a tile (codec/cuda/verify_threads.h
// crc_load_word, which crc_tiles_on_host runs as the kernel does) reads
// nothing after the body: each body ends just before a page the process may
// not read (mprotect PROT_NONE), so that a read past it is a crash, not a
// silently right CRC. On the GPU the same read would be of the stored CRC or
// of a buffer's unwritten padding (compute-sanitizer initcheck).
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include <gtest/gtest.h>

#include "codec/cuda/verify_threads.h"

namespace kvs::codec {
namespace {

using namespace cuda::detail;

// CRC-32 (IEEE) bit by bit: the reference.
uint32_t crc32_bitwise(const uint8_t* p, size_t n) {
  uint32_t c = ~0u;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c & 1) ? kCrcPoly ^ (c >> 1) : c >> 1;
  }
  return ~c;
}

// `bytes` readable bytes directly followed by an unreadable page.
class GuardedBuffer {
 public:
  explicit GuardedBuffer(size_t bytes) {
    page_ = size_t(::sysconf(_SC_PAGESIZE));
    pages_ = (bytes + page_ - 1) / page_ + 1;
    void* m = ::mmap(nullptr, pages_ * page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("mmap failed");
    base_ = static_cast<uint8_t*>(m);
    if (::mprotect(base_ + (pages_ - 1) * page_, page_, PROT_NONE) != 0) throw std::runtime_error("mprotect failed");
    data_ = base_ + (pages_ - 1) * page_ - bytes;
  }
  ~GuardedBuffer() { ::munmap(base_, pages_ * page_); }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;
  uint8_t* data() const { return data_; }

 private:
  size_t page_ = 0, pages_ = 0;
  uint8_t* base_ = nullptr;
  uint8_t* data_ = nullptr;
};

TEST(CudaCore, CrcStagingReadsNothingAfterTheBody) {
  const CrcTables tables = make_crc_tables();
  std::vector<uint32_t> sizes;
  for (uint32_t n = 1; n <= 48; ++n) sizes.push_back(n);
  for (uint32_t n : {255u, 256u, 257u, 4095u, kCrcTileBytes - 1, kCrcTileBytes, kCrcTileBytes + 1,
                     3 * kCrcTileBytes + 13, 3 * kCrcTileBytes + 16})
    sizes.push_back(n);
  uint64_t x = 12345;
  for (uint32_t body : sizes) {
    SCOPED_TRACE(body);
    GuardedBuffer buf(body);
    for (uint32_t i = 0; i < body; ++i) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      buf.data()[i] = uint8_t(x >> 56);
    }
    uint32_t acc = 0;
    VerifyLaunch p{};
    p.stream = buf.data();
    p.body = body;
    p.crc_init = crc_shift(tables.x8pow, ~0u, body);
    p.crc = &tables;
    p.crc_acc = &acc;
    crc_tiles_on_host(p);  // a read past the body faults here
    EXPECT_EQ(~(acc ^ p.crc_init), crc32_bitwise(buf.data(), body));
  }
}

TEST(CudaCore, CrcRowsHoldTheTileAsThePiecesReadIt) {
  // Every byte of a tile lands in its piece's row at its offset in the piece.
  std::vector<uint8_t> tile(kCrcTileBytes);
  for (size_t i = 0; i < tile.size(); ++i) tile[i] = uint8_t(i * 7 + i / 256);
  std::vector<uint32_t> rows(size_t(kCrcTileThreads) * kCrcRowWords, 0);
  const uint32_t bytes = kCrcTileBytes - 5;  // a partial last word
  for (uint32_t w = 0; w < (bytes + 15) / 16; ++w) crc_load_word(tile.data(), bytes, w, rows.data() + crc_row_word(w));
  for (uint32_t i = 0; i < bytes; ++i) {
    const uint32_t piece = i / kCrcPieceBytes, at = i % kCrcPieceBytes;
    uint8_t b;
    std::memcpy(&b, reinterpret_cast<const uint8_t*>(rows.data() + size_t(piece) * kCrcRowWords) + at, 1);
    ASSERT_EQ(b, tile[i]) << "byte " << i;
  }
  for (uint32_t i = bytes; i < kCrcTileBytes; ++i) {  // not written: the body ended
    const uint32_t piece = i / kCrcPieceBytes, at = i % kCrcPieceBytes;
    EXPECT_EQ(reinterpret_cast<const uint8_t*>(rows.data() + size_t(piece) * kCrcRowWords)[at], 0) << "byte " << i;
  }
}

}  // namespace
}  // namespace kvs::codec
