#include "policies/cachegen.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"
#include "policies/estimate.h"

namespace kvs::policies {

namespace {

constexpr double kNever = 1e18;

// The levels of a chunk from best to worst quality: lowest loss increase
// first, then fewer bytes, then the lower index (levels need not be monotone).
std::vector<int> levels_by_quality(const ChunkInfo& c, const std::string& policy) {
  const size_t n = std::min(c.bytes.size(), c.quality_cost.size());
  if (n == 0) throw Error(fmt::format("policy {}: a chunk without levels", policy));
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    if (c.quality_cost[a] != c.quality_cost[b]) return c.quality_cost[a] < c.quality_cost[b];
    return c.bytes[a] < c.bytes[b];
  });
  return order;
}

double decode_of(const ChunkInfo& c, int level) { return size_t(level) < c.decode_s.size() ? c.decode_s[level] : 0.0; }

double mbps(double bps) { return bps / 1e6; }

// ---- cachegen-code ------------------------------------------------------------

// config_selection's number of chunks: round(context tokens / chunk size), with
// Python's round (half to even) and the first chunk's tokens as the chunk
// size; at least 1 (the code divides by zero there). The chunk count when the
// chunks carry no token counts.
double code_chunk_count(const StreamState& s) {
  const uint64_t size = s.chunk(0).tokens;
  if (size == 0) return double(s.total_chunks);
  uint64_t tokens = 0;
  for (uint32_t c = 0; c < s.total_chunks; ++c) tokens += s.chunk(c).tokens;
  const double x = double(tokens) / double(size);
  double r = std::floor(x);
  const double frac = x - r;
  if (frac > 0.5 || (frac == 0.5 && std::fmod(r, 2.0) != 0)) r += 1;  // half to even
  return std::max(1.0, r);
}

class CacheGenCodePolicy : public Policy {
 public:
  CacheGenCodePolicy(std::string bw, double charge_s) : bw_(std::move(bw)), charge_s_(charge_s) {}

  std::string name() const override {
    return fmt::format("cachegen-code(oracle,bw={},recompute_charge={})", bw_, charge_s_);
  }

  void see_future(const NetworkFuture& net) override {
    net_ = net;
    have_future_ = true;
  }

  Action decide(const StreamState& s) override {
    if (!have_future_)
      throw Error("policy cachegen-code: it reads the link's future, but the simulator did not hand it over");
    const ChunkInfo& c = s.chunk(s.next_chunk);
    // run_adaptation.py's budget: SLO / number of chunks, the same for every
    // chunk whatever the ones before it took; no SLO: no budget.
    const double budget = s.slo_s > 0 && s.total_chunks ? s.slo_s / code_chunk_count(s) : kNever;
    total_chunks_ = s.total_chunks;
    decided_ = std::max(decided_, s.next_chunk + 1);
    for (int l : levels_by_quality(c, "cachegen-code")) {
      const double t = transfer_s(s.now_s, c.bytes[l]);
      if (t < budget) {  // strict, as in config_selection
        ttft_s_ += t;
        return {l, fmt::format("true bw {:.1f} Mbit/s: {:.3f} s < budget {:.3f} s", mbps(8.0 * double(c.bytes[l]) / t),
                               t, budget)};
      }
    }
    ttft_s_ += charge_s_;
    return {Action::kRecompute, fmt::format("no level under budget {:.3f} s: recompute (charged {} s)", budget, charge_s_)};
  }

  double predicted_ttft_s() const override { return total_chunks_ && decided_ >= total_chunks_ ? ttft_s_ : -1.0; }

 private:
  // The chunk's transfer time at its true bandwidth, no RTT (as the code).
  double transfer_s(double now_s, uint64_t bytes) const {
    if (bytes == 0) return 0;
    if (bw_ == "mean") return trace_transfer_s(net_, now_s, bytes);
    // "start": the rate when the chunk is requested, held for the whole chunk
    // (the code's one bandwidth value per chunk).
    const double share = net_.payload_share > 0 ? net_.payload_share : 1.0;
    const double rate = (net_.trace ? net_.trace->rate_at(now_s) : net_.rate_bps) * share;
    return rate > 0 ? 8.0 * double(bytes) / rate : kNever;
  }

  std::string bw_;
  double charge_s_;
  NetworkFuture net_;
  bool have_future_ = false;
  double ttft_s_ = 0;
  uint32_t decided_ = 0, total_chunks_ = 0;
};

// ---- cachegen (the paper's online rule) -----------------------------------------

class CacheGenPolicy : public Policy {
 public:
  CacheGenPolicy(int k, std::string first, std::string timing, bool recompute)
      : k_(k), first_(std::move(first)), timing_(std::move(timing)), recompute_(recompute) {}

  std::string name() const override {
    return fmt::format("cachegen(k={},first={},timing={},recompute={})", k_, first_, timing_, recompute_);
  }

