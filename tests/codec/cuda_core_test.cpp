// The GPU decoders' code on the CPU: the KVS_HD conversions, and the
// kernels' thread bodies (codec/cuda/threads.h) run one after another over
// host memory (codec/cuda/plan.h run_on_host), against the CPU decoders, bit
// for bit, on real bitstreams. What is left for a GPU: launch, memory and
// streams (cuda_decode_test.cpp).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/core.h>
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

using cuda::detail::Verify;

// Runs the GPU path on the host for one stream; out in fp32, fp16 or bf16 bits.
unsigned long long run_gpu_path(const cuda_test::StreamCase& c, uint8_t out_type, std::vector<uint8_t>* out,
                                Verify verify = Verify::kHost) {
  const uint16_t id = uint16_t(c.stream[6] | c.stream[7] << 8);
  out->assign(c.decoded.values.size() * (out_type == cuda::detail::kOutF32 ? 4 : 2), 0xA5);  // poison: every value must be written
  if (c.model) {
    const auto plan = cuda::detail::plan_cachegen_paper(c.stream, c.model.get(), "model", verify);
    return cuda::detail::run_on_host(plan, c.stream, *c.model, out->data(), out_type);
  }
  if (id == uint16_t(CodecId::kKvs)) {
    const auto parser = cuda::detail::make_kvs_parser();
    const auto plan = cuda::detail::plan_kvs(c.stream, *parser, verify);
    EXPECT_EQ(plan.values(), c.decoded.values.size());
    return cuda::detail::run_on_host(plan, c.stream, *parser, out->data(), out_type);
  }
  const auto plan = cuda::detail::plan_cachegen(c.stream, verify);
  return cuda::detail::run_on_host(plan, c.stream, out->data(), out_type);
}

TEST(CudaCore, ThreadBodiesDecodeAsTheCpuDecoders) {
  for (const auto& spec : cuda_test::case_specs()) {
    const cuda_test::StreamCase c = cuda_test::make_case(spec);
    for (Verify verify : {Verify::kHost, Verify::kDevice}) {
      SCOPED_TRACE(c.name + (verify == Verify::kDevice ? " (verified by the device bodies)" : ""));
      std::vector<uint8_t> out;
      ASSERT_EQ(run_gpu_path(c, cuda::detail::kOutF32, &out, verify), kNoFault);
      EXPECT_EQ(std::memcmp(out.data(), c.decoded.values.data(), out.size()), 0) << "fp32 output differs";
      ASSERT_EQ(run_gpu_path(c, cuda::detail::kOutF16, &out, verify), kNoFault);
      std::vector<uint16_t> expected(c.decoded.values.size());
      for (size_t i = 0; i < expected.size(); ++i) expected[i] = float_to_half_bits(c.decoded.values[i]);
      EXPECT_EQ(std::memcmp(out.data(), expected.data(), out.size()), 0) << "fp16 output differs";
      ASSERT_EQ(run_gpu_path(c, cuda::detail::kOutBF16, &out, verify), kNoFault);
      for (size_t i = 0; i < expected.size(); ++i) expected[i] = float_to_bf16_bits(c.decoded.values[i]);
      EXPECT_EQ(std::memcmp(out.data(), expected.data(), out.size()), 0) << "bf16 output differs";
    }
  }
}

