#include "policies/mpc.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <string>

#include <fmt/core.h>

#include "base/error.h"
#include "policies/estimate.h"

namespace kvs::policies {

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr double kTie = 1e-12;

// Levels of the codec in `s`, after checking that every remaining chunk
// describes that many levels.
uint32_t checked_levels(const StreamState& s, const char* policy) {
  if (!s.chunks || s.next_chunk >= s.total_chunks || s.total_chunks > s.chunks->size())
    throw Error(fmt::format("policy {}: no chunk {} to decide ({} chunks)", policy, s.next_chunk, s.total_chunks));
  const uint32_t L = s.levels ? s.levels : uint32_t(s.chunk(s.next_chunk).bytes.size());
  if (L == 0) throw Error(fmt::format("policy {}: the codec has no level", policy));
  for (uint32_t c = s.next_chunk; c < s.total_chunks; ++c) {
    const ChunkInfo& ch = s.chunk(c);
    if (ch.bytes.size() < L || ch.decode_s.size() < L || ch.quality_cost.size() < L)
      throw Error(fmt::format("policy {}: chunk {} describes {}/{}/{} levels (bytes/decode/loss), the codec has {}",
                              policy, c, ch.bytes.size(), ch.decode_s.size(), ch.quality_cost.size(), L));
  }
  return L;
}

// What a run of chunks does to the pipeline's (network free, GPU free) times,
// as a max-plus affine map: net' = net + T, gpu' = max(gpu + a, net + b).
// Pipeline::fetch(t, d) is {t, d, t + d}, Pipeline::recompute(r) is {0, r, -inf};
// composing the maps gives what running Pipeline chunk by chunk gives (up to
// rounding), in O(1) per sequence instead of O(chunks beyond the horizon).
struct RunMap {
  double T = 0, a = 0, b = kNegInf;
  static RunMap fetch(double t, double d) { return {t, d, t + d}; }
  static RunMap recompute(double r) { return {0, r, kNegInf}; }
  RunMap then(const RunMap& g) const { return {T + g.T, a + g.a, std::max(b + g.a, T + g.b)}; }
  void apply(Pipeline& p) const {
    const double n = p.net_free_s;
    p.net_free_s = n + T;
    p.gpu_free_s = std::max(p.gpu_free_s + a, n + b);
  }
};

// The fewest-bytes level of a chunk (ties: less decode, then lower loss, then lower level).
int fewest_bytes_level(const ChunkInfo& ch, uint32_t L) {
  int best = 0;
  for (uint32_t l = 1; l < L; ++l) {
    const auto key = [&](uint32_t k) { return std::make_tuple(ch.bytes[k], ch.decode_s[k], ch.quality_cost[k]); };
    if (key(l) < key(uint32_t(best))) best = int(l);
  }
  return best;
}

class Search {
 public:
  Search(const StreamState& s, const MpcConfig& cfg, double rate_bps, uint32_t L)
      : s_(s), L_(int(L)), rate_(rate_bps), mu_(cfg.mu), tail_last_(!cfg.tail_coarsest) {
    first_ = s.next_chunk;
    H_ = int(std::min<uint32_t>(uint32_t(std::max(cfg.horizon, 1)), s.total_chunks - first_));
    deadline_ = deadline_s(s);
    lambda_ = mpc_lambda_per_s(s, cfg);
    // A sliding-window target: recomputing a chunk first fetches what its
    // windows read of the chunks fetched before it (policies::recompute_fetch),
    // which depends on their levels: this request's decisions, then the sequence.
    for (uint32_t c = first_; c < s.total_chunks && !windowed_; ++c) windowed_ = !s.chunk(c).window_reads.empty();
    if (windowed_) {
      decided_.assign(first_, Action::kRecompute);
      for (const Decision& d : s.decisions)
        if (d.chunk < first_) decided_[d.chunk] = d.level;
    }
    const uint32_t tail_begin = first_ + uint32_t(H_);
    if (tail_begin < s.total_chunks) {
      if (tail_last_) {
        tail_.assign(size_t(L_) + 1, RunMap{});
        tail_quality_.assign(size_t(L_) + 1, 0.0);
        for (int act = 0; act <= L_; ++act)
          for (uint32_t c = tail_begin; c < s.total_chunks; ++c) {
            tail_[size_t(act)] = tail_[size_t(act)].then(step_map(c, act));
            tail_quality_[size_t(act)] += quality(c, act);
          }
        // (A sliding-window target's recompute reads nothing past a recompute:
        // a tail recomputed after the horizon's recompute fetches nothing first.)
      } else {
        tail_.assign(1, RunMap{});
        for (uint32_t c = tail_begin; c < s.total_chunks; ++c)
          tail_[0] = tail_[0].then(step_map(c, fewest_bytes_level(s.chunk(c), L)));
      }
    }
    // The quality of the chunk decided last, for the smoothness term.
    if (!s.decisions.empty() && s.decisions.back().chunk + 1 == first_ && s.decisions.back().chunk < s.total_chunks) {
      const Decision& d = s.decisions.back();
      prev_quality_ = d.level >= 0 && d.level < L_ ? s.chunk(d.chunk).quality_cost[size_t(d.level)] : 0.0;
      has_prev_ = true;
    }
  }

