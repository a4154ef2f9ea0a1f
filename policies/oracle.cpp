#include "policies/oracle.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"

namespace kvs::policies {

namespace {

constexpr double kNever = std::numeric_limits<double>::infinity();
constexpr double kTieS = 1e-9;  // TTFTs this close count as equal when minimising TTFT

// The link as the oracle models it (oracle.h). A copy of the trace's rate
// form with cumulative bits per segment, so a delivery time is a binary
// search (Trace::time_to_deliver walks the segments).
class Link {
 public:
  Link() = default;
  explicit Link(const NetworkFuture& f) : half_rtt_s_(f.rtt_s * 0.5) {
    if (!f.trace) {
      rate_bps_ = f.rate_bps;
      return;
    }
    constant_ = false;
    const traces::Trace& tr = *f.trace;
    duration_s_ = tr.duration_s;
    loops_ = tr.loops;
    if (tr.segments.empty() || !(tr.duration_s > 0)) return;  // carries nothing
    if (tr.segments.front().start_s > 0) start_.push_back(0), rate_.push_back(0);
    for (const auto& s : tr.segments) start_.push_back(s.start_s), rate_.push_back(std::max(s.rate_bps, 0.0));
    cum_.assign(start_.size() + 1, 0.0);
    for (size_t i = 0; i < start_.size(); ++i) {
      const double end = i + 1 < start_.size() ? start_[i + 1] : duration_s_;
      cum_[i + 1] = cum_[i] + rate_[i] * std::max(end - start_[i], 0.0);
    }
    // Sparse table: min_table_[k][i] = least rate of segments [i, i + 2^k).
    min_table_.push_back(rate_);
    for (size_t k = 1; (size_t(1) << k) <= rate_.size(); ++k) {
      const auto& prev = min_table_.back();
      std::vector<double> next(rate_.size() - (size_t(1) << k) + 1);
      for (size_t i = 0; i < next.size(); ++i) next[i] = std::min(prev[i], prev[i + (size_t(1) << (k - 1))]);
      min_table_.push_back(std::move(next));
    }
  }

  // Last byte at the client of a fetch of `wire_bits` requested at `request_s`.
  double arrival_s(double request_s, double wire_bits) const {
    return through_s(request_s + half_rtt_s_, wire_bits) + half_rtt_s_;
  }

  double half_rtt_s() const { return half_rtt_s_; }

  // Bits the bottleneck can carry in [t0, t1).
  double bits_between(double t0, double t1) const {
    if (!(t1 > t0)) return 0;
    if (constant_) return rate_bps_ > 0 ? rate_bps_ * (t1 - t0) : 0.0;
    return std::max(carried(t1) - carried(t0), 0.0);
  }

  // The least rate anywhere in [t0, t1) (0 for an empty window).
  double min_rate(double t0, double t1) const {
    if (constant_) return std::max(rate_bps_, 0.0);
    const size_t n = start_.size();
    t0 = std::max(t0, 0.0);
    if (n == 0 || !(t1 > t0)) return 0;
    if (!loops_) return t1 > duration_s_ ? 0.0 : min_within(t0, t1);
    if (t1 - t0 >= duration_s_) return min_within(0, duration_s_);
    const double base = std::floor(t0 / duration_s_) * duration_s_;
    const double a = std::clamp(t0 - base, 0.0, duration_s_), b = t1 - base;
    return b <= duration_s_ ? min_within(a, b) : std::min(min_within(a, duration_s_), min_within(0, b - duration_s_));
  }

  // Rates of the segments (for choosing prices).
  std::vector<double> rates() const { return constant_ ? std::vector<double>{rate_bps_} : rate_; }

 private:
  // The least rate in [a, b) within one period (0 <= a < b <= duration).
  double min_within(double a, double b) const {
    const size_t i = size_t(std::upper_bound(start_.begin(), start_.end(), a) - start_.begin()) - 1;
    size_t j = size_t(std::lower_bound(start_.begin(), start_.end(), b) - start_.begin());
    j = std::max(j, i + 1);  // segments [i, j)
    const size_t level = size_t(std::bit_width(j - i)) - 1;
    return std::min(min_table_[level][i], min_table_[level][j - (size_t(1) << level)]);
  }

  // Bits carried in [0, t).
  double carried(double t) const {
    const size_t n = start_.size();
    if (n == 0) return 0;
    t = std::max(t, 0.0);
    double periods = 0;
    if (loops_) {
      periods = std::floor(t / duration_s_);
      t = std::clamp(t - periods * duration_s_, 0.0, duration_s_);
    } else {
      t = std::min(t, duration_s_);
    }
    const size_t i = size_t(std::upper_bound(start_.begin(), start_.end(), t) - start_.begin()) - 1;
    return periods * cum_[n] + cum_[i] + rate_[i] * (t - start_[i]);
  }

  // When `bits` entering the bottleneck from t0 are through (as
  // Trace::time_to_deliver).
  double through_s(double t0, double bits) const {
    if (!(bits > 0)) return t0;
    if (constant_) return rate_bps_ > 0 ? t0 + bits / rate_bps_ : kNever;
    const size_t n = start_.size();
    if (n == 0) return kNever;
    double t = std::max(t0, 0.0), base = 0;
    if (loops_) {
      base = std::floor(t / duration_s_) * duration_s_;
      t = std::clamp(t - base, 0.0, duration_s_);
    } else if (t >= duration_s_) {
      return kNever;
    }
    const size_t i = size_t(std::upper_bound(start_.begin(), start_.end(), t) - start_.begin()) - 1;
    double target = cum_[i] + rate_[i] * (t - start_[i]) + bits;  // in bits since the period's start
    const double period = cum_[n];
    if (target > period) {
      if (!loops_ || !(period > 0)) return kNever;
      const double skip = std::ceil(target / period) - 1;  // whole periods, leaving (0, period]
      target -= skip * period, base += skip * duration_s_;
      if (target <= 0) target += period, base -= duration_s_;       // rounding
      if (target > period) target -= period, base += duration_s_;  // rounding
    }
    size_t j = size_t(std::lower_bound(cum_.begin() + 1, cum_.end(), target) - cum_.begin());
    j = std::min(j, n);
    const size_t s = j - 1;  // cum_[s] < target <= cum_[s + 1]: a segment with a positive rate
    if (!(rate_[s] > 0)) return base + (s + 1 < n ? start_[s + 1] : duration_s_);  // rounding
    return base + start_[s] + (target - cum_[s]) / rate_[s];
  }