// One RoPE table kept across chunks, as cuda::Decoder keeps its device copy:
// extended for a chunk past its end (to at least twice its positions),
// kept as it is for one inside it, a chunk's own table past
// kKvsRopeMaxBytes; the output the CPU decoder's.
TEST(CudaCore, KvsRopeTableServesChunksAcrossPositions) {
  namespace cd = cuda::detail;
  const KVShape shape{2, 2, 64};
  const auto codec = make_codec("kvs");
  const auto parser = cd::make_kvs_parser();
  std::vector<cd::KvsRope> ropes;
  const uint64_t step = cd::kKvsRopeStep, far = uint64_t(1) << 40;  // far: past the table's limit
  struct Step {
    uint64_t token_begin;
    uint32_t tokens;
    uint64_t first, positions;  // the table after it
  };
  const Step steps[] = {{0, 40, 0, step},
                        {5000, 40, 0, step},             // inside
                        {2 * step + 7, 40, 0, 3 * step},  // past it: extended
                        {100, 40, 0, 3 * step},
                        {3 * step - 10, 30, 0, 6 * step},  // at least doubled
                        {far, 20, far, 20},               // its own table
                        {far + 5, 10, far, 20},
                        {64, 16, 0, step}};
  for (const Step& st : steps) {
    SCOPED_TRACE(st.token_begin);
    const KVChunk chunk = cuda_test::synthetic_chunk(shape, st.tokens, st.token_begin, st.token_begin + 3);
    const Bytes stream = codec->encode(chunk, 2);
    const KVChunk want = codec->decode(stream);
    const cd::KvsPlan plan = cd::plan_kvs(stream, *parser, Verify::kDevice);
    ASSERT_EQ(plan.ropes.size(), 1u);
    ASSERT_TRUE(plan.rotates());
    const std::vector<double>& freqs = plan.ropes[0];
    const std::vector<float> before = ropes.empty() ? std::vector<float>{} : ropes[0].cs;
    const bool served = !ropes.empty() && ropes[0].serves(freqs, plan.header);
    std::vector<float> out(want.values.size(), std::nanf(""));
    ASSERT_EQ(cd::run_on_host(plan, stream, *parser, out.data(), cd::kOutF32, &ropes), kNoFault);
    ASSERT_EQ(ropes.size(), 1u) << "one set of frequencies, one table";
    const cd::KvsRope& rope = ropes[0];
    EXPECT_EQ(std::memcmp(out.data(), want.values.data(), sizeof(float) * out.size()), 0) << "output differs";
    EXPECT_EQ(rope.first, st.first);
    EXPECT_EQ(rope.positions, st.positions);
    ASSERT_EQ(rope.cs.size(), 2 * st.positions * (shape.head_dim / 2));
    if (served) {
      EXPECT_EQ(rope.cs, before) << "a table that serves the chunk is kept as it is";
    }
    // Every position's values are rope_table's, whichever chunk asked and
    // whether copied from the previous table or computed.
    const auto cs = kvs_detail::rope_table(freqs, rope.first, uint32_t(rope.positions));
    for (size_t i = 0; i < cs.size(); ++i) {
      ASSERT_EQ(rope.cs[2 * i], cs[i][0]) << i;
      ASSERT_EQ(rope.cs[2 * i + 1], cs[i][1]) << i;
    }
    EXPECT_EQ(rope.at(plan.header, rope.cs.data()), rope.cs.data() + (st.token_begin - st.first) * shape.head_dim);
  }
}

// Per-layer RoPE: one kept table per set of frequencies (two here, the
// layers without RoPE none), each grown on its own; the output the CPU decoder's.
TEST(CudaCore, KvsKeepsATablePerRope) {
  namespace cd = cuda::detail;
  const KVShape shape{3, 2, 32};
  const auto codec = make_codec("kvs", {{{"rope_alt_theta", "1000000"}, {"rope_alt_layers", "1"}}, ""});
  const auto none = make_codec("kvs", {{{"rope_alt_theta", "0"}, {"rope_alt_layers", "2"}}, ""});
  const auto parser = cd::make_kvs_parser();
  std::vector<cd::KvsRope> ropes;
  const uint64_t step = cd::kKvsRopeStep;
  uint64_t positions = step;  // each table's, grown once for the chunk at 3 steps and kept
  for (const uint64_t begin : {uint64_t(0), uint64_t(500), 3 * step, uint64_t(17)}) {
    if (begin >= step) positions = 4 * step;
    SCOPED_TRACE(begin);
    for (const Codec* c : {codec.get(), none.get()}) {
      const Bytes stream = c->encode(cuda_test::synthetic_chunk(shape, 24, begin, begin + 1), 3);
      const KVChunk want = c->decode(stream);
      const cd::KvsPlan plan = cd::plan_kvs(stream, *parser, Verify::kDevice);
      ASSERT_EQ(plan.ropes.size(), 2u);
      std::vector<float> out(want.values.size(), std::nanf(""));
      ASSERT_EQ(cd::run_on_host(plan, stream, *parser, out.data(), cd::kOutF32, &ropes), kNoFault);
      EXPECT_EQ(std::memcmp(out.data(), want.values.data(), sizeof(float) * out.size()), 0) << "output differs";
    }
    ASSERT_EQ(ropes.size(), 2u) << "bases 10^4 and 10^6";
    for (const cd::KvsRope& r : ropes) {
      EXPECT_EQ(r.first, 0u);
      EXPECT_EQ(r.positions, positions);
    }
  }
}