  MpcPlan run() {
    seq_.assign(size_t(H_), 0);
    dfs(0, Pipeline::after_decided(s_, rate_), 0.0, 0.0, prev_quality_, has_prev_, 0.0);
    MpcPlan plan;
    for (int a : best_seq_) plan.actions.push_back(a == L_ ? Action::kRecompute : a);
    plan.objective = best_obj_;
    plan.ttft_end_s = best_end_;
    plan.lambda_per_s = lambda_;
    return plan;
  }

 private:
  double quality(uint32_t c, int act) const { return act < L_ ? s_.chunk(c).quality_cost[size_t(act)] : 0.0; }
  RunMap step_map(uint32_t c, int act) const {
    const ChunkInfo& ch = s_.chunk(c);
    if (act >= L_) return RunMap::recompute(ch.recompute_s);
    return RunMap::fetch(fetch_s(ch.bytes[size_t(act)], rate_, 0.0), ch.decode_s[size_t(act)]);
  }
  // Runs action `act` on chunk c; returns the quality cost a recompute takes
  // on from what its windows read (ChunkInfo::window_reads).
  double step(Pipeline& p, uint32_t c, int act) const {
    const ChunkInfo& ch = s_.chunk(c);
    if (act < L_) {
      p.fetch(fetch_s(ch.bytes[size_t(act)], rate_, 0.0), ch.decode_s[size_t(act)]);
      return 0;
    }
    if (c == s_.next_chunk) {  // what the simulator says it fetches
      p.recompute_next(s_, rate_);
      return s_.recompute_fetch_quality_cost;
    }
    const RecomputeFetch f = windowed_ ? window_fetch(c) : RecomputeFetch{};
    const uint64_t bytes = uint64_t(std::llround(f.bytes));
    if (bytes == 0)
      p.recompute(ch.recompute_s);
    else
      p.fetch(fetch_s(bytes, rate_, 0.0), f.decode_s + ch.recompute_s);
    return f.quality_cost;
  }
  // What recomputing chunk c fetches first, after the decisions and seq_ up to c.
  RecomputeFetch window_fetch(uint32_t c) const {
    return recompute_fetch(s_.chunk(c), c, [&](uint32_t j) {
      if (j < first_) return decided_[j];
      const int a = seq_[j - first_];
      return a >= L_ ? Action::kRecompute : a;
    });
  }

  // `first_done`: when the network and the GPU are both done with the first action.
  void dfs(int depth, const Pipeline& p, double qsum, double smooth, double prev_q, bool has_prev,
           double first_done) {
    if (depth == H_) return leaf(p, qsum, smooth, first_done);
    const uint32_t c = first_ + uint32_t(depth);
    for (int act = 0; act <= L_; ++act) {
      Pipeline next = p;
      const double q = quality(c, act) + step(next, c, act);
      seq_[size_t(depth)] = act;
      dfs(depth + 1, next, qsum + q, smooth + (has_prev ? std::fabs(q - prev_q) : 0.0), q, true,
          depth == 0 ? std::max(next.net_free_s, next.gpu_free_s) : first_done);
    }
  }

