// The GPU decoders (codec/cuda/decode.h) against the CPU decoders, bit for
// bit, on real bitstreams of both codecs; the GPU encoder (codec/cuda/encode.h)
// against the CPU encoder, byte for byte. Needs a CUDA GPU: every test skips,
// saying so, where there is none (CI builds it and skips).
#include <cstring>
#include <string>
#include <vector>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "codec/cuda/decode.h"
#include "codec/cuda/encode.h"
#include "tests/codec/corrupt.h"
#include "tests/codec/cuda_cases.h"
#include "tests/codec/cuda_gpu_test.h"

namespace kvs::codec {
namespace {

#define SKIP_WITHOUT_GPU() KVS_SKIP_WITHOUT_GPU("GPU decode")

using cuda_test::download;
using cuda_test::poisoned;

TEST(CudaDecode, ReportsWhatIsBuilt) {
  EXPECT_NE(cuda::built_kernels().find("sm_"), std::string::npos);
  std::printf("device: %s\n", cuda::device_description().c_str());
  SKIP_WITHOUT_GPU();
}

TEST(CudaDecode, MatchesTheCpuDecoderBitForBit) {
  SKIP_WITHOUT_GPU();
  for (const auto& spec : cuda_test::case_specs()) {
    const cuda_test::StreamCase c = cuda_test::make_case(spec);
    SCOPED_TRACE(c.name);
    cuda::Decoder decoder(nullptr, c.model, "model");
    const size_t n = c.decoded.values.size();
    cuda::DeviceBuffer f32 = poisoned(4 * n), f16 = poisoned(2 * n), bf16 = poisoned(2 * n);
    const StreamHeader h = decoder.decode(c.stream, f32.get(), cuda::OutputType::kF32);
    EXPECT_EQ(h.elements(), n);
    decoder.decode(c.stream, f16.get(), cuda::OutputType::kF16);
    decoder.decode(c.stream, bf16.get(), cuda::OutputType::kBF16);
    ASSERT_NO_THROW(decoder.synchronize());
    const auto got32 = download(f32, 4 * n), got16 = download(f16, 2 * n), gotb16 = download(bf16, 2 * n);
    EXPECT_EQ(std::memcmp(got32.data(), c.decoded.values.data(), 4 * n), 0) << "fp32 output differs";
    std::vector<uint16_t> expected(n);
    for (size_t i = 0; i < n; ++i) expected[i] = float_to_half_bits(c.decoded.values[i]);
    EXPECT_EQ(std::memcmp(got16.data(), expected.data(), 2 * n), 0) << "fp16 output differs";
    for (size_t i = 0; i < n; ++i) expected[i] = float_to_bf16_bits(c.decoded.values[i]);
    EXPECT_EQ(std::memcmp(gotb16.data(), expected.data(), 2 * n), 0) << "bf16 output differs";
  }
}

TEST(CudaDecode, ManyChunksInFlightOnOwnStream) {
  SKIP_WITHOUT_GPU();
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  {
    cuda::Decoder decoder(stream);
    decoder.set_timing(true);
    std::vector<cuda_test::StreamCase> cases;
    for (const auto& spec : cuda_test::case_specs())
      if (!spec.paper) cases.push_back(cuda_test::make_case(spec));  // one decoder: no codec model
    // Round 1 decodes streams staged on the device by the caller (no copy of the stream).
    std::vector<cuda::DeviceBuffer> staged;
    for (const auto& c : cases) {
      staged.emplace_back((c.stream.size() + 15) / 16 * 16);
      ASSERT_EQ(cudaMemcpy(staged.back().get(), c.stream.data(), c.stream.size(), cudaMemcpyHostToDevice), cudaSuccess);
    }
    std::vector<cuda::DeviceBuffer> outs;
    for (int round = 0; round < 3; ++round)  // every chunk enqueued before any is waited for
      for (size_t i = 0; i < cases.size(); ++i) {
        const auto& c = cases[i];
        outs.push_back(poisoned(2 * c.decoded.values.size()));
        if (round == 1)
          decoder.decode(c.stream, static_cast<const uint8_t*>(staged[i].get()), outs.back().get(),
                         cuda::OutputType::kF16);
        else
          decoder.decode(c.stream, outs.back().get(), cuda::OutputType::kF16);
      }
    ASSERT_NO_THROW(decoder.synchronize());
    EXPECT_GT(decoder.device_seconds(), 0.0) << "set_timing(true): the chunks' device time is added up";
    EXPECT_GT(decoder.host_seconds(), 0.0) << "the host's planning is timed";
    for (size_t k = 0; k < outs.size(); ++k) {
      const auto& c = cases[k % cases.size()];
      const auto got = download(outs[k], 2 * c.decoded.values.size());
      std::vector<uint16_t> expected(c.decoded.values.size());
      for (size_t i = 0; i < expected.size(); ++i) expected[i] = float_to_half_bits(c.decoded.values[i]);
      EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size()), 0) << c.name << " round " << k / cases.size();
    }
  }
  cudaStreamDestroy(stream);
}