// The device's CRC arithmetic (codec/cuda/verify_threads.h) against crc32().
TEST(CudaCore, CrcPiecesCombineAsCrc32) {
  namespace cd = cuda::detail;
  const cd::CrcTables& t = cd::crc_tables();
  uint64_t x = 12345;
  const auto next = [&] { return x = x * 6364136223846793005ull + 1442695040888963407ull, uint32_t(x >> 33); };
  // Moving a register past n bytes is continuing it over n zero bytes.
  const Bytes zeros(5000, 0);
  for (int k = 0; k < 200; ++k) {
    const uint32_t c = next(), n = next() % 5000;
    ASSERT_EQ(cd::crc_shift(t.x8pow, c, n), cd::crc_update(t.slice, c, zeros.data(), n)) << n;
  }
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 64; ++n) lengths.push_back(n);
  for (size_t n : {255, 256, 257, 1000, 4097, 32767, 32768, 32769, 65536 + 300, 3 * 32768 + 5}) lengths.push_back(n);
  for (size_t n : lengths) {
    SCOPED_TRACE(n);
    Bytes data(n);
    for (uint8_t& b : data) b = uint8_t(next());
    const uint32_t want = crc32(data);
    // Split at random points (odd lengths, empty pieces), the pieces' parts xored.
    for (int split = 0; split < 4; ++split) {
      uint32_t acc = 0;
      for (size_t at = 0; at < n;) {
        const size_t len = std::min<size_t>(n - at, split == 0 ? 1 : next() % (split * 97 + 1));
        acc ^= cd::crc_piece(t.slice, t.x8pow, data.data() + at, len, n - at - len);
        at += len;
      }
      EXPECT_EQ(~(acc ^ cd::crc_shift(t.x8pow, ~0u, n)), want) << "split " << split;
    }
    // The kernels' tiles and pieces (run_verify_on_host), on the data with its CRC appended.
    Bytes stream = data;
    for (int k = 0; k < 4; ++k) stream.push_back(uint8_t(want >> (8 * k)));
    EXPECT_EQ(cd::run_verify_on_host(cd::crc_only(stream), stream, nullptr), kNoFault);
    stream[next() % stream.size()] ^= uint8_t(1 + next() % 255);  // one byte changed (the data or the CRC)
    const cd::VerifyPlan plan = cd::crc_only(stream);
    const unsigned long long fault = cd::run_verify_on_host(plan, stream, nullptr);
    ASSERT_NE(fault, kNoFault);
    EXPECT_EQ(cd::verify_fault_text(fault, plan.body), fmt::format("corrupt KV bitstream at byte {}: checksum mismatch", n));
  }
  // The tile count of bodies up to the planners' limit (a stream of 2^32 - 1 bytes) does not wrap.
  EXPECT_EQ(cd::crc_tile_count(0), 0u);
  EXPECT_EQ(cd::crc_tile_count(1), 1u);
  EXPECT_EQ(cd::crc_tile_count(cd::kCrcTileBytes), 1u);
  EXPECT_EQ(cd::crc_tile_count(cd::kCrcTileBytes + 1), 2u);
  EXPECT_EQ(cd::crc_tile_count(0xffffffffu - 4), (1ull << 32) / cd::kCrcTileBytes);
}

