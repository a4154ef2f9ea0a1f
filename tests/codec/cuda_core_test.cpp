// The GPU decoders' code on the CPU: the KVS_HD conversions, and the
// kernels' thread bodies (codec/cuda/threads.h) run one after another over
// host memory (codec/cuda/plan.h run_on_host), against the CPU decoders, bit
// for bit, on real bitstreams. What is left for a GPU: launch, memory and
// streams (cuda_decode_test.cpp).
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "codec/bitstream.h"
#include "codec/cachegen.h"
#include "codec/cachegen_paper.h"
#include "codec/cuda/plan.h"
#include "codec/fp16.h"
#include "codec/kvs_internal.h"
#include "tests/codec/corrupt.h"
#include "tests/codec/cuda_cases.h"

namespace kvs::codec {
namespace {

using cuda::detail::kNoFault;

TEST(CudaCore, HalfConversionsMatchTheCpus) {
  // Every 4099th bit pattern (all exponents, mantissas, signs), plus the edges.
  std::vector<uint32_t> patterns = {0x0u,        0x80000000u, 0x33000000u, 0x33000001u, 0x337fffffu, 0x33800000u,
                                    0x387fc000u, 0x387fe000u, 0x387ff000u, 0x38800000u, 0x477fe000u, 0x477fefffu,
                                    0x477ff000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u, 0xffffffffu};
  for (uint64_t u = 0; u < (1ull << 32); u += 4099) patterns.push_back(uint32_t(u));
  for (uint32_t bits : patterns) {
    float x;
    std::memcpy(&x, &bits, 4);
    ASSERT_EQ(f32_to_f16_bits(x), float_to_half_bits(x)) << std::hex << bits;
    ASSERT_EQ(f32_to_bf16_bits(x), float_to_bf16_bits(x)) << std::hex << bits;
  }
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = f16_bits_to_f32(uint16_t(h)), b = half_bits_to_float(uint16_t(h));
    ASSERT_EQ(std::memcmp(&a, &b, 4), 0) << std::hex << h;
  }
}

TEST(CudaCore, BitReaderReadsAsTheCpus) {
  Bytes data(37);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 37 + 11);
  kvs_detail::BitReader cpu(data);
  kvs_core::BitReader hd(data.data(), data.size());
  uint32_t total = 0;
  for (uint32_t k = 0; total + (k % 33) <= 8 * data.size(); ++k) {
    const uint32_t bits = k % 33;
    ASSERT_EQ(hd.get(bits), cpu.get(bits)) << k;
    total += bits;
  }
  EXPECT_TRUE(hd.ok);
  hd.get(32);
  EXPECT_FALSE(hd.ok) << "reading past the end is reported";
}

// Runs the GPU path on the host for one stream; out in fp32, fp16 or bf16 bits.
unsigned long long run_gpu_path(const cuda_test::StreamCase& c, uint8_t out_type, std::vector<uint8_t>* out) {
  const uint16_t id = uint16_t(c.stream[6] | c.stream[7] << 8);
  out->assign(c.decoded.values.size() * (out_type == cuda::detail::kOutF32 ? 4 : 2), 0xA5);  // poison: every value must be written
  if (c.model) {
    const auto plan = cuda::detail::plan_cachegen_paper(c.stream, c.model.get(), "model");
    return cuda::detail::run_on_host(plan, c.stream, *c.model, out->data(), out_type);
  }
  if (id == uint16_t(CodecId::kKvs)) {
    const auto parser = cuda::detail::make_kvs_parser();
    const auto plan = cuda::detail::plan_kvs(c.stream, *parser);
    EXPECT_EQ(plan.values(), c.decoded.values.size());
    return cuda::detail::run_on_host(plan, c.stream, *parser, out->data(), out_type);
  }
  const auto plan = cuda::detail::plan_cachegen(c.stream);
  return cuda::detail::run_on_host(plan, c.stream, out->data(), out_type);
}

