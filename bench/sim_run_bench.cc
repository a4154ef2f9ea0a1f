// Wall time of simulated KV-cache fetches, in simulated ns-3 events per wall
// second (one iteration each: the runs are long and deterministic).
//
// BM_Simulate4kContext1Gbps: a 4096-token context of a 7B-class target
// (sizes scaled from a small profiled model) at 1 Gbit/s, 20 ms RTT, one
// request, fixed level: 16 chunks of 256 tokens at 2 bits per KV element, so
// the bytes on the wire are 4096 x elements_per_token(target) x 2 / 8.
//
// BM_Simulate1GB: 1 GB of KV (16 chunks of 62.5 MB) over one connection at
// 100 Mbit/s or 10 Gbit/s, 20 ms RTT, MTU 1500, 9000 or 65535, initial
// window 10 or 2 segments. The third argument is the number of chunks: at
// 10 Gbit/s and MTU 1500 only 1 and 2 chunks are run (the cost of the first
// and of a later chunk); the whole GB would take about half an hour.
//
// Counters: events (ns-3 events executed), events_per_s (per wall second),
// payload_MB, sim_ttft_s (simulated TTFT).
#include <benchmark/benchmark.h>

#include <string>

#include "codec/profile.h"
#include "sim/simulation.h"
#include "traces/formats.h"
#include "traces/transforms.h"

namespace {

kvs::codec::Profile bench_profile(uint32_t chunks, uint32_t chunk_tokens, uint64_t chunk_bytes) {
  kvs::codec::Profile p;
  p.model.name = "tiny";
  p.model.kv = {8, 2, 64};
  p.model.hidden_size = 256;
  p.model.intermediate_size = 688;
  p.model.num_attention_heads = 4;
  p.model.vocab_size = 256;
  p.model.parameters = 12'000'000;
  p.device = "bench";
  p.chunk_tokens = chunk_tokens;
  kvs::codec::CodecProfile c;
  c.codec = "c";
  c.level_names = {"2bit"};
  kvs::codec::ContextProfile ctx;
  ctx.id = "ctx0";
  ctx.tokens = chunks * chunk_tokens;
  for (uint32_t i = 0; i < chunks; ++i) {
    kvs::codec::ChunkProfile ch;
    ch.token_begin = uint64_t(i) * chunk_tokens;
    ch.tokens = chunk_tokens;
    kvs::codec::ChunkLevel lv;
    lv.bytes = chunk_bytes ? chunk_bytes : uint64_t(chunk_tokens) * p.model.kv.elements_per_token() * 2 / 8;
    lv.decode_s = 0.0001;
    ch.levels.push_back(lv);
    ctx.chunks.push_back(ch);
  }
  c.contexts.push_back(ctx);
  p.codecs.push_back(c);
  return p;
}

void run(benchmark::State& state, const kvs::sim::SimConfig& config, const kvs::codec::Profile& profile,
         const std::string& label) {
  uint64_t events = 0, bytes = 0;
  double sim_s = 0;
  for (auto _ : state) {
    const auto out = kvs::sim::simulate(config, profile);
    events = out.result.events;
    bytes = out.result.requests[0].payload_bytes;
    sim_s = out.result.requests[0].ttft_s;
    benchmark::DoNotOptimize(out.events_jsonl.data());
  }
  state.SetLabel(label);
  state.counters["events"] = double(events);
  state.counters["events_per_s"] = benchmark::Counter(double(events) * double(state.iterations()),
                                                      benchmark::Counter::kIsRate);
  state.counters["payload_MB"] = double(bytes) / 1e6;
  state.counters["sim_ttft_s"] = sim_s;
}

// Args: target (0 = mistral-7b, 1 = llama-7b), MTU bytes, initial window
// in segments (2 jumbo segments carry about what 10 standard ones do).
void BM_Simulate4kContext1Gbps(benchmark::State& state) {
  const auto profile = bench_profile(16, 256, 0);
  kvs::sim::SimConfig config;
  config.codec = "c";
  config.gpu.decode = "profile";  // the bench profile's decode seconds, as before the assumed GPU decode
  config.target = state.range(0) == 0 ? "mistral-7b" : "llama-7b";
  config.link.rate_mbps = 1000;
  config.link.rtt_ms = 20;
  config.link.mtu_bytes = uint32_t(state.range(1));
  config.link.initial_cwnd_segments = uint32_t(state.range(2));
  run(state, config, profile,
      config.target + " MTU " + std::to_string(state.range(1)) + " IW " + std::to_string(state.range(2)));
}
BENCHMARK(BM_Simulate4kContext1Gbps)
    ->Args({0, 1500, 10})
    ->Args({0, 9000, 10})
    ->Args({0, 9000, 2})
    ->Args({1, 1500, 10})
    ->Args({1, 9000, 10})
    ->Args({1, 9000, 2})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1);

