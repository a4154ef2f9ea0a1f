// Code that only a GPU runs, run on the CPU: codec/rans.h's CumTable lookup
// takes an SSE2 shortcut on an x86 host (KVS_RANS_SSE2) but not in device
// code (__CUDA_ARCH__), so every CPU decoder and every CPU run of the GPU
// thread bodies (run_on_host) uses the shortcut, and the plain scan that the
// scheme=paper GPU decoder uses for its anchor tables runs nowhere else.
// This translation unit compiles codec/rans.h a second time without SSE2,
// inside namespace device_path (its own symbols: no clash with the SSE2
// build the rest of the program links), and checks that scan on every slot.
// It includes nothing that includes codec/rans.h (its #pragma once would
// drop the second copy).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "codec/hd.h"

#pragma push_macro("__SSE2__")
#undef __SSE2__
namespace device_path {
#include "codec/rans.h"  // NOLINT(bugprone-suspicious-include): the device's form, see above
}  // namespace device_path
#pragma pop_macro("__SSE2__")

namespace {

namespace rans = device_path::kvs::codec::rans;

#ifdef KVS_RANS_SSE2
#error "the device_path copy of codec/rans.h must be built without its SSE2 shortcut"
#endif

// Frequencies (sum 2^16, each >= 1) of `symbols` symbols: mostly 1s in runs
// (many symbol boundaries in one 256-slot bucket: scans longer than the SSE2
// window of 8), the rest spread by an LCG.
std::vector<uint16_t> frequencies(uint32_t symbols, uint64_t seed) {
  std::vector<uint16_t> f(symbols, 1);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 7;
  uint32_t left = rans::kProbScale - symbols;
  for (uint32_t s = 0; s < symbols && left > 0; ++s) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    if ((x >> 60) < 6) continue;  // about 3 in 8 stay at 1
    const uint32_t add = std::min<uint32_t>(left, uint32_t((x >> 33) % (2 * rans::kProbScale / symbols + 1)));
    f[s] = uint16_t(f[s] + add);
    left -= add;
  }
  f[uint32_t(seed % symbols)] = uint16_t(f[uint32_t(seed % symbols)] + left);  // the rest to one symbol
  return f;
}

TEST(CudaDevicePaths, CumTableScanWithoutSse2FindsEverySlotsSymbol) {
  // Shapes of table: two symbols, CacheGen's 255 anchor symbols, the full
  // 256, a first or last symbol holding almost every slot.
  std::vector<std::vector<uint16_t>> tables;
  for (uint32_t symbols : {2u, 3u, 9u, 64u, 255u, 256u})
    for (uint64_t seed : {1ull, 2ull, 3ull}) tables.push_back(frequencies(symbols, seed + symbols));
  std::vector<uint16_t> first_heavy(256, 1), last_heavy(256, 1);
  first_heavy[0] = uint16_t(rans::kProbScale - 255);
  last_heavy[255] = uint16_t(rans::kProbScale - 255);
  tables.push_back(first_heavy);
  tables.push_back(last_heavy);
  for (size_t k = 0; k < tables.size(); ++k) {
    const std::vector<uint16_t>& f = tables[k];
    const uint32_t symbols = uint32_t(f.size());
    rans::CumTable t;
    std::memset(&t, 0xff, sizeof(t));  // as device memory: what the build does not write is not zero
    ASSERT_TRUE(rans::build_cum(f.data(), symbols, &t)) << "table " << k;
    uint32_t s = 0, cum = 0;  // the reference: slot's symbol by walking the frequencies
    for (uint32_t slot = 0; slot < rans::kProbScale; ++slot) {
      while (slot >= cum + f[s]) cum += f[s++];
      uint32_t freq = 0, start = 0;
      const uint32_t got = rans::find_symbol(t, slot, &freq, &start);
      ASSERT_EQ(got, s) << "table " << k << " (" << symbols << " symbols), slot " << slot;
      ASSERT_EQ(start, cum) << "table " << k << ", slot " << slot;
      ASSERT_EQ(freq, f[s]) << "table " << k << ", slot " << slot;
    }
  }
}

TEST(CudaDevicePaths, CumTableDecodeWithoutSse2RoundTrips) {
  // A stream coded with the table's frequencies decodes to its symbols
  // through the device's lookup, to the encoder's final state.
  const std::vector<uint16_t> f = frequencies(255, 11);
  rans::CumTable t;
  ASSERT_TRUE(rans::build_cum(f.data(), 255, &t));
  rans::Table plain;
  plain.symbols = 255;
  for (uint32_t s = 0; s < 255; ++s) plain.freq[s] = f[s];
  ASSERT_TRUE(rans::finish_table(&plain));
  std::vector<uint8_t> symbols(5000);
  uint64_t x = 5;
  for (uint8_t& s : symbols) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    s = uint8_t((x >> 33) % 255);
  }
  std::vector<uint8_t> out(4 + 2 * symbols.size());
  const size_t bytes = rans::encode(symbols.data(), symbols.size(), plain, out.data(), out.size());
  ASSERT_GT(bytes, 0u);
  rans::Decoder d;
  ASSERT_EQ(rans::decoder_init(out.data() + out.size() - bytes, bytes, &d), rans::DecodeStatus::kOk);
  for (size_t i = 0; i < symbols.size(); ++i) {
    uint32_t s = 0;
    ASSERT_TRUE(rans::decode_step(&d, t, &s)) << i;
    ASSERT_EQ(s, symbols[i]) << i;
  }
  EXPECT_EQ(rans::decoder_finish(d), rans::DecodeStatus::kOk);
}

}  // namespace
