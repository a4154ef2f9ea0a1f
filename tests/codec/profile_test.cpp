#include <filesystem>

#include <gtest/gtest.h>

#include "base/error.h"
#include "base/files.h"
#include "codec/profile.h"

namespace kvs::codec {
namespace {

Profile small_profile() {
  Profile p;
  p.model = {"tiny", {4, 2, 16}, DType::kBF16, 128, 384, 4, 256, 1000000};
  p.device = "cpu: test";
  p.chunk_tokens = 8;
  p.greedy_tokens = 16;
  CodecProfile c;
  c.codec = "quant8";
  c.params = "group=channel";
  c.level_names = {"L0", "L1"};
  ContextProfile ctx;
  ctx.id = "ctx0";
  ctx.tokens = 12;
  ctx.base_loss_nats = 1.5;
  ctx.quality = {{8.0, 0.001, 1.0, -1}, {4.0, 0.02, 0.9, -1}};
  ctx.chunks = {{0, 8, {{300, 1e-4, 2e-4, 0.01, 0.0005}, {150, 1e-4, 2e-4, 0.04, 0.01}}},
                {8, 4, {{160, 1e-4, 2e-4, 0.01, 0.0005}, {80, 1e-4, 2e-4, 0.04, 0.01}}}};
  c.contexts.push_back(ctx);
  p.codecs.push_back(c);
  return p;
}

TEST(Profile, JsonRoundTrip) {
  const Profile p = small_profile();
  const std::string text = profile_to_json(p);
  const Profile q = parse_profile(text, "mem");
  EXPECT_EQ(profile_to_json(q), text);
  EXPECT_EQ(q.codec("quant8").contexts[0].chunks[1].levels[1].bytes, 80u);
  EXPECT_EQ(q.model.kv, (KVShape{4, 2, 16}));
  EXPECT_THROW(q.codec("kvs"), std::invalid_argument);
}

TEST(Profile, FileRoundTripIsAtomic) {
  const std::string path = (std::filesystem::temp_directory_path() / "kvs_profile_test.json").string();
  write_profile(small_profile(), path);
  EXPECT_EQ(read_profile(path).device, "cpu: test");
  std::filesystem::remove(path);
}

void expect_error(const std::string& text, const std::string& fragment) {
  try {
    parse_profile(text, "bad.json");
    FAIL() << "expected an error containing " << fragment;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
  }
}

TEST(Profile, ErrorsNameTheJsonPath) {
  std::string good = profile_to_json(small_profile());
  expect_error("{", "invalid JSON");
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  expect_error(replace("\"schema_version\": 1", "\"schema_version\": 9"), "unsupported schema version");
  expect_error(replace("\"bytes\": 80", "\"bytes\": -80"), "/codecs/0/contexts/0/chunks/1/levels/1/bytes");
  expect_error(replace("\"bytes\": 80", "\"bytez\": 80"), "/codecs/0/contexts/0/chunks/1/levels/1/bytes: missing");
  expect_error(replace("\"token_begin\": 8", "\"token_begin\": 9"), "contiguous");
  expect_error(replace("\"dtype\": \"bf16\"", "\"dtype\": \"int4\""), "/model/dtype");
}

// Issue 25: values no measurement has, numbers JSON cannot hold, folders.
TEST(Profile, AbsurdValuesAreErrorsNamingThePath) {
  std::string good = profile_to_json(small_profile());
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  expect_error(replace("\"bytes\": 80", "\"bytes\": 1e400"), "invalid JSON");  // found by profile_fuzz
  expect_error(replace("\"bytes\": 80", "\"bytes\": 1000000000000000000"),
               "/codecs/0/contexts/0/chunks/1/levels/1/bytes: 1000000000000000000 bytes: more than 256 TiB");
  const std::string decode = profile_to_json(small_profile());
  const size_t at = decode.find("\"decode_s\": ");
  ASSERT_NE(at, std::string::npos);
  std::string huge = decode;
  huge.replace(at, decode.find(',', at) - at, "\"decode_s\": 1e300");
  expect_error(huge, "decode_s: 1e+300 is more than a real measurement (86400)");
  expect_error(replace("\"layers\": 4", "\"layers\": 4000000"), "/model: layers, kv_heads and head_dim must be at most");
  try {
    read_profile(std::filesystem::temp_directory_path().string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is a folder, not a file"), std::string::npos) << e.what();
  }
}

TEST(ModelInfo, PrefillFlopsHasDenseAndAttentionTerms) {
  ModelInfo m{"m", {2, 1, 4}, DType::kF32, 8, 16, 2, 10, 1000};
  // dense: 2 * (1000 - 80) per token; attention: 4 * layers * heads * head_dim * pairs
  EXPECT_DOUBLE_EQ(m.prefill_flops(0, 1), 2.0 * 920 + 4.0 * 2 * 2 * 4 * 1);
  EXPECT_DOUBLE_EQ(m.prefill_flops(10, 2), 2.0 * 920 * 2 + 4.0 * 2 * 2 * 4 * (20 + 3));
}

}  // namespace
}  // namespace kvs::codec
