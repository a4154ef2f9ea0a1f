// Every decoder checks what the stream's bytes alone can tell before it
// allocates the output (codec/codec.h; docs/bitstream.md, "Validation"): a
// short stream whose header claims a huge shape (the limit, 2^28 values = 1
// GiB of floats) is rejected with a CorruptStream naming the section, without
// first allocating the chunk.
//
// How "without allocating" is observed: the decode runs in a forked child
// (gtest's EXPECT_EXIT) whose address space may grow by at most kHeadroomBytes
// (RLIMIT_AS = its size at the fork + the headroom), far less than the chunk
// the header asks for. A decoder that allocates the output (or anything of
// that order) before its check gets std::bad_alloc (or, under ASan, an
// allocator error) instead of the CorruptStream, and the child exits non-zero.
// This needs no hook in the codec API and tests the real allocation. The
// child's stderr must contain the section's name.
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <new>
#include <string>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>
#include <zstd.h>

#include "base/files.h"
#include "codec/bitstream.h"
#include "codec/cachegen.h"
#include "codec/cachegen_paper.h"
#include "codec/codec.h"

namespace kvs::codec {
namespace {

constexpr uint64_t kHeadroomBytes = 256ull << 20;  // the claimed chunks are 1 GiB

// The current address-space size in bytes (/proc/self/statm, first field, pages).
uint64_t address_space_bytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t pages = 0;
  statm >> pages;
  return pages * uint64_t(sysconf(_SC_PAGESIZE));
}

// In the child: limit the address space, decode, report. Exit 0 with the
// error on stderr for a CorruptStream; 1 for std::bad_alloc (the decoder
// allocated before rejecting); 2 when the stream decoded.
// With `into`, decodes with decode_into() into a reused small chunk instead.
[[noreturn]] void decode_limited(const Codec& codec, const Bytes& stream, bool into = false) {
  const uint64_t size = address_space_bytes();
  const rlimit limit{size + kHeadroomBytes, size + kHeadroomBytes};
  if (size == 0 || setrlimit(RLIMIT_AS, &limit) != 0) {
    std::fprintf(stderr, "cannot limit the address space\n");
    std::_Exit(3);
  }
  try {
    if (into) {
      KVChunk reused(KVShape{1, 1, 4}, DType::kF16, 0, 8);
      codec.decode_into(stream, reused);
    } else {
      (void)codec.decode(stream);
    }
    std::fprintf(stderr, "decoded\n");
    std::_Exit(2);
  } catch (const CorruptStream& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::_Exit(0);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "allocated before rejecting the stream\n");
    std::_Exit(1);
  }
}

// Passes when decoding `stream` under the limit throws a CorruptStream whose
// message matches `section` (a regular expression).
#define EXPECT_REJECTED_BEFORE_ALLOCATING(codec, stream, section) \
  EXPECT_EXIT(decode_limited(codec, stream), ::testing::ExitedWithCode(0), section)

// A header for `codec` asking for `shape` x `tokens` (fp16).
StreamHeader huge_header(CodecId codec, KVShape shape, uint32_t tokens, uint16_t flags = 0) {
  StreamHeader h;
  h.codec = codec;
  h.dtype = DType::kF16;
  h.flags = flags;
  h.shape = shape;
  h.tokens = tokens;
  EXPECT_EQ(h.elements(), kMaxElements);  // the largest chunk a header may ask for
  return h;
}

const KVShape kWide{8, 8, 128};
constexpr uint32_t kWideTokens = 16384;  // x 16,384 values per token = 2^28

TEST(DecodeLimitsDeathTest, RawChecksItsSectionSize) {
  const auto codec = make_codec("raw");
  const Bytes stream = write_stream(huge_header(CodecId::kRaw, kWide, kWideTokens), {Bytes(64, 0)});
  EXPECT_REJECTED_BEFORE_ALLOCATING(*codec, stream, "raw values of 64 bytes, expected 536870912");
}

