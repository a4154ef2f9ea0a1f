// Independent references of the adaptation policies, written from their
// headers and the published algorithms (POLICIES.md: Pensieve's mpc.py and
// robust MPC, sabre's BolaEnh, CacheGen §5.3 and its released code, the
// offline optimum), compared decision by decision with the policies on many
// random but valid states: random sizes, decode and quality per chunk and
// level (monotone or not, negative quality costs), recompute cheaper than
// every level or not, random throughput histories (zeros included, none at
// the first chunk), SLOs from none to already missed, one chunk, one level,
// chunks still in flight (several requests outstanding).
// The references share no code with policies/ beyond the data types.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "policies/policy.h"
#include "traces/trace.h"

namespace kvs::policies {
namespace {

constexpr int kRe = Action::kRecompute;
constexpr double kInf = std::numeric_limits<double>::infinity();

struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t seed) : g(seed) {}
  double u(double a, double b) { return a + (b - a) * double(g() >> 11) * 0x1p-53; }
  double log_u(double a, double b) { return std::exp(u(std::log(a), std::log(b))); }
  int i(int lo, int hi) { return lo + int(g() % uint64_t(hi - lo + 1)); }
  bool coin(double p) { return u(0, 1) < p; }
};

// Chunks of `levels` levels: monotone (more bytes, less loss) or not, with
// negative quality costs now and then, recompute cheap or dear.
std::vector<ChunkInfo> random_chunks(Rng& r, uint32_t n, uint32_t levels) {
  const bool monotone = r.coin(0.5), cheap_recompute = r.coin(0.25), negative = r.coin(0.2);
  std::vector<ChunkInfo> chunks(n);
  for (uint32_t c = 0; c < n; ++c) {
    ChunkInfo& ch = chunks[c];
    ch.token_begin = uint64_t(c) * 256;
    ch.tokens = 256;
    double bytes = r.log_u(1e5, 4e6), q = r.u(0, 0.002);
    for (uint32_t l = 0; l < levels; ++l) {
      if (monotone) {
        ch.bytes.push_back(uint64_t(bytes) + 1);
        ch.quality_cost.push_back(q);
        bytes *= r.u(0.3, 0.85);
        q += r.u(0.001, 0.03);
      } else {
        ch.bytes.push_back(uint64_t(r.log_u(1e5, 4e6)));
        ch.quality_cost.push_back(r.u(negative ? -0.01 : 0.0, 0.05));
      }
      ch.decode_s.push_back(r.u(0.001, 0.04));
    }
    ch.recompute_s = cheap_recompute ? r.u(0.0005, 0.002) : r.u(0.02, 0.5);
  }
  return chunks;
}

// One request's history as a client sees it: per chunk a decision time, and
// the chunk samples measured so far.
struct Request {
  std::vector<ChunkInfo> chunks;
  uint32_t levels = 0;
  double start_s = 0, slo_s = 0, first_token_s = 0;
  std::vector<ThroughputSample> samples;  // all of them; state k sees the first seen[k]
  std::vector<size_t> seen;               // per chunk, nondecreasing
  std::vector<double> now_s, gpu_busy_s;  // per chunk
  std::vector<int> action;                // per chunk: the level decided, or kRe
  std::vector<uint32_t> pending;          // per chunk: the decisions before it not yet on the GPU
};