TEST(CudaDecode, CorruptSubstreamsThrowOnSynchronize) {
  SKIP_WITHOUT_GPU();
  for (const auto& spec : cuda_test::case_specs()) {
    const cuda_test::StreamCase c = cuda_test::make_case(spec);
    SCOPED_TRACE(c.name);
    cuda::Decoder decoder(nullptr, c.model, "model");
    cuda::DeviceBuffer out(4 * c.decoded.values.size());
    for (const auto& [at, bad, cpu_threw] : cuda_test::corrupted_copies(c, 11)) {
      bool gpu_threw = false;
      try {
        decoder.decode(bad, out.get(), cuda::OutputType::kF32);
        decoder.synchronize();
      } catch (const CorruptStream&) {
        gpu_threw = true;
      }
      EXPECT_EQ(cpu_threw, gpu_threw) << "byte " << at;
    }
  }
}

// Two chunks with a bad CRC (found on the device) around a good one, all
// enqueued before synchronize(): each is reported, by successive
// synchronize() calls; the second is not lost with the first's exception.
TEST(CudaDecode, EveryFaultyChunkIsReportedBySuccessiveSynchronize) {
  SKIP_WITHOUT_GPU();
  for (const auto& spec : cuda_test::case_specs()) {
    const cuda_test::StreamCase c = cuda_test::make_case(spec);
    SCOPED_TRACE(c.name);
    cuda::Decoder decoder(nullptr, c.model, "model");
    cuda::DeviceBuffer out(4 * c.decoded.values.size());
    Bytes bad = c.stream;
    bad.back() ^= 1;  // the stored CRC
    decoder.decode(bad, out.get(), cuda::OutputType::kF32);
    decoder.decode(c.stream, out.get(), cuda::OutputType::kF32);
    decoder.decode(bad, out.get(), cuda::OutputType::kF32);
    EXPECT_THROW(decoder.synchronize(), CorruptStream) << "the first bad chunk";
    EXPECT_THROW(decoder.synchronize(), CorruptStream) << "the second bad chunk";
    EXPECT_NO_THROW(decoder.synchronize());
  }
}

// What the verification kernels find (codec/cuda/verify_threads.h: the CRC,
// cachegen's section table and stream sizes) or the host's planner finds:
// the CPU decoder's message, from decode() or synchronize().
TEST(CudaDecode, VerificationThrowsTheCpuDecodersMessage) {
  SKIP_WITHOUT_GPU();
  int from_device = 0;
  for (const auto& spec : cuda_test::case_specs()) {
    const cuda_test::StreamCase c = cuda_test::make_case(spec);
    SCOPED_TRACE(c.name);
    cuda::Decoder decoder(nullptr, c.model, "model");
    cuda::DeviceBuffer out(4 * c.decoded.values.size());
    const uint32_t count = uint32_t(c.stream[36] | c.stream[37] << 8 | c.stream[38] << 16 | uint32_t(c.stream[39]) << 24);
    std::vector<Bytes> bad;
    for (uint32_t i : {0u, 2u, count / 2, count - 1})  // a section's size one more (the table's total too)
      for (int delta : {1, -1}) {
        bad.push_back(c.stream);
        uint8_t* size = bad.back().data() + kHeaderBytes + 4 * size_t(i);
        size[0] = uint8_t(size[0] + delta);
        fix_crc(bad.back());
      }
    {
      bad.push_back(c.stream);  // section 2 two bytes long, section 3 longer (the same total)
      uint8_t* size = bad.back().data() + kHeaderBytes + 8;
      const uint32_t was = uint32_t(size[0] | size[1] << 8 | size[2] << 16 | uint32_t(size[3]) << 24);
      const uint32_t next = uint32_t(size[4] | size[5] << 8 | size[6] << 16 | uint32_t(size[7]) << 24) + was - 2;
      for (int k = 0; k < 4; ++k) size[k] = uint8_t(2 >> (8 * k)), size[4 + k] = uint8_t(next >> (8 * k));
      fix_crc(bad.back());
    }
    for (size_t at : {c.stream.size() / 3, c.stream.size() - 5, c.stream.size() - 2}) {  // CRC not fixed
      bad.push_back(c.stream);
      bad.back()[at] ^= 0x04;
    }
    for (const Bytes& b : bad) {
      std::string cpu, gpu;
      try {
        (void)c.codec->decode(b);
      } catch (const CorruptStream& e) {
        cpu = e.what();
      }
      bool enqueued = false;
      try {
        decoder.decode(b, out.get(), cuda::OutputType::kF32);
        enqueued = true;
        decoder.synchronize();
      } catch (const CorruptStream& e) {
        gpu = e.what();
      }
      from_device += enqueued && !gpu.empty();
      EXPECT_FALSE(cpu.empty());
      EXPECT_EQ(gpu, cpu);
    }
  }
  EXPECT_GT(from_device, 20) << "few corruptions reached the verification kernels";
}

