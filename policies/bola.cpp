#include "policies/bola.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include <fmt/core.h>

#include "base/error.h"
#include "policies/estimate.h"

namespace kvs::policies {

namespace {

struct BolaConfig {
  double min_slack = 0.1;     // x SLO (sabre minimum_buffer 10 s)
  double target_slack = 0.25; // x SLO (sabre max buffer 25 s)
  int window = 5;
  double initial_mbps = 100;
  bool placeholder = true;
  bool ibr = true;
};

constexpr double kPerLevel = 0.2;          // sabre: 2 s per level over a 10 s minimum buffer
constexpr double kIbrSafetyInit = 0.9;     // sabre low_buffer_safety_factor_init
constexpr double kIbrSafetyFloor = 0.5;    // sabre low_buffer_safety_factor

class BolaPolicy : public Policy {
 public:
  explicit BolaPolicy(const BolaConfig& cfg) : cfg_(cfg) {}

  std::string name() const override {
    return fmt::format("bola(min_slack={},target_slack={},window={},initial_mbps={},placeholder={},ibr={})",
                       cfg_.min_slack, cfg_.target_slack, cfg_.window, cfg_.initial_mbps, cfg_.placeholder,
                       cfg_.ibr);
  }

  Action decide(const StreamState& s) override {
    if (!s.chunks || s.next_chunk >= s.total_chunks || s.total_chunks > s.chunks->size())
      throw Error(fmt::format("policy bola: no chunk {} to decide ({} chunks)", s.next_chunk, s.total_chunks));
    const uint32_t L = s.levels ? s.levels : uint32_t(s.chunk(s.next_chunk).bytes.size());
    if (L == 0) throw Error("policy bola: the codec has no level");
    std::vector<int> fewest(s.total_chunks, 0);  // per later chunk: its fewest-bytes level
    for (uint32_t c = s.next_chunk; c < s.total_chunks; ++c) {
      const ChunkInfo& ch = s.chunk(c);
      if (ch.bytes.size() < L || ch.decode_s.size() < L || ch.quality_cost.size() < L)
        throw Error(fmt::format("policy bola: chunk {} describes {}/{}/{} levels (bytes/decode/loss), the codec has {}",
                                c, ch.bytes.size(), ch.decode_s.size(), ch.quality_cost.size(), L));
      fewest[c] = bola_ladder(ch, L).front();
    }
    const ChunkInfo& ch = s.chunk(s.next_chunk);
    const std::vector<int> ladder = bola_ladder(ch, L);
    const int top = int(ladder.size()) - 1;
    if (s.slo_s <= 0) return {ladder.back(), "no SLO: finest"};

    const double measured = harmonic_mean_bps(s.chunk_samples, size_t(cfg_.window));
    const double rate = measured > 0 ? measured : cfg_.initial_mbps * 1e6;
    const std::string est = fmt::format("{} {:.1f} Mbit/s", measured > 0 ? "est" : "initial", rate / 1e6);

    // Predicted TTFT with this chunk at `action` and every later chunk at its fewest bytes.
    auto ttft_with = [&](int action) {
      Pipeline p = Pipeline::after_decided(s, rate);
      for (uint32_t c = s.next_chunk; c < s.total_chunks; ++c) {
        const int a = c == s.next_chunk ? action : fewest[c];
        const ChunkInfo& k = s.chunk(c);
        if (a == Action::kRecompute)
          c == s.next_chunk ? p.recompute_next(s, rate) : p.recompute(k.recompute_s);
        else
          p.fetch(fetch_s(k.bytes[size_t(a)], rate, 0.0), k.decode_s[size_t(a)]);
      }
      return p.ttft_end_s(s.first_token_s);
    };
    const double base = ttft_with(ladder.front());
    const double deadline = deadline_s(s);
    const double slack = deadline - base;
    if (slack < 0) {
      const double rec = ttft_with(Action::kRecompute);
      if (rec < base)
        return {Action::kRecompute,
                fmt::format("{}, slack {:.3f} s < 0, recompute {:.3f} s earlier", est, slack, base - rec)};
    }
    // BOLA's constants for this chunk's ladder.
    std::vector<double> S, u;
    for (int l : ladder) S.push_back(std::max(1.0, double(ch.bytes[size_t(l)])));
    for (double b : S) u.push_back(1.0 + std::log(b / S[0]));
    if (top == 0 || !(u[size_t(top)] > 1.0))
      return {ladder.back(), fmt::format("{}, slack {:.3f} s, one useful level", est, slack)};
    const double m = cfg_.min_slack * s.slo_s;
    const double B = std::max(cfg_.target_slack * s.slo_s, m * (1.0 + kPerLevel * double(ladder.size())));
    const double gp = (u[size_t(top)] - 1.0) / (B / m - 1.0);
    const double V = m / gp;
    auto min_slack_for = [&](int q) {  // sabre min_buffer_for_quality
      double level = 0;
      for (int k = 0; k < q; ++k)
        level = std::max(level, V * (gp + (S[size_t(q)] * u[size_t(k)] - S[size_t(k)] * u[size_t(q)]) /
                                              (S[size_t(q)] - S[size_t(k)])));
      return level;
    };
    const double max_slack_top = V * (u[size_t(top)] + gp);  // sabre max_buffer_for_quality

    int q = 0;
    std::string how;
    if (!started_ && cfg_.placeholder) {
      const double share = (deadline - s.now_s - s.first_token_s) / double(s.total_chunks - s.next_chunk);
      for (int k = 0; k <= top; ++k)
        if (fetch_s(ch.bytes[size_t(ladder[size_t(k)])], rate, 0.0) <= share) q = k;
      placeholder_s_ = std::max(0.0, min_slack_for(q) - slack);
      how = fmt::format("startup: share {:.3f} s/chunk", share);
    } else {
      const double Q = slack + placeholder_s_;
      double best = 0;
      for (int k = 0; k <= top; ++k) {
        const double score = (V * (u[size_t(k)] + gp) - Q) / S[size_t(k)];
        if (k == 0 || score > best) best = score, q = k;
      }
      if (q == top && Q > max_slack_top) placeholder_s_ -= std::min(placeholder_s_, Q - max_slack_top);
      how = "bola";
    }
    started_ = true;

    if (cfg_.ibr) {
      const double safety = ibr_safety_;
      ibr_safety_ = std::max(kIbrSafetyFloor, ibr_safety_ * kIbrSafetyInit);
      int allowed = 0;
      for (int k = 1; k <= q; ++k)
        if (ttft_with(ladder[size_t(k)]) - base <= safety * std::max(0.0, slack)) allowed = k;
      if (allowed < q) {
        q = allowed;
        placeholder_s_ = std::min(placeholder_s_, std::max(0.0, min_slack_for(q) - slack));
        how += fmt::format(", insufficient slack (safety {:.2f})", safety);
      }
    }
    return {ladder[size_t(q)],
            fmt::format("{}, slack {:.3f} s + placeholder {:.3f} s, {}", est, slack, placeholder_s_, how)};
  }