Request random_request(Rng& r, uint32_t n, uint32_t levels) {
  Request q;
  q.chunks = random_chunks(r, n, levels);
  q.levels = levels;
  q.start_s = r.u(0, 2);
  q.first_token_s = r.u(0, 0.06);
  switch (r.i(0, 4)) {
    case 0: q.slo_s = 0; break;                   // none
    case 1: q.slo_s = r.u(0.001, 0.05); break;    // missed at once
    case 2: q.slo_s = r.u(0.2, 1.5); break;
    case 3: q.slo_s = r.u(1.5, 6); break;
    default: q.slo_s = r.u(20, 100); break;        // loose
  }
  // Throughput: a level around which samples wander (zero-rate samples now and then).
  const double base = r.log_u(1e6, 1e10);
  double t = q.start_s;
  for (uint32_t k = 0; k < n + 12; ++k) {
    const double rate = base * r.log_u(0.2, 5);
    const uint64_t bytes = r.coin(0.1) ? 0 : uint64_t(r.log_u(1e5, 4e6));
    const double d = r.coin(0.05) ? 0.0 : 8.0 * double(std::max<uint64_t>(bytes, 1)) / rate;
    q.samples.push_back({t, t + d, bytes});
    t += d + r.u(0, 0.01);
  }
  size_t seen = r.coin(0.7) ? size_t(r.i(1, 10)) : 0;  // some from earlier requests on the connection, or none
  double now = q.start_s + r.u(0, 0.05);
  for (uint32_t k = 0; k < n; ++k) {
    q.seen.push_back(std::min(seen, q.samples.size()));
    q.now_s.push_back(now);
    q.gpu_busy_s.push_back(r.coin(0.5) ? now + r.u(0, 0.2) : r.u(0, now));
    const bool fetched = r.coin(0.8);
    q.action.push_back(fetched ? r.i(0, int(levels) - 1) : kRe);
    if (fetched) ++seen;
    now += r.u(0.001, 0.4);
  }
  // In flight (several requests outstanding): the last one or two decisions,
  // the first of them a fetch not yet arrived.
  for (uint32_t k = 0; k < n; ++k) {
    uint32_t p = r.coin(0.3) ? uint32_t(r.i(1, 3)) : 0;
    p = std::min(p, k);
    while (p > 0 && q.action[k - p] == kRe) --p;
    q.pending.push_back(p);
  }
  return q;
}

StreamState state_at(const Request& q, uint32_t k) {
  StreamState s;
  s.now_s = q.now_s[k];
  s.elapsed_s = q.now_s[k] - q.start_s;
  s.slo_s = q.slo_s;
  s.next_chunk = k;
  s.total_chunks = uint32_t(q.chunks.size());
  s.levels = q.levels;
  s.chunks = &q.chunks;
  for (uint32_t c = 0; c < k; ++c) {
    const bool arrived = q.action[c] != kRe && c < k - q.pending[k];
    s.decisions.push_back({c, q.action[c], q.now_s[c], arrived ? q.now_s[c + 1] : -1.0});
  }
  s.chunk_samples.assign(q.samples.begin(), q.samples.begin() + long(q.seen[k]));
  s.rtt_s = 0.02;
  s.gpu_busy_until_s = q.gpu_busy_s[k];
  s.first_token_s = q.first_token_s;
  return s;
}

// ---- estimates -------------------------------------------------------------------

double rate_of(const ThroughputSample& x) {
  return x.end_s > x.start_s ? 8.0 * double(x.bytes) / (x.end_s - x.start_s) : 0.0;
}

// Pensieve mpc.py: harmonic mean of the last k (positive) chunk throughputs.
double ref_harmonic(const std::vector<ThroughputSample>& v, size_t k) {
  std::vector<double> pos;
  for (const auto& x : v)
    if (rate_of(x) > 0) pos.push_back(rate_of(x));
  const size_t from = pos.size() > k ? pos.size() - k : 0;
  double inv = 0;
  for (size_t i = from; i < pos.size(); ++i) inv += 1 / pos[i];
  return pos.size() > from ? double(pos.size() - from) / inv : 0.0;
}

