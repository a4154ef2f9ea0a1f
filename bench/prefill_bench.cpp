// Prefill throughput (tokens/s) of the Llama model on this machine's CPU or a
// GPU (--device cuda[:N], needs a libtorch built with CUDA).
//
// The model is models/default when that checkpoint exists, else a random model
// of the shape given on the command line (defaults: the 12M-parameter byte
// model of DESIGN.md: 8 layers, hidden 384, 6 heads, 2 KV heads, MLP 1024).
//   prefill_bench [--model DIR] [--layers N] [--hidden N] [--heads N]
//                 [--kv-heads N] [--intermediate N] [--vocab N] [--threads N]
//                 [--dtype fp32|bf16|fp16] [--query-block N]
//                 [--device cpu|cuda[:N]] [--check] [benchmark flags]
// On a device other than the CPU (or with --check) a correctness check runs
// first: the logits of a fixed 512-token input on the device against the same
// model in float32 on the CPU (max abs diff, relative L2 error), and prefill
// through the KV cache (384 tokens, then 128 after them) against the full
// prefill on the device. It exits with status 3 when a relative error exceeds
// 1e-3 (fp32) or 2e-2 (bf16/fp16). On a GPU each timed prefill ends by copying
// one logit to the CPU, which waits for the device, so times are real.
// Which BLAS libtorch calls is decided by the alternatives system
// (libblas.so.3): record it with the numbers.
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <cmath>
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

// Waits until the device has computed `logits` by copying one value to the CPU
// (device-agnostic: needs no CUDA headers).
float wait_for(const at::Tensor& logits) { return logits.select(0, -1).select(0, 0).item<float>(); }

