// Encode and decode throughput of every codec, in MB/s of fp16 KV data (the
// size the chunk has in a serving system: bytes processed = 2 bytes per
// element, encoded or decoded), with memcpy of the same bytes in the same run
// as the baseline. Single thread (= per core); rates use CPU time. After the
// usual table it prints each benchmark's rate as a fraction of BM_memcpy's
// (medians when --benchmark_repetitions is given), so include memcpy in the
// filter:
//   build/bench/codec_bench --benchmark_filter='memcpy|cachegen'
//       --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// The chunk: 8 layers x 8 kv heads x 128 dims x 256 tokens of synthetic
// KV-like data (per-channel scales with outlier channels, Gaussian values);
// *_1500tok: the same with 1,500 tokens. memcpy copies the 256-token chunk.
// cachegen_paper_*: cachegen with scheme=paper, whose codec model is learned
// (train_cachegen_paper_model, as `kvstream codec-model train` does) from a
// second synthetic chunk of 1,500 tokens drawn with another seed (2), not
// from the chunk it codes; the model is learned, written to a temporary file
// and removed again only when a paper benchmark runs.
// kvs_model_*: a chunk of the bundled model's shape (4 layers x 2 kv heads x
// 32 dims; 256 or 1,500 tokens), KV-like as kvs sees a real one: keys rotated
// by RoPE (theta 10000), layer 0's rows a function of the token alone (a
// byte-level model: they repeat), per-channel means and spreads elsewhere.
// BM_decode decodes into one reused chunk (Codec::decode_into): codecs that
// override it (cachegen's paper scheme) skip allocating and zeroing the
// output; the others decode() and move, as before.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include "base/files.h"
#include "bench/synthetic_kv.h"
#include "codec/cachegen_paper.h"
#include "codec/bitstream.h"
#include "codec/codec.h"
#include "codec/cuda/plan.h"
#include "codec/kvs.h"