TEST(CudaEncode, CachegenMatchesTheCpuEncoderByteForByte) {
  SKIP_WITHOUT_GPU();
  cuda::Encoder encoder;
  for (const auto& spec : cuda_test::case_specs()) {
    if (spec.codec != "cachegen" || spec.paper) continue;
    const KVChunk chunk = cuda_test::synthetic_chunk(spec.shape, spec.tokens, spec.token_begin, spec.level + 5);
    const auto st = spec.params.find("stream_tokens");
    const uint32_t stream_tokens = st == spec.params.end() ? 256 : uint32_t(std::stoul(st->second));
    std::vector<uint16_t> half(chunk.values.size());
    for (size_t i = 0; i < half.size(); ++i) half[i] = float_to_half_bits(chunk.values[i]);
    cuda::DeviceBuffer f32(4 * half.size()), f16(2 * half.size());
    ASSERT_EQ(cudaMemcpy(f32.get(), chunk.values.data(), f32.size(), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(f16.get(), half.data(), f16.size(), cudaMemcpyHostToDevice), cudaSuccess);
    for (int level : {0, spec.level, 6}) {
      SCOPED_TRACE(::testing::Message() << spec.shape.layers << "x" << spec.shape.kv_heads << "x" << spec.shape.head_dim
                                        << " T=" << spec.tokens << " L" << level);
      const Bytes cpu = make_codec("cachegen", CodecOptions{spec.params, ""})->encode(chunk, level);
      EXPECT_EQ(encoder.encode_cachegen(f16.get(), cuda::OutputType::kF16, chunk.shape, chunk.dtype,
                                        chunk.token_begin, chunk.tokens, level, stream_tokens),
                cpu);
      EXPECT_EQ(encoder.encode_cachegen(f32.get(), cuda::OutputType::kF32, chunk.shape, chunk.dtype,
                                        chunk.token_begin, chunk.tokens, level, stream_tokens),
                cpu);
    }
  }
  // A value fp16 cannot carry: refused, as by the CPU encoder.
  KVChunk big = cuda_test::synthetic_chunk({2, 2, 8}, 30, 0, 3);
  big.values[300] = 1e30f;
  cuda::DeviceBuffer dev(4 * big.values.size());
  ASSERT_EQ(cudaMemcpy(dev.get(), big.values.data(), dev.size(), cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_THROW(encoder.encode_cachegen(dev.get(), cuda::OutputType::kF32, big.shape, big.dtype, 0, big.tokens, 2),
               Error);
}

TEST(CudaDecode, RefusesWhatItCannotDecode) {
  SKIP_WITHOUT_GPU();
  cuda::Decoder decoder;
  const KVChunk chunk = cuda_test::synthetic_chunk({2, 2, 8}, 16, 0, 1);
  const Bytes raw = make_codec("raw")->encode(chunk, 0);
  cuda::DeviceBuffer out(4 * chunk.values.size());
  EXPECT_THROW(decoder.decode(raw, out.get(), cuda::OutputType::kF32), Error);
  Bytes truncated = make_codec("kvs")->encode(chunk, 0);
  truncated.resize(truncated.size() / 2);
  EXPECT_THROW(decoder.decode(truncated, out.get(), cuda::OutputType::kF32), CorruptStream);
  // A scheme=paper stream without its codec model: the CPU decoder's error.
  for (const auto& spec : cuda_test::case_specs())
    if (spec.paper) {
      const auto c = cuda_test::make_case(spec);
      EXPECT_THROW(decoder.decode(c.stream, out.get(), cuda::OutputType::kF32), CorruptStream);
      break;
    }
  EXPECT_NO_THROW(decoder.synchronize());
}

}  // namespace
}  // namespace kvs::codec
