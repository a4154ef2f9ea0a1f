// libFuzzer target: every registered codec's decoder on arbitrary bytes.
// Contract under test (codec/codec.h): decode() of any input returns a chunk
// of the header's shape or throws CorruptStream; anything else (a crash, an
// out-of-bounds access or undefined behaviour caught by ASan/UBSan, another
// exception escaping) is a finding.
//
// Codec::layer_shares (which parses the same streams) runs on each too.
//
// Each input is decoded twice: as given (which mostly exercises the
// container's checks, since a mutated stream fails its CRC), and with its
// last 4 bytes replaced by the CRC of the rest, so mutations reach the codec
// payload parsers. Streams are dispatched as a reader does (codec_for_stream,
// then that codec) and also fed to every other decoder.
//
// cachegen (scheme=code) and kvs streams also take the GPU decoders' path as
// the CPU runs it (codec/cuda/plan.h: the planner with Verify::kDevice, then
// the verification's and the kernels' thread bodies, run_on_host): it must
// accept exactly the streams the CPU decoder accepts and write the same
// values, bit for bit; a GPU would run these bodies on untrusted bytes.
//
// Streams whose header asks for more than kMaxFuzzElements values only go
// through parse_stream: a valid header may legitimately ask for 2^28 values
// (1 GiB of floats), which would make the fuzzer slow or run out of memory
// without exercising anything new.
//
// Build (clang only): cmake -DKVSTREAM_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ ...;
// run: decode_fuzz -max_total_time=60 CORPUS_DIR tests/codec/golden (.ci/run).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include <cstring>

#include "codec/bitstream.h"
#include "codec/codec.h"
#include "codec/cuda/plan.h"
#include "codec/kvs_internal.h"
#include "codec/registry.h"

namespace {

using namespace kvs::codec;

constexpr uint64_t kMaxFuzzElements = 1u << 20;

struct Decoders {
  std::vector<std::pair<std::string, std::unique_ptr<Codec>>> codecs;
  std::shared_ptr<const kvs_detail::KvsCodec> kvs_parser = cuda::detail::make_kvs_parser();
  Decoders() {
    for (const auto& name : codec_names()) codecs.emplace_back(name, make_codec(name));
  }
  const Codec& codec(const std::string& name) const {
    for (const auto& [n, c] : codecs)
      if (n == name) return *c;
    __builtin_trap();
  }
};

// The GPU path of a cachegen (scheme=code) or kvs stream against the CPU
// decoder: the same verdict, the same floats.
void gpu_path_agrees(const Decoders& d, std::span<const uint8_t> in) {
  namespace cd = cuda::detail;
  const uint16_t id = uint16_t(in[6] | in[7] << 8);
  const bool kvs = id == uint16_t(CodecId::kKvs);
  if (!kvs && (id != uint16_t(CodecId::kCacheGen) || stream_model_hash(in) != 0)) return;
  bool cpu_ok = true;
  KVChunk cpu;
  try {
    cpu = d.codec(kvs ? "kvs" : "cachegen").decode(in);
  } catch (const CorruptStream&) {
    cpu_ok = false;
  }
  std::vector<float> out;
  unsigned long long fault = cd::kNoFault;
  try {
    if (kvs) {
      const cd::KvsPlan plan = cd::plan_kvs(in, *d.kvs_parser, cd::Verify::kDevice);
      out.assign(plan.values(), 0.0f);
      fault = cd::run_on_host(plan, in, *d.kvs_parser, out.data(), cd::kOutF32);
    } else {
      const cd::CachegenPlan plan = cd::plan_cachegen(in, cd::Verify::kDevice);
      out.assign(plan.header.elements(), 0.0f);
      fault = cd::run_on_host(plan, in, out.data(), cd::kOutF32);
    }
  } catch (const CorruptStream&) {
    fault = 0;  // refused by the host's part
  }
  const bool gpu_ok = fault == cd::kNoFault;
  if (gpu_ok != cpu_ok) __builtin_trap();
  if (cpu_ok && (out.size() != cpu.values.size() ||
                 (!out.empty() && std::memcmp(out.data(), cpu.values.data(), 4 * out.size()) != 0)))
    __builtin_trap();
}

void check_shape(const KVChunk& out) {
  if (out.values.size() != out.shape.elements_per_token() * out.tokens) __builtin_trap();
}

// Codec::layer_shares of a stream it accepts: every share positive, summing to 1.
void check_shares(const std::vector<double>& shares) {
  double sum = 0;
  for (double x : shares) {
    if (!(x > 0 && x <= 1)) __builtin_trap();
    sum += x;
  }
  if (shares.empty() || !(std::abs(sum - 1) < 1e-9)) __builtin_trap();
}

void decode_all(const Decoders& d, std::span<const uint8_t> in) {
  // Large claimed shapes: only the container (it allocates nothing per value).
  uint64_t elements = in.size() >= kHeaderBytes ? 2 : 0;
  for (size_t at : {12, 16, 20, 32})
    if (elements && elements <= kMaxFuzzElements)
      elements *= uint64_t(in[at]) | uint64_t(in[at + 1]) << 8 | uint64_t(in[at + 2]) << 16 | uint64_t(in[at + 3]) << 24;
  if (elements > kMaxFuzzElements) {
    try {
      (void)parse_stream(in, CodecId(uint16_t(in[6] | in[7] << 8)));
    } catch (const CorruptStream&) {
    }
    return;
  }
  try {
    const std::string name = codec_for_stream(in);
    for (const auto& [n, codec] : d.codecs)
      if (n == name) check_shape(codec->decode(in));
  } catch (const CorruptStream&) {
  }
  for (const auto& [name, codec] : d.codecs) {
    try {
      check_shape(codec->decode(in));
    } catch (const CorruptStream&) {
    }
    try {
      check_shares(codec->layer_shares(in));
    } catch (const CorruptStream&) {
    }
  }
  if (in.size() >= kHeaderBytes) gpu_path_agrees(d, in);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Decoders decoders;  // immutable after construction
  const std::span<const uint8_t> in(data, size);
  decode_all(decoders, in);
  if (size >= 4) {
    std::vector<uint8_t> fixed(data, data + size);
    const uint32_t crc = crc32(std::span<const uint8_t>(fixed.data(), size - 4));
    for (int k = 0; k < 4; ++k) fixed[size - 4 + size_t(k)] = uint8_t(crc >> (8 * k));
    decode_all(decoders, fixed);
  }
  return 0;
}