TEST(CudaCore, ThreadBodiesDecodeAsTheCpuDecoders) {
  for (const auto& spec : cuda_test::case_specs()) {
    const cuda_test::StreamCase c = cuda_test::make_case(spec);
    SCOPED_TRACE(c.name);
    std::vector<uint8_t> out;
    ASSERT_EQ(run_gpu_path(c, cuda::detail::kOutF32, &out), kNoFault);
    EXPECT_EQ(std::memcmp(out.data(), c.decoded.values.data(), out.size()), 0) << "fp32 output differs";
    ASSERT_EQ(run_gpu_path(c, cuda::detail::kOutF16, &out), kNoFault);
    std::vector<uint16_t> expected(c.decoded.values.size());
    for (size_t i = 0; i < expected.size(); ++i) expected[i] = float_to_half_bits(c.decoded.values[i]);
    EXPECT_EQ(std::memcmp(out.data(), expected.data(), out.size()), 0) << "fp16 output differs";
    ASSERT_EQ(run_gpu_path(c, cuda::detail::kOutBF16, &out), kNoFault);
    for (size_t i = 0; i < expected.size(); ++i) expected[i] = float_to_bf16_bits(c.decoded.values[i]);
    EXPECT_EQ(std::memcmp(out.data(), expected.data(), out.size()), 0) << "bf16 output differs";
  }
}

TEST(CudaCore, ThreadBodiesReportACorruptSubstream) {
  // A payload byte changed (CRC fixed): the CPU decoder throws, the GPU path reports a fault.
  for (const auto& spec : cuda_test::case_specs()) {
    cuda_test::StreamCase c = cuda_test::make_case(spec);
    SCOPED_TRACE(c.name);
    const auto& codec = c.codec;
    int faults = 0;
    for (const auto& [at, bad, cpu_threw] : cuda_test::corrupted_copies(c, 13)) {
      cuda_test::StreamCase b{c.name, bad, c.decoded, c.codec, c.model};
      std::vector<uint8_t> out;
      unsigned long long fault = kNoFault;
      bool host_threw = false;
      try {
        fault = run_gpu_path(b, cuda::detail::kOutF32, &out);
      } catch (const CorruptStream&) {
        host_threw = true;  // the host's checks (as the CPU decoder's) found it
      }
      EXPECT_EQ(cpu_threw, host_threw || fault != kNoFault) << "byte " << at;
      if (!cpu_threw && !host_threw) {
        EXPECT_EQ(std::memcmp(out.data(), codec->decode(bad).values.data(), out.size()), 0);
      }
      faults += fault != kNoFault;
    }
    EXPECT_GT(faults, 0) << "no mutation reached a kernel's checks";
  }
}