TEST(DecodeLimitsDeathTest, ZstdChecksTheFrameBeforeDecompressing) {
  const auto codec = make_codec("zstd");
  const StreamHeader h = huge_header(CodecId::kZstd, kWide, kWideTokens);
  // A real frame of 64 bytes: its content size is not the shape's.
  const Bytes content(64, 7);
  Bytes frame(ZSTD_compressBound(content.size()));
  frame.resize(ZSTD_compress(frame.data(), frame.size(), content.data(), content.size(), 3));
  EXPECT_REJECTED_BEFORE_ALLOCATING(*codec, write_stream(h, {frame}), "zstd frame content size is not 536870912");
  // A frame that states the right content size (2^29 bytes) but holds one
  // RLE block of 128 KiB: 17 bytes cannot hold the 4,096 blocks it would take.
  Bytes forged = {0x28, 0xb5, 0x2f, 0xfd,  // magic
                  0xe0,                    // 8-byte content size, single segment
                  0, 0, 0, 0x20, 0, 0, 0, 0};
  const uint32_t block = 1u | 1u << 1 | (128u << 10) << 3;  // last block, RLE, 128 KiB
  for (int k = 0; k < 3; ++k) forged.push_back(uint8_t(block >> (8 * k)));
  forged.push_back(0);
  ASSERT_EQ(ZSTD_getFrameContentSize(forged.data(), forged.size()), 1ull << 29);
  EXPECT_REJECTED_BEFORE_ALLOCATING(*codec, write_stream(h, {forged}), "zstd frame of 17 bytes is too short");
}

TEST(DecodeLimitsDeathTest, Quant8ChecksItsSectionSizes) {
  const auto codec = make_codec("quant8");
  const Bytes stream = write_stream(huge_header(CodecId::kQuant8, kWide, kWideTokens), {Bytes(8, 0), Bytes(8, 0)});
  EXPECT_REJECTED_BEFORE_ALLOCATING(*codec, stream, "quant8 section sizes do not match the shape");
}

TEST(DecodeLimitsDeathTest, KiviChecksEverySection) {
  const auto codec = make_codec("kivi2");
  const StreamHeader h = huge_header(CodecId::kKivi2, kWide, kWideTokens);
  std::vector<Bytes> sections(1 + 6 * kWide.layers, Bytes(4, 0));
  sections[0] = {32, 0, 0, 0, 128, 0, 0, 0};  // group 32, residual 128
  EXPECT_REJECTED_BEFORE_ALLOCATING(*codec, write_stream(h, sections), "kivi2 sections 1..3 .* do not match the shape");
}

// cachegen (scheme=code): 1 layer x 1 head x 128 dims x 2^20 tokens in
// streams of 65,535 tokens (17 per channel): 4,354 sections.
TEST(DecodeLimitsDeathTest, CacheGenChecksScalesTablesAndStreams) {
  const auto codec = make_codec("cachegen");
  const StreamHeader h = huge_header(CodecId::kCacheGen, {1, 1, 128}, 1u << 20, 65535);
  std::vector<Bytes> sections(2 + 2 * 128 * 17, Bytes(4, 0));
  sections[0].clear();
  sections[1].clear();
  EXPECT_REJECTED_BEFORE_ALLOCATING(*codec, write_stream(h, sections), "cachegen scales do not match the shape");
  sections[0].assign(2 * 2 * (1u << 20), 0);  // one fp16 scale per (kind, token): 4 MiB
  EXPECT_REJECTED_BEFORE_ALLOCATING(*codec, write_stream(h, sections), "cachegen tables do not match the shape");
  // Tables of the right size (per kind, 128 tables of 2M + 1 u16 entries),
  // one stream too short to hold a rANS state.
  const auto table_bytes = [](Kind k) { return 128 * 2 * size_t(cachegen_bins(0, k, 0, 1) / 2 * 2 - 1); };
  sections[1].assign(table_bytes(Kind::kKey) + table_bytes(Kind::kValue), 0);
  sections[2 + 2 * 128 * 17 - 1].resize(3);
  EXPECT_REJECTED_BEFORE_ALLOCATING(*codec, write_stream(h, sections), "cachegen stream 4353 is shorter than");
}

