// The GPU codecs at the edges of what a chunk may hold
// (tests/codec/cuda_limit_cases.h): one-value planes, the largest
// stream_tokens and head_dim, thousands of one-token sections. Decoding bit
// for bit as the CPU decoder (fp32 and fp16 output), encoding byte for byte
// as the CPU encoder (fp16 input). The thread bodies pass the same cases on
// the CPU (cuda_limits_core_test.cpp), so a failure here is the launches'.
// Needs a CUDA GPU: skips, saying so, where there is none.
#include <cstring>
#include <string>
#include <vector>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "codec/cuda/decode.h"
#include "codec/cuda/encode.h"
#include "codec/fp16.h"
#include "tests/codec/cuda_gpu_test.h"
#include "tests/codec/cuda_limit_cases.h"

namespace kvs::codec {
namespace {

#define SKIP_WITHOUT_GPU() KVS_SKIP_WITHOUT_GPU("GPU limits")

using cuda_test::download;
using cuda_test::poisoned;

TEST(CudaLimits, EdgeShapesDecodeAndEncodeAsTheCpu) {
  SKIP_WITHOUT_GPU();
  for (const auto& spec : cuda_test::edge_specs()) {
    const cuda_test::StreamCase c = cuda_test::make_case(spec);
    SCOPED_TRACE(c.name);
    const size_t n = c.decoded.values.size();
    // Decode.
    {
      cuda::Decoder decoder(nullptr, c.model, "model");
      cuda::DeviceBuffer f32 = poisoned(4 * n), f16 = poisoned(2 * n);
      EXPECT_EQ(decoder.decode(c.stream, f32.get(), cuda::OutputType::kF32).elements(), n);
      decoder.decode(c.stream, f16.get(), cuda::OutputType::kF16);
      ASSERT_NO_THROW(decoder.synchronize());
      EXPECT_EQ(std::memcmp(download(f32, 4 * n).data(), c.decoded.values.data(), 4 * n), 0) << "fp32 output differs";
      std::vector<uint16_t> expected(n);
      for (size_t i = 0; i < n; ++i) expected[i] = float_to_half_bits(c.decoded.values[i]);
      EXPECT_EQ(std::memcmp(download(f16, 2 * n).data(), expected.data(), 2 * n), 0) << "fp16 output differs";
    }
    // Encode the chunk make_case encoded (fp16 values: fp16 input is exact).
    const KVChunk chunk =
        cuda_test::synthetic_chunk(spec.shape, spec.tokens, spec.token_begin, spec.tokens + spec.shape.layers);
    std::vector<uint16_t> half(n);
    for (size_t i = 0; i < n; ++i) half[i] = float_to_half_bits(chunk.values[i]);
    cuda::DeviceBuffer kv(2 * n);
    ASSERT_EQ(cudaMemcpy(kv.get(), half.data(), kv.size(), cudaMemcpyHostToDevice), cudaSuccess);
    const auto in = cuda::OutputType::kF16;
    if (c.model) {
      cuda::Encoder encoder(nullptr, c.model, "model");
      EXPECT_EQ(encoder.encode_cachegen_paper(kv.get(), in, chunk.shape, chunk.dtype, chunk.token_begin, chunk.tokens,
                                              spec.level),
                c.stream);
    } else if (spec.codec == "kvs") {
      cuda::Encoder encoder;
      EXPECT_EQ(encoder.encode_kvs(kv.get(), in, chunk.shape, chunk.dtype, chunk.token_begin, chunk.tokens, spec.level,
                                   *c.codec),
                c.stream);
    } else {
      const auto st = spec.params.find("stream_tokens");
      cuda::Encoder encoder;
      EXPECT_EQ(encoder.encode_cachegen(kv.get(), in, chunk.shape, chunk.dtype, chunk.token_begin, chunk.tokens,
                                        spec.level, st == spec.params.end() ? 256 : uint32_t(std::stoul(st->second))),
                c.stream);
    }
  }
}

}  // namespace
}  // namespace kvs::codec
