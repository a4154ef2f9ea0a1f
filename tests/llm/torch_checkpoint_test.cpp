// pytorch_model.bin checkpoints (llm/torch_checkpoint.h) against the
// safetensors goldens they were converted from by an independent
// Python-stdlib torch.save writer (tests/llm/data/make_torch_pickle.py), and
// the errors for broken, legacy and malicious files.
#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "base/files.h"
#include "codec/bitstream.h"
#include "llm/checkpoint.h"
#include "llm/safetensors.h"
#include "llm/torch_checkpoint.h"
#include "test_util.h"

namespace kvs::llm {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::TempDir;

const std::string kData = KVSTREAM_SOURCE_DIR "/tests/llm/data/";
const std::string kPt = kData + "torch_pickle/";

at::ScalarType scalar(STDType t) {
  switch (t) {
    case STDType::kF32: return at::kFloat;
    case STDType::kF16: return at::kHalf;
    case STDType::kBF16: return at::kBFloat16;
    default: ADD_FAILURE() << "unexpected dtype"; return at::kFloat;
  }
}

// All tensors of safetensors files (copied out of the mappings).
std::map<std::string, at::Tensor> read_safetensors_dir(const std::vector<std::string>& files) {
  std::map<std::string, at::Tensor> out;
  for (const auto& f : files) {
    auto st = SafetensorsFile::open(f);
    for (const auto& [name, info] : st->tensors())
      out[name] = at::from_blob(const_cast<uint8_t*>(info.data), info.shape, at::TensorOptions().dtype(scalar(info.dtype)))
                      .clone();
  }
  return out;
}

// Same names, dtypes, shapes and bits.
void expect_same(const std::map<std::string, at::Tensor>& got, const std::map<std::string, at::Tensor>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, w] : want) {
    ASSERT_TRUE(got.count(name)) << name;
    const at::Tensor& g = got.at(name);
    EXPECT_EQ(g.scalar_type(), w.scalar_type()) << name;
    ASSERT_EQ(g.sizes(), w.sizes()) << name;
    EXPECT_TRUE(at::equal(g, w)) << name;
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no kvs::Error)";
}

TEST(TorchCheckpointTest, SingleFloat32EqualsSafetensors) {
  const auto got = read_torch_state_dict(kPt + "single_f32/pytorch_model.bin");
  expect_same(got, read_safetensors_dir({kData + "golden/model.safetensors"}));
  // The writer stored k_proj and v_proj of layer 0 in one storage and
  // lm_head as a transposed (non-contiguous) view: both kept as views.
  const at::Tensor& k = got.at("model.layers.0.self_attn.k_proj.weight");
  const at::Tensor& v = got.at("model.layers.0.self_attn.v_proj.weight");
  EXPECT_EQ(k.storage().data(), v.storage().data());
  EXPECT_EQ(v.storage_offset(), 256);
  const at::Tensor& head = got.at("lm_head.weight");
  EXPECT_FALSE(head.is_contiguous());
  EXPECT_EQ(head.strides().vec(), (std::vector<int64_t>{1, 32}));
}

TEST(TorchCheckpointTest, Zip64LayoutEqualsSafetensors) {
  // As torch writes shards over 4 GiB: sizes and offsets in zip64 fields.
  expect_same(read_torch_state_dict(kPt + "single_f32_zip64/pytorch_model.bin"),
              read_safetensors_dir({kData + "golden/model.safetensors"}));
}

TEST(TorchCheckpointTest, SingleFloat16EqualsRoundedSafetensors) {
  const auto got = read_torch_state_dict(kPt + "single_f16/pytorch_model.bin");
  auto want = read_safetensors_dir({kData + "golden/model.safetensors"});
  for (auto& [name, t] : want) t = t.to(at::kHalf);  // the writer rounded to nearest even, as at::to does
  expect_same(got, want);
  EXPECT_FALSE(got.at("model.embed_tokens.weight").is_contiguous());
  EXPECT_EQ(got.at("model.layers.1.mlp.gate_proj.weight").storage().data(),
            got.at("model.layers.1.mlp.up_proj.weight").storage().data());
}

