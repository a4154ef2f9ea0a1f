// Wall time of one simulated KV-cache fetch: a 4096-token context of a
// 7B-class target (sizes scaled from a small profiled model) at 1 Gbit/s,
// 20 ms RTT, one request, fixed level. Reports events per wall second.
//
// The profile is built in code: 16 chunks of 256 tokens at 2 bits per KV
// element (a mid CacheGen level), so the bytes on the wire are
// 4096 x elements_per_token(target) x 2 / 8.
#include <benchmark/benchmark.h>

#include "codec/profile.h"
#include "sim/simulation.h"

namespace {

kvs::codec::Profile bench_profile() {
  kvs::codec::Profile p;
  p.model.name = "tiny";
  p.model.kv = {8, 2, 64};
  p.model.hidden_size = 256;
  p.model.intermediate_size = 688;
  p.model.num_attention_heads = 4;
  p.model.vocab_size = 256;
  p.model.parameters = 12'000'000;
  p.device = "bench";
  p.chunk_tokens = 256;
  kvs::codec::CodecProfile c;
  c.codec = "c";
  c.level_names = {"2bit"};
  kvs::codec::ContextProfile ctx;
  ctx.id = "ctx0";
  ctx.tokens = 4096;
  for (uint32_t i = 0; i < 16; ++i) {
    kvs::codec::ChunkProfile ch;
    ch.token_begin = i * 256ull;
    ch.tokens = 256;
    kvs::codec::ChunkLevel lv;
    lv.bytes = 256ull * p.model.kv.elements_per_token() * 2 / 8;
    lv.decode_s = 0.0001;
    ch.levels.push_back(lv);
    ctx.chunks.push_back(ch);
  }
  c.contexts.push_back(ctx);
  p.codecs.push_back(c);
  return p;
}

// Args: target (0 = mistral-7b, 1 = llama-7b), MTU bytes.
void BM_Simulate4kContext1Gbps(benchmark::State& state) {
  const auto profile = bench_profile();
  kvs::sim::SimConfig config;
  config.codec = "c";
  config.target = state.range(0) == 0 ? "mistral-7b" : "llama-7b";
  config.link.rate_mbps = 1000;
  config.link.rtt_ms = 20;
  config.link.mtu_bytes = uint32_t(state.range(1));
  uint64_t events = 0, bytes = 0;
  double sim_s = 0;
  for (auto _ : state) {
    const auto out = kvs::sim::simulate(config, profile);
    events = out.result.events;
    bytes = out.result.requests[0].payload_bytes;
    sim_s = out.result.requests[0].ttft_s;
    benchmark::DoNotOptimize(out.events_jsonl.data());
  }
  state.SetLabel(config.target + " MTU " + std::to_string(state.range(1)));
  state.counters["events"] = double(events);
  state.counters["events_per_s"] = benchmark::Counter(double(events) * double(state.iterations()),
                                                      benchmark::Counter::kIsRate);
  state.counters["payload_MB"] = double(bytes) / 1e6;
  state.counters["sim_ttft_s"] = sim_s;
}
BENCHMARK(BM_Simulate4kContext1Gbps)
    ->Args({0, 1500})
    ->Args({0, 9000})
    ->Args({1, 1500})
    ->Args({1, 9000})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