  bool constant_ = true;
  double rate_bps_ = 0;  // constant_
  double half_rtt_s_ = 0;
  std::vector<double> start_, rate_;  // segments of one period, the first at 0
  std::vector<double> cum_;           // bits carried in [0, start_[i]); cum_.back(): per period
  std::vector<std::vector<double>> min_table_;
  double duration_s_ = 0;
  bool loops_ = false;
};

// One reachable state after a chunk. Sequential timing keeps one clock (gpu_s,
// everything is serial) and net_s = 0.
struct State {
  double net_s = 0;  // the network has delivered every fetch (pipelined)
  double gpu_s = 0;  // the GPU has finished every chunk so far
  double loss = 0;   // sum of quality_cost so far
  double bytes = 0;  // fetched so far (tie-break)
  double work_s = 0; // GPU seconds of its decodes and recomputes (tie-break after bytes)
  bool pending = false;  // sliding windows: its last chunks add to later recomputes (key != 0)
};

// How a state was reached: its predecessor in the previous frontier and the action.
struct Step {
  uint32_t parent = 0;
  int32_t action = 0;  // level or Action::kRecompute
};

// `key`: which states are interchangeable (sliding-window targets, below);
// 0 = nothing of this state's past costs a later recompute anything.
struct Candidate {
  State s;
  Step step;
  uint32_t key = 0;
};

// The 2-D frontier of (net, gpu) points seen so far: net ascending, gpu
// strictly descending.
class Staircase {
 public:
  void clear() { net_.clear(), gpu_.clear(); }
  // Whether a point no later on both clocks is there already.
  bool covers(double net, double gpu) const {
    const size_t i = size_t(std::upper_bound(net_.begin(), net_.end(), net) - net_.begin());
    return i > 0 && gpu_[i - 1] <= gpu;
  }
  // Adds a point it does not cover, dropping the ones it covers.
  void add(double net, double gpu) {
    const size_t i = size_t(std::lower_bound(net_.begin(), net_.end(), net) - net_.begin());
    size_t j = i;
    while (j < net_.size() && gpu_[j] >= gpu) ++j;
    if (j == i) {
      net_.insert(net_.begin() + long(i), net);
      gpu_.insert(gpu_.begin() + long(i), gpu);
    } else {
      net_[i] = net, gpu_[i] = gpu;
      net_.erase(net_.begin() + long(i) + 1, net_.begin() + long(j));
      gpu_.erase(gpu_.begin() + long(i) + 1, gpu_.begin() + long(j));
    }
  }

 private:
  std::vector<double> net_, gpu_;
};

// Keeps the candidates no other one dominates (no later on both clocks and no
// worse loss, and a key that costs later chunks no more: the same key, or key
// 0), in (loss, GPU work) order. `lists` holds one list per action, each in
// that order (a frontier in that order plus one action's loss and work): a
// merge, ties to the earlier list. Of candidates equal in loss and clocks,
// the one with the least work stays (the objective's last tie-break). A candidate equal in loss to a later one that dominates it may
// stay (harmless: the frontier is a superset of the Pareto one). `keys`: how
// many keys the candidates use.
void prune(std::vector<std::vector<Candidate>>& lists, size_t keys, std::vector<State>& states,
           std::vector<Step>& steps) {
  states.clear(), steps.clear();
  std::vector<Staircase> stairs(std::max<size_t>(keys, 1));  // per key: the kept states, all with loss <= the candidate's
  std::vector<size_t> at(lists.size(), 0);
  // A small heap of (loss, work, list) heads.
  using Head = std::tuple<double, double, size_t>;
  std::vector<Head> heap;
  const auto head = [&](size_t a) { return Head{lists[a][at[a]].s.loss, lists[a][at[a]].s.work_s, a}; };
  for (size_t a = 0; a < lists.size(); ++a)
    if (!lists[a].empty()) heap.push_back(head(a));
  auto later = [](const Head& x, const Head& y) { return x > y; };
  std::make_heap(heap.begin(), heap.end(), later);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const size_t a = std::get<2>(heap.back());
    const Candidate& c = lists[a][at[a]++];
    if (at[a] < lists[a].size()) {
      heap.back() = head(a);
      std::push_heap(heap.begin(), heap.end(), later);
    } else {
      heap.pop_back();
    }
    if (stairs[0].covers(c.s.net_s, c.s.gpu_s) || (c.key && stairs[c.key].covers(c.s.net_s, c.s.gpu_s))) continue;
    stairs[c.key].add(c.s.net_s, c.s.gpu_s);
    states.push_back(c.s);
    states.back().pending = c.key != 0;
    steps.push_back(c.step);
  }
}

// One planning problem: the chunks to plan and where the request stands.
struct Problem {
  const std::vector<ChunkInfo>* chunks = nullptr;
  uint32_t first = 0, total = 0, levels = 0;
  bool sequential = false;
  const Link* link = nullptr;
  double payload_share = 1;
  double connected_s = 0;  // the handshake is done: the first request can go
  State start;             // the clocks at the first decision
  double start_s = 0;      // the request was issued
  double first_token_s = 0;
  double slo_s = 0;
  // Per chunk c (index c - first; one more at the end): lower bounds on what
  // chunks c.. still add: GPU seconds, and loss.
  std::vector<double> rest_gpu_s, rest_loss;
  // The Lagrangian bound (loss_to_come): prices per wire bit and per GPU
  // second; the bits a fetch costs the link besides its own (its round trip
  // at some least rate, ascending from 0); and per chunk c (as above), gap j
  // and price pair k, at [(c * gap_bits.size() + j) * prices.size() + k], the
  // least priced cost of chunks c..: with the loss (rest_priced) and without.
  std::vector<std::pair<double, double>> prices;
  std::vector<double> gap_bits;
  std::vector<double> rest_priced, rest_priced_time;

