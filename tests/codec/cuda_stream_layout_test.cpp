// The GPU encoders' stream assembly (codec/cuda/stream_layout.h): the host's
// head, the prefix and the payload at the layout's places, then the finishing
// thread bodies (table entries, CRC tiles, CRC) run on the CPU, against
// write_stream byte for byte. The encoders' own streams through it:
// CudaCore.*EncoderThreadBodiesWriteTheCpuEncodersBytes.
#include <cstdint>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "base/error.h"
#include "codec/bitstream.h"
#include "codec/cuda/stream_layout.h"

namespace kvs::codec {
namespace {

namespace cd = cuda::detail;

StreamHeader test_header() {
  StreamHeader h;
  h.codec = CodecId::kKvs;
  h.level = 3;
  h.dtype = DType::kF16;
  h.flags = 0x1234;
  h.shape = {2, 3, 64};
  h.token_begin = 0x0102030405060708ull;
  h.tokens = 77;
  h.model_hash = 0xfedcba9876543210ull;
  return h;
}

TEST(CudaStreamLayout, AssembledStreamsAreWriteStreams) {
  uint64_t x = 99;
  const auto next = [&] { return x = x * 6364136223846793005ull + 1442695040888963407ull, uint32_t(x >> 33); };
  const auto bytes = [&](size_t n) {
    Bytes b(n);
    for (uint8_t& v : b) v = uint8_t(next());
    return b;
  };
  // (prefix sections, payload sections, largest section): none, empty
  // sections, one, many small ones (the table past a CRC tile), bodies of
  // several 32 KiB CRC tiles.
  struct Case {
    size_t prefix, payload, max_size;
  };
  for (const Case c : {Case{0, 0, 1}, Case{3, 0, 50}, Case{0, 1, 1}, Case{0, 5, 1}, Case{2, 9000, 8},
                       Case{3, 40, 5000}, Case{1, 3, 40000}}) {
    SCOPED_TRACE(testing::Message() << c.prefix << " prefix, " << c.payload << " payload sections");
    std::vector<Bytes> sections;
    for (size_t i = 0; i < c.prefix + c.payload; ++i) sections.push_back(bytes(next() % (c.max_size + 1)));
    const StreamHeader h = test_header();
    const Bytes want = write_stream(h, sections);
    std::vector<uint64_t> prefix_sizes, off(1, 0);
    Bytes prefix, payload;
    for (size_t i = 0; i < c.prefix; ++i) {
      prefix_sizes.push_back(sections[i].size());
      prefix.insert(prefix.end(), sections[i].begin(), sections[i].end());
    }
    for (size_t i = c.prefix; i < sections.size(); ++i) {
      off.push_back(off.back() + sections[i].size());
      payload.insert(payload.end(), sections[i].begin(), sections[i].end());
    }
    const cd::StreamLayout layout(h, prefix_sizes, off);
    EXPECT_EQ(layout.sections, sections.size());
    EXPECT_EQ(layout.bytes(), want.size());
    EXPECT_EQ(layout.buffer_bytes() % 16, 0u);
    EXPECT_EQ(layout.head.size(), kHeaderBytes + 4 * c.prefix);
    EXPECT_EQ(layout.payload_at, want.size() - 4 - payload.size());
    // The gather writes the payload where the layout says (the host form
    // zero-fills the buffer, so a table entry or CRC left out would show).
    const Bytes got = cd::assemble_on_host(layout, prefix, off, [&](uint8_t* at) {
      std::copy(payload.begin(), payload.end(), at);
    });
    EXPECT_EQ(got, want);
    // And parse_stream takes it (its CRC and table checked).
    EXPECT_EQ(parse_stream(got, CodecId::kKvs).sections.size(), sections.size());
  }
}

TEST(CudaStreamLayout, RefusesStreamsOf4GiB) {
  const uint64_t big[] = {0, uint64_t(1) << 32};
  try {
    const cd::StreamLayout layout(test_header(), {}, big);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("4 GiB"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kvs::codec