// robust_mpc: per sample, |previous estimate - sample| / sample (0 for the
// first), the previous estimate being the harmonic mean before the sample;
// the largest of the last k.
double ref_max_error(const std::vector<ThroughputSample>& v, size_t k) {
  std::vector<double> pos, err;
  for (const auto& x : v) {
    const double r = rate_of(x);
    if (r <= 0) continue;
    if (pos.empty()) {
      err.push_back(0);
    } else {
      const size_t from = pos.size() > k ? pos.size() - k : 0;
      double inv = 0;
      for (size_t i = from; i < pos.size(); ++i) inv += 1 / pos[i];
      err.push_back(std::fabs(double(pos.size() - from) / inv - r) / r);
    }
    pos.push_back(r);
  }
  double m = 0;
  for (size_t i = err.size() > k ? err.size() - k : 0; i < err.size(); ++i) m = std::max(m, err[i]);
  return m;
}

// ---- the pipelined and sequential timelines, written out ---------------------------

struct Clocks {
  double net = 0, gpu = 0;
};

void fetch(Clocks& k, double transfer_s, double decode_s, bool sequential = false);
void recompute(Clocks& k, double s, bool sequential = false);

// The clocks at a decision: the network free now, the GPU after its queue,
// then this request's decided chunks not on the GPU yet: from the first fetch
// still in flight on (its whole bytes at `rate`, its decode; recomputes behind it).
Clocks clocks_at(const StreamState& s, double rate, bool sequential = false) {
  Clocks k{s.now_s, std::max(s.now_s, s.gpu_busy_until_s)};
  bool behind = false;
  for (const Decision& d : s.decisions) {  // in chunk order here
    behind = behind || (d.level >= 0 && d.arrived_s < 0);
    if (!behind) continue;
    const ChunkInfo& c = s.chunk(d.chunk);
    if (d.level < 0)
      recompute(k, c.recompute_s, sequential);
    else
      fetch(k, d.arrived_s < 0 ? 8.0 * double(c.bytes[size_t(d.level)]) / rate : 0.0, c.decode_s[size_t(d.level)], sequential);
  }
  return k;
}

void fetch(Clocks& k, double transfer_s, double decode_s, bool sequential) {
  if (sequential) {
    k.gpu = std::max(k.gpu, k.net) + transfer_s + decode_s;
    k.net = k.gpu;
  } else {
    k.net += transfer_s;
    k.gpu = std::max(k.gpu, k.net) + decode_s;
  }
}

void recompute(Clocks& k, double s, bool sequential) {
  k.gpu = (sequential ? std::max(k.gpu, k.net) : k.gpu) + s;
  if (sequential) k.net = k.gpu;
}

double end_of(const Clocks& k, const StreamState& s) { return std::max(k.net, k.gpu) + s.first_token_s; }
double deadline_of(const StreamState& s) { return s.slo_s > 0 ? s.now_s - s.elapsed_s + s.slo_s : 1e18; }

// ---- mpc / robust-mpc (mpc.h, Pensieve mpc.py) ---------------------------------------

struct MpcChoice {
  double best = -kInf;          // the best objective
  std::vector<double> by_first;  // per first action (levels, then recompute): its best objective
};