void BM_Prefill(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = (i * 7919) % g_model->config().vocab_size;
  const at::Tensor tokens = kvs::llm::to_tensor(ids);
  const bool on_cpu = g_model->device().is_cpu();
  if (!on_cpu) wait_for(g_model->prefill(tokens).logits);  // warm-up: allocator, kernels
  for (auto _ : state) {
    auto r = g_model->prefill(tokens);
    if (on_cpu) {
      benchmark::DoNotOptimize(r.logits.data_ptr());
    } else {
      float last = wait_for(r.logits);
      benchmark::DoNotOptimize(last);
    }
  }
  state.counters["tokens_per_s"] = benchmark::Counter(double(n), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Prefill)->Arg(1024)->Arg(4096)->Arg(16384)->Unit(benchmark::kMillisecond)->UseRealTime();

struct Diff {
  double max_abs, rel_l2;
};
// got against ref (both float32 [n, vocab]; got may be on another device).
Diff diff(const at::Tensor& got, const at::Tensor& ref) {
  const at::Tensor d = got.to(at::kCPU, at::kFloat) - ref;
  return {d.abs().max().item<double>(), (d.norm() / ref.norm()).item<double>()};
}

// The correctness checks described at the top; returns false when one fails.
bool check(const kvs::llm::Model& on_device, const kvs::llm::Model& cpu_fp32, double tol) {
  const int64_t n = 512, ctx = 384;
  std::vector<int64_t> ids(size_t(n), 0);
  uint64_t x = 12345;
  for (auto& id : ids) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    id = int64_t((x >> 33) % uint64_t(cpu_fp32.config().vocab_size));
  }
  const at::Tensor tokens = kvs::llm::to_tensor(ids);
  const at::Tensor ref = cpu_fp32.prefill(tokens).logits;
  const at::Tensor full = on_device.prefill(tokens).logits;
  const Diff a = diff(full, ref);
  const auto first = on_device.prefill(tokens.narrow(0, 0, ctx));
  const auto rest = on_device.forward(tokens.narrow(0, ctx, n - ctx), first.cache);
  const Diff b = diff(rest.logits, full.narrow(0, ctx, n - ctx).to(at::kCPU));
  const bool ok_a = std::isfinite(a.rel_l2) && a.rel_l2 <= tol;
  const bool ok_b = std::isfinite(b.rel_l2) && b.rel_l2 <= tol;
  std::fprintf(stderr, "check: %lld tokens on %s vs CPU fp32: max abs diff %.3g, relative L2 error %.3g (limit %.0e): %s\n",
               (long long)n, on_device.device().str().c_str(), a.max_abs, a.rel_l2, tol, ok_a ? "ok" : "FAIL");
  std::fprintf(stderr, "check: KV-cache prefill (%lld then %lld tokens) vs full prefill on %s: max abs diff %.3g, relative L2 error %.3g (limit %.0e): %s\n",
               (long long)ctx, (long long)(n - ctx), on_device.device().str().c_str(), b.max_abs, b.rel_l2, tol,
               ok_b ? "ok" : "FAIL");
  return ok_a && ok_b;
}

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
  std::string device_name = "cpu";
  bool force_check = false;
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
    else if (is("--device")) device_name = argv[++i];
    else if (std::strcmp(argv[i], "--check") == 0) force_check = true;
    else rest.push_back(argv[i]);
  }
  if (dtype != "fp32" && dtype != "bf16" && dtype != "fp16") {
    std::fprintf(stderr, "prefill_bench: --dtype %s: expected fp32, bf16 or fp16\n", dtype.c_str());
    return 2;
  }
  const at::ScalarType dt = dtype == "bf16" ? at::kBFloat16 : dtype == "fp16" ? at::kHalf : at::kFloat;
  std::optional<at::Device> device;
  try {
    device.emplace(device_name);
  } catch (const std::exception&) {
    std::fprintf(stderr, "prefill_bench: --device %s: expected cpu or cuda[:N]\n", device_name.c_str());
    return 2;
  }
  if (!device->is_cpu() && !device->is_cuda()) {
    std::fprintf(stderr, "prefill_bench: --device %s: expected cpu or cuda[:N]\n", device_name.c_str());
    return 2;
  }
  if (device->is_cuda() && !at::hasCUDA()) {
    std::fprintf(stderr, "prefill_bench: --device %s: this libtorch has no CUDA support (or no GPU is visible)\n",
                 device_name.c_str());
    return 2;
  }
  const std::string blas = kvs::llm::set_cpu_threads(threads, blas_threads);
  const bool run_check = force_check || !device->is_cpu();
  try {
    // The CPU float32 reference of the check, when it runs, is the model as loaded.
    const at::ScalarType load_dt = run_check ? at::kFloat : dt;
    if (!model_dir.empty()) {
      kvs::llm::LoadOptions o;
      o.dtype = load_dt;
      g_model.emplace(kvs::llm::load_model(model_dir, o));
    } else {
      g_model.emplace(kvs::llm::Model::random(c, 1, load_dt));
    }
    if (run_check) {
      const kvs::llm::Model cpu_fp32 = *g_model;
      g_model->to(dt, *device);
      if (query_block >= 0) g_model->set_query_block(query_block);
      if (!check(*g_model, cpu_fp32, dt == at::kFloat ? 1e-3 : 2e-2)) {
        std::fprintf(stderr, "prefill_bench: correctness check failed\n");
        return 3;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "prefill_bench: %s\n", e.what());
    return 1;
  }
  if (query_block >= 0) g_model->set_query_block(query_block);
  const auto& m = g_model->config();
  std::fprintf(stderr, "model: %s, %lld layers, hidden %lld, heads %lld/%lld kv, MLP %lld, vocab %lld, %s on %s, %d threads, BLAS %s\n",
               model_dir.empty() ? "random" : model_dir.c_str(), (long long)m.num_hidden_layers,
               (long long)m.hidden_size, (long long)m.num_attention_heads, (long long)m.num_key_value_heads,
               (long long)m.intermediate_size, (long long)m.vocab_size, dtype.c_str(),
               g_model->device().str().c_str(), threads, blas.c_str());
  int rest_argc = int(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_model.reset();
  return 0;
}