// BM_SimulateNetwork: BM_Simulate4kContext1Gbps/0/1500/10's run under each
// network model (0 = ns3, 1 = fluid, 2 = pensieve), on a constant link and on
// a shipped trace (1: pensieve-hsdpa/norway_bus_1 scaled to a mean of about
// 1 Gbit/s); the ratio of the CPU times is the models' speed-up. Third
// argument 1: ns-3 on the dumbbell (`fold_access_links: false`; the default
// emulates the access links, sim/access_links.h).
void BM_SimulateNetwork(benchmark::State& state) {
  static const char* const kModels[] = {"ns3", "fluid", "pensieve"};
  const auto profile = bench_profile(16, 256, 0);
  kvs::sim::SimConfig config;
  config.codec = "c";
  config.gpu.decode = "profile";
  config.target = "mistral-7b";
  config.network = kModels[state.range(0)];
  config.link.rate_mbps = 1000;
  config.link.rtt_ms = 20;
  config.link.fold_access_links = state.range(2) == 0;
  std::string label = config.network + (config.link.fold_access_links ? "" : " dumbbell") + " 1 Gbit/s";
  if (state.range(1) == 1) {
    config.link.trace = kvs::traces::scale(
        kvs::traces::load_trace(std::string(KVSTREAM_SOURCE_DIR) + "/traces/data/pensieve-hsdpa/norway_bus_1"), 343.5);
    label = config.network + (config.link.fold_access_links ? "" : " dumbbell") + " norway_bus_1 x 343.5";
  }
  run(state, config, profile, label);
}
BENCHMARK(BM_SimulateNetwork)
    ->Args({0, 0, 0})
    ->Args({0, 0, 1})
    ->Args({1, 0, 0})
    ->Args({2, 0, 0})
    ->Args({0, 1, 0})
    ->Args({0, 1, 1})
    ->Args({1, 1, 0})
    ->Unit(benchmark::kMillisecond);

// Args: rate in Mbit/s, MTU bytes, chunks of 62.5 MB, initial window.
void BM_Simulate1GB(benchmark::State& state) {
  const auto chunks = uint32_t(state.range(2));
  const auto profile = bench_profile(chunks, 256, 62'500'000);
  kvs::sim::SimConfig config;
  config.codec = "c";
  config.gpu.decode = "profile";  // the bench profile's decode seconds, as before the assumed GPU decode
  config.link.rate_mbps = double(state.range(0));
  config.link.rtt_ms = 20;
  config.link.mtu_bytes = uint32_t(state.range(1));
  config.link.initial_cwnd_segments = uint32_t(state.range(3));
  config.max_sim_s = 86400;  // the most a scenario allows (a day)
  run(state, config, profile,
      std::to_string(chunks) + " x 62.5 MB at " + std::to_string(state.range(0)) + " Mbit/s MTU " +
          std::to_string(state.range(1)) + " IW " + std::to_string(state.range(3)));
}
BENCHMARK(BM_Simulate1GB)
    ->Args({10000, 65535, 16, 10})
    ->Args({10000, 65535, 16, 2})
    ->Args({10000, 9000, 16, 10})
    ->Args({10000, 9000, 16, 2})
    ->Args({10000, 1500, 1, 10})
    ->Args({10000, 1500, 2, 10})
    ->Args({100, 9000, 16, 10})
    ->Args({100, 9000, 16, 2})
    ->Args({100, 1500, 16, 10})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