// The host's checks of the header and the section table (parse_stream's,
// and for scheme=code the planner's own pass, section_offsets with
// check_cachegen_offsets) against the CPU decoder's: the same streams
// rejected, with the same message.
TEST(CudaCore, PlannersRejectBadHeadersAsTheCpuDecoders) {
  int rejected = 0;
  for (const auto& spec : cuda_test::case_specs()) {
    const cuda_test::StreamCase c = cuda_test::make_case(spec);
    SCOPED_TRACE(c.name);
    const uint32_t count = uint32_t(c.stream[36] | c.stream[37] << 8 | c.stream[38] << 16 | uint32_t(c.stream[39]) << 24);
    std::vector<Bytes> bad;
    for (size_t at = 8; at < 40; ++at) {  // the header's fields (not its codec model hash)
      bad.push_back(c.stream);
      bad.back()[at] ^= at % 2 ? 0x01 : 0x5a;
    }
    for (uint32_t i : {0u, 1u, 2u, count / 2, count - 1}) {  // section sizes: one byte more, one less
      for (int delta : {1, -1}) {
        bad.push_back(c.stream);
        uint8_t* size = bad.back().data() + kHeaderBytes + 4 * size_t(i);
        size[0] = uint8_t(size[0] + delta);
      }
    }
    bad.push_back(c.stream);  // one byte short
    bad.back().erase(bad.back().end() - 5);
    for (Bytes& b : bad) fix_crc(b);
    bad.push_back(c.stream);  // CRC not fixed
    bad.back()[kHeaderBytes + 2] ^= 0x10;
    for (const Bytes& b : bad) {
      std::string cpu, host;
      try {
        (void)c.codec->decode(b);
      } catch (const CorruptStream& e) {
        cpu = e.what();
      }
      const uint16_t id = uint16_t(b[6] | b[7] << 8);
      try {
        if (c.model)
          (void)cuda::detail::plan_cachegen_paper(b, c.model.get(), "model");
        else if (id == uint16_t(CodecId::kKvs))
          (void)cuda::detail::plan_kvs(b, *cuda::detail::make_kvs_parser());
        else
          (void)cuda::detail::plan_cachegen(b);
      } catch (const CorruptStream& e) {
        host = e.what();
      }
      // The CPU decoder's checks before it decodes (their message, or none).
      std::string before;
      try {
        const CodecId expected = id == uint16_t(CodecId::kKvs) ? CodecId::kKvs : CodecId::kCacheGen;
        const ParsedStream ps = parse_stream(b, expected);
        if (c.model)
          check_cachegen_paper_stream(ps, c.model.get(), "model");
        else if (expected == CodecId::kCacheGen)
          check_cachegen_stream(ps);
        else
          (void)cuda::detail::make_kvs_parser()->parse(b);
      } catch (const CorruptStream& e) {
        before = e.what();
      }
      // The host checks those (scheme=paper: and each substream's escape
      // count, as its decoder does next); the CPU decoder may find more
      // while decoding (a fault on the GPU).
      if (!before.empty() || !c.model) {
        EXPECT_EQ(host, before);
      }
      if (!host.empty()) {
        EXPECT_EQ(host, cpu);
        ++rejected;
      }
    }
  }
  EXPECT_GT(rejected, 200) << "few mutations reached the checks";
}

TEST(CudaCore, EncoderThreadBodiesWriteTheCpuEncodersBytes) {
  // cachegen scheme=code, from fp16 and from fp32 input: the same stream as
  // CacheGenCodec::encode, byte for byte.
  for (const auto& spec : cuda_test::case_specs()) {
    if (spec.codec != "cachegen" || spec.paper) continue;
    const KVChunk chunk = cuda_test::synthetic_chunk(spec.shape, spec.tokens, spec.token_begin, spec.level + 5);
    const auto st = spec.params.find("stream_tokens");
    const uint32_t stream_tokens = st == spec.params.end() ? 256 : uint32_t(std::stoul(st->second));
    for (int level : {0, spec.level, 6}) {
      SCOPED_TRACE(::testing::Message() << spec.shape.layers << "x" << spec.shape.kv_heads << "x" << spec.shape.head_dim
                                        << " T=" << spec.tokens << " L" << level);
      const Bytes cpu = make_codec("cachegen", CodecOptions{spec.params, ""})->encode(chunk, level);
      EXPECT_EQ(cuda::detail::encode_cachegen_on_host(chunk, level, stream_tokens, true), cpu);
      EXPECT_EQ(cuda::detail::encode_cachegen_on_host(chunk, level, stream_tokens, false), cpu);
    }
  }
  // Zeros (scale 0), a NaN and values at the fp16 limit.
  KVChunk odd = cuda_test::synthetic_chunk({2, 2, 8}, 30, 0, 3);
  for (size_t i = 0; i < 32; ++i) odd.values[i] = 0;
  odd.values[100] = std::nanf("");
  odd.values[200] = 65504.0f;
  odd.values[201] = -65504.0f;
  EXPECT_EQ(cuda::detail::encode_cachegen_on_host(odd, 2, 256, false), make_codec("cachegen")->encode(odd, 2));
  odd.values[300] = 1e30f;  // beyond fp16: both refuse it
  EXPECT_THROW(make_codec("cachegen")->encode(odd, 2), Error);
  EXPECT_THROW(cuda::detail::encode_cachegen_on_host(odd, 2, 256, false), Error);
}

}  // namespace
}  // namespace kvs::codec