// A caller-staged stream (Decoder::decode's `staged`) is read by the CRC
// kernel in 16-byte words: a misaligned one is refused on the host, before
// the GPU would fault on it ("misaligned address", which ends the context).
TEST(CudaCore, StagedStreamMustBe16ByteAligned) {
  alignas(16) static const uint8_t buffer[64] = {};
  EXPECT_NO_THROW(cuda::detail::check_staged(buffer));
  EXPECT_NO_THROW(cuda::detail::check_staged(buffer + 16));
  for (size_t off : {1, 4, 8, 12, 15}) {
    try {
      cuda::detail::check_staged(buffer + off);
      ADD_FAILURE() << "offset " << off << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("not 16-byte aligned"), std::string::npos) << e.what();
    }
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
      for (Verify verify : {Verify::kHost, Verify::kDevice}) {
        std::vector<uint8_t> out;
        unsigned long long fault = kNoFault;
        bool host_threw = false;
        try {
          fault = run_gpu_path(b, cuda::detail::kOutF32, &out, verify);
        } catch (const CorruptStream&) {
          host_threw = true;  // the host's checks (as the CPU decoder's) found it
        }
        EXPECT_EQ(cpu_threw, host_threw || fault != kNoFault) << "byte " << at;
        if (!cpu_threw && !host_threw) {
          EXPECT_EQ(std::memcmp(out.data(), codec->decode(bad).values.data(), out.size()), 0);
        }
        faults += fault != kNoFault;
      }
    }
    EXPECT_GT(faults, 0) << "no mutation reached a kernel's checks";
  }
}

TEST(CudaCore, DeviceVerifiedPathRejectsWhatTheCpuDecoderRejects) {
  // 1 to 3 random bytes changed anywhere (the CRC fixed for half of them):
  // with the verification on the device's bodies, the GPU path rejects the
  // stream (the planner throws, or a fault) exactly when the CPU decoder
  // does, and otherwise writes its values.
  uint64_t x = 99;
  const auto next = [&] { return x = x * 6364136223846793005ull + 1442695040888963407ull, uint32_t(x >> 33); };
  for (const auto& spec : cuda_test::case_specs()) {
    const cuda_test::StreamCase c = cuda_test::make_case(spec);
    SCOPED_TRACE(c.name);
    int rejected = 0;
    for (int k = 0; k < 30; ++k) {
      Bytes bad = c.stream;
      for (uint32_t n = 1 + next() % 3; n > 0; --n) bad[next() % bad.size()] ^= uint8_t(1 + next() % 255);
      if (k % 2) fix_crc(bad);
      bool cpu_threw = false;
      KVChunk cpu;
      try {
        cpu = c.codec->decode(bad);
      } catch (const CorruptStream&) {
        cpu_threw = true;
      }
      const cuda_test::StreamCase b{c.name, bad, c.decoded, c.codec, c.model};
      std::vector<uint8_t> out;
      unsigned long long fault = kNoFault;
      bool host_threw = false;
      try {
        fault = run_gpu_path(b, cuda::detail::kOutF32, &out, Verify::kDevice);
      } catch (const CorruptStream&) {
        host_threw = true;
      } catch (const Error&) {  // a codec model hash set in a scheme=code stream: run_gpu_path has no model
        host_threw = !c.model && uint16_t(bad[6] | bad[7] << 8) == uint16_t(CodecId::kCacheGen);
      }
      EXPECT_EQ(cpu_threw, host_threw || fault != kNoFault) << "mutation " << k;
      if (!cpu_threw && fault == kNoFault && !host_threw) {
        EXPECT_EQ(std::memcmp(out.data(), cpu.values.data(), out.size()), 0) << "mutation " << k;
      }
      rejected += cpu_threw;
    }
    EXPECT_GT(rejected, 10);
  }
}