namespace {

using kvs::codec::KVChunk;

KVChunk make_chunk(uint32_t tokens, uint64_t seed = 1) {
  KVChunk k({8, 8, 128}, kvs::codec::DType::kF16, 0, tokens);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (size_t i = 0; i < k.values.size(); ++i) {
    const size_t dim = i % 128;
    k.values[i] = kvs::codec::round_to_dtype((dim % 7 == 0 ? 4.0f : 0.5f) * n(rng), k.dtype);
  }
  return k;
}

// The chunk of 256 tokens, or of 1,500 (the profile's default chunk size).
const KVChunk& chunk(uint32_t tokens = 256) {
  static const KVChunk c256 = make_chunk(256);
  if (tokens == 256) return c256;
  static const KVChunk c1500 = make_chunk(1500);
  return c1500;
}

KVChunk make_model_chunk(uint32_t tokens) {
  using kvs::codec::Kind;
  const kvs::codec::KVShape s{4, 2, 32};
  KVChunk k(s, kvs::codec::DType::kF16, 0, tokens);
  std::mt19937_64 rng(2);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::uniform_int_distribution<uint32_t> symbol(0, 47);  // a text's few distinct bytes
  std::vector<uint32_t> token(tokens);
  for (uint32_t& t : token) t = symbol(rng);
  const uint32_t D = s.head_dim, half = D / 2;
  std::vector<float> pre(D);
  for (uint32_t l = 0; l < s.layers; ++l)
    for (uint32_t h = 0; h < s.kv_heads; ++h) {
      std::vector<float> mean(D), sd(D), by_token(48 * 2 * size_t(D));  // layer 0: [symbol][kind][dim]
      for (uint32_t d = 0; d < D; ++d) {
        mean[d] = 2.0f * n(rng);
        sd[d] = d % 7 == 3 ? 3.0f : 0.3f + 0.1f * float(d % 5);
      }
      for (float& v : by_token) v = n(rng);
      for (uint32_t t = 0; t < tokens; ++t) {
        const float* row = &by_token[size_t(token[t]) * 2 * D];
        for (uint32_t d = 0; d < D; ++d) pre[d] = mean[d] + sd[d] * (l == 0 ? row[d] : n(rng));
        for (uint32_t i = 0; i < half; ++i) {
          const auto cs = kvs::codec::kvs_rope_cos_sin(10000.0, t, i, D);
          k.at(l, Kind::kKey, h, t, i) = kvs::codec::round_to_dtype(pre[i] * cs[0] - pre[i + half] * cs[1], k.dtype);
          k.at(l, Kind::kKey, h, t, i + half) =
              kvs::codec::round_to_dtype(pre[i + half] * cs[0] + pre[i] * cs[1], k.dtype);
        }
        for (uint32_t d = 0; d < D; ++d)
          k.at(l, Kind::kValue, h, t, d) =
              kvs::codec::round_to_dtype((d % 5 == 0 ? 2.0f : 0.7f) * (l == 0 ? row[D + d] : n(rng)), k.dtype);
      }
    }
  return k;
}

// The model-shaped chunk of 256 or 1,500 tokens.
const KVChunk& model_chunk(uint32_t tokens) {
  static const KVChunk c256 = make_model_chunk(256);
  if (tokens == 256) return c256;
  static const KVChunk c1500 = make_model_chunk(1500);
  return c1500;
}

int64_t fp16_bytes(const KVChunk& c) { return int64_t(c.values.size() * 2); }

// The paper scheme's codec model file: learned from make_chunk(1500, 2) on
// first use, removed when the program ends.
class PaperModelFile {
 public:
  PaperModelFile()
      : path_((std::filesystem::temp_directory_path() /
               ("kvs-codec-bench-" + std::to_string(::getpid()) + ".cgm"))
                  .string()) {
    const KVChunk sample = make_chunk(1500, 2);
    kvs::write_file_atomic(path_, kvs::codec::train_cachegen_paper_model({&sample, 1}));
  }
  ~PaperModelFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// `name` is a registry name, or "cachegen_paper" for cachegen with scheme=paper.
std::unique_ptr<kvs::codec::Codec> make(const std::string& name) {
  if (name != "cachegen_paper") return kvs::codec::make_codec(name);
  static const PaperModelFile model;
  return kvs::codec::make_codec("cachegen", {{{"scheme", "paper"}}, model.path()});
}

void BM_memcpy(benchmark::State& state) {
  std::vector<char> src(size_t(fp16_bytes(chunk())), 1), dst(src.size());
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), src.size());
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * int64_t(src.size()));
}
BENCHMARK(BM_memcpy);

void BM_encode(benchmark::State& state, const char* name, int level, uint32_t tokens = 256) {
  const auto codec = make(name);
  const KVChunk& c = chunk(tokens);
  size_t bytes = 0;
  for (auto _ : state) bytes = codec->encode(c, level).size();
  state.SetBytesProcessed(state.iterations() * fp16_bytes(c));
  state.counters["bits_per_element"] = 8.0 * double(bytes) / double(c.values.size());
}

void BM_decode(benchmark::State& state, const char* name, int level, uint32_t tokens = 256) {
  const auto codec = make(name);
  const KVChunk& c = chunk(tokens);
  const auto stream = codec->encode(c, level);
  KVChunk out;  // reused, as a receiver decoding chunk after chunk would (Codec::decode_into)
  for (auto _ : state) {
    codec->decode_into(stream, out);
    benchmark::DoNotOptimize(out.values.data());
  }
  state.SetBytesProcessed(state.iterations() * fp16_bytes(c));
}

// kvs on the model-shaped chunk (small chunks: per-chunk work weighs more).
void BM_decode_model(benchmark::State& state, int level, uint32_t tokens) {
  const auto codec = kvs::codec::make_codec("kvs");
  const KVChunk& c = model_chunk(tokens);
  const auto stream = codec->encode(c, level);
  for (auto _ : state) benchmark::DoNotOptimize(codec->decode(stream).values.data());
  state.SetBytesProcessed(state.iterations() * fp16_bytes(c));
  state.counters["bits_per_element"] = 8.0 * double(stream.size()) / double(c.values.size());
}