  // Sliding-window targets (ChunkInfo::window_reads): recomputing a chunk
  // first fetches what its windows read of the chunks fetched right before
  // it, so a state's cost to come depends on its last actions. `reach[c -
  // first]`: how many of the chunks up to c some later recompute may read;
  // `decided`: the actions of the chunks before `first`. windowed = false:
  // no chunk has window reads (every key is 0, the search as without).
  bool windowed = false;
  std::vector<uint32_t> reach;
  std::vector<double> recompute_floor;  // per chunk c (c - first): the least loss its recompute brings
  std::vector<int> decided;

  double ttft_s(const State& st) const { return st.gpu_s + first_token_s - start_s; }
  double wire_bits(const ChunkInfo& ch, uint32_t l) const { return 8.0 * double(ch.bytes[l]) / payload_share; }
};

// A lower bound on the loss still to come from `st` (the frontier after chunk
// `next` - 1) for plans whose GPU is done by `deadline` (absolute); infinity
// when no plan from `st` can be. The chunks still to plan must fit both in
// the bits the link can carry from the network clock until the deadline (B;
// between two fetches the link idles a round trip, carrying at least c =
// rtt * its least rate in the window, so fetched chunks count c more bits
// each and B is c more) and in the GPU seconds left (G). For prices
// lam, mu >= 0, any plan that fits has
//   loss to come >= sum over chunks of min over actions (loss + lam (bits + c)
//                   + mu gpu_s) - lam (B + c) - mu G,
// and without the loss term a positive right side proves it cannot fit.
// (A relaxation: it ignores that the GPU takes chunks in order.)
double loss_to_come(const Problem& p, uint32_t next, double deadline, const State& st) {
  if (!std::isfinite(deadline)) return p.rest_loss[next - p.first];
  const size_t np = p.prices.size(), ng = p.gap_bits.size();
  const double half = p.link->half_rtt_s();
  const double from = (p.sequential ? std::max(st.gpu_s, p.connected_s) : st.net_s) + half;
  const double gpu = (deadline - st.gpu_s) + 1e-9;  // G, generous
  if (gpu < 0) return kNever;
  const double gap = 2 * half * p.link->min_rate(from, deadline - half) * (1 - 1e-9);  // c, modest
  const size_t j = size_t(std::upper_bound(p.gap_bits.begin(), p.gap_bits.end(), gap) - p.gap_bits.begin()) - 1;
  const double* priced = &p.rest_priced[((next - p.first) * ng + j) * np];
  const double* priced_time = &p.rest_priced_time[((next - p.first) * ng + j) * np];
  const double bits = (p.link->bits_between(from, deadline - half) + p.gap_bits[j]) * (1 + 1e-9) + 1;  // B + c
  double bound = p.rest_loss[next - p.first];
  for (size_t k = 0; k < np; ++k) {
    const auto [lam, mu] = p.prices[k];
    const double budget = lam * bits + mu * gpu;
    const double tol = 1e-9 * (1 + std::abs(priced[k]) + budget);
    if (priced_time[k] - budget > tol) return kNever;  // cannot fit
    bound = std::max(bound, priced[k] - budget - tol);
  }
  return bound;
}

// Values at 7 evenly spread quantiles of `v` (sorted, distinct).
std::vector<double> quantiles(std::vector<double> v) {
  std::vector<double> q;
  if (v.empty()) return q;
  std::sort(v.begin(), v.end());
  for (int i = 0; i < 7; ++i) q.push_back(v[size_t((0.5 + i) / 7 * double(v.size() - 1))]);
  q.erase(std::unique(q.begin(), q.end()), q.end());
  return q;
}

// Sets the prices of the Lagrangian bound and the chunks' least priced costs.
// Any prices give a valid bound; these are spread over the trade-offs the
// chunks offer: loss per bit saved between two levels, and (for each bit
// price) priced cost per GPU second saved by fetching instead of recomputing.
void set_prices(Problem& p) {
  const uint32_t n = p.total - p.first;
  std::vector<double> per_bit;
  for (uint32_t c = p.first; c < p.total; ++c) {
    const ChunkInfo& ch = (*p.chunks)[c];
    for (uint32_t a = 0; a < p.levels; ++a)
      for (uint32_t b = 0; b < p.levels; ++b) {
        const double dl = ch.quality_cost[b] - ch.quality_cost[a], db = p.wire_bits(ch, a) - p.wire_bits(ch, b);
        if (dl > 0 && db > 0) per_bit.push_back(dl / db);
      }
  }
  std::vector<double> lams = quantiles(per_bit);
  lams.insert(lams.begin(), 0.0);
  p.prices.clear();
  for (const double lam : lams) {
    std::vector<double> per_second;
    for (uint32_t c = p.first; c < p.total; ++c) {
      const ChunkInfo& ch = (*p.chunks)[c];
      for (uint32_t l = 0; l < p.levels; ++l) {
        const double cost = ch.quality_cost[l] + lam * p.wire_bits(ch, l), saved = ch.recompute_s - ch.decode_s[l];
        if (cost > 0 && saved > 0) per_second.push_back(cost / saved);
      }
    }
    std::vector<double> mus = quantiles(per_second);
    mus.insert(mus.begin(), 0.0);
    for (const double mu : mus) p.prices.emplace_back(lam, mu);
  }
  // Gaps: a round trip at 0 and at quantiles of the segments' rates.
  p.gap_bits = quantiles(p.link->rates());
  for (double& g : p.gap_bits) g *= 2 * p.link->half_rtt_s();
  p.gap_bits.insert(p.gap_bits.begin(), 0.0);
  p.gap_bits.erase(std::unique(p.gap_bits.begin(), p.gap_bits.end()), p.gap_bits.end());
  const size_t np = p.prices.size(), ng = p.gap_bits.size();
  p.rest_priced.assign((n + 1) * ng * np, 0.0);
  p.rest_priced_time.assign((n + 1) * ng * np, 0.0);
  for (uint32_t i = n; i-- > 0;) {
    const ChunkInfo& ch = (*p.chunks)[p.first + i];
    for (size_t j = 0; j < ng; ++j)
      for (size_t k = 0; k < np; ++k) {
        const auto [lam, mu] = p.prices[k];
        double best = p.recompute_floor[i] + mu * ch.recompute_s, best_time = mu * ch.recompute_s;  // recompute: no bits
        for (uint32_t l = 0; l < p.levels; ++l) {
          const double bits = p.wire_bits(ch, l);  // no byte: no request, no gap
          const double time = lam * (bits > 0 ? bits + p.gap_bits[j] : 0.0) + mu * ch.decode_s[l];
          best = std::min(best, ch.quality_cost[l] + time);
          best_time = std::min(best_time, time);
        }
        const size_t at = (i * ng + j) * np + k, below = ((i + 1) * ng + j) * np + k;
        p.rest_priced[at] = p.rest_priced[below] + best;
        p.rest_priced_time[at] = p.rest_priced_time[below] + best_time;
      }
  }
}

// Keeps the states `keep` says (in order), aligning the steps and the bounds.
void compact(std::vector<State>& states, std::vector<Step>& steps, std::vector<double>& bounds,
             const std::vector<char>& keep) {
  size_t kept = 0;
  for (size_t i = 0; i < states.size(); ++i)
    if (keep[i]) states[kept] = states[i], steps[kept] = steps[i], bounds[kept] = bounds[i], ++kept;
  states.resize(kept);
  steps.resize(kept);
  bounds.resize(kept);
}

// Thins a frontier (in loss order) to at most `max_states` states:
//   - the clocks' own frontier (not later on both clocks than any other state,
//     whatever its loss), so no reachable TTFT is lost; if that alone is more
//     than half, one of it, the least loss, per cell of a grid over the GPU
//     clock, cells doubled until it fits, and `clocks_kept` is false;
//   - then a beam: the states of the least `bounds` (loss + loss_to_come).
// Returns the least bound among the states dropped.
double thin(size_t max_states, std::vector<State>& states, std::vector<Step>& steps, std::vector<double>& bounds,
            bool& clocks_kept) {
  const size_t n = states.size();
  std::vector<char> keep(n, 0);
  // The clocks' frontier: by net, then gpu; a state joins if its gpu is below every earlier one's.
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (states[a].net_s != states[b].net_s) return states[a].net_s < states[b].net_s;
    if (states[a].gpu_s != states[b].gpu_s) return states[a].gpu_s < states[b].gpu_s;
    return a < b;  // the lesser loss
  });
  std::vector<size_t> clock_front;
  double least_gpu = kNever;
  for (const size_t i : order)
    if (states[i].gpu_s < least_gpu) least_gpu = states[i].gpu_s, clock_front.push_back(i);
  const size_t clock_budget = max_states / 2;
  if (clock_front.size() > clock_budget) {
    clocks_kept = false;
    std::sort(clock_front.begin(), clock_front.end());  // loss order
    double g0 = kNever, g1 = -kNever;
    for (const size_t i : clock_front) g0 = std::min(g0, states[i].gpu_s), g1 = std::max(g1, states[i].gpu_s);
    std::vector<size_t> thinned;
    std::unordered_set<uint64_t> seen;
    for (double cell = (g1 - g0) / double(clock_budget); thinned.empty() || thinned.size() > clock_budget; cell *= 2) {
      thinned.clear(), seen.clear();
      for (const size_t i : clock_front)
        if (seen.insert(uint64_t((states[i].gpu_s - g0) / cell)).second) thinned.push_back(i);
    }
    clock_front.swap(thinned);
  }
  for (const size_t i : clock_front) keep[i] = 1;
  // The beam; of equal bounds, first the states that owe later recomputes
  // nothing (a sliding-window target's key 0), then frontier order.
  std::vector<std::tuple<double, bool, size_t>> f;
  f.reserve(n);
  for (size_t i = 0; i < n; ++i)
    if (!keep[i]) f.emplace_back(bounds[i], states[i].pending, i);
  const size_t room = max_states - clock_front.size();
  double dropped = kNever;
  if (f.size() > room) {
    std::nth_element(f.begin(), f.begin() + long(room), f.end());
    dropped = std::get<0>(*std::min_element(f.begin() + long(room), f.end()));
    f.resize(room);
  }
  for (const auto& [value, pending, i] : f)
    if (value < kNever) keep[i] = 1;
  compact(states, steps, bounds, keep);
  return dropped;
}

