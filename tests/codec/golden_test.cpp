// Golden bitstreams: the format cannot change silently. For every codec and
// level, encoding a fixed chunk must reproduce the committed stream byte for
// byte, and decoding the committed stream must give the committed values
// (pinned by a CRC of the decoded floats). After a deliberate format change,
// regenerate with KVSTREAM_REGENERATE_GOLDEN=1 and bump kFormatVersion.
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/files.h"
#include "codec/bitstream.h"
#include "codec/cachegen_paper.h"
#include "codec/codec.h"

namespace kvs::codec {
namespace {

const std::string kDir = std::string(KVSTREAM_SOURCE_DIR) + "/tests/codec/golden/";

// A deterministic chunk from an LCG (portable, unlike <random>'s distributions).
KVChunk golden_chunk() {
  KVChunk c({2, 2, 8}, DType::kF16, 40, 24);
  uint64_t x = 12345;
  for (size_t i = 0; i < c.values.size(); ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    const double u = double(x >> 11) * 0x1.0p-53 - 0.5;
    c.values[i] = round_to_dtype(float(u * ((i % 8) == 3 ? 16.0 : 2.0)), c.dtype);
  }
  return c;
}

uint32_t values_crc(const KVChunk& c) {
  return crc32({reinterpret_cast<const uint8_t*>(c.values.data()), c.values.size() * sizeof(float)});
}

// Every codec with its default parameters, plus variants whose defaults would
// leave the 24-token golden chunk untouched (KIVI keeps its last 128 tokens
// in fp16): file stem, codec, parameters.
struct Variant {
  std::string stem, codec;
  CodecParams params;
};
std::vector<Variant> variants() {
  std::vector<Variant> v;
  for (const auto& name : codec_names()) v.push_back({name, name, {}});
  for (const char* kivi : {"kivi2", "kivi4"})  // keys: 16 quantized, 8 fp16; values: 8 quantized, 16 fp16
    v.push_back({std::string(kivi) + "-g4-r16", kivi, {{"group", "4"}, {"residual", "16"}}});
  // No residual, groups of 5: keys 20 quantized, 4 fp16; values all quantized in groups of 5 + 3 channels.
  v.push_back({"kivi2-g5-r0", "kivi2", {{"group", "5"}, {"residual", "0"}}});
  // kvs with a table of RoPE frequencies (flags bit 1) instead of a base.
  v.push_back({"kvs-rope-table", "kvs", {{"rope_inv_freq", "1:0.125:0.0123:0.00077"}}});
  // kvs with per-layer RoPE (flags bit 2): layer 0 at a base, layer 1 at a table.
  v.push_back({"kvs-rope-layers", "kvs",
               {{"rope_theta", "500000"}, {"rope_alt_inv_freq", "1:0.125:0.0123:0.00077"}, {"rope_alt_layers", "1"}}});
  return v;
}

// Writes (regenerating) or checks one golden stream `base`.kvsc and the CRC of
// its decoded values `base`.crc; `label` names it in failures. Returns whether
// it was checked.
bool golden_stream(const Codec& codec, const KVChunk& chunk, int level, const std::string& base,
                   const std::string& label, bool regenerate) {
  const Bytes stream = codec.encode(chunk, level);
  const uint32_t crc = values_crc(codec.decode(stream));
  if (regenerate) {
    write_file_atomic(base + ".kvsc", std::string_view(reinterpret_cast<const char*>(stream.data()), stream.size()));
    write_file_atomic(base + ".crc", std::to_string(crc) + "\n");
    return false;
  }
  EXPECT_TRUE(std::filesystem::exists(base + ".kvsc")) << base << ": missing (new codec? regenerate)";
  if (!std::filesystem::exists(base + ".kvsc")) return false;
  const std::string golden = read_file(base + ".kvsc");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(stream.data()), stream.size()), golden)
      << label << ": encoder output changed";
  const Bytes golden_bytes(golden.begin(), golden.end());
  EXPECT_EQ(values_crc(codec.decode(golden_bytes)), std::stoul(read_file(base + ".crc")))
      << label << ": decoded values changed";
  return true;
}

TEST(Golden, StreamsAreStable) {
  const bool regenerate = std::getenv("KVSTREAM_REGENERATE_GOLDEN") != nullptr;
  const KVChunk chunk = golden_chunk();
  int checked = 0;
  for (const auto& [stem, name, params] : variants()) {
    const auto codec = make_codec(name, {params, ""});
    for (int level = 0; level < codec->levels(); ++level) {
      const std::string base = kDir + stem + "-L" + std::to_string(level);
      if (golden_stream(*codec, chunk, level, base, stem + " L" + std::to_string(level), regenerate)) ++checked;
    }
  }
  if (!regenerate) {
    EXPECT_GE(checked, 14);
  }
}

// cachegen scheme=paper: a golden codec model file (which pins training, byte
// for byte) and a golden stream per level encoded with it.
KVChunk golden_correlated(uint32_t tokens, uint64_t seed) {
  KVChunk c({3, 1, 2}, DType::kF16, 0, tokens);
  uint64_t x = seed;
  auto uniform = [&] {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return double(x >> 11) * 0x1.0p-53 - 0.5;
  };
  for (uint32_t l = 0; l < 3; ++l)
    for (Kind k : {Kind::kKey, Kind::kValue})
      for (uint32_t d = 0; d < 2; ++d) {
        double v = 0;
        for (uint32_t t = 0; t < tokens; ++t) {
          v = 0.9 * v + uniform() * (d ? 4.0 : 1.0);
          c.at(l, k, 0, t, d) = round_to_dtype(float(v), c.dtype);
        }
      }
  return c;
}

TEST(Golden, CacheGenPaperModelAndStreamsAreStable) {
  const bool regenerate = std::getenv("KVSTREAM_REGENERATE_GOLDEN") != nullptr;
  const std::vector<KVChunk> train{golden_correlated(40, 1), golden_correlated(40, 2)};
  const std::string model = train_cachegen_paper_model(train);
  const std::string model_path = kDir + "cachegen-paper.cgm";
  if (regenerate) write_file_atomic(model_path, model);
  ASSERT_TRUE(std::filesystem::exists(model_path)) << model_path << ": missing (regenerate)";
  EXPECT_EQ(model, read_file(model_path)) << "codec model training changed";
  const auto codec = make_codec("cachegen", {{{"scheme", "paper"}}, model_path});
  KVChunk chunk = golden_correlated(24, 3);
  chunk.token_begin = 40;
  for (int level = 0; level < codec->levels(); ++level) {
    golden_stream(*codec, chunk, level, kDir + "cachegen-paper-L" + std::to_string(level),
                  "cachegen paper L" + std::to_string(level), regenerate);
  }
}

}  // namespace
}  // namespace kvs::codec
