// The GPU encoder of cachegen scheme=paper on the CPU: its thread bodies
// (codec/cuda/paper_encode_threads.h) run one after another over host memory
// (codec/cuda/paper_encode_plan.h encode_cachegen_paper_on_host) write the
// CPU encoder's stream byte for byte, from fp16 and from fp32 input, and its
// planner refuses what the CPU encoder refuses with the same message. What is
// left for a GPU: launch, memory and streams (cuda_paper_encode_test.cpp).
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "codec/cachegen_paper.h"
#include "codec/cachegen_paper_encode_core.h"
#include "codec/cuda/paper_encode_plan.h"
#include "tests/codec/paper_encode_cases.h"

namespace kvs::codec {
namespace {

using cuda::detail::encode_cachegen_paper_on_host;

TEST(CudaCore, PaperEncoderThreadBodiesWriteTheCpuEncodersBytes) {
  uint64_t escapes = 0;
  for (const auto& spec : paper_encode_test::specs()) {
    const auto c = paper_encode_test::make(spec);
    for (int level = 0; level < kCacheGenLevels; ++level) {
      SCOPED_TRACE(::testing::Message() << c.name << " L" << level);
      const Bytes cpu = c.cpu->encode(c.chunk, level);
      EXPECT_EQ(encode_cachegen_paper_on_host(c.chunk, level, c.model.get(), c.model_file, false), cpu);
      EXPECT_EQ(encode_cachegen_paper_on_host(c.chunk, level, c.model.get(), c.model_file, true), cpu);
      if (spec.outliers) escapes += paper_encode_test::escape_count(cpu);
    }
  }
  EXPECT_GT(escapes, 100u) << "the outlier chunks did not exercise escapes";
}

TEST(CudaCore, PaperEncoderEscapesKeepFloatsFp16CannotHold) {
  // fp32 input: values beyond fp16 and fp32 NaN payloads are escaped exactly.
  auto c = paper_encode_test::with_model({2, 2, 8});
  c.chunk = cuda_test::synthetic_chunk({2, 2, 8}, 23, 0, 5);
  c.chunk.values[0] = 1e30f;     // an anchor
  c.chunk.values[9] = -3e38f;    // a delta
  c.chunk.values[20] = std::nanf("0x1234");
  c.chunk.values[100] = 1e-30f;  // inside the range: quantised
  const Bytes cpu = c.cpu->encode(c.chunk, 2);
  EXPECT_GE(paper_encode_test::escape_count(cpu), 3u);
  EXPECT_EQ(encode_cachegen_paper_on_host(c.chunk, 2, c.model.get(), c.model_file, false), cpu);
}

TEST(CudaCore, PaperEncoderPlannerRefusesAsTheCpuEncoder) {
  const auto c = paper_encode_test::make(paper_encode_test::specs()[0]);
  for (int level : {-1, kCacheGenLevels}) {
    const std::string cpu = cuda_test::error_of([&] { (void)c.cpu->encode(c.chunk, level); });
    EXPECT_NE(cpu.find("out of range"), std::string::npos) << cpu;
    EXPECT_EQ(cuda_test::error_of([&] { (void)encode_cachegen_paper_on_host(c.chunk, level, c.model.get(), c.model_file, false); }),
              cpu);
  }
  // No codec model.
  const auto no_model = make_codec("cachegen", CodecOptions{{{"scheme", "paper"}}, ""});
  const std::string cpu_none = cuda_test::error_of([&] { (void)no_model->encode(c.chunk, 2); });
  EXPECT_NE(cpu_none.find("needs a codec model file"), std::string::npos) << cpu_none;
  EXPECT_EQ(cuda_test::error_of([&] { (void)encode_cachegen_paper_on_host(c.chunk, 2, nullptr, "", false); }), cpu_none);
  // A chunk of another shape than the model's.
  const KVChunk other = cuda_test::synthetic_chunk({2, 2, 16}, 12, 0, 3);
  const std::string cpu_shape = cuda_test::error_of([&] { (void)c.cpu->encode(other, 2); });
  EXPECT_NE(cpu_shape.find("is for KV shape 2x2x8"), std::string::npos) << cpu_shape;
  EXPECT_EQ(cuda_test::error_of([&] { (void)encode_cachegen_paper_on_host(other, 2, c.model.get(), c.model_file, false); }),
            cpu_shape);
  // A chunk of no tokens: no stream (its decoder would refuse it).
  const KVChunk empty = cuda_test::synthetic_chunk(c.chunk.shape, 0, 9, 3);
  const std::string cpu_empty = cuda_test::error_of([&] { (void)c.cpu->encode(empty, 2); });
  EXPECT_NE(cpu_empty.find("0 tokens"), std::string::npos) << cpu_empty;
  EXPECT_EQ(cuda_test::error_of([&] { (void)encode_cachegen_paper_on_host(empty, 2, c.model.get(), c.model_file, false); }),
            cpu_empty);
}

TEST(CudaCore, PaperQuantizersRoundAsLrint) {
  // round_small (the quantizers' rounding, host and device alike) against
  // lrint over the quantizers' whole range, ties included.
  for (int i = -2 * 131 * 64; i <= 2 * 131 * 64; ++i) {
    const float v = float(i) / 128.0f;  // steps of 1/128: every tie at .5
    ASSERT_EQ(cachegen_paper_core::round_small(v), int(std::lrint(v))) << v;
  }
  // And the escape boundary: |x / step| < M + 0.5.
  EXPECT_EQ(cachegen_paper_core::anchor_symbol(127.49f, 1.0f), 254u);
  EXPECT_EQ(cachegen_paper_core::anchor_symbol(-127.49f, 1.0f), 0u);
  EXPECT_EQ(cachegen_paper_core::anchor_symbol(127.5f, 1.0f), cachegen_paper_core::kAnchorEscape);
  EXPECT_EQ(cachegen_paper_core::anchor_symbol(std::nanf(""), 1.0f), cachegen_paper_core::kAnchorEscape);
  EXPECT_EQ(cachegen_paper_core::delta_symbol(2.5f, 0.0f, 1.0f, 3), 5u);   // 2.5 -> 2 (ties to even), + M
  EXPECT_EQ(cachegen_paper_core::delta_symbol(3.5f, 0.0f, 1.0f, 3), 7u);   // the escape, 2M + 1
  EXPECT_EQ(cachegen_paper_core::delta_symbol(-3.49f, 0.0f, 1.0f, 3), 0u);
}

}  // namespace
}  // namespace kvs::codec