// Bounds a search may prune with: a state whose TTFT or loss, even at the
// best for the chunks still to plan (rest_gpu_s, rest_loss, loss_to_come),
// would exceed them cannot lead to the plan sought.
struct Caps {
  double ttft_s = kNever;
  double loss = kNever;
};

// A search's answer: the plan chosen by the objective over its final frontier.
struct Outcome {
  bool found = false;
  std::vector<int> plan;
  State end;
  double ttft_s = 0;
  bool met = false;          // meets the SLO (or there is none)
  bool thinned = false;      // some frontier was thinned: the plan may not be the optimum
  bool clocks_kept = true;   // ... keeping every reachable TTFT
  double dropped = kNever;   // ... the least loss bound among the states dropped
  bool bound_valid = false;  // ... `dropped` bounds the optimum's loss (see make_plan)
  size_t largest = 0;        // the largest frontier (after pruning, before thinning)
};

// Whether `a` is a better answer than `b` (oracle.h: the objective).
bool better_outcome(const Outcome& a, const Outcome& b) {
  if (!b.found) return a.found;
  if (!a.found) return false;
  if (a.met != b.met) return a.met;
  if (!a.met && std::abs(a.ttft_s - b.ttft_s) > kTieS) return a.ttft_s < b.ttft_s;
  if (a.end.loss != b.end.loss) return a.end.loss < b.end.loss;
  if (a.ttft_s != b.ttft_s) return a.ttft_s < b.ttft_s;
  if (a.end.bytes != b.end.bytes) return a.end.bytes < b.end.bytes;
  return a.end.work_s < b.end.work_s;
}

