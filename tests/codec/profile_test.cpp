#include <filesystem>

#include <gtest/gtest.h>

#include "base/error.h"
#include "base/files.h"
#include "codec/profile.h"

namespace kvs::codec {
namespace {

Profile small_profile() {
  Profile p;
  p.model = {"tiny", {4, 2, 16}, DType::kBF16, 128, 384, 4, 256, 1000000, {}};
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
  ctx.continuation_tokens = 5;
  ctx.quality = {{8.0, 0.001, 1.0, -1, 0.002, 0.0001, 0.99}, {4.0, 0.02, 0.9, -1, 0.03, 0.002, 0.9}};
  ctx.chunks = {{0, 8, {{300, 1e-4, 2e-4, 0.01, 0.0005, 0.001}, {150, 1e-4, 2e-4, 0.04, 0.01, 0.02}}},
                {8, 4, {{160, 1e-4, 2e-4, 0.01, 0.0005, 0.001}, {80, 1e-4, 2e-4, 0.04, 0.01, 0.01}}}};
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
  EXPECT_EQ(q.codec("quant8").contexts[0].quality[1].kl_nats, 0.03);
  EXPECT_EQ(q.codec("quant8").contexts[0].chunks[1].levels[1].kl_nats, 0.01);
  EXPECT_EQ(q.codec("quant8").on_front, (std::vector<bool>{true, true}));
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
  expect_error(replace("\"schema_version\": 2", "\"schema_version\": 9"), "unsupported schema version");
  expect_error(replace("\"schema_version\": 2", "\"schema_version\": 1"),
               "/schema_version: schema version 1 (made before KL divergence");
  expect_error(replace("\"kl_nats\": 0.03", "\"kl_natz\": 0.03"), "/codecs/0/contexts/0/quality/1/kl_nats: missing");
  expect_error(replace("\"top1_agreement\": 0.99", "\"top1_agreement\": 1.5"), "quality/0/top1_agreement");
  expect_error(replace("\"on_front\": [\n    true,\n    true\n   ]", "\"on_front\": [true]"),
               "/codecs/0/on_front: expected 2 levels, found 1");
  // The front follows from the numbers: a level 0 with a higher KL than the
  // smaller level 1 is dominated, and a file that says otherwise is refused.
  expect_error(replace("\"kl_nats\": 0.002", "\"kl_nats\": 0.05"),
               "/codecs/0/on_front: does not match the levels' mean bytes and KL (expected [false, true])");
  expect_error(replace("\"bytes\": 80", "\"bytes\": -80"), "/codecs/0/contexts/0/chunks/1/levels/1/bytes");
  expect_error(replace("\"bytes\": 80", "\"bytez\": 80"), "/codecs/0/contexts/0/chunks/1/levels/1/bytes: missing");
  expect_error(replace("\"token_begin\": 8", "\"token_begin\": 9"), "contiguous");
  expect_error(replace("\"dtype\": \"bf16\"", "\"dtype\": \"int4\""), "/model/dtype");
}

// `text` with the array value of the first field `key` replaced by `to`.
std::string with_array(std::string text, const std::string& key, const std::string& to) {
  const size_t at = text.find("\"" + key + "\"");
  text.replace(at, text.find(']', at) + 1 - at, "\"" + key + "\": " + to);
  return text;
}

// model.layer_windows: the profiled model's sliding windows, written only
// when a layer has one (profiles of full-attention models are unchanged).
TEST(Profile, LayerWindowsAreOptionalAndChecked) {
  Profile p = small_profile();
  const std::string plain = profile_to_json(p);
  EXPECT_EQ(plain.find("layer_windows"), std::string::npos);
  EXPECT_FALSE(parse_profile(plain, "mem").model.has_windows());
  p.model.layer_windows = {0, 0, 0, 0};  // all full: the same as none
  EXPECT_EQ(profile_to_json(p), plain);
  p.model.layer_windows = {4096, 0, 4096, 0};
  const std::string text = profile_to_json(p);
  const Profile q = parse_profile(text, "mem");
  EXPECT_EQ(q.model.layer_windows, (std::vector<uint32_t>{4096, 0, 4096, 0}));
  EXPECT_TRUE(q.model.has_windows());
  EXPECT_EQ(q.model.layer_window(2), 4096u);
  EXPECT_EQ(q.model.layer_window(9), 0u);
  EXPECT_EQ(profile_to_json(q), text);
  auto replace = [&](const std::string& to) { return with_array(text, "layer_windows", to); };
  expect_error(replace("[4096, 0, 4096]"), "/model/layer_windows: expected 4 windows (one per layer), found 3");
  expect_error(replace("[4096, 0, -1, 0]"), "/model/layer_windows/2: expected a window in tokens");
  expect_error(replace("[4096, 0, 1.5, 0]"), "/model/layer_windows/2: expected a window in tokens");
  expect_error(replace("[4096, 0, 4294967296, 0]"), "/model/layer_windows/2: expected a window in tokens");
  expect_error(replace("4096"), "/model/layer_windows: expected an array");
}

// chunks[k].levels[i].layer_shares: optional, one share per layer summing to 1.
TEST(Profile, LayerSharesAreOptionalAndChecked) {
  Profile p = small_profile();
  EXPECT_EQ(profile_to_json(p).find("layer_shares"), std::string::npos);
  p.codecs[0].contexts[0].chunks[1].levels[0].layer_shares = {0.4, 0.3, 0.2, 0.1};
  const std::string text = profile_to_json(p);
  const Profile q = parse_profile(text, "mem");
  EXPECT_EQ(q.codecs[0].contexts[0].chunks[1].levels[0].layer_shares, (std::vector<double>{0.4, 0.3, 0.2, 0.1}));
  EXPECT_TRUE(q.codecs[0].contexts[0].chunks[0].levels[0].layer_shares.empty());
  EXPECT_EQ(profile_to_json(q), text);
  auto replace = [&](const std::string& to) { return with_array(text, "layer_shares", to); };
  const std::string where = "/codecs/0/contexts/0/chunks/1/levels/0/layer_shares";
  expect_error(replace("[0.5, 0.5]"), where + ": expected 4 shares (one per layer), found 2");
  expect_error(replace("[0.5, 0.5, -0.1, 0.1]"), where + "/2: expected a share >= 0");
  expect_error(replace("[0.5, 0.5, \"x\", 0]"), where + "/2: expected a share >= 0");
  expect_error(replace("[0.5, 0.5, 0.5, 0.5]"), where + ": the shares sum to 2, expected 1");
  // Within the 6 decimals the profiler writes: normalized.
  const Profile r = parse_profile(replace("[0.4, 0.3, 0.2, 0.10001]"), "mem");
  double sum = 0;
  for (double x : r.codecs[0].contexts[0].chunks[1].levels[0].layer_shares) sum += x;
  EXPECT_NEAR(sum, 1.0, 1e-12);
}

// Issue 24: a profile timed on a GPU (`kvstream profile --device cuda`)
// names the card, and per codec where encode was timed when not there; the
// field is optional, so CPU profiles are written and read as before.
TEST(Profile, GpuDeviceAndEncodeDevice) {
  const std::string cpu_text = profile_to_json(small_profile());
  EXPECT_EQ(cpu_text.find("encode_device"), std::string::npos);  // CPU profiles unchanged
  EXPECT_TRUE(parse_profile(cpu_text, "mem").codecs[0].encode_device.empty());
  EXPECT_FALSE(measured_on_gpu(small_profile().device));

  Profile p = small_profile();
  p.device = "cuda:NVIDIA H100 80GB HBM3";
  p.codecs[0].encode_device = "cpu: test, 1 thread";
  p.codecs[0].contexts[0].chunks[1].levels[0].decode_host_s = 0.0025;
  const std::string text = profile_to_json(p);
  const Profile q = parse_profile(text, "mem");
  EXPECT_EQ(profile_to_json(q), text);
  EXPECT_TRUE(measured_on_gpu(q.device));
  EXPECT_EQ(gpu_card_name(q.device), "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(q.codecs[0].encode_device, "cpu: test, 1 thread");
  EXPECT_EQ(q.codecs[0].contexts[0].chunks[1].levels[0].decode_host_s, 0.0025);
  EXPECT_LT(q.codecs[0].contexts[0].chunks[0].levels[0].decode_host_s, 0.0);  // left out: not measured
  EXPECT_EQ(cpu_text.find("decode_host_s"), std::string::npos);
  EXPECT_EQ(gpu_card_name("cpu: x"), "");

  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = text;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  expect_error(replace("\"encode_device\": \"cpu: test, 1 thread\"", "\"encode_device\": \"\""),
               "/codecs/0/encode_device: expected a device name");
  expect_error(replace("\"encode_device\": \"cpu: test, 1 thread\"", "\"encode_device\": 3"),
               "/codecs/0/encode_device: expected a string");
  expect_error(replace("\"cuda:NVIDIA H100 80GB HBM3\"", "\"cuda:\""), "/device: \"cuda:\" without the card's name");
  expect_error(replace("\"cuda:NVIDIA H100 80GB HBM3\"", "\"\""), "/device: expected a device name");
  expect_error(replace("\"decode_host_s\": 0.0025", "\"decode_host_s\": -1"),
               "/codecs/0/contexts/0/chunks/1/levels/0/decode_host_s: expected a number >= 0");
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

// The front in KL: dominated levels (more bytes, no lower KL) leave it, ties
// keep the lower level number, and the front is monotone in bytes and KL.
TEST(Profile, ParetoFrontInKl) {
  Profile p = small_profile();
  CodecProfile& c = p.codecs[0];
  // Six levels per chunk: bytes and KL per level (mean over chunks).
  const std::vector<uint64_t> bytes = {400, 300, 300, 200, 100, 150};
  const std::vector<double> kl = {0.001, 0.002, 0.002, 0.0015, 0.01, 0.01};
  c.level_names = {"L0", "L1", "L2", "L3", "L4", "L5"};
  for (auto& ctx : c.contexts) {
    ctx.quality.assign(6, LevelQuality{});
    for (size_t l = 0; l < 6; ++l) ctx.quality[l].kl_nats = kl[l];
    for (auto& ch : ctx.chunks) {
      ch.levels.assign(6, ChunkLevel{});
      for (size_t l = 0; l < 6; ++l) ch.levels[l].bytes = bytes[l];
    }
  }
  // L1 and L2 are dominated by L3 (fewer bytes, lower KL); L2 ties L1 too;
  // L5 has more bytes than L4 and the same KL.
  EXPECT_EQ(pareto_front(c), (std::vector<bool>{true, false, false, true, true, false}));
  const Profile q = parse_profile(profile_to_json(p), "mem");
  EXPECT_EQ(q.codecs[0].on_front, pareto_front(c));
  EXPECT_EQ(q.codecs[0].front_levels(), (std::vector<int>{0, 3, 4}));
  // Identical levels: the lower number stays.
  for (auto& ctx : c.contexts) {
    ctx.quality[2].kl_nats = 0.0015;
    for (auto& ch : ctx.chunks) ch.levels[2].bytes = 200;
  }
  EXPECT_EQ(pareto_front(c), (std::vector<bool>{true, false, true, false, true, false}));
  // No contexts: nothing to rank, every level stays.
  c.contexts.clear();
  EXPECT_EQ(pareto_front(c), std::vector<bool>(6, true));
}

}  // namespace
}  // namespace kvs::codec
