// The GPU kvs encoder (codec/cuda/encode.h, Encoder::encode_kvs) against
// KvsCodec::encode, byte for byte, from fp16 and fp32 input in device memory,
// and with its errors; the encoders' *_to_device forms. Needs a CUDA GPU: every test skips, saying so, where
// there is none (cuda_kvs_encode_core_test.cpp runs the same thread bodies on
// the CPU).
#include <cmath>
#include <string>
#include <vector>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "codec/cuda/decode.h"
#include "codec/cuda/encode.h"
#include "tests/codec/cuda_gpu_test.h"
#include "tests/codec/kvs_encode_cases.h"

namespace kvs::codec {
namespace {

using kvs_encode_test::error_of;
using kvs_encode_test::through_f16;

#define SKIP_WITHOUT_GPU() KVS_SKIP_WITHOUT_GPU("GPU kvs encode")

// The chunk's values in device memory, as fp16 bits or floats.
cuda::DeviceBuffer upload(const KVChunk& c, bool f16) {
  cuda::DeviceBuffer dev((f16 ? 2 : 4) * c.values.size());
  if (f16) {
    std::vector<uint16_t> half(c.values.size());
    for (size_t i = 0; i < half.size(); ++i) half[i] = f32_to_f16_bits(c.values[i]);
    EXPECT_EQ(cudaMemcpy(dev.get(), half.data(), dev.size(), cudaMemcpyHostToDevice), cudaSuccess);
  } else {
    EXPECT_EQ(cudaMemcpy(dev.get(), c.values.data(), dev.size(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  return dev;
}

Bytes gpu_encode(cuda::Encoder& e, const KVChunk& c, bool f16, int level, const Codec& codec) {
  const cuda::DeviceBuffer dev = upload(c, f16);
  return e.encode_kvs(dev.get(), f16 ? cuda::OutputType::kF16 : cuda::OutputType::kF32, c.shape, c.dtype,
                      c.token_begin, c.tokens, level, codec, c.context_tokens);
}

TEST(CudaEncode, KvsMatchesTheCpuEncoderByteForByte) {
  SKIP_WITHOUT_GPU();
  cuda::Encoder encoder;
  for (const auto& spec : kvs_encode_test::encode_specs()) {
    const std::shared_ptr<const Codec> codec = make_codec("kvs", CodecOptions{spec.params, ""});
    KVChunk f16 = cuda_test::synthetic_chunk(spec.shape, spec.tokens, spec.token_begin, spec.tokens + 11);
    f16.context_tokens = spec.context_tokens;
    const KVChunk f32 = kvs_encode_test::f32_variant(f16);
    // Three levels (every level runs on the CPU, CudaCore.KvsEncoder*; fewer
    // launches keep the sanitizers' runs of this test short).
    for (int level : {0, codec->levels() / 2, codec->levels() - 1}) {
      SCOPED_TRACE(::testing::Message() << spec.shape.layers << "x" << spec.shape.kv_heads << "x"
                                        << spec.shape.head_dim << " T=" << spec.tokens << " L" << level << " "
                                        << codec->params());
      EXPECT_EQ(gpu_encode(encoder, f16, true, level, *codec), codec->encode(f16, level));
      EXPECT_EQ(gpu_encode(encoder, f32, false, level, *codec), codec->encode(f32, level));
      EXPECT_EQ(gpu_encode(encoder, f32, true, level, *codec), codec->encode(through_f16(f32), level));
    }
  }
}

// The *_to_device forms: the stream assembled in device memory (header,
// table, sections, CRC: codec/cuda/stream_layout.h), the CPU encoder's bytes
// once copied back; streams of several 32 KiB CRC tiles; a chunk of no
// tokens refused as by the CPU encoders.
TEST(CudaEncode, ToDeviceLeavesTheCpuEncodersStreamInDeviceMemory) {
  SKIP_WITHOUT_GPU();
  cuda::Encoder encoder;
  const std::shared_ptr<const Codec> kvs = make_codec("kvs"), cachegen = make_codec("cachegen");
  for (const uint32_t tokens : {0u, 5u, 300u}) {
    SCOPED_TRACE(::testing::Message() << "T=" << tokens);
    const KVChunk c = cuda_test::synthetic_chunk({2, 4, 64}, tokens, 7, 5);
    const cuda::DeviceBuffer dev = upload(c, false);
    if (tokens == 0) {
      const std::string cpu = error_of([&] { return kvs->encode(c, 3); });
      EXPECT_NE(cpu.find("0 tokens"), std::string::npos) << cpu;
      EXPECT_EQ(error_of([&] {
                  return encoder.encode_kvs_to_device(dev.get(), cuda::OutputType::kF32, c.shape, c.dtype,
                                                      c.token_begin, c.tokens, 3, *kvs).to_host();
                }),
                cpu);
      EXPECT_EQ(error_of([&] {
                  return encoder.encode_cachegen_to_device(dev.get(), cuda::OutputType::kF32, c.shape, c.dtype,
                                                           c.token_begin, c.tokens, 2).to_host();
                }),
                error_of([&] { return cachegen->encode(c, 2); }));
      continue;
    }
    const cuda::DeviceStream k = encoder.encode_kvs_to_device(dev.get(), cuda::OutputType::kF32, c.shape, c.dtype,
                                                              c.token_begin, c.tokens, 3, *kvs);
    const Bytes want_kvs = kvs->encode(c, 3);
    EXPECT_EQ(k.bytes, want_kvs.size());
    EXPECT_EQ(k.to_host(), want_kvs);
    const cuda::DeviceStream g = encoder.encode_cachegen_to_device(dev.get(), cuda::OutputType::kF32, c.shape,
                                                                   c.dtype, c.token_begin, c.tokens, 2);
    EXPECT_EQ(g.to_host(), cachegen->encode(c, 2));
  }
}

TEST(CudaEncode, KvsRefusesWhatTheCpuEncoderRefuses) {
  SKIP_WITHOUT_GPU();
  cuda::Encoder encoder;
  const std::shared_ptr<const Codec> codec = make_codec("kvs");
  KVChunk c = cuda_test::synthetic_chunk({2, 2, 8}, 20, 3, 1);
  EXPECT_EQ(error_of([&] { return gpu_encode(encoder, c, false, 10, *codec); }),
            error_of([&] { return codec->encode(c, 10); }));
  c.at(1, Kind::kKey, 1, 7, 3) = std::nanf("");
  c.at(0, Kind::kValue, 1, 4, 2) = 1e9f;  // the first in chunk order
  const std::string cpu = error_of([&] { return codec->encode(c, 0); });
  EXPECT_NE(cpu.find("too large for step"), std::string::npos) << cpu;
  EXPECT_EQ(error_of([&] { return gpu_encode(encoder, c, false, 0, *codec); }), cpu);
  EXPECT_THROW(gpu_encode(encoder, c, false, 0, *make_codec("cachegen")), Error);
}

}  // namespace
}  // namespace kvs::codec