// A sliding-window target's history, chunk by chunk: each state's last
// actions (from the back-pointers), what recomputing the chunk fetches first
// after them, and the key of a state after the chunk. Two states with the
// same key cost every later recompute the same (the key is what the chunks
// up to this one add to each later recompute: bytes, decode seconds and
// loss), so only states of one key, or of key 0 (nothing to add), dominate
// one another.
class WindowHistory {
 public:
  // Before chunk c, with the frontier after c - 1 (`back`: every chunk's steps).
  void start(const Problem& p, uint32_t c, size_t states, const std::vector<std::vector<Step>>& back) {
    c_ = c;
    chunk_ = &(*p.chunks)[c];
    reach_ = p.reach[c - p.first];
    depth_ = std::max<size_t>(chunk_->window_reads.size(), reach_);
    trail_.assign(states * depth_, Action::kRecompute);
    for (size_t k = 0; k < states; ++k) {
      size_t at = k;
      for (size_t i = 0; i < depth_ && i < c; ++i) {
        const uint32_t j = c - 1 - uint32_t(i);
        if (j < p.first) {
          trail_[k * depth_ + i] = p.decided[j];
          continue;
        }
        const Step& step = back[j - p.first][at];
        trail_[k * depth_ + i] = step.action;
        at = step.parent;
      }
    }
    // Per state, what the chunks before c add to each later recompute that
    // reads chunk c (key() adds chunk c's own part).
    width_ = std::min<size_t>(reach_, p.total - 1 - c);
    before_.assign(states * width_ * 3, 0.0);
    for (size_t k = 0; k < states; ++k)
      for (size_t w = 0; w < width_; ++w) {
        const auto& reads = (*p.chunks)[c + 1 + w].window_reads;
        double* sum = &before_[(k * width_ + w) * 3];
        for (uint32_t j = c; j-- > 0 && c - 1 - j < depth_;) {  // the run of fetched chunks before c
          const size_t back_by = c + w - j;  // (c + 1 + w) - 1 - j
          const int a = trail_[k * depth_ + (c - 1 - j)];
          if (back_by >= reads.size() || a < 0) break;
          add(reads[back_by], a, sum);
        }
      }
    ids_.clear();
    key_sums_.clear();
  }

  // What recomputing the chunk fetches first after state k.
  RecomputeFetch fetch(size_t k) const {
    return recompute_fetch(*chunk_, c_, [&](uint32_t j) { return trail_[k * depth_ + (c_ - 1 - j)]; });
  }

  // The key of state k followed by `action` on the chunk.
  uint32_t key(const Problem& p, size_t k, int action) {
    if (action < 0 || width_ == 0) return 0;  // a recompute: no later one reads past it
    sums_.assign(width_ * 3, 0.0);
    bool any = false;
    for (size_t w = 0; w < width_; ++w) {
      const auto& reads = (*p.chunks)[c_ + 1 + w].window_reads;
      if (w >= reads.size()) continue;  // chunk c_ + 1 + w reads back neither to c_ nor before it
      double* sum = &sums_[w * 3];
      add(reads[w], action, sum);
      for (int i = 0; i < 3; ++i) sum[i] += before_[(k * width_ + w) * 3 + i];
      any = any || sum[0] != 0 || sum[1] != 0 || sum[2] != 0;
    }
    if (!any) return 0;
    // The id of these sums: by a hash of their bits, checked against the sums
    // each id stands for (a collision probes on), so that equal means equal.
    uint64_t h = 1469598103934665603ull;
    for (const double x : sums_) h = (h ^ std::bit_cast<uint64_t>(x)) * 1099511628211ull;
    const size_t n = sums_.size();
    for (;; ++h) {
      const auto [it, added] = ids_.try_emplace(h, uint32_t(ids_.size() + 1));
      if (added) {
        key_sums_.insert(key_sums_.end(), sums_.begin(), sums_.end());
        return it->second;
      }
      if (std::equal(sums_.begin(), sums_.end(), key_sums_.begin() + long((it->second - 1) * n))) return it->second;
    }
  }

  size_t keys() const { return ids_.size() + 1; }

 private:
  static void add(const ChunkInfo::WindowRead& r, int level, double* sum) {
    sum[0] += r.bytes[size_t(level)];
    sum[1] += r.decode_s[size_t(level)];
    if (!r.quality_cost.empty()) sum[2] += r.quality_cost[size_t(level)];
  }