  void leaf(Pipeline p, double qsum, double smooth, double first_done) {
    const int last = seq_.back();
    if (!tail_.empty()) {
      tail_[tail_last_ ? size_t(last) : 0].apply(p);
      if (tail_last_) qsum += tail_quality_[size_t(last)];
    }
    const double end = p.ttft_end_s(s_.first_token_s);
    const double overrun = std::max(0.0, end - deadline_);
    const double obj = -qsum - lambda_ * overrun - mu_ * smooth;
    bool better = best_seq_.empty() || obj > best_obj_ + kTie;
    if (!better && obj >= best_obj_ - kTie)  // a tie: the earlier TTFT, then the lighter first action
      better = end < best_end_ - kTie || (end <= best_end_ + kTie && first_done < best_first_done_ - kTie);
    if (better) {
      best_obj_ = obj;
      best_end_ = end;
      best_first_done_ = first_done;
      best_seq_ = seq_;
    }
  }

  const StreamState& s_;
  int L_;
  double rate_, mu_;
  bool tail_last_;
  uint32_t first_ = 0;
  int H_ = 1;
  double deadline_ = 0, lambda_ = 0;
  std::vector<RunMap> tail_;          // per action (tail = last) or one map (tail = coarsest); empty: no tail
  std::vector<double> tail_quality_;  // per action (tail = last)
  double prev_quality_ = 0;
  bool has_prev_ = false;
  bool windowed_ = false;       // some chunk to plan has window reads
  std::vector<int> decided_;    // windowed_: the action on each chunk before first_
  std::vector<int> seq_, best_seq_;
  double best_obj_ = 0, best_end_ = 0, best_first_done_ = 0;
};

std::string action_text(int a) { return a == Action::kRecompute ? "R" : std::to_string(a); }

class MpcPolicy : public Policy {
 public:
  MpcPolicy(const MpcConfig& cfg, bool robust) : cfg_(cfg), robust_(robust) {}

  std::string name() const override {
    return fmt::format("{}(horizon={},window={},lambda={},mu={},initial_mbps={},tail={})",
                       robust_ ? "robust-mpc" : "mpc", cfg_.horizon, cfg_.window, cfg_.lambda, cfg_.mu,
                       cfg_.initial_mbps, cfg_.tail_coarsest ? "coarsest" : "last");
  }

  Action decide(const StreamState& s) override {
    const char* policy = robust_ ? "robust-mpc" : "mpc";
    checked_levels(s, policy);
    update_history(s.chunk_samples);
    const double measured = harmonic_mean_bps(s.chunk_samples, size_t(cfg_.window));
    const double est = measured > 0 ? measured : cfg_.initial_mbps * 1e6;
    double rate = est, max_error = 0;
    if (robust_ && measured > 0) {
      const size_t n = std::min(errors_.size(), size_t(cfg_.window));
      for (size_t i = errors_.size() - n; i < errors_.size(); ++i) max_error = std::max(max_error, errors_[i]);
      rate = est / (1.0 + max_error);
    }
    const MpcPlan plan = mpc_plan(s, cfg_, rate);
    std::string seq;
    for (size_t i = 0; i < plan.actions.size(); ++i) seq += (i ? "," : "") + action_text(plan.actions[i]);
    std::string est_text = measured > 0 ? fmt::format("est {:.1f} Mbit/s", est / 1e6)
                                        : fmt::format("initial {:.1f} Mbit/s", est / 1e6);
    if (robust_ && measured > 0) est_text += fmt::format(" / (1+{:.3f}) = {:.1f}", max_error, rate / 1e6);
    return {plan.actions.front(),
            fmt::format("{}, best seq {} obj {:.4g}, ttft {:.3f} s", est_text, seq, plan.objective, plan.ttft_end_s)};
  }