// The host's checks of the header and the section table (parse_stream's,
// and for scheme=code the planner's own pass, section_offsets with
// check_cachegen_offsets) against the CPU decoder's: the same streams
// rejected, with the same message.
// The GPU path with the CRC (and cachegen's section table) verified by the
// device's bodies (Verify::kDevice, run on the host): the planner's message
// or the verification fault's text; empty when both pass.
std::string device_verified_message(const cuda_test::StreamCase& c, const Bytes& b, std::array<int, 5>* ranks) {
  namespace cd = cuda::detail;
  try {
    cd::VerifyPlan v;
    unsigned long long fault = kNoFault;
    std::vector<uint32_t> offsets;
    if (c.model) {
      v = cd::plan_cachegen_paper(b, c.model.get(), "model", Verify::kDevice).verify;
      fault = cd::run_verify_on_host(v, b, &offsets);
    } else if (uint16_t(b[6] | b[7] << 8) == uint16_t(CodecId::kKvs)) {
      const cd::KvsPlan plan = cd::plan_kvs(b, *cd::make_kvs_parser(), Verify::kDevice);
      v = plan.verify;
      std::vector<uint8_t> meta = plan.meta;
      fault = cd::run_verify_on_host(plan, b, &meta);  // and the pieces split (kvs_locate)
    } else {
      v = cd::plan_cachegen(b, Verify::kDevice).verify;
      fault = cd::run_verify_on_host(v, b, &offsets);
    }
    EXPECT_TRUE(v.crc);
    if (fault == kNoFault) return "";
    EXPECT_TRUE(fault & cd::kVerifyFault);
    const size_t rank = (fault >> 60) & 7, what = (fault >> 32) & 3;
    ++(*ranks)[rank == 3 && what != cd::kCheckShortStream ? 4 : rank];
    return cd::verify_fault_text(fault, v.body);
  } catch (const CorruptStream& e) {
    return e.what();
  }
}

TEST(CudaCore, PlannersRejectBadHeadersAsTheCpuDecoders) {
  int rejected = 0;
  // The device's faults by rank: checksum, section past the end, bytes left,
  // cachegen's short stream, kvs's piece split (kvs_locate).
  std::array<int, 5> ranks{};
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
    for (uint32_t i : {2u, 3u, count / 3, count - 2})  // a section 0 or 2 bytes long, the next longer: the same total
      for (uint32_t to : {0u, 2u}) {
        bad.push_back(c.stream);
        uint8_t* size = bad.back().data() + kHeaderBytes + 4 * size_t(i);
        const uint32_t was = uint32_t(size[0] | size[1] << 8 | size[2] << 16 | uint32_t(size[3]) << 24);
        if (was < to) {
          bad.pop_back();
          continue;
        }
        const uint32_t next = uint32_t(size[4] | size[5] << 8 | size[6] << 16 | uint32_t(size[7]) << 24) + was - to;
        for (int k = 0; k < 4; ++k) size[k] = uint8_t(to >> (8 * k)), size[4 + k] = uint8_t(next >> (8 * k));
      }
    {
      bad.push_back(c.stream);  // section 3 starting with five bytes 0xff (for kvs: a varint too long)
      const uint8_t* q = c.stream.data() + kHeaderBytes;
      size_t at = kHeaderBytes + 4 * size_t(count);
      for (int i = 0; i < 3; ++i, q += 4) at += uint32_t(q[0] | q[1] << 8 | q[2] << 16 | uint32_t(q[3]) << 24);
      for (size_t k = at; k < at + 5 && k + 4 < c.stream.size(); ++k) bad.back()[k] = 0xff;
    }
    {
      bad.push_back(c.stream);  // the size table's total one more than the sections
      uint8_t* size = bad.back().data() + kHeaderBytes + 4 * size_t(count - 1);
      size[0] = uint8_t(size[0] + 1);
      if (size[0] == 0) bad.pop_back();
    }
    for (Bytes& b : bad) fix_crc(b);
    bad.push_back(c.stream);  // CRC not fixed: the size table, a payload byte, the last before the CRC, the CRC
    bad.back()[kHeaderBytes + 2] ^= 0x10;
    for (size_t at : {c.stream.size() / 2, c.stream.size() - 5, c.stream.size() - 1}) {
      bad.push_back(c.stream);
      bad.back()[at] ^= 0x01;
    }
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
      // Verified on the device: the same message as on the host.
      EXPECT_EQ(device_verified_message(c, b, &ranks), host);
    }
  }
  EXPECT_GT(rejected, 200) << "few mutations reached the checks";
  for (size_t r = 0; r < ranks.size(); ++r) EXPECT_GT(ranks[r], 3) << "few mutations reached the device's check " << r;
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