  uint32_t c_ = 0;
  const ChunkInfo* chunk_ = nullptr;
  size_t reach_ = 0, depth_ = 0;
  size_t width_ = 0;        // the later chunks whose recompute may read chunk c_
  std::vector<int> trail_;  // [state * depth_ + i]: the action on chunk c_ - 1 - i
  std::vector<double> before_;  // [(state * width_ + w) * 3 + bytes/decode/loss]: chunks before c_ for chunk c_ + 1 + w
  std::vector<double> sums_;
  std::unordered_map<uint64_t, uint32_t> ids_;  // hash -> key id (1, 2, ...)
  std::vector<double> key_sums_;                 // [(id - 1) * width_ * 3 ...]: the sums of each key
};

// The Pareto search over chunks (oracle.h), frontiers of at most `max_states`.
Outcome search(const Problem& p, size_t max_states, const Caps& caps) {
  const double ttft_cap = caps.ttft_s + 1e-12, loss_cap = caps.loss + 1e-12 * (1 + std::abs(caps.loss));
  // The deadline for the Lagrangian bound: the cap, else the SLO.
  const double limit = std::isfinite(caps.ttft_s) ? caps.ttft_s : p.slo_s > 0 ? p.slo_s : kNever;
  const double deadline = p.start_s + limit - p.first_token_s;  // the GPU's last chunk done
  Outcome out;
  std::vector<State> states{p.start};
  std::vector<Step> steps{Step{}};
  std::vector<std::vector<Step>> back;  // per chunk, the steps of its frontier
  std::vector<std::vector<Candidate>> lists(p.levels + 1);  // per action: recompute, then levels
  std::vector<double> wire_bits(p.levels);
  std::vector<char> keep;
  std::vector<double> bounds;  // per state: loss + loss_to_come
  WindowHistory history;
  for (uint32_t c = p.first; c < p.total; ++c) {
    const ChunkInfo& ch = (*p.chunks)[c];
    const double rest_gpu = p.rest_gpu_s[c + 1 - p.first], rest_loss = p.rest_loss[c + 1 - p.first];
    auto push = [&](const State& n, Step step, size_t k) {
      if (p.ttft_s(n) + rest_gpu > ttft_cap || n.loss + rest_loss > loss_cap) return;
      lists[size_t(step.action + 1)].push_back({n, step, p.windowed ? history.key(p, k, step.action) : 0});
    };
    for (uint32_t l = 0; l < p.levels; ++l) wire_bits[l] = p.wire_bits(ch, l);
    for (auto& list : lists) list.clear();
    if (p.windowed) history.start(p, c, states.size(), back);
    for (size_t k = 0; k < states.size(); ++k) {
      const State& st = states[k];
      const uint32_t parent = uint32_t(k);
      // Recompute: exact; on the GPU only, unless its windows read layers
      // that earlier fetches left out (one fetch first, then their decode).
      const RecomputeFetch f = p.windowed ? history.fetch(k) : RecomputeFetch{};
      const double fetch_bytes = double(std::llround(f.bytes));
      if (fetch_bytes == 0) {
        push({st.net_s, st.gpu_s + ch.recompute_s, st.loss + f.quality_cost, st.bytes, st.work_s + ch.recompute_s},
             {parent, Action::kRecompute}, k);
      } else {
        State n = st;
        n.loss += f.quality_cost;  // the unread chunks it reads
        const double bits = 8.0 * fetch_bytes / p.payload_share;
        if (p.sequential) {
          n.gpu_s = p.link->arrival_s(std::max(st.gpu_s, p.connected_s), bits) + f.decode_s + ch.recompute_s;
        } else {
          n.net_s = p.link->arrival_s(st.net_s, bits);
          n.gpu_s = std::max(st.gpu_s, n.net_s) + f.decode_s + ch.recompute_s;
        }
        n.bytes += fetch_bytes;
        n.work_s += f.decode_s + ch.recompute_s;
        if (std::isfinite(n.gpu_s)) push(n, {parent, Action::kRecompute}, k);
      }
      for (uint32_t l = 0; l < p.levels; ++l) {
        // No byte (a sliding-window target's chunk that no layer reads): no request, no round trip.
        auto arrival = [&](double request_s) { return wire_bits[l] > 0 ? p.link->arrival_s(request_s, wire_bits[l]) : request_s; };
        State n;
        if (p.sequential) {
          n.gpu_s = arrival(std::max(st.gpu_s, p.connected_s)) + ch.decode_s[l];
        } else {
          n.net_s = arrival(st.net_s);
          n.gpu_s = std::max(st.gpu_s, n.net_s) + ch.decode_s[l];
        }
        if (!std::isfinite(n.gpu_s)) continue;  // never arrives
        n.loss = st.loss + ch.quality_cost[l];
        n.bytes = st.bytes + double(ch.bytes[l]);
        n.work_s = st.work_s + ch.decode_s[l];
        push(n, {parent, int32_t(l)}, k);
      }
    }
    if (p.windowed)  // recomputes add each state its own loss and work (what they read): restore the order
      std::stable_sort(lists[0].begin(), lists[0].end(), [](const Candidate& a, const Candidate& b) {
        return a.s.loss != b.s.loss ? a.s.loss < b.s.loss : a.s.work_s < b.s.work_s;
      });
    prune(lists, p.windowed ? history.keys() : 1, states, steps);
    const bool capped = std::isfinite(caps.ttft_s);
    if (capped || states.size() > max_states) {
      bounds.resize(states.size());
      for (size_t i = 0; i < states.size(); ++i) bounds[i] = states[i].loss + loss_to_come(p, c + 1, deadline, states[i]);
    }
    if (capped) {  // the Lagrangian bound against the caps
      keep.assign(states.size(), 0);
      for (size_t i = 0; i < states.size(); ++i) keep[i] = bounds[i] <= loss_cap;
      compact(states, steps, bounds, keep);
    }
    if (states.empty()) return out;  // the caps leave nothing (after thinning, a search can lose its way)
    out.largest = std::max(out.largest, states.size());
    if (states.size() > max_states) {
      out.dropped = std::min(out.dropped, thin(max_states, states, steps, bounds, out.clocks_kept));
      out.thinned = true;
      // The clocks' frontier ignores keys: a state off it may still reach a lesser TTFT.
      if (p.windowed) out.clocks_kept = false;
    }
    back.push_back(steps);
  }

  // The objective over the final frontier: the least loss within the SLO
  // (then the least TTFT, the fewest bytes, the least GPU work); else the
  // least TTFT (within kTieS), then the least loss.
  auto better = [&](size_t a, size_t b) {
    if (states[a].loss != states[b].loss) return states[a].loss < states[b].loss;
    if (states[a].gpu_s != states[b].gpu_s) return states[a].gpu_s < states[b].gpu_s;
    if (states[a].bytes != states[b].bytes) return states[a].bytes < states[b].bytes;
    return states[a].work_s < states[b].work_s;
  };
  size_t best = states.size();
  for (size_t k = 0; k < states.size(); ++k)
    if ((p.slo_s <= 0 || p.ttft_s(states[k]) <= p.slo_s) && (best == states.size() || better(k, best))) best = k;
  out.met = best < states.size();
  if (!out.met) {
    double least = kNever;
    for (const State& st : states) least = std::min(least, p.ttft_s(st));
    for (size_t k = 0; k < states.size(); ++k)
      if (p.ttft_s(states[k]) <= least + kTieS && (best == states.size() || better(k, best))) best = k;
  }
  // The beam's bound holds for plans within `limit`: the objective's when the
  // plan meets the SLO (or there is none) or when the cap is the least TTFT.
  out.bound_valid = out.clocks_kept && (out.met || std::isfinite(caps.ttft_s));
  out.found = true;
  out.end = states[best];
  out.ttft_s = p.ttft_s(out.end);
  out.plan.assign(p.total - p.first, 0);
  size_t k = best;
  for (size_t c = out.plan.size(); c-- > 0;) {
    out.plan[c] = back[c][k].action;
    k = back[c][k].parent;
  }
  return out;
}