MpcChoice ref_mpc(const StreamState& s, double rate, double lambda_ranges, int horizon) {
  const auto& ch = *s.chunks;
  const int L = int(s.levels), A = L + 1;
  const uint32_t n = s.total_chunks, first = s.next_chunk;
  const int H = std::min<int>(horizon, int(n - first));
  double range = 0;
  for (uint32_t c = 0; c < n; ++c) {
    double w = 0;
    for (int l = 0; l < L; ++l) w = std::max(w, ch[c].quality_cost[size_t(l)]);
    range += w;
  }
  const double lambda = lambda_ranges * (range > 0 ? range : 1.0);
  auto q = [&](uint32_t c, int a) { return a == L ? 0.0 : ch[c].quality_cost[size_t(a)]; };
  auto step = [&](Clocks& k, uint32_t c, int a) {
    if (a == L)
      recompute(k, ch[c].recompute_s);
    else
      fetch(k, 8.0 * double(ch[c].bytes[size_t(a)]) / rate, ch[c].decode_s[size_t(a)]);
  };
  MpcChoice out;
  out.by_first.assign(size_t(A), -kInf);
  int count = 1;
  for (int h = 0; h < H; ++h) count *= A;
  std::vector<int> seq(static_cast<size_t>(H));
  for (int code = 0; code < count; ++code) {
    for (int h = 0, x = code; h < H; ++h, x /= A) seq[size_t(h)] = x % A;
    Clocks k = clocks_at(s, rate);
    double qs = 0;
    for (int h = 0; h < H; ++h) step(k, first + uint32_t(h), seq[size_t(h)]), qs += q(first + uint32_t(h), seq[size_t(h)]);
    for (uint32_t c = first + uint32_t(H); c < n; ++c) step(k, c, seq.back()), qs += q(c, seq.back());  // tail = last
    const double obj = -qs - lambda * std::max(0.0, end_of(k, s) - deadline_of(s));
    out.best = std::max(out.best, obj);
    out.by_first[size_t(seq[0])] = std::max(out.by_first[size_t(seq[0])], obj);
  }
  return out;
}

TEST(Reference, MpcAndRobustMpcDecideAsPensieve) {
  int decisions = 0, recomputes = 0, robust_lower = 0;
  for (uint64_t seed = 1; seed <= 600; ++seed) {
    Rng r(seed);
    const uint32_t n = uint32_t(r.i(1, 7)), L = uint32_t(r.i(1, 3));
    const Request q = random_request(r, n, L);
    for (const bool robust : {false, true}) {
      auto p = make_policy(robust ? "robust-mpc" : "mpc", {{"horizon", "3"}});
      for (uint32_t k = 0; k < n; ++k) {
        const StreamState s = state_at(q, k);
        const double hm = ref_harmonic(s.chunk_samples, 5);
        double rate = hm > 0 ? hm : 100e6;
        if (robust && hm > 0) rate /= 1 + ref_max_error(s.chunk_samples, 5);
        robust_lower += robust && rate < hm;
        const MpcChoice want = ref_mpc(s, rate, 10, 3);
        const Action a = p->decide(s);
        const int idx = a.recompute() ? int(L) : a.level;
        ASSERT_TRUE(idx >= 0 && idx <= int(L)) << a.level;
        const std::string what = "seed " + std::to_string(seed) + (robust ? " robust" : "") + " chunk " +
                                 std::to_string(k) + ": " + a.reason;
        EXPECT_GE(want.by_first[size_t(idx)], want.best - 1e-9 * (1 + std::fabs(want.best))) << what;
        recomputes += a.recompute();
        ++decisions;
      }
    }
  }
  EXPECT_GT(recomputes, 0);
  EXPECT_GT(robust_lower, 0);
  EXPECT_GT(decisions, 500);
}

// The levels 0..levels-1 best quality first (least quality_cost), ties to
// the fewer bytes, then the lower level (the order the policies' headers give).
std::vector<int> best_quality_first(const ChunkInfo& c, uint32_t levels) {
  std::vector<int> order;
  for (int l = 0; l < int(levels); ++l) order.push_back(l);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return c.quality_cost[size_t(a)] != c.quality_cost[size_t(b)] ? c.quality_cost[size_t(a)] < c.quality_cost[size_t(b)]
                                                                  : c.bytes[size_t(a)] < c.bytes[size_t(b)];
  });
  return order;
}

// ---- rate (rate.h) ------------------------------------------------------------------

