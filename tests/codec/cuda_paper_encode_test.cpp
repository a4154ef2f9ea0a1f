// The GPU encoder of cachegen scheme=paper (codec/cuda/encode.h
// Encoder::encode_cachegen_paper) against the CPU encoder, byte for byte,
// from fp16 and fp32 input in device memory, at every level. Needs a CUDA
// GPU: every test skips, saying so, where there is none (CI builds it and
// skips); cuda_paper_encode_core_test.cpp runs the same thread bodies on the CPU.
#include <cmath>
#include <string>
#include <vector>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "codec/cuda/decode.h"
#include "codec/cuda/encode.h"
#include "tests/codec/cuda_gpu_test.h"
#include "tests/codec/paper_encode_cases.h"

namespace kvs::codec {
namespace {

#define SKIP_WITHOUT_GPU() KVS_SKIP_WITHOUT_GPU("GPU encode")

// The chunk's values in device memory as floats and as fp16 bits.
struct OnDevice {
  cuda::DeviceBuffer f32, f16;
};
OnDevice upload(const KVChunk& c) {
  std::vector<uint16_t> half(c.values.size());
  for (size_t i = 0; i < half.size(); ++i) half[i] = float_to_half_bits(c.values[i]);
  OnDevice d{cuda::DeviceBuffer(4 * half.size()), cuda::DeviceBuffer(2 * half.size())};
  if (!half.empty()) {
    EXPECT_EQ(cudaMemcpy(d.f32.get(), c.values.data(), d.f32.size(), cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(d.f16.get(), half.data(), d.f16.size(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  return d;
}

TEST(CudaEncode, CachegenPaperMatchesTheCpuEncoderByteForByte) {
  SKIP_WITHOUT_GPU();
  for (const auto& spec : paper_encode_test::specs()) {
    const auto c = paper_encode_test::make(spec);
    cuda::Encoder encoder(nullptr, c.model, c.model_file);
    const OnDevice dev = upload(c.chunk);
    const KVChunk& k = c.chunk;
    for (int level = 0; level < kCacheGenLevels; ++level) {
      SCOPED_TRACE(::testing::Message() << c.name << " L" << level);
      const Bytes cpu = c.cpu->encode(k, level);
      EXPECT_EQ(encoder.encode_cachegen_paper(dev.f16.get(), cuda::OutputType::kF16, k.shape, k.dtype, k.token_begin,
                                              k.tokens, level),
                cpu);
      EXPECT_EQ(encoder.encode_cachegen_paper(dev.f32.get(), cuda::OutputType::kF32, k.shape, k.dtype, k.token_begin,
                                              k.tokens, level),
                cpu);
    }
  }
  // fp32 input with floats fp16 cannot hold, escaped exactly (as in
  // CudaCore.PaperEncoderEscapesKeepFloatsFp16CannotHold).
  auto c = paper_encode_test::with_model({2, 2, 8});
  c.chunk = cuda_test::synthetic_chunk({2, 2, 8}, 23, 0, 5);
  c.chunk.values[0] = 1e30f;
  c.chunk.values[9] = -3e38f;
  c.chunk.values[20] = std::nanf("0x1234");
  c.chunk.values[100] = 1e-30f;
  cuda::Encoder encoder(nullptr, c.model, c.model_file);
  const OnDevice dev = upload(c.chunk);
  EXPECT_EQ(encoder.encode_cachegen_paper(dev.f32.get(), cuda::OutputType::kF32, c.chunk.shape, c.chunk.dtype, 0,
                                          c.chunk.tokens, 2),
            c.cpu->encode(c.chunk, 2));
}

TEST(CudaEncode, CachegenPaperRefusesAsTheCpuEncoder) {
  SKIP_WITHOUT_GPU();
  const auto c = paper_encode_test::make(paper_encode_test::specs()[0]);
  const OnDevice dev = upload(c.chunk);
  const KVChunk& k = c.chunk;
  cuda::Encoder with_model(nullptr, c.model, c.model_file), without;
  EXPECT_EQ(cuda_test::error_of([&] {
              (void)with_model.encode_cachegen_paper(dev.f32.get(), cuda::OutputType::kF32, k.shape, k.dtype, 0,
                                                     k.tokens, kCacheGenLevels);
            }),
            cuda_test::error_of([&] { (void)c.cpu->encode(k, kCacheGenLevels); }));
  const auto no_model = make_codec("cachegen", CodecOptions{{{"scheme", "paper"}}, ""});
  EXPECT_EQ(cuda_test::error_of([&] {
              (void)without.encode_cachegen_paper(dev.f32.get(), cuda::OutputType::kF32, k.shape, k.dtype, 0, k.tokens,
                                                  2);
            }),
            cuda_test::error_of([&] { (void)no_model->encode(k, 2); }));
  const KVShape other{2, 2, 16};
  const KVChunk wrong = cuda_test::synthetic_chunk(other, k.tokens / 2, 0, 3);  // as many values
  EXPECT_EQ(cuda_test::error_of([&] {
              (void)with_model.encode_cachegen_paper(dev.f32.get(), cuda::OutputType::kF32, other, k.dtype, 0,
                                                     wrong.tokens, 2);
            }),
            cuda_test::error_of([&] { (void)c.cpu->encode(wrong, 2); }));
  EXPECT_THROW(
      with_model.encode_cachegen_paper(dev.f32.get(), cuda::OutputType::kBF16, k.shape, k.dtype, 0, k.tokens, 2),
      Error);  // bf16 input: not supported
}

}  // namespace
}  // namespace kvs::codec
