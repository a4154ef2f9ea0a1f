// The GPU kvs encoder's code on the CPU: its thread bodies
// (codec/cuda/kvs_encode_threads.h) run one after another over host memory
// with its host steps between them (codec/cuda/kvs_encode_plan.h,
// encode_kvs_on_host), against KvsCodec::encode, byte for byte, and with the
// CPU encoder's errors. What is left for a GPU: launch, memory, streams and
// the device's libm (cuda_kvs_encode_test.cpp).
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "codec/cuda/kvs_encode_plan.h"
#include "codec/fp16.h"
#include "codec/kvs_internal.h"
#include "tests/codec/kvs_encode_cases.h"

namespace kvs::codec {
namespace {

using kvs_encode_test::encode_specs;
using kvs_encode_test::error_of;
using kvs_encode_test::through_f16;

TEST(CudaCore, KvsEncoderThreadBodiesWriteTheCpuEncodersBytes) {
  int compared = 0;
  for (const auto& spec : encode_specs()) {
    const std::shared_ptr<const Codec> codec = make_codec("kvs", CodecOptions{spec.params, ""});
    // An fp16 chunk (the cases' kind), and an fp32 one whose values fp16 does not hold.
    KVChunk f16 = cuda_test::synthetic_chunk(spec.shape, spec.tokens, spec.token_begin, spec.tokens + 11);
    f16.context_tokens = spec.context_tokens;
    const KVChunk f32 = kvs_encode_test::f32_variant(f16);
    for (int level : kvs_encode_test::levels_to_compare(f16, codec->levels())) {
      SCOPED_TRACE(::testing::Message() << spec.shape.layers << "x" << spec.shape.kv_heads << "x"
                                        << spec.shape.head_dim << " T=" << spec.tokens << " L" << level << " "
                                        << codec->params());
      const Bytes cpu16 = codec->encode(f16, level), cpu32 = codec->encode(f32, level);
      EXPECT_EQ(cuda::detail::encode_kvs_on_host(f16, level, *codec, true), cpu16);
      EXPECT_EQ(cuda::detail::encode_kvs_on_host(f16, level, *codec, false), cpu16);
      EXPECT_EQ(cuda::detail::encode_kvs_on_host(f32, level, *codec, false), cpu32);
      // fp16 input of the fp32 chunk: the CPU's stream of its fp16 rounding.
      EXPECT_EQ(cuda::detail::encode_kvs_on_host(f32, level, *codec, true), codec->encode(through_f16(f32), level));
      compared += 4;
    }
  }
  EXPECT_GT(compared, 200);

  // Rows repeating per head (keys as given): heads 0 and 1 every 3 tokens (one
  // partition, shared), head 2 every 5, head 3 never, in layer 1; the values
  // of layer 0 repeat after rounding only (the device's hash sees rounded values).
  const std::shared_ptr<const Codec> codec = make_codec("kvs", CodecOptions{{{"rope_theta", "0"}}, ""});
  KVChunk c = cuda_test::synthetic_chunk({2, 4, 16}, 90, 0, 5);
  for (Kind k : {Kind::kKey, Kind::kValue})
    for (uint32_t t = 0; t < c.tokens; ++t)
      for (uint32_t d = 0; d < 16; ++d) {
        for (uint32_t h = 0; h < 3; ++h) c.at(1, k, h, t, d) = c.at(1, k, h, t % (h < 2 ? 3 : 5), d);
        if (k == Kind::kValue)
          for (uint32_t h = 0; h < 4; ++h) c.at(0, k, h, t, d) = c.at(0, k, h, t % 4, d) * (1.0f + 1e-6f * float(t));
      }
  for (int level : {0, 5, 9}) {
    const Bytes cpu = codec->encode(c, level);
    EXPECT_EQ(cuda::detail::encode_kvs_on_host(c, level, *codec, false), cpu) << "L" << level;
    const auto layout = cuda::detail::as_kvs(*codec).parse(cpu);
    size_t referencing = 0;
    for (const auto& head : layout.rows) referencing += head.literal != nullptr;
    EXPECT_GE(referencing, 10u) << "L" << level;  // of the 16 heads, those sending references
  }
}

TEST(CudaCore, KvsEncoderRefusesWhatTheCpuEncoderRefuses) {
  const std::shared_ptr<const Codec> codec = make_codec("kvs");
  const KVChunk good = cuda_test::synthetic_chunk({2, 2, 8}, 20, 3, 1);
  const auto both = [&](const KVChunk& c, int level) {
    const std::string cpu = error_of([&] { return codec->encode(c, level); });
    EXPECT_FALSE(cpu.empty());
    EXPECT_EQ(error_of([&] { return cuda::detail::encode_kvs_on_host(c, level, *codec, false); }), cpu);
    return cpu;
  };
  // Levels out of range.
  EXPECT_NE(both(good, -1).find("level -1 out of range"), std::string::npos);
  EXPECT_NE(both(good, 10).find("level 10 out of range"), std::string::npos);
  // Not finite, and too large for the step, in keys (rotated) and values; the
  // first in chunk order is the one named.
  struct Bad {
    Kind kind;
    uint32_t layer, head, token, dim;
    float value;
    const char* says;
  };
  for (const Bad& b : {Bad{Kind::kKey, 1, 1, 7, 3, std::nanf(""), "not finite"},
                       Bad{Kind::kValue, 0, 0, 19, 7, INFINITY, "not finite"},
                       Bad{Kind::kKey, 0, 1, 0, 0, 3e8f, "too large for step"},
                       Bad{Kind::kValue, 1, 0, 5, 2, -1e9f, "too large for step"}}) {
    KVChunk c = good;
    c.at(b.layer, b.kind, b.head, b.token, b.dim) = b.value;
    c.at(1, Kind::kValue, 1, 19, 7) = 1e30f;  // a later bad value
    for (int level : {0, 9}) EXPECT_NE(both(c, level).find(b.says), std::string::npos) << b.value;
    // fp16 input: the same value as fp16 gives (inf for the large ones).
    EXPECT_EQ(error_of([&] { return cuda::detail::encode_kvs_on_host(c, 0, *codec, true); }),
              error_of([&] { return codec->encode(through_f16(c), 0); }));
  }
  // Weights that do not fit the shape.
  const std::shared_ptr<const Codec> four = make_codec("kvs", CodecOptions{{{"weights", "1:1:1:1:1:1:1:1"}}, ""});
  const std::string cpu = error_of([&] { return four->encode(good, 0); });
  EXPECT_NE(cpu.find("8 weights given for a model of 2 layers"), std::string::npos) << cpu;
  EXPECT_EQ(error_of([&] { return cuda::detail::encode_kvs_on_host(good, 0, *four, false); }), cpu);
  // Another codec.
  EXPECT_THROW(cuda::detail::encode_kvs_on_host(good, 0, *make_codec("cachegen"), false), Error);
  // A chunk of no tokens: no stream (its decoder would refuse it).
  const KVChunk empty({2, 2, 8}, DType::kF16, 5, 0);
  const std::string cpu_empty = error_of([&] { return codec->encode(empty, 3); });
  EXPECT_NE(cpu_empty.find("0 tokens"), std::string::npos) << cpu_empty;
  EXPECT_EQ(error_of([&] { return cuda::detail::encode_kvs_on_host(empty, 3, *codec, true); }), cpu_empty);
}

TEST(CudaCore, KvsEncoderChecksRowsTakenForRepeats) {
  // The row plan takes a row for a repeat of the first row with its hash; the
  // device checks that the two are equal after rounding, and a mismatch (a
  // hash collision) hands the chunk to the CPU encoder. One head of D = 2,
  // T = 3: rows (1, 2), (1.2, 2.1) -> (1, 2), (5, 7), channel-major.
  const float y[8] = {1.0f, 1.2f, 5.0f, 0.0f, 2.0f, 2.1f, 7.0f, 0.0f};
  cuda::detail::KvsEncodeLaunch p{};
  p.head_dim = 2;
  p.tokens = 3;
  p.stride = 4;
  p.y = const_cast<float*>(y);
  unsigned long long fault = cuda::detail::kNoFault;
  p.fault = &fault;
  const uint32_t right[3] = {0, 0, 2}, wrong[3] = {0, 0, 0};
  p.first = right;
  for (size_t r = 0; r < 3; ++r) cuda::detail::kvs_encode_verify(p, r);
  EXPECT_EQ(fault, cuda::detail::kNoFault);
  EXPECT_FALSE(cuda::detail::KvsEncodePlan::needs_cpu(fault));
  p.first = wrong;
  for (size_t r = 0; r < 3; ++r) cuda::detail::kvs_encode_verify(p, r);
  EXPECT_EQ(fault, (2ull << 8) | cuda::detail::kFaultKvsHashCollision);
  EXPECT_TRUE(cuda::detail::KvsEncodePlan::needs_cpu(fault));
  EXPECT_FALSE(cuda::detail::KvsEncodePlan::needs_cpu((5ull << 8) | cuda::detail::kFaultKvsBadValue));
}

}  // namespace
}  // namespace kvs::codec