int ref_rate(const StreamState& s, double safety) {
  const ChunkInfo& c = s.chunk(s.next_chunk);
  const std::vector<int> order = best_quality_first(c, s.levels);
  const double est = safety * ref_harmonic(s.chunk_samples, 5);
  if (est <= 0) {
    int best = order[0];
    for (int l : order)
      if (c.bytes[size_t(l)] < c.bytes[size_t(best)]) best = l;
    return best;
  }
  uint32_t left = s.total_chunks - s.next_chunk;
  for (const auto& d : s.decisions) left += d.level >= 0 && d.arrived_s < 0;
  const double share = s.slo_s > 0 ? (s.slo_s - s.elapsed_s - s.first_token_s) / left : 1e18;
  auto cost = [&](int l) { return std::max(8.0 * double(c.bytes[size_t(l)]) / est, c.decode_s[size_t(l)]); };
  for (int l : order)
    if (cost(l) <= share) return l;
  int quick = order[0];
  for (int l : order)
    if (cost(l) < cost(quick)) quick = l;
  return c.recompute_s < cost(quick) ? kRe : quick;
}

// Every decision of `policy` (default parameters) on 1,000 random requests
// against `ref`, a function of the decision state alone.
struct Compared {
  int decisions = 0, recomputes = 0;  // recomputes: the reference's
};
template <class Ref>
Compared compare_with(const std::string& policy, Ref ref) {
  Compared c;
  for (uint64_t seed = 1; seed <= 1000; ++seed) {
    Rng r(seed);
    const uint32_t n = uint32_t(r.i(1, 6)), L = uint32_t(r.i(1, 4));
    const Request q = random_request(r, n, L);
    auto p = make_policy(policy, {});
    for (uint32_t k = 0; k < n; ++k, ++c.decisions) {
      const StreamState s = state_at(q, k);
      const Action a = p->decide(s);
      const int want = ref(s);
      c.recomputes += want == kRe;
      EXPECT_EQ(a.level, want) << policy << ": seed " << seed << " chunk " << k << ": " << a.reason;
    }
  }
  return c;
}

TEST(Reference, RateDecidesAsItsHeader) {
  EXPECT_GT(compare_with("rate", [](const StreamState& s) { return ref_rate(s, 0.9); }).decisions, 300);
}

// ---- cachegen (the paper's rule, cachegen.h) -------------------------------------------

int ref_cachegen(const StreamState& s) {
  const ChunkInfo& c = s.chunk(s.next_chunk);
  const std::vector<int> order = best_quality_first(c, s.levels);
  const double est = ref_harmonic(s.chunk_samples, 1);  // the previous chunk
  if (est <= 0) return order[(order.size() - 1) / 2];
  auto end_with = [&](int level, bool recompute_this) {
    Clocks k = clocks_at(s, est);
    for (uint32_t j = s.next_chunk; j < s.total_chunks; ++j) {
      if (j == s.next_chunk && recompute_this)
        recompute(k, s.chunk(j).recompute_s);
      else
        fetch(k, 8.0 * double(s.chunk(j).bytes[size_t(level)]) / est, s.chunk(j).decode_s[size_t(level)]);
    }
    return end_of(k, s);
  };
  int chosen = -1;
  for (int l : order)
    if (end_with(l, false) <= deadline_of(s)) {
      chosen = l;
      break;
    }
  if (chosen < 0)
    for (int l : order)
      if (chosen < 0 || end_with(l, false) < end_with(chosen, false)) chosen = l;
  return end_with(chosen, true) < end_with(chosen, false) ? kRe : chosen;
}

TEST(Reference, CacheGenDecidesAsThePapersRule) {
  const Compared c = compare_with("cachegen", ref_cachegen);
  EXPECT_GT(c.recomputes, 0);
  EXPECT_GT(c.decisions, 300);
}

// ---- cachegen-code (CacheGen's src/utils.py config_selection) -----------------------------

