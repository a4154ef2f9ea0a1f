// The torch-free safetensors reader/writer: round trips and every kind of
// corruption the reader must reject with a message naming file and tensor.
#include "llm/safetensors.h"

#include <cstring>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "base/error.h"
#include "base/files.h"

namespace kvs::llm {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kvs_st_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // A file with the given JSON header and `data_bytes` zero bytes of data.
  std::string raw(const std::string& name, const std::string& header, size_t data_bytes) {
    std::string s;
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) s.push_back(char((n >> (8 * i)) & 0xff));
    s += header;
    s.append(data_bytes, '\0');
    write_file_atomic(path(name), s);
    return path(name);
  }

  // Expects open() to throw an error whose message contains every fragment.
  void expect_error(const std::string& file, std::initializer_list<std::string> fragments) {
    try {
      SafetensorsFile::open(file);
      FAIL() << "no error for " << file;
    } catch (const Error& e) {
      const std::string msg = e.what();
      for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << msg << " lacks " << f;
    }
  }

  fs::path dir_;
};

TEST_F(SafetensorsTest, RoundTripKeepsBytesShapesAndMetadata) {
  const float a[6] = {1, 2, 3, 4, 5, 6};
  const uint16_t b[2] = {0x3c00, 0xc000};  // fp16 1.0, -2.0
  std::vector<TensorView> views{{"a", STDType::kF32, {2, 3}, a, sizeof a}, {"b", STDType::kF16, {2}, b, sizeof b}};
  write_safetensors(path("x.safetensors"), views, {{"format", "pt"}});
  auto f = SafetensorsFile::open(path("x.safetensors"));
  ASSERT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  const auto& ta = f->at("a");
  EXPECT_EQ(ta.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ta.bytes, 24u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ta.data) % 8, 0u);  // header padded to 8
  EXPECT_EQ(std::memcmp(ta.data, a, 24), 0);
  const auto& tb = f->at("b");
  EXPECT_EQ(tb.dtype, STDType::kF16);
  EXPECT_EQ(std::memcmp(tb.data, b, 4), 0);
  EXPECT_THROW(f->at("c"), Error);
}

TEST_F(SafetensorsTest, HeaderLengthPastEnd) {
  std::string s(8, '\0');
  s[0] = char(100);
  s += "{}";
  write_file_atomic(path("h.safetensors"), s);
  expect_error(path("h.safetensors"), {"h.safetensors", "header length 100"});
}

TEST_F(SafetensorsTest, TruncatedFile) {
  write_file_atomic(path("t.safetensors"), "abc");
  expect_error(path("t.safetensors"), {"t.safetensors", "truncated"});
}

TEST_F(SafetensorsTest, BadJson) {
  expect_error(raw("j.safetensors", "{\"a\": [", 0), {"j.safetensors", "JSON"});
}

TEST_F(SafetensorsTest, BadDtype) {
  expect_error(raw("d.safetensors", R"({"w":{"dtype":"F7","shape":[1],"data_offsets":[0,4]}})", 4),
               {"d.safetensors", "'w'", "F7"});
}

TEST_F(SafetensorsTest, ShapeSizeMismatch) {
  expect_error(raw("s.safetensors", R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", 12),
               {"s.safetensors", "'w'", "16 bytes"});
}

TEST_F(SafetensorsTest, RangePastEnd) {
  expect_error(raw("r.safetensors", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4),
               {"r.safetensors", "'w'", "past the end"});
}

TEST_F(SafetensorsTest, OverlappingRanges) {
  expect_error(raw("o.safetensors",
                   R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                   R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                   12),
               {"o.safetensors", "overlap", "'a'", "'b'"});
}

TEST_F(SafetensorsTest, OverlapAcrossAnEmptyTensor) {
  expect_error(raw("e.safetensors",
                   R"({"a":{"dtype":"F32","shape":[25],"data_offsets":[0,100]},)"
                   R"("z":{"dtype":"F32","shape":[0],"data_offsets":[50,50]},)"
                   R"("c":{"dtype":"F32","shape":[4],"data_offsets":[60,76]}})",
                   100),
               {"e.safetensors", "overlap", "'a'", "'c'"});
}

// Every single-byte corruption of a small KV file (header and data) either
// reads or throws kvs::Error; under ASan this also proves no out-of-bounds read.
TEST_F(SafetensorsTest, ByteCorruptionsReadOrThrow) {
  codec::KVChunk c({2, 1, 2}, codec::DType::kF16, 0, 3);
  for (size_t i = 0; i < c.values.size(); ++i) c.values[i] = float(i);
  write_kv_safetensors(path("ok.safetensors"), c);
  const std::string good = read_file(path("ok.safetensors"));
  int errors = 0;
  for (size_t pos = 0; pos < good.size(); ++pos) {
    for (uint8_t x : {uint8_t(0x01), uint8_t(0x80), uint8_t(0xff)}) {
      std::string bad = good;
      bad[pos] = char(uint8_t(bad[pos]) ^ x);
      write_file_atomic(path("bad.safetensors"), bad);
      try {
        read_kv_safetensors(path("bad.safetensors"));
      } catch (const Error&) {
        ++errors;
      }
    }
  }
  EXPECT_GT(errors, 0);
}

TEST_F(SafetensorsTest, KVRoundTripInEachDtype) {
  for (auto dtype : {codec::DType::kF32, codec::DType::kF16, codec::DType::kBF16}) {
    codec::KVChunk c({3, 2, 4}, dtype, 7, 5);
    for (size_t i = 0; i < c.values.size(); ++i) c.values[i] = codec::round_to_dtype(0.01f * float(i) - 1.0f, dtype);
    write_kv_safetensors(path("kv.safetensors"), c);
    auto f = SafetensorsFile::open(path("kv.safetensors"));
    EXPECT_EQ(f->at("layers.2.value").shape, (std::vector<int64_t>{2, 5, 4}));
    EXPECT_EQ(f->metadata().at("tokens"), "5");
    codec::KVChunk back = read_kv_safetensors(path("kv.safetensors"));
    EXPECT_EQ(back.shape, c.shape);
    EXPECT_EQ(back.dtype, dtype);
    EXPECT_EQ(back.tokens, 5u);
    EXPECT_EQ(back.token_begin, 7u);
    EXPECT_EQ(back.values, c.values);
    EXPECT_EQ(back.at(1, codec::Kind::kValue, 1, 3, 2), c.at(1, codec::Kind::kValue, 1, 3, 2));
  }
}

TEST_F(SafetensorsTest, KVReaderRejectsInconsistentLayers) {
  const float k[8] = {}, v[4] = {};
  std::vector<TensorView> views{{"layers.0.key", STDType::kF32, {1, 2, 4}, k, sizeof k},
                                {"layers.0.value", STDType::kF32, {1, 1, 4}, v, sizeof v}};
  write_safetensors(path("bad.safetensors"), views);
  try {
    read_kv_safetensors(path("bad.safetensors"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.value"), std::string::npos) << e.what();
  }
  write_safetensors(path("none.safetensors"), std::span<const TensorView>(views).subspan(1));
  EXPECT_THROW(read_kv_safetensors(path("none.safetensors")), Error);
}

}  // namespace
}  // namespace kvs::llm