class OraclePolicy : public Policy {
 public:
  OraclePolicy(bool sequential, int max_states, int bound_states)
      : sequential_(sequential), max_states_(size_t(max_states)), bound_states_(size_t(bound_states)) {}

  std::string name() const override {
    return fmt::format("oracle(timing={},max_states={},bound_states={})", sequential_ ? "sequential" : "pipelined",
                       max_states_, bound_states_);
  }

  void see_future(const NetworkFuture& f) override {
    if (!(f.payload_share > 0) || !(f.rtt_s >= 0))
      throw Error(fmt::format("policy oracle: bad network future (payload_share {}, rtt {} s)", f.payload_share,
                              f.rtt_s));
    if (f.in_flight != 1)
      throw Error(fmt::format("policy oracle: models one request in flight, the simulator has {}", f.in_flight));
    future_ = f;
    future_.trace = nullptr;  // the link keeps its own copy
    link_ = Link(f);
    have_future_ = true;
    plan_.clear();
  }

  Action decide(const StreamState& s) override {
    if (!have_future_) throw Error("policy oracle: decide() before see_future(): the oracle needs the link");
    if (plan_.empty()) make_plan(s);
    const uint32_t expected = first_ + uint32_t(cursor_);
    if (s.next_chunk != expected || s.total_chunks != first_ + plan_.size())
      throw Error(fmt::format("policy oracle: asked for chunk {} of {}, but its plan expects chunk {} of {}",
                              s.next_chunk, s.total_chunks, expected, first_ + plan_.size()));
    return {plan_[cursor_++], reason_};
  }

  double predicted_ttft_s() const override { return plan_.empty() ? -1 : ttft_s_; }

 private:
  void make_plan(const StreamState& s);

  bool sequential_;
  size_t max_states_;
  size_t bound_states_;  // frontier of the quick first search (0: none)
  NetworkFuture future_;
  Link link_;
  bool have_future_ = false;
  uint32_t first_ = 0;
  std::vector<int> plan_;  // per chunk from first_
  size_t cursor_ = 0;
  double ttft_s_ = -1;
  std::string reason_;
};