 private:
  // Appends the prediction error of every chunk sample not seen yet.
  void update_history(const std::vector<ThroughputSample>& samples) {
    if (samples.size() < seen_) seen_ = 0, rates_.clear(), errors_.clear();  // a new request
    for (; seen_ < samples.size(); ++seen_) {
      const double r = samples[seen_].rate_bps();
      if (r <= 0) continue;  // zeros skipped, as in the estimate
      // The undiscounted estimate made before this sample: harmonic mean of the last `window` rates.
      const size_t n = std::min(rates_.size(), size_t(cfg_.window));
      double inv = 0;
      for (size_t i = rates_.size() - n; i < rates_.size(); ++i) inv += 1.0 / rates_[i];
      errors_.push_back(n ? std::fabs(double(n) / inv - r) / r : 0.0);
      rates_.push_back(r);
    }
  }

  MpcConfig cfg_;
  bool robust_;
  size_t seen_ = 0;
  std::vector<double> rates_;   // positive chunk-sample rates, oldest first
  std::vector<double> errors_;  // one per positive sample
};

std::vector<ParamSpec> mpc_params() {
  const MpcConfig d;
  return {
      ParamSpec::integer("horizon", d.horizon, "chunks", "chunks planned ahead (every sequence is enumerated)", 1, 8),
      ParamSpec::integer("window", d.window, "samples",
                         "chunk samples in the harmonic-mean estimate (and prediction errors for robust-mpc)", 1,
                         1000),
      ParamSpec::number("lambda", d.lambda, "ranges/s",
                        "SLO overrun weight: one second late costs lambda x the request's whole quality range", 0,
                        1e9),
      ParamSpec::number("mu", d.mu, "", "smoothness weight on |quality_cost change| between consecutive chunks", 0,
                        1e9),
      ParamSpec::number("initial_mbps", d.initial_mbps, "Mbit/s", "throughput assumed before the first chunk sample",
                        1e-3, 1e9),
      ParamSpec::choice("tail", "last", {"last", "coarsest"},
                        "chunks beyond the horizon: at the horizon's last action (time and quality) or at their "
                        "fewest-bytes level (time)"),
  };
}

MpcConfig mpc_config(const ParamValues& v) {
  MpcConfig c;
  c.horizon = v.integer("horizon");
  c.window = v.integer("window");
  c.lambda = v.number("lambda");
  c.mu = v.number("mu");
  c.initial_mbps = v.number("initial_mbps");
  c.tail_coarsest = v.text("tail") == "coarsest";
  return c;
}

}  // namespace

double mpc_lambda_per_s(const StreamState& s, const MpcConfig& cfg) {
  const uint32_t L = checked_levels(s, "mpc");
  double range = 0;  // the whole request's, so that the weight stays the same from chunk to chunk
  for (uint32_t c = 0; c < s.total_chunks; ++c) {
    double worst = 0;
    for (uint32_t l = 0; l < L; ++l) worst = std::max(worst, s.chunk(c).quality_cost[l]);
    range += worst;
  }
  return cfg.lambda * (range > 0 ? range : 1.0);
}

MpcPlan mpc_plan(const StreamState& s, const MpcConfig& cfg, double rate_bps) {
  const uint32_t L = checked_levels(s, "mpc");
  return Search(s, cfg, rate_bps, L).run();
}

PolicyInfo mpc_policy() {
  return {"mpc",
          "model-predictive control (Pensieve mpc): enumerate every level/recompute sequence over a horizon at the "
          "harmonic-mean throughput; maximise -loss - lambda x SLO overrun",
          mpc_params(), false,
          [](const ParamValues& v) { return std::make_unique<MpcPolicy>(mpc_config(v), false); }};
}

PolicyInfo robust_mpc_policy() {
  return {"robust-mpc",
          "robust MPC (Pensieve robust_mpc): as mpc, with the throughput divided by 1 + the largest recent prediction "
          "error",
          mpc_params(), false,
          [](const ParamValues& v) { return std::make_unique<MpcPolicy>(mpc_config(v), true); }};
}

}  // namespace kvs::policies