// cachegen scheme=paper: the shape must be its model's (4 layers x 2 heads x
// 32 dims, as the bundled model; 2^19 tokens), 16 substreams.
TEST(DecodeLimitsDeathTest, CacheGenPaperChecksEverySubstream) {
  const KVShape shape{4, 2, 32};
  KVChunk sample(shape, DType::kF16, 0, 40);
  for (size_t i = 0; i < sample.values.size(); ++i) sample.values[i] = float(int(i * 7919 % 61) - 30) / 8;
  const std::string model = (std::filesystem::path(::testing::TempDir()) / "kvs-decode-limits.cgm").string();
  write_file_atomic(model, train_cachegen_paper_model(std::span<const KVChunk>(&sample, 1)));
  const auto codec = make_codec("cachegen", {{{"scheme", "paper"}}, model});
  StreamHeader h = huge_header(CodecId::kCacheGen, shape, 1u << 19, kPaperGroupTokens);
  h.model_hash = stream_model_hash(codec->encode(sample, 0));
  ASSERT_NE(h.model_hash, 0u);
  std::vector<Bytes> sections(16, Bytes(8, 0));  // E = 0, then a 4-byte rANS stream
  sections[5].resize(3);
  EXPECT_REJECTED_BEFORE_ALLOCATING(*codec, write_stream(h, sections), "cachegen paper substream truncated");
  sections[5] = {1, 0, 0, 1, 0, 0, 0, 0};  // E = 2^24 + 1: more than the 2^24 values
  EXPECT_REJECTED_BEFORE_ALLOCATING(*codec, write_stream(h, sections),
                                    "cachegen paper substream 5 has 16777217 escapes for 16777216 values");
  sections[5] = {1, 0, 0, 0, 0, 0, 0, 0};  // E = 1: its value takes the bytes of the rANS stream
  EXPECT_REJECTED_BEFORE_ALLOCATING(*codec, write_stream(h, sections), "cachegen paper substream 5 does not decode");
  // decode_into (which resizes a caller's chunk) checks as much first.
  EXPECT_EXIT(decode_limited(*codec, write_stream(h, sections), true), ::testing::ExitedWithCode(0),
              "cachegen paper substream 5 does not decode");
  sections[5].resize(3);
  EXPECT_EXIT(decode_limited(*codec, write_stream(h, sections), true), ::testing::ExitedWithCode(0),
              "cachegen paper substream truncated");
}

// kvs: 64 layers x 1,024 heads x 1 dim x 2,048 tokens, i.e. 131,072 heads in
// a parameter section of 129 KiB. Per-head row lists (2,048 entries each)
// would take 1 GiB themselves, so they must not be built per head before the
// channel models are checked.
TEST(DecodeLimitsDeathTest, KvsChecksItsSectionsBeforePerHeadLists) {
  const auto codec = make_codec("kvs");
  const StreamHeader h = huge_header(CodecId::kKvs, {64, 1024, 1}, 2048);
  const size_t planes = 128, heads = 131072;
  Bytes params;
  put_f32(params, 0);  // rope_theta 0 (head_dim is odd)
  for (size_t p = 0; p < planes; ++p) put_f32(params, 1);
  params.resize(params.size() + heads, 0);  // row mode 0: every row coded
  EXPECT_REJECTED_BEFORE_ALLOCATING(*codec, write_stream(h, {params, {}, {}}), "kvs channel spreads truncated");
  // Head 0 with row references (token 0 a literal, every later one a copy of
  // it: ranks 0, 1, 1, ...), every other head sharing them (mode 2).
  std::fill(params.end() - ptrdiff_t(heads), params.end(), uint8_t(2));
  params[params.size() - heads] = 1;
  std::vector<bool> bits = {false};  // rank 0: v = 1, the code "0"
  for (int t = 1; t < 2048; ++t) bits.insert(bits.end(), {true, false, false});  // v = 2: "1", "0", low bit 0
  Bytes refs((bits.size() + 7) / 8, 0);
  for (size_t i = 0; i < bits.size(); ++i) refs[i / 8] |= uint8_t(bits[i]) << (i % 8);
  EXPECT_REJECTED_BEFORE_ALLOCATING(*codec, write_stream(h, {params, refs, {}}), "kvs channel spreads truncated");
}

}  // namespace
}  // namespace kvs::codec