  Action decide(const StreamState& s) override {
    const ChunkInfo& c = s.chunk(s.next_chunk);
    const std::vector<int> order = levels_by_quality(c, "cachegen");
    const double est = harmonic_mean_bps(s.chunk_samples, size_t(k_));
    if (est <= 0) {
      // Nothing measured yet (first chunk, or only recomputed ones so far).
      const size_t rank = first_ == "finest" ? 0 : first_ == "coarsest" ? order.size() - 1 : (order.size() - 1) / 2;
      return {order[rank], fmt::format("no throughput yet: {} level", first_)};
    }
    const double deadline = deadline_s(s);

    // The timeline now: the network and the GPU, with the chunks already
    // requested but not yet arrived (in_flight > 1) and those decided behind
    // them still to come.
    const Pipeline base = Pipeline::after_decided(s, est, timing_ == "sequential");
    // Expected TTFT when this chunk and all after it are fetched at `level`
    // (this chunk recomputed instead when `recompute_this`).
    auto plan_end = [&](int level, bool recompute_this) {
      Pipeline p = base;
      for (uint32_t j = s.next_chunk; j < s.total_chunks; ++j) {
        const ChunkInfo& cj = s.chunk(j);
        if (j == s.next_chunk && recompute_this)
          p.recompute_next(s, est);
        else
          p.fetch(8.0 * double(cj.bytes[level]) / est, decode_of(cj, level));
      }
      return p.ttft_end_s(s.first_token_s);
    };

    int chosen = -1;
    double chosen_end = 0;
    for (int l : order) {
      const double end = plan_end(l, false);
      if (end <= deadline) {
        chosen = l, chosen_end = end;
        break;
      }
    }
    const bool fits = chosen >= 0;
    if (!fits) {
      for (int l : order) {  // the soonest; ties go to the better quality
        const double end = plan_end(l, false);
        if (chosen < 0 || end < chosen_end) chosen = l, chosen_end = end;
      }
    }
    const double start = s.now_s - s.elapsed_s;
    if (recompute_) {
      const double rc_end = plan_end(chosen, true);
      if (rc_end < chosen_end)
        return {Action::kRecompute, fmt::format("est {:.1f} Mbit/s: recompute ends {:.3f} s < level {} {:.3f} s",
                                                mbps(est), rc_end - start, chosen, chosen_end - start)};
    }
    return {chosen, fmt::format("est {:.1f} Mbit/s: ends {:.3f} s{}", mbps(est), chosen_end - start,
                                fits ? "" : " (none fits the SLO: soonest)")};
  }

 private:
  int k_;
  std::string first_, timing_;
  bool recompute_;
};

}  // namespace

double trace_transfer_s(const NetworkFuture& net, double start_s, uint64_t payload_bytes) {
  if (payload_bytes == 0) return 0;
  const double share = net.payload_share > 0 ? net.payload_share : 1.0;
  const double bits = 8.0 * double(payload_bytes) / share;  // on the wire
  if (!net.trace) return net.rate_bps > 0 ? bits / net.rate_bps : kNever;
  const double t0 = std::max(start_s, 0.0);
  const double t1 = net.trace->time_to_deliver(t0, bits);
  return std::isfinite(t1) ? t1 - t0 : kNever;
}

PolicyInfo cachegen_code_policy() {
  return {"cachegen-code",
          "CacheGen's released code (src/utils.py config_selection): best level whose transfer at the chunk's true "
          "bandwidth (read from the trace) is under SLO/chunks, else recompute; an oracle-informed baseline",
          {ParamSpec::choice("bw", "mean", {"mean", "start"},
                             "true bandwidth of a chunk: mean = the trace over its transfer from the decision time, "
                             "start = the trace's rate at the decision time"),
           ParamSpec::number("recompute_charge", 0.2, "s",
                             "TTFT the code charges a recomputed chunk in its own TTFT figure (chunk_delay)", 0, 1e6)},
          true,
          [](const ParamValues& v) {
            return std::make_unique<CacheGenCodePolicy>(v.text("bw"), v.number("recompute_charge"));
          }};
}

PolicyInfo cachegen_policy() {
  return {"cachegen",
          "CacheGen's online rule (paper 5.3): best level whose remaining chunks are expected to finish within the "
          "SLO at the previous chunk's throughput; recompute a chunk from text when that finishes sooner",
          {ParamSpec::integer("k", 1, "chunks",
                              "chunk throughputs averaged (harmonic mean) for the estimate; 1 = the previous chunk", 1,
                              1000),
           ParamSpec::choice("first", "medium", {"medium", "finest", "coarsest"},
                             "level while nothing has been measured (by quality rank of the chunk's levels)"),
           ParamSpec::choice("timing", "pipelined", {"pipelined", "sequential"},
                             "timeline of the expectation: network and GPU overlapped, or one after another"),
           ParamSpec::boolean("recompute", true, "recompute a chunk from text when that is expected to finish sooner")},
          false,
          [](const ParamValues& v) {
            return std::make_unique<CacheGenPolicy>(v.integer("k"), v.text("first"), v.text("timing"),
                                                    v.flag("recompute"));
          }};
}

}  // namespace kvs::policies