TEST(TorchCheckpointTest, ShardedBFloat16EqualsSafetensorsShards) {
  auto w = load_torch_weights(kPt + "sharded_bf16");
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->source, kPt + "sharded_bf16/pytorch_model.bin.index.json");
  EXPECT_EQ(w->file_of.at("lm_head.weight"), kPt + "sharded_bf16/pytorch_model-00002-of-00002.bin");
  EXPECT_EQ(w->file_of.at("model.embed_tokens.weight"), kPt + "sharded_bf16/pytorch_model-00001-of-00002.bin");
  const std::string src = kData + "golden_mistral_bf16/";
  expect_same(w->tensors, read_safetensors_dir({src + "model-00001-of-00002.safetensors",
                                                src + "model-00002-of-00002.safetensors"}));
  EXPECT_FALSE(w->tensors.at("model.layers.0.self_attn.o_proj.weight").is_contiguous());
}

TEST(TorchCheckpointTest, NoTorchFilesIsNullopt) {
  EXPECT_FALSE(load_torch_weights(kData + "golden").has_value());
}

// load_model on the torch folders gives the safetensors model: same
// parameters and the same logits, bit for bit.
void expect_same_model(const std::string& torch_dir, const std::string& st_dir, LoadOptions o) {
  const Model a = load_model(torch_dir, o);
  const Model b = load_model(st_dir, o);
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].first, pb[i].first);
    EXPECT_EQ(pa[i].second.scalar_type(), pb[i].second.scalar_type());
    EXPECT_TRUE(at::equal(pa[i].second, pb[i].second)) << pa[i].first;
  }
  const auto tokens = testing::some_tokens(7, a.config().vocab_size, 3);
  const at::Tensor la = a.prefill(to_tensor(tokens)).logits, lb = b.prefill(to_tensor(tokens)).logits;
  EXPECT_TRUE(at::equal(la, lb));
  EXPECT_GT(la.abs().max().item<double>(), 0.0);
}

TEST(TorchCheckpointTest, LoadModelSingleGivesSafetensorsLogits) {
  expect_same_model(kPt + "single_f32", kData + "golden", {});
  LoadOptions half;
  half.dtype = at::kHalf;
  expect_same_model(kPt + "single_f16", kData + "golden", half);
}

TEST(TorchCheckpointTest, LoadModelShardedGivesSafetensorsLogits) {
  expect_same_model(kPt + "sharded_bf16", kData + "golden_mistral_bf16", {});
  LoadOptions f32;  // dtype conversion on load, as for safetensors
  f32.dtype = at::kFloat;
  expect_same_model(kPt + "sharded_bf16", kData + "golden_mistral_bf16", f32);
}

TEST(TorchCheckpointTest, SafetensorsPreferredWhenBothExist) {
  TempDir tmp;
  fs::copy(kData + "golden", tmp.path, fs::copy_options::recursive);
  // A pytorch_model.bin with a wrong shape next to it: not read.
  fs::copy_file(kPt + "bad/wrong_shape/pytorch_model.bin", tmp.path / "pytorch_model.bin");
  EXPECT_NO_THROW(load_model(tmp.str()));
  fs::remove(tmp.path / "model.safetensors");
  EXPECT_THAT(error_of([&] { load_model(tmp.str()); }), HasSubstr("has shape [15], the config needs [16]"));
}

TEST(TorchCheckpointTest, ForbiddenGlobalsAreRefusedByName) {
  const std::string f = kPt + "bad/evil_global.bin";
  const std::string e = error_of([&] { read_torch_state_dict(f); });
  EXPECT_THAT(e, HasSubstr(f));
  EXPECT_THAT(e, HasSubstr("'os.system'"));
  EXPECT_THAT(e, HasSubstr("refused"));
  EXPECT_THAT(error_of([&] { read_torch_state_dict(kPt + "bad/evil_eval_value.bin"); }),
              HasSubstr("'builtins.eval'"));
}

TEST(TorchCheckpointTest, LegacyBigEndianAndNonTensorFilesAreRefused) {
  EXPECT_THAT(error_of([&] { read_torch_state_dict(kPt + "bad/legacy.bin"); }),
              HasSubstr("bad/legacy.bin: legacy torch.save format"));
  EXPECT_THAT(error_of([&] { read_torch_state_dict(kPt + "bad/big_endian.bin"); }),
              HasSubstr("byteorder 'big'"));
  EXPECT_THAT(error_of([&] { read_torch_state_dict(kPt + "bad/not_a_tensor.bin"); }),
              HasSubstr("'step' is of type int, not a tensor"));
  EXPECT_THAT(error_of([&] { read_torch_state_dict(kData + "golden/config.json"); }),
              HasSubstr("not a torch.save zip file"));
}