void OraclePolicy::make_plan(const StreamState& s) {
  if (!s.chunks || s.chunks->size() < s.total_chunks || s.next_chunk >= s.total_chunks)
    throw Error(fmt::format("policy oracle: no chunks to plan (chunk {} of {})", s.next_chunk, s.total_chunks));
  Problem p;
  p.chunks = s.chunks;
  p.first = s.next_chunk;
  p.total = s.total_chunks;
  p.levels = s.levels;
  p.sequential = sequential_;
  p.link = &link_;
  p.payload_share = future_.payload_share;
  p.start_s = future_.request_start_s;
  p.connected_s = p.start_s + (future_.handshake ? future_.rtt_s : 0.0);  // the handshake before the first request
  p.start.gpu_s = std::max(s.now_s, s.gpu_busy_until_s);
  p.start.net_s = sequential_ ? 0.0 : std::max(s.now_s, p.connected_s);
  p.first_token_s = s.first_token_s;
  p.slo_s = s.slo_s;
  p.rest_gpu_s.assign(p.total - p.first + 1, 0.0);
  p.rest_loss.assign(p.total - p.first + 1, 0.0);
  p.recompute_floor.assign(p.total - p.first, 0.0);
  for (uint32_t c = p.total; c-- > p.first;) {
    const ChunkInfo& ch = s.chunk(c);
    if (ch.bytes.size() < p.levels || ch.decode_s.size() < p.levels || ch.quality_cost.size() < p.levels)
      throw Error(fmt::format("policy oracle: chunk {} lacks figures for {} levels", c, p.levels));
    bool ok = std::isfinite(ch.recompute_s) && ch.recompute_s >= 0;
    // Recompute: exact, but for the costs of unread chunks its windows read
    // (at least the least of each, when some is negative).
    double floor = 0;
    for (const auto& r : ch.window_reads) {
      ok = ok && r.bytes.size() >= p.levels && r.decode_s.size() >= p.levels &&
           (r.quality_cost.empty() || r.quality_cost.size() >= p.levels);
      double least = 0;
      for (uint32_t l = 0; ok && l < p.levels; ++l) {
        ok = std::isfinite(r.bytes[l]) && r.bytes[l] >= 0 && std::isfinite(r.decode_s[l]) && r.decode_s[l] >= 0 &&
             (r.quality_cost.empty() || std::isfinite(r.quality_cost[l]));
        if (ok && !r.quality_cost.empty()) least = std::min(least, r.quality_cost[l]);
      }
      floor += least;
      p.windowed = true;
    }
    double gpu = ch.recompute_s, loss = floor;
    for (uint32_t l = 0; l < p.levels; ++l) {
      ok = ok && std::isfinite(ch.decode_s[l]) && ch.decode_s[l] >= 0 && std::isfinite(ch.quality_cost[l]);
      gpu = std::min(gpu, ch.decode_s[l]), loss = std::min(loss, ch.quality_cost[l]);
    }
    if (!ok) throw Error(fmt::format("policy oracle: chunk {} has a negative or non-finite figure", c));
    p.rest_gpu_s[c - p.first] = p.rest_gpu_s[c + 1 - p.first] + gpu;
    p.rest_loss[c - p.first] = p.rest_loss[c + 1 - p.first] + loss;
    p.recompute_floor[c - p.first] = floor;
  }
  if (p.windowed) {
    p.reach.assign(p.total - p.first, 0);
    for (uint32_t later = p.first + 1; later < p.total; ++later) {
      const size_t reads = s.chunk(later).window_reads.size();
      for (uint32_t c = later - uint32_t(std::min<size_t>(reads, later - p.first)); c < later; ++c)  // what `later` reads
        p.reach[c - p.first] = std::max(p.reach[c - p.first], uint32_t(reads - (later - 1 - c)));
    }
    p.decided.assign(p.first, Action::kRecompute);
    for (const Decision& d : s.decisions)
      if (d.chunk < p.first) p.decided[d.chunk] = d.level;
  }
  set_prices(p);

  // A quick search on a small frontier; when it had to thin, its answer caps
  // a second search on the full one (exact pruning: the plan sought is no
  // worse than the quick one).
  const size_t quick = bound_states_ ? std::min(max_states_, bound_states_) : max_states_;
  Outcome best = search(p, quick, Caps{});
  if (best.thinned && max_states_ > quick) {
    Caps caps;
    if (p.slo_s > 0 && !best.met) {
      caps.ttft_s = best.ttft_s + kTieS;  // what meets the SLO is faster; nothing slower can win
    } else {
      if (p.slo_s > 0) caps.ttft_s = p.slo_s;
      caps.loss = best.end.loss;
    }
    Outcome full = search(p, max_states_, caps);
    if (full.found && (!full.thinned || better_outcome(full, best))) best = std::move(full);
  }

  first_ = p.first;
  cursor_ = 0;
  plan_ = best.plan;
  ttft_s_ = best.ttft_s;
  reason_ = fmt::format("plan: ttft {:.3f} s (pred), loss {:.4g}", ttft_s_, best.end.loss);
  if (p.slo_s > 0 && !best.met) reason_ += fmt::format(", SLO {:.3f} s missed: least TTFT", p.slo_s);
  if (best.thinned) {
    reason_ += fmt::format(", approximate (frontiers of up to {} states thinned to {}", best.largest,
                           std::min(max_states_, best.largest));
    if (best.bound_valid)
      reason_ += fmt::format("; loss at most {:.3g} above the optimum", best.end.loss - std::min(best.end.loss, best.dropped));
    // The least loss any plan can have (every chunk at its least): then the
    // plan is the optimum in loss, only its TTFT among such plans unproven.
    if ((p.slo_s <= 0 || best.met) && best.end.loss <= p.rest_loss[0] + 1e-12 * (1 + std::abs(p.rest_loss[0])))
      reason_ += "; its loss is the least any plan has";
    reason_ += ")";
  }
}

}  // namespace

PolicyInfo oracle_policy() {
  return {"oracle",
          "offline optimum over the real trace: best quality within the SLO (Pareto search over chunks)",
          {ParamSpec::choice("timing", "pipelined", {"pipelined", "sequential"},
                             "timing model: pipelined = network and GPU overlap as in the simulator; sequential = "
                             "fetch, decode and recompute one after another (CacheGen)"),
           ParamSpec::integer("max_states", 8000, "states",
                              "most Pareto states kept per chunk; beyond it the frontier is thinned (a beam) and the "
                              "plan is approximate",
                              16, 10000000),
           ParamSpec::integer("bound_states", 256, "states",
                              "states per chunk of a quick first search whose plan caps the full one (speed only, "
                              "unless thinned; 0 = one search)",
                              0, 10000000)},
          true,
          [](const ParamValues& v) {
            return std::make_unique<OraclePolicy>(v.text("timing") == "sequential", v.integer("max_states"),
                                                  v.integer("bound_states"));
          }};
}

}  // namespace kvs::policies