TEST(Reference, CacheGenCodeDecidesAsConfigSelection) {
  int n_decisions = 0, recomputes = 0;
  for (uint64_t seed = 1; seed <= 1000; ++seed) {
    Rng r(seed);
    const uint32_t n = uint32_t(r.i(1, 6)), L = uint32_t(r.i(1, 4));
    const Request q = random_request(r, n, L);
    NetworkFuture f;
    f.rate_bps = r.log_u(1e6, 1e10);
    f.payload_share = r.u(0.9, 1);
    auto p = make_policy("cachegen-code", {});
    p->see_future(f);
    double ttft = 0;
    for (uint32_t k = 0; k < n; ++k, ++n_decisions) {
      const StreamState s = state_at(q, k);
      const ChunkInfo& c = s.chunk(k);
      // Best quality first (levels need not be monotone here), the first strictly under SLO / chunks.
      const std::vector<int> order = best_quality_first(c, L);
      const double budget = q.slo_s > 0 ? q.slo_s / n : kInf;
      int want = kRe;
      for (int l : order) {
        const double t = 8.0 * double(c.bytes[size_t(l)]) / (f.rate_bps * f.payload_share);
        if (t < budget) {
          want = l, ttft += t;
          break;
        }
      }
      if (want == kRe) ttft += 0.2;
      recomputes += want == kRe;
      const Action a = p->decide(s);
      EXPECT_EQ(a.level, want) << "seed " << seed << " chunk " << k << ": " << a.reason;
    }
    EXPECT_NEAR(p->predicted_ttft_s(), ttft, 1e-9 * (1 + ttft)) << "seed " << seed;
  }
  EXPECT_GT(recomputes, 0);
  EXPECT_GT(n_decisions, 300);
}

// ---- bola (bola.h, sabre BolaEnh) --------------------------------------------------------

class RefBola {
 public:
  int decide(const StreamState& s) {
    const uint32_t L = s.levels;
    auto ladder_of = [&](uint32_t c) {
      const ChunkInfo& ch = s.chunk(c);
      std::vector<int> idx;
      for (uint32_t l = 0; l < L; ++l) idx.push_back(int(l));
      std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) {
        return ch.bytes[size_t(a)] != ch.bytes[size_t(b)] ? ch.bytes[size_t(a)] < ch.bytes[size_t(b)]
                                                          : ch.quality_cost[size_t(a)] < ch.quality_cost[size_t(b)];
      });
      std::vector<int> lad;
      for (int l : idx)
        if (lad.empty() || ch.quality_cost[size_t(l)] < ch.quality_cost[size_t(lad.back())]) lad.push_back(l);
      return lad;
    };
    const std::vector<int> lad = ladder_of(s.next_chunk);
    const int top = int(lad.size()) - 1;
    if (s.slo_s <= 0) return lad.back();
    const double hm = ref_harmonic(s.chunk_samples, 5);
    const double rate = hm > 0 ? hm : 100e6;
    auto ttft_with = [&](int action) {
      Clocks k = clocks_at(s, rate);
      for (uint32_t c = s.next_chunk; c < s.total_chunks; ++c) {
        const int a = c == s.next_chunk ? action : ladder_of(c).front();
        if (a == kRe)
          recompute(k, s.chunk(c).recompute_s);
        else
          fetch(k, 8.0 * double(s.chunk(c).bytes[size_t(a)]) / rate, s.chunk(c).decode_s[size_t(a)]);
      }
      return end_of(k, s);
    };
    const double base = ttft_with(lad.front()), slack = deadline_of(s) - base;
    if (slack < 0 && ttft_with(kRe) < base) return kRe;
    const ChunkInfo& ch = s.chunk(s.next_chunk);
    std::vector<double> S, u;
    for (int l : lad) S.push_back(std::max(1.0, double(ch.bytes[size_t(l)])));
    for (double b : S) u.push_back(1 + std::log(b / S[0]));
    if (top == 0) return lad.back();
    const double m = 0.1 * s.slo_s, B = std::max(0.25 * s.slo_s, m + 0.2 * m * double(lad.size()));
    const double gp = (u.back() - 1) / (B / m - 1), V = m / gp;
    auto min_for = [&](int qq) {
      double lvl = 0;
      for (int k = 0; k < qq; ++k)
        lvl = std::max(lvl, V * (gp + (S[size_t(qq)] * u[size_t(k)] - S[size_t(k)] * u[size_t(qq)]) / (S[size_t(qq)] - S[size_t(k)])));
      return lvl;
    };
    int q = 0;
    if (!started_) {
      const double share = (deadline_of(s) - s.now_s - s.first_token_s) / double(s.total_chunks - s.next_chunk);
      while (q < top && 8.0 * double(ch.bytes[size_t(lad[size_t(q + 1)])]) / rate <= share) ++q;
      ph_ = std::max(0.0, min_for(q) - slack);
    } else {
      const double Q = slack + ph_;
      double best = -kInf;
      for (int k = 0; k <= top; ++k) {
        const double score = (V * (u[size_t(k)] + gp) - Q) / S[size_t(k)];
        if (score > best) best = score, q = k;
      }
      const double over = Q - V * (u[size_t(q)] + gp);
      if (over > 0) ph_ -= std::min(ph_, over);
    }
    started_ = true;
    const double safety = safety_;
    safety_ = std::max(0.5, safety_ * 0.9);
    int allowed = 0;
    for (int k = 1; k <= q; ++k)
      if (ttft_with(lad[size_t(k)]) - base <= safety * std::max(0.0, slack)) allowed = k;
    if (allowed < q) {
      q = allowed;
      ph_ = std::min(ph_, std::max(0.0, min_for(q) - slack));
    }
    return lad[size_t(q)];
  }

 private:
  bool started_ = false;
  double ph_ = 0, safety_ = 0.9;
};

