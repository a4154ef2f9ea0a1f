#include "policies/rate.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"
#include "policies/estimate.h"

namespace kvs::policies {

namespace {

class RatePolicy : public Policy {
 public:
  RatePolicy(int k, double safety, bool recompute) : k_(k), safety_(safety), recompute_(recompute) {}

  std::string name() const override { return fmt::format("rate(k={},safety={},recompute={})", k_, safety_, recompute_); }

  Action decide(const StreamState& s) override {
    const ChunkInfo& c = s.chunk(s.next_chunk);
    const size_t n = std::min(c.bytes.size(), c.quality_cost.size());
    if (n == 0) throw Error("policy rate: a chunk without levels");
    // Best quality first: lowest loss increase, then fewer bytes, then the lower index.
    std::vector<int> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      if (c.quality_cost[a] != c.quality_cost[b]) return c.quality_cost[a] < c.quality_cost[b];
      return c.bytes[a] < c.bytes[b];
    });

    const double est = safety_ * harmonic_mean_bps(s.chunk_samples, size_t(k_));
    if (est <= 0) {
      // Nothing measured yet: the fewest bytes (ties: the better quality).
      int l = order[0];
      for (int x : order)
        if (c.bytes[x] < c.bytes[l]) l = x;
      return {l, "no throughput yet: fewest bytes"};
    }
    // Chunks still to deliver: this one and those after it, plus the ones
    // requested but not yet arrived (in_flight > 1).
    uint32_t left = s.total_chunks > s.next_chunk ? s.total_chunks - s.next_chunk : 1;
    for (const Decision& d : s.decisions)
      if (d.level >= 0 && d.arrived_s < 0) ++left;
    const double share = s.slo_s > 0 ? (s.slack_s() - s.first_token_s) / double(left) : 1e18;
    auto cost = [&](int l) {
      const double decode = size_t(l) < c.decode_s.size() ? c.decode_s[l] : 0.0;
      return std::max(8.0 * double(c.bytes[l]) / est, decode);
    };
    for (int l : order)
      if (cost(l) <= share)
        return {l, fmt::format("est {:.1f} Mbit/s: {:.3f} s fits {:.3f} s", est / 1e6, cost(l), share)};
    int quick = order[0];
    for (int l : order)
      if (cost(l) < cost(quick)) quick = l;
    // Recomputing: what it fetches first (a windowed target), then the prefill.
    const double recompute_s =
        c.recompute_s + (s.recompute_fetch_bytes ? std::max(8.0 * double(s.recompute_fetch_bytes) / est,
                                                            s.recompute_fetch_decode_s)
                                                 : 0.0);
    if (recompute_ && recompute_s < cost(quick))
      return {Action::kRecompute, fmt::format("est {:.1f} Mbit/s: none fits {:.3f} s, recompute {:.3f} s < {:.3f} s",
                                              est / 1e6, share, recompute_s, cost(quick))};
    return {quick, fmt::format("est {:.1f} Mbit/s: none fits {:.3f} s, quickest {:.3f} s", est / 1e6, share, cost(quick))};
  }

 private:
  int k_;
  double safety_;
  bool recompute_;
};

}  // namespace

PolicyInfo rate_policy() {
  return {"rate",
          "throughput-based: best level whose time at safety x harmonic mean of the last k chunk throughputs fits "
          "the chunk's share of the remaining SLO budget",
          {ParamSpec::integer("k", 5, "chunks", "chunk throughputs in the harmonic mean (Pensieve's MPC: 5)", 1, 1000),
           ParamSpec::number("safety", 0.9, "", "factor applied to the estimate (dash.js throughputSafetyFactor)", 0.01,
                             1),
           ParamSpec::boolean("recompute", true, "recompute a chunk when no level fits and recomputing is quicker")},
          false,
          [](const ParamValues& v) {
            return std::make_unique<RatePolicy>(v.integer("k"), v.number("safety"), v.flag("recompute"));
          }};
}

}  // namespace kvs::policies