BENCHMARK_CAPTURE(BM_encode, raw, "raw", 0);
BENCHMARK_CAPTURE(BM_decode, raw, "raw", 0);
BENCHMARK_CAPTURE(BM_encode, zstd, "zstd", 0);  // lossless, zstd level 3 over the fp16 bytes
BENCHMARK_CAPTURE(BM_decode, zstd, "zstd", 0);
BENCHMARK_CAPTURE(BM_encode, quant8, "quant8", 0);
BENCHMARK_CAPTURE(BM_decode, quant8, "quant8", 0);
BENCHMARK_CAPTURE(BM_encode, kivi2, "kivi2", 0);  // group 32, residual 128: the last 128 tokens of V stay fp16
BENCHMARK_CAPTURE(BM_decode, kivi2, "kivi2", 0);
BENCHMARK_CAPTURE(BM_encode, kivi4, "kivi4", 0);
BENCHMARK_CAPTURE(BM_decode, kivi4, "kivi4", 0);
BENCHMARK_CAPTURE(BM_encode, cachegen_L2, "cachegen", 2);
BENCHMARK_CAPTURE(BM_decode, cachegen_L2, "cachegen", 2);
BENCHMARK_CAPTURE(BM_encode, cachegen_L0, "cachegen", 0);  // most symbols per table (63)
BENCHMARK_CAPTURE(BM_decode, cachegen_L0, "cachegen", 0);
BENCHMARK_CAPTURE(BM_encode, cachegen_L2_1500tok, "cachegen", 2, 1500u);  // six 256-token streams per channel
BENCHMARK_CAPTURE(BM_decode, cachegen_L2_1500tok, "cachegen", 2, 1500u);
BENCHMARK_CAPTURE(BM_encode, cachegen_paper_L2, "cachegen_paper", 2);  // the default level
BENCHMARK_CAPTURE(BM_decode, cachegen_paper_L2, "cachegen_paper", 2);
BENCHMARK_CAPTURE(BM_encode, cachegen_paper_L0, "cachegen_paper", 0);  // the finest (64 delta bins everywhere)
BENCHMARK_CAPTURE(BM_decode, cachegen_paper_L0, "cachegen_paper", 0);
BENCHMARK_CAPTURE(BM_encode, kvs_L0, "kvs", 0);  // the finest level (most symbols, raw low bits)
BENCHMARK_CAPTURE(BM_decode, kvs_L0, "kvs", 0);
BENCHMARK_CAPTURE(BM_encode, kvs_L3, "kvs", 3);
BENCHMARK_CAPTURE(BM_decode, kvs_L3, "kvs", 3);
BENCHMARK_CAPTURE(BM_encode, kvs_L7, "kvs", 7);
BENCHMARK_CAPTURE(BM_decode, kvs_L7, "kvs", 7);
BENCHMARK_CAPTURE(BM_encode, kvs_L9, "kvs", 9);  // the coarsest level
BENCHMARK_CAPTURE(BM_decode, kvs_L9, "kvs", 9);
BENCHMARK_CAPTURE(BM_decode_model, kvs_model_L0, 0, 256u);
BENCHMARK_CAPTURE(BM_decode_model, kvs_model_L1, 1, 256u);
BENCHMARK_CAPTURE(BM_decode_model, kvs_model_L0_1500tok, 0, 1500u);
BENCHMARK_CAPTURE(BM_decode_model, kvs_model_L1_1500tok, 1, 1500u);