TEST(Reference, BolaDecidesAsSabresBolaEnh) {
  int n_decisions = 0, levels_seen = 0;
  for (uint64_t seed = 1; seed <= 1000; ++seed) {
    Rng r(seed);
    const uint32_t n = uint32_t(r.i(1, 7)), L = uint32_t(r.i(1, 4));
    const Request q = random_request(r, n, L);
    auto p = make_policy("bola", {});
    RefBola ref;
    for (uint32_t k = 0; k < n; ++k, ++n_decisions) {
      const StreamState s = state_at(q, k);
      const Action a = p->decide(s);
      const int want = ref.decide(s);
      levels_seen += want > 0;
      ASSERT_EQ(a.level, want) << "seed " << seed << " chunk " << k << ": " << a.reason;
    }
  }
  EXPECT_GT(levels_seen, 0);
  EXPECT_GT(n_decisions, 300);
}


// ---- oracle (oracle.h): exhaustive enumeration under its documented model ------------------

struct Link {
  std::optional<traces::Trace> trace;
  double rate_bps = 0, rtt_s = 0, share = 1;
  // Last byte at the client of `bytes` requested at t: half an RTT up, the wire bits, half an RTT down.
  double arrival(double t, uint64_t bytes) const {
    const double bits = 8.0 * double(bytes) / share, up = t + rtt_s / 2;
    const double through = trace ? trace->time_to_deliver(up, bits) : (rate_bps > 0 ? up + bits / rate_bps : kInf);
    return through + rtt_s / 2;
  }
};

struct Timed {
  double ttft = 0, loss = 0;
};

Timed time_plan(const Request& q, const Link& link, const std::vector<int>& plan, bool sequential) {
  const double connected = q.start_s + link.rtt_s;
  double net = std::max(q.now_s[0], connected), gpu = std::max(q.now_s[0], q.gpu_busy_s[0]), loss = 0;
  for (size_t c = 0; c < plan.size(); ++c) {
    const ChunkInfo& ch = q.chunks[c];
    if (plan[c] == kRe) {
      gpu += ch.recompute_s;
      continue;
    }
    const size_t l = size_t(plan[c]);
    if (sequential) {
      gpu = link.arrival(std::max(gpu, connected), ch.bytes[l]) + ch.decode_s[l];
    } else {
      net = link.arrival(net, ch.bytes[l]);
      gpu = std::max(gpu, net) + ch.decode_s[l];
    }
    loss += ch.quality_cost[l];
  }
  return {gpu + q.first_token_s - q.start_s, loss};
}

