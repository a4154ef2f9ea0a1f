// Planning time of the offline optimum (policies/oracle.h), the one policy
// whose decisions cost more than microseconds.
//
// BM_OraclePlan/reach: 128 chunks of 8 levels on a 2 Gbit/s link, 20 ms RTT,
// SLO 3 s; the first 100 chunks read by no layer of the query (0 bytes and no
// quality cost of their own), every chunk's recompute reading the `reach`
// chunks before it (a sliding-window target, ChunkInfo::window_reads; 0: full
// attention). The search keeps states apart by what they add to later
// recomputes, so its frontiers grow with the reach; the default bounds
// (max_states 8000, bound_states 256) apply. One iteration per run: a plan is
// deterministic.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "policies/oracle.h"
#include "policies/policy.h"

namespace {

using namespace kvs::policies;

std::vector<ChunkInfo> windowed_chunks(uint32_t n, uint32_t reach, uint32_t unread) {
  std::mt19937_64 rng(7);
  auto uniform = [&](double a, double b) { return a + (b - a) * double(rng() >> 11) * 0x1p-53; };
  std::vector<ChunkInfo> chunks(n);
  for (uint32_t c = 0; c < n; ++c) {
    double bytes = uniform(4e6, 8e6), loss = uniform(0, 0.001);
    for (int l = 0; l < 8; ++l) {
      chunks[c].bytes.push_back(c < unread ? 0 : uint64_t(bytes));
      chunks[c].decode_s.push_back(c < unread ? 0 : 0.002);
      chunks[c].quality_cost.push_back(c < unread ? 0 : loss);
      bytes *= 0.75, loss += uniform(0.0005, 0.003);
    }
    chunks[c].recompute_s = 0.02;
  }
  for (uint32_t c = 1; c < n; ++c)
    for (uint32_t k = 0; k < std::min(c, reach); ++k) {
      ChunkInfo::WindowRead r;
      const double share = double(reach - k) / reach;  // nearer chunks: more of their layers read
      for (int l = 0; l < 8; ++l) {
        r.bytes.push_back(share * 6e6 * std::pow(0.75, l));
        r.decode_s.push_back(share * 0.002);
        if (c - 1 - k < unread) r.quality_cost.push_back(uniform(0, 0.001) + 0.001 * l);
      }
      r.layers = 1;
      chunks[c].window_reads.push_back(r);
    }
  return chunks;
}

void BM_OraclePlan(benchmark::State& state) {
  const uint32_t reach = uint32_t(state.range(0));
  const std::vector<ChunkInfo> chunks = windowed_chunks(128, reach, 100);
  const PolicyInfo info = oracle_policy();
  std::string reason;
  for (auto _ : state) {
    auto oracle = info.make(parse_params(info.name, info.params, {}));
    NetworkFuture link;
    link.rate_bps = 2e9;
    link.rtt_s = 0.02;
    oracle->see_future(link);
    StreamState s;
    s.slo_s = 3;
    s.total_chunks = uint32_t(chunks.size());
    s.levels = 8;
    s.chunks = &chunks;
    s.first_token_s = 0.02;
    reason = oracle->decide(s).reason;
  }
  state.SetLabel(reason);
}
BENCHMARK(BM_OraclePlan)->Arg(0)->Arg(3)->Arg(16)->Unit(benchmark::kMillisecond)->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