// The GPU decoders' host part (codec/cuda/plan.h: parse, checks, metadata for
// the kernels; plain C++, so it runs here without CUDA) on one chunk shaped
// like Llama-2-7B (32 layers x 32 kv heads x 128 dims, 1,024 tokens: 2^28
// values, 512 MiB as fp16), the synthetic KV of bench/synthetic_kv.h
// (per (layer, kind, head, dim) a Gaussian with its own mean and log-normal
// spread, keys wider, layer 0's rows a function of the token). The streams
// are encoded once, at codec_cuda_bench's default levels (kvs L4, cachegen
// L2, scheme=paper L2 with a codec model learned from a 256-token chunk of
// another seed). Rates are fp16 output bytes per CPU second: what one host
// core can prepare for the GPU; the time column is per chunk.
//   BM_plan_crc/*    the CRC-32 of the stream alone (crc32)
//   BM_plan_parse/*  parse_stream: header, CRC, section table
//   BM_plan/*        the whole plan (plan_kvs, plan_cachegen, plan_cachegen_paper)
//                    with the host's verification (Verify::kHost: CRC, section table)
//   BM_plan_device/* the same plan with the CRC (and cachegen's section
//                    table) left to the GPU's verification kernels
//                    (Verify::kDevice, what cuda::Decoder runs): the host's
//                    share per chunk; the kernels' time is not in it, nor
//                    kvs's RoPE table (no plan computes it: cuda::Decoder
//                    keeps one on the device across chunks, KvsRope)
const kvs::codec::KVShape kPlanShape{32, 32, 128};
constexpr uint32_t kPlanTokens = 1024;

struct PlanStream {
  kvs::codec::Bytes stream;
  std::shared_ptr<const kvs::codec::CacheGenPaperModel> model;  // scheme=paper
  std::string model_file;
};

// "kvs", "cachegen" or "cachegen_paper": its stream of the Llama-2-7B chunk, encoded on first use.
const PlanStream& plan_stream(const std::string& name) {
  static std::map<std::string, PlanStream> cache;
  if (auto it = cache.find(name); it != cache.end()) return it->second;
  PlanStream ps;
  std::shared_ptr<const kvs::codec::Codec> codec;
  if (name == "cachegen_paper") {
    ps.model_file = (std::filesystem::temp_directory_path() /
                     ("kvs-codec-bench-plan-" + std::to_string(::getpid()) + ".cgm"))
                        .string();
    const KVChunk sample = kvs::bench::synthetic_chunk(kPlanShape, 256, 0, 1234);
    kvs::write_file_atomic(ps.model_file, kvs::codec::train_cachegen_paper_model({&sample, 1}));
    ps.model = kvs::codec::load_cachegen_paper_model(ps.model_file);
    codec = kvs::codec::make_codec("cachegen", {{{"scheme", "paper"}}, ps.model_file});
    std::error_code ignored;
    std::filesystem::remove(ps.model_file, ignored);
  } else {
    codec = kvs::codec::make_codec(name);
  }
  const KVChunk c = kvs::bench::synthetic_chunk(kPlanShape, kPlanTokens, 0, 1);
  ps.stream = codec->encode(c, name == "kvs" ? 4 : 2);
  return cache.emplace(name, std::move(ps)).first->second;
}

void plan_counters(benchmark::State& state, const PlanStream& ps) {
  const int64_t out_bytes = int64_t(2 * kPlanShape.elements_per_token() * kPlanTokens);
  state.SetBytesProcessed(state.iterations() * out_bytes);
  state.counters["stream_MB"] = double(ps.stream.size()) / 1e6;
}

void BM_plan_crc(benchmark::State& state, const char* name) {
  const PlanStream& ps = plan_stream(name);
  const std::span<const uint8_t> body(ps.stream.data(), ps.stream.size() - 4);
  for (auto _ : state) benchmark::DoNotOptimize(kvs::codec::crc32(body));
  plan_counters(state, ps);
}

void BM_plan_parse(benchmark::State& state, const char* name) {
  const PlanStream& ps = plan_stream(name);
  const auto id = std::string(name) == "kvs" ? kvs::codec::CodecId::kKvs : kvs::codec::CodecId::kCacheGen;
  for (auto _ : state) benchmark::DoNotOptimize(kvs::codec::parse_stream(ps.stream, id).sections.data());
  plan_counters(state, ps);
}

