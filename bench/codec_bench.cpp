// Encode and decode throughput of every codec, in MB/s of fp16 KV data (the
// size the chunk has in a serving system), with memcpy of the same bytes in
// the same run as the baseline. Single thread.
//   build/bench/codec_bench [--benchmark_filter=cachegen]
// The chunk: 8 layers x 8 kv heads x 128 dims x 256 tokens of synthetic
// KV-like data (per-channel scales with outlier channels, Gaussian values).
#include <cstring>
#include <random>

#include <benchmark/benchmark.h>

#include "codec/codec.h"

namespace {

using kvs::codec::KVChunk;

const KVChunk& chunk() {
  static const KVChunk c = [] {
    KVChunk k({8, 8, 128}, kvs::codec::DType::kF16, 0, 256);
    std::mt19937_64 rng(1);
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (size_t i = 0; i < k.values.size(); ++i) {
      const size_t dim = i % 128;
      k.values[i] = kvs::codec::round_to_dtype((dim % 7 == 0 ? 4.0f : 0.5f) * n(rng), k.dtype);
    }
    return k;
  }();
  return c;
}

int64_t fp16_bytes() { return int64_t(chunk().values.size() * 2); }

void BM_memcpy(benchmark::State& state) {
  std::vector<char> src(size_t(fp16_bytes()), 1), dst(src.size());
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), src.size());
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * fp16_bytes());
}
BENCHMARK(BM_memcpy);

void BM_encode(benchmark::State& state, const char* name, int level) {
  const auto codec = kvs::codec::make_codec(name);
  size_t bytes = 0;
  for (auto _ : state) bytes = codec->encode(chunk(), level).size();
  state.SetBytesProcessed(state.iterations() * fp16_bytes());
  state.counters["bits_per_element"] = 8.0 * double(bytes) / double(chunk().values.size());
}

void BM_decode(benchmark::State& state, const char* name, int level) {
  const auto codec = kvs::codec::make_codec(name);
  const auto stream = codec->encode(chunk(), level);
  for (auto _ : state) benchmark::DoNotOptimize(codec->decode(stream).values.data());
  state.SetBytesProcessed(state.iterations() * fp16_bytes());
}

BENCHMARK_CAPTURE(BM_encode, raw, "raw", 0);
BENCHMARK_CAPTURE(BM_decode, raw, "raw", 0);
BENCHMARK_CAPTURE(BM_encode, quant8, "quant8", 0);
BENCHMARK_CAPTURE(BM_decode, quant8, "quant8", 0);
BENCHMARK_CAPTURE(BM_encode, cachegen_L2, "cachegen", 2);
BENCHMARK_CAPTURE(BM_decode, cachegen_L2, "cachegen", 2);

}  // namespace

BENCHMARK_MAIN();
