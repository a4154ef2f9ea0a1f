// Prefill throughput (tokens/s) of the Llama model on this machine's CPU.
//
// The model is models/default when that checkpoint exists, else a random model
// of the shape given on the command line (defaults: the 12M-parameter byte
// model of DESIGN.md: 8 layers, hidden 384, 6 heads, 2 KV heads, MLP 1024).
//   prefill_bench [--model DIR] [--layers N] [--hidden N] [--heads N]
//                 [--kv-heads N] [--intermediate N] [--vocab N] [--threads N]
//                 [--dtype fp32|bf16] [--query-block N] [benchmark flags]
// Which BLAS libtorch calls is decided by the alternatives system
// (libblas.so.3): record it with the numbers.
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "llm/checkpoint.h"
#include "llm/model.h"

namespace {

std::optional<kvs::llm::Model> g_model;  // set once in main before the benchmarks run

void BM_Prefill(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = (i * 7919) % g_model->config().vocab_size;
  const at::Tensor tokens = kvs::llm::to_tensor(ids);
  for (auto _ : state) {
    auto r = g_model->prefill(tokens);
    benchmark::DoNotOptimize(r.logits.data_ptr());
  }
  state.counters["tokens_per_s"] = benchmark::Counter(double(n), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Prefill)->Arg(1024)->Arg(4096)->Arg(16384)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  kvs::llm::ModelConfig c;
  c.vocab_size = 256;
  c.hidden_size = 384;
  c.intermediate_size = 1024;
  c.num_hidden_layers = 8;
  c.num_attention_heads = 6;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 4096;
  std::string model_dir = std::filesystem::exists(KVSTREAM_SOURCE_DIR "/models/default/config.json")
                              ? KVSTREAM_SOURCE_DIR "/models/default" : "";
  int threads = int(std::max(1u, std::thread::hardware_concurrency()));
  std::string dtype = "fp32";
  int blas_threads = 0;  // 0: as --threads
  int64_t query_block = -1;  // -1: the model's default
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    auto is = [&](const char* flag) { return std::strcmp(argv[i], flag) == 0 && i + 1 < argc; };
    if (is("--model")) model_dir = argv[++i];
    else if (is("--layers")) c.num_hidden_layers = std::atoll(argv[++i]);
    else if (is("--hidden")) c.hidden_size = std::atoll(argv[++i]);
    else if (is("--heads")) c.num_attention_heads = std::atoll(argv[++i]);
    else if (is("--kv-heads")) c.num_key_value_heads = std::atoll(argv[++i]);
    else if (is("--intermediate")) c.intermediate_size = std::atoll(argv[++i]);
    else if (is("--vocab")) c.vocab_size = std::atoll(argv[++i]);
    else if (is("--threads")) threads = std::atoi(argv[++i]);
    else if (is("--blas-threads")) blas_threads = std::atoi(argv[++i]);
    else if (is("--dtype")) dtype = argv[++i];
    else if (is("--query-block")) query_block = std::atoll(argv[++i]);
    else rest.push_back(argv[i]);
  }
  const std::string blas = kvs::llm::set_cpu_threads(threads, blas_threads);
  const at::ScalarType dt = dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  try {
    if (!model_dir.empty()) {
      kvs::llm::LoadOptions o;
      o.dtype = dt;
      g_model.emplace(kvs::llm::load_model(model_dir, o));
    } else {
      g_model.emplace(kvs::llm::Model::random(c, 1, dt));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "prefill_bench: %s\n", e.what());
    return 1;
  }
  if (query_block >= 0) g_model->set_query_block(query_block);
  const auto& m = g_model->config();
  std::fprintf(stderr, "model: %s, %lld layers, hidden %lld, heads %lld/%lld kv, MLP %lld, vocab %lld, %s, %d threads, BLAS %s\n",
               model_dir.empty() ? "random" : model_dir.c_str(), (long long)m.num_hidden_layers,
               (long long)m.hidden_size, (long long)m.num_attention_heads, (long long)m.num_key_value_heads,
               (long long)m.intermediate_size, (long long)m.vocab_size, dtype.c_str(), threads, blas.c_str());
  int rest_argc = int(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_model.reset();
  return 0;
}