void plan_loop(benchmark::State& state, const char* name, kvs::codec::cuda::detail::Verify verify) {
  namespace cd = kvs::codec::cuda::detail;
  const PlanStream& ps = plan_stream(name);
  const std::string n = name;
  const auto parser = cd::make_kvs_parser();
  for (auto _ : state) {
    if (n == "kvs")
      benchmark::DoNotOptimize(cd::plan_kvs(ps.stream, *parser, verify).meta.data());
    else if (n == "cachegen")
      benchmark::DoNotOptimize(cd::plan_cachegen(ps.stream, verify).meta.data());
    else
      benchmark::DoNotOptimize(cd::plan_cachegen_paper(ps.stream, ps.model.get(), ps.model_file, verify).meta.data());
  }
  plan_counters(state, ps);
}
void BM_plan(benchmark::State& state, const char* name) { plan_loop(state, name, kvs::codec::cuda::detail::Verify::kHost); }
void BM_plan_device(benchmark::State& state, const char* name) {
  plan_loop(state, name, kvs::codec::cuda::detail::Verify::kDevice);
}

BENCHMARK_CAPTURE(BM_plan_crc, kvs_llama2_1024tok, "kvs")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_plan_parse, kvs_llama2_1024tok, "kvs")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_plan, kvs_llama2_1024tok, "kvs")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_plan_device, kvs_llama2_1024tok, "kvs")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_plan_crc, cachegen_llama2_1024tok, "cachegen")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_plan_parse, cachegen_llama2_1024tok, "cachegen")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_plan, cachegen_llama2_1024tok, "cachegen")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_plan_device, cachegen_llama2_1024tok, "cachegen")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_plan_crc, cachegen_paper_llama2_1024tok, "cachegen_paper")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_plan_parse, cachegen_paper_llama2_1024tok, "cachegen_paper")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_plan, cachegen_paper_llama2_1024tok, "cachegen_paper")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_plan_device, cachegen_paper_llama2_1024tok, "cachegen_paper")->Unit(benchmark::kMicrosecond);

// The console table, then every benchmark's bytes/s over BM_memcpy's from
// this run: the median when repetitions are aggregated, else the one run.
class RatioToMemcpyReporter : public benchmark::ConsoleReporter {
 public:
  RatioToMemcpyReporter() : ConsoleReporter(OO_None) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") continue;
      const auto rate = run.counters.find("bytes_per_second");
      if (rate == run.counters.end()) continue;
      const std::string name = run.run_name.str();
      if (!rates_.count(name)) order_.push_back(name);
      rates_[name] = rate->second.value;  // a median, reported after the repetitions, replaces them
    }
  }

  void Finalize() override {
    std::ostream& out = GetOutputStream();
    const auto memcpy_rate = rates_.find("BM_memcpy");
    if (memcpy_rate == rates_.end() || !(memcpy_rate->second > 0)) {
      out << "(no BM_memcpy in this run: no ratios; include memcpy in --benchmark_filter)\n";
    } else {
      // Google Benchmark's column above is in MiB/s (2^20 bytes); this is 10^6.
      out << "\nMB/s (10^6 bytes) of fp16 data, CPU time, and ratio to memcpy (" << memcpy_rate->second / 1e6
          << " MB/s) in this run:\n";
      for (const std::string& name : order_) {
        if (name == "BM_memcpy") continue;
        char line[176];
        std::snprintf(line, sizeof line, "  %-36s %9.1f MB/s  %.5f x memcpy\n", name.c_str(), rates_[name] / 1e6,
                      rates_[name] / memcpy_rate->second);
        out << line;
      }
    }
    ConsoleReporter::Finalize();
  }

 private:
  std::map<std::string, double> rates_;
  std::vector<std::string> order_;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioToMemcpyReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