TEST(Reference, OracleIsTheOptimumOfEveryPlan) {
  int cases = 0, missed = 0;
  for (uint64_t seed = 1; seed <= 400; ++seed) {
    Rng r(seed * 7919);
    const uint32_t n = uint32_t(r.i(1, 5)), L = uint32_t(r.i(1, 3));
    Request q = random_request(r, n, L);
    Link link;
    link.rtt_s = r.coin(0.2) ? 0.0 : r.u(0.002, 0.1);
    link.share = r.u(0.85, 1);
    if (r.coin(0.3)) {
      link.rate_bps = r.log_u(1e6, 1e10);
    } else {
      traces::Trace t;
      double at = 0;
      for (int k = 0, segs = r.i(1, 4); k < segs; ++k) {
        t.segments.push_back({at, r.coin(0.2) ? 0.0 : r.log_u(1e6, 1e10)});  // outages too
        at += r.u(0.02, 0.5);
      }
      t.duration_s = at;
      t.loops = r.coin(0.7);
      if (!t.loops) t.duration_s += r.u(0, 3);
      link.trace = t;
    }
    NetworkFuture f;
    f.trace = link.trace ? &*link.trace : nullptr;
    f.rate_bps = link.rate_bps;
    f.rtt_s = link.rtt_s;
    f.payload_share = link.share;
    f.request_start_s = q.start_s;
    for (const bool sequential : {false, true}) {
      // Every plan.
      int count = 1;
      for (uint32_t c = 0; c < n; ++c) count *= int(L) + 1;
      std::vector<std::pair<std::vector<int>, Timed>> plans;
      std::vector<int> plan(n);
      for (int code = 0; code < count; ++code) {
        for (uint32_t c = 0, x = uint32_t(code); c < n; ++c, x /= L + 1) plan[c] = x % (L + 1) == L ? kRe : int(x % (L + 1));
        const Timed t = time_plan(q, link, plan, sequential);
        if (std::isfinite(t.ttft)) plans.emplace_back(plan, t);
      }
      ASSERT_FALSE(plans.empty());  // recompute everything always finishes
      std::optional<Timed> want;
      for (const auto& [pl, t] : plans)
        if ((q.slo_s <= 0 || t.ttft <= q.slo_s) && (!want || t.loss < want->loss || (t.loss == want->loss && t.ttft < want->ttft)))
          want = t;
      const bool met = want.has_value();
      if (!met) {
        double least = kInf;
        for (const auto& pt : plans) least = std::min(least, pt.second.ttft);
        for (const auto& [pl, t] : plans)
          if (t.ttft <= least + 1e-9 && (!want || t.loss < want->loss)) want = t;
      }
      missed += !met;
      auto p = make_policy("oracle", {{"timing", sequential ? "sequential" : "pipelined"}});
      p->see_future(f);
      std::vector<int> got;
      std::string reason;
      for (uint32_t k = 0; k < n; ++k) {
        StreamState s = state_at(q, 0);  // the plan is made at the first decision
        s.next_chunk = k;
        const Action a = p->decide(s);
        got.push_back(a.level);
        reason = a.reason;
      }
      const Timed t = time_plan(q, link, got, sequential);
      const std::string what = "seed " + std::to_string(seed) + (sequential ? " sequential: " : " pipelined: ") + reason;
      EXPECT_NEAR(t.loss, want->loss, 1e-12) << what;
      EXPECT_NEAR(t.ttft, want->ttft, 1e-9) << what;
      EXPECT_NEAR(p->predicted_ttft_s(), t.ttft, 1e-9) << what;
      ++cases;
    }
  }
  EXPECT_GT(missed, 0);
  EXPECT_EQ(cases, 800);
}

}  // namespace
}  // namespace kvs::policies