// A zip with one stored record (CRC left 0: the reader does not check it).
std::string zip_one(const std::string& name, const std::string& data) {
  auto u16 = [](std::string& s, uint32_t v) { s += char(v & 0xff), s += char(v >> 8 & 0xff); };
  auto u32 = [&](std::string& s, uint32_t v) { u16(s, v & 0xffff), u16(s, v >> 16); };
  std::string out, cd;
  u32(out, 0x04034b50);
  for (uint32_t v : {20u, 0u, 0u, 0u, 0u}) u16(out, v);
  const uint32_t crc = codec::crc32({reinterpret_cast<const uint8_t*>(data.data()), data.size()});
  u32(out, crc), u32(out, uint32_t(data.size())), u32(out, uint32_t(data.size()));
  u16(out, uint32_t(name.size())), u16(out, 0);
  out += name + data;
  u32(cd, 0x02014b50);
  for (uint32_t v : {20u, 20u, 0u, 0u, 0u, 0u}) u16(cd, v);
  u32(cd, crc), u32(cd, uint32_t(data.size())), u32(cd, uint32_t(data.size()));
  for (uint32_t v : {uint32_t(name.size()), 0u, 0u, 0u, 0u}) u16(cd, v);
  u32(cd, 0), u32(cd, 0);
  cd += name;
  const uint32_t cd_at = uint32_t(out.size());
  out += cd;
  u32(out, 0x06054b50);
  for (uint32_t v : {0u, 0u, 1u, 1u}) u16(out, v);
  u32(out, uint32_t(cd.size())), u32(out, cd_at), u16(out, 0);
  return out;
}

TEST(TorchCheckpointTest, HostileNestingAndCyclesAreRefused) {
  // A million nested 1-tuples: freeing them must not recurse that deep.
  TempDir tmp;
  const std::string f = tmp.str() + "/deep.bin";
  write_file_atomic(f, zip_one("archive/data.pkl", "\x80\x02N" + std::string(1'000'000, '\x85') + "."));
  EXPECT_THAT(error_of([&] { read_torch_state_dict(f); }), HasSubstr("holds a tuple, not a state dict"));
  EXPECT_THAT(error_of([&] { read_torch_state_dict(kPt + "bad/dict_cycle.bin"); }),
              HasSubstr("'a' is of type dict, not a tensor"));
}

TEST(TorchCheckpointTest, ViewsOutsideTheirStorageAreRefused) {
  EXPECT_THAT(error_of([&] { read_torch_state_dict(kPt + "bad/out_of_bounds.bin"); }),
              HasSubstr("tensor 'model.norm.weight' reaches element 16 of its storage '0', which has 16"));
  EXPECT_THAT(error_of([&] { read_torch_state_dict(kPt + "bad/out_of_bounds_offset.bin"); }),
              HasSubstr("reaches element 19"));
}

TEST(TorchCheckpointTest, ShardErrors) {
  const std::string missing = kPt + "bad/missing_shard";
  EXPECT_THAT(error_of([&] { load_model(missing); }),
              HasSubstr("pytorch_model.bin.index.json: shard '" + missing + "/pytorch_model-00002-of-00002.bin'"));
  EXPECT_THAT(error_of([&] { load_model(kPt + "bad/missing_in_shard"); }),
              HasSubstr("pytorch_model-00001-of-00002.bin: missing tensor 'model.layers.0.self_attn.q_proj.bias'"));
  EXPECT_THAT(error_of([&] { load_model(kPt + "bad/duplicate"); }),
              HasSubstr("tensor 'model.embed_tokens.weight' is in two shards"));
  EXPECT_THAT(error_of([&] { load_model(kPt + "bad/wrong_shape"); }),
              HasSubstr("bad/wrong_shape/pytorch_model.bin: tensor 'model.norm.weight' has shape [15], the config "
                        "needs [16]"));
}

TEST(TorchCheckpointTest, IntegerWeightIsAnError) {
  const auto sd = read_torch_state_dict(kPt + "bad/int_weight/pytorch_model.bin");
  EXPECT_TRUE(at::equal(sd.at("model.norm.weight"), at::arange(16, at::kLong)));
  EXPECT_THAT(error_of([&] { load_model(kPt + "bad/int_weight"); }),
              HasSubstr("tensor 'model.norm.weight': dtype Long is not a floating-point weight type"));
}