 private:
  BolaConfig cfg_;
  bool started_ = false;
  double placeholder_s_ = 0;
  double ibr_safety_ = kIbrSafetyInit;
};

}  // namespace

std::vector<int> bola_ladder(const ChunkInfo& chunk, uint32_t levels) {
  const size_t n = std::min<size_t>({size_t(levels), chunk.bytes.size(), chunk.quality_cost.size()});
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    if (chunk.bytes[size_t(a)] != chunk.bytes[size_t(b)]) return chunk.bytes[size_t(a)] < chunk.bytes[size_t(b)];
    return chunk.quality_cost[size_t(a)] < chunk.quality_cost[size_t(b)];
  });
  std::vector<int> ladder;
  for (int l : order)
    if (ladder.empty() || chunk.quality_cost[size_t(l)] < chunk.quality_cost[size_t(ladder.back())])
      ladder.push_back(l);
  return ladder;
}

PolicyInfo bola_policy() {
  const BolaConfig d;
  return {"bola",
          "BOLA-E (sabre BolaEnh): Lyapunov rule on log-size utilities with the SLO slack as the buffer, "
          "startup placeholder and insufficient-buffer rule",
          {
              ParamSpec::number("min_slack", d.min_slack, "x SLO",
                                "slack below which the coarsest level is kept (sabre minimum buffer)", 1e-6, 1),
              ParamSpec::number("target_slack", d.target_slack, "x SLO",
                                "slack from which the finest level is taken (sabre buffer target)", 1e-6, 10),
              ParamSpec::integer("window", d.window, "samples", "chunk samples in the harmonic-mean estimate", 1,
                                 1000),
              ParamSpec::number("initial_mbps", d.initial_mbps, "Mbit/s",
                                "throughput assumed before the first chunk sample", 1e-3, 1e9),
              ParamSpec::boolean("placeholder", d.placeholder,
                                 "BOLA-E startup: first chunk by the throughput rule, placeholder slack keeps it"),
              ParamSpec::boolean("ibr", d.ibr, "insufficient-buffer rule: a level's extra time <= safety x slack"),
          },
          false,
          [](const ParamValues& v) {
            BolaConfig c;
            c.min_slack = v.number("min_slack");
            c.target_slack = v.number("target_slack");
            c.window = v.integer("window");
            c.initial_mbps = v.number("initial_mbps");
            c.placeholder = v.flag("placeholder");
            c.ibr = v.flag("ibr");
            return std::make_unique<BolaPolicy>(c);
          }};
}

}  // namespace kvs::policies