TEST(TorchCheckpointTest, UnusedTensorIsAnError) {
  // The same check as for safetensors: a 1-layer config on 2-layer weights.
  TempDir tmp;
  fs::copy(kPt + "single_f32", tmp.path, fs::copy_options::recursive);
  std::string cfg = read_file(tmp.str() + "/config.json");
  const auto at = cfg.find("\"num_hidden_layers\": 2");
  ASSERT_NE(at, std::string::npos);
  cfg.replace(at, 22, "\"num_hidden_layers\": 1");
  write_file_atomic(tmp.str() + "/config.json", cfg);
  EXPECT_THAT(error_of([&] { load_model(tmp.str()); }), HasSubstr("does not use, e.g. 'model.layers.1."));
}

// Every prefix of a valid file, and every byte of it changed, gives a clean
// kvs::Error or (for bytes that carry no structure) a result; never a crash or
// another exception type.
TEST(TorchCheckpointTest, TruncatedAndCorruptedFilesGiveErrors) {
  TempDir tmp;
  const std::string bytes = read_file(kPt + "single_f32/pytorch_model.bin");
  const std::string f = tmp.str() + "/x.bin";
  auto write = [&](const std::string& s) {
    std::ofstream(f, std::ios::binary).write(s.data(), static_cast<std::streamsize>(s.size()));
  };
  int errors = 0;
  for (size_t n = 0; n < bytes.size(); n += 97) {
    write(bytes.substr(0, n));
    const std::string e = error_of([&] { read_torch_state_dict(f); });
    EXPECT_THAT(e, HasSubstr(f)) << n;
    ++errors;
  }
  EXPECT_GT(errors, 300);
  // data.pkl is the first record, its data at byte 64 (the writer aligns
  // records to 64 bytes) up to the byteorder record's local header.
  const size_t pkl_end = bytes.find("PK\x03\x04", 64);
  ASSERT_GT(pkl_end, 1000u);
  // A flipped byte in a record read fails its CRC-32: one in data.pkl, one
  // in the first storage (archive/data/0: 2,048 bytes from the first 64-byte
  // boundary after its name in its local header).
  const size_t central = bytes.find("PK\x01\x02");
  ASSERT_NE(central, std::string::npos);
  const size_t storage0 = (bytes.find("archive/data/0") + 64) / 64 * 64;
  for (size_t i : {size_t(100), storage0 + 1000}) {
    std::string b = bytes;
    b[i] = static_cast<char>(b[i] ^ 0x01);
    write(b);
    EXPECT_THAT(error_of([&] { read_torch_state_dict(f); }), HasSubstr("fails its CRC-32 check")) << i;
  }
  // Flipped bytes of data.pkl with its CRC-32 made to match: the unpickler
  // itself refuses what it cannot read, or reads it, never crashing.
  const size_t pkl_entry = central;
  ASSERT_EQ(bytes.compare(pkl_entry + 46, 16, "archive/data.pkl"), 0) << "data.pkl is the first central entry";
  const size_t size = pkl_end - 64;
  ASSERT_EQ(uint32_t(uint8_t(bytes[pkl_entry + 24])) | uint32_t(uint8_t(bytes[pkl_entry + 25])) << 8 |
                uint32_t(uint8_t(bytes[pkl_entry + 26])) << 16 | uint32_t(uint8_t(bytes[pkl_entry + 27])) << 24,
            size)
      << "data.pkl's data ends at the next local header";
  int refused = 0, read = 0;
  for (size_t i = 64; i < pkl_end; ++i) {
    std::string b = bytes;
    b[i] = static_cast<char>(b[i] ^ 0x5a);
    const uint32_t crc = codec::crc32({reinterpret_cast<const uint8_t*>(b.data()) + 64, size});
    for (int k = 0; k < 4; ++k) b[pkl_entry + 16 + k] = char(crc >> (8 * k) & 0xff);
    write(b);
    try {
      read_torch_state_dict(f);
      ++read;
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 1000);
  EXPECT_GT(read, 0);  // e.g. a changed letter in a tensor name
}

}  // namespace
}  // namespace kvs::llm
