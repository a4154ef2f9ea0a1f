#include "sim/simulation.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <stdexcept>

#include <fmt/format.h>

#include "base/error.h"
#include "base/files.h"
#include "sim/engine.h"
#include "sim/gpu_model.h"
#include "sim/limits.h"

namespace kvs::sim {

namespace {

void validate(const SimConfig& c) {
  if (c.in_flight < 1) throw Error("in_flight: expected an integer >= 1");
  if (!(c.sample_interval_ms > 0)) throw Error("sample_interval_ms: expected a positive number");
  if (c.request_header_bytes < 16) throw Error("request_header_bytes: expected at least 16");
  if (c.response_header_bytes < 16) throw Error("response_header_bytes: expected at least 16");
  if (!(c.slo_s >= 0)) throw Error("slo_s: expected a number >= 0");
  if (!(c.max_sim_s > 0)) throw Error("max_sim_s: expected a positive number");
  if (c.arrivals.mode != "schedule" && c.arrivals.mode != "poisson")
    throw Error(fmt::format("arrivals mode: expected 'schedule' or 'poisson', got '{}'", c.arrivals.mode));
  if (c.arrivals.mode == "schedule" && c.arrivals.times_s.empty())
    throw Error("arrivals times_s: expected at least one time");
  for (double t : c.arrivals.times_s)
    if (!(t >= 0)) throw Error("arrivals times_s: expected times >= 0");
  if (c.arrivals.mode == "poisson" && (c.arrivals.count < 1 || !(c.arrivals.rate_per_s > 0)))
    throw Error("arrivals: poisson needs count >= 1 and rate_per_s > 0");
  // The ranges a real run can have (sim/limits.h; the scenario parser checks
  // the same with file and line): settings from options come through here only.
  namespace L = limits;
  auto in = [](const char* key, double v, double lo, double hi, bool lo_open = false) {
    if (!std::isfinite(v) || (lo_open ? !(v > lo) : !(v >= lo)) || v > hi)
      throw Error(fmt::format("{}: expected a number in {}{:g}, {:g}], got {:g}", key, lo_open ? "(" : "[", lo, hi, v));
  };
  auto most = [](const char* key, uint64_t v, uint64_t hi) {
    if (v > hi) throw Error(fmt::format("{}: expected at most {}, got {}", key, hi, v));
  };
  const LinkSpec& l = c.link;
  in("link.rate_mbps", l.rate_mbps, 0, L::kMaxRateMbps, !l.trace);  // unused (may be 0) with a trace
  in("link.rtt_ms", l.rtt_ms, 0, L::kMaxRttMs);
  in("link.access_rtt_ms", l.access_rtt_ms, 0, L::kMaxRttMs);
  if (!(l.loss_rate >= 0 && l.loss_rate < 1)) throw Error(fmt::format("link.loss_rate: expected a number in [0, 1), got {:g}", l.loss_rate));
  most("link.queue_packets", l.queue_packets, L::kMaxQueuePackets);
  if (l.mtu_bytes < 576 || l.mtu_bytes > 65535) throw Error(fmt::format("link.mtu_bytes: expected 576..65535, got {}", l.mtu_bytes));
  in("link.access_rate_mbps", l.access_rate_mbps, 0, L::kMaxRateMbps, true);
  most("link.tcp_buffer_bytes", l.tcp_buffer_bytes, L::kMaxTcpBufferBytes);
  in("link.initial_cwnd_segments", l.initial_cwnd_segments, 1, L::kMaxInitialCwndSegments);
  in("link.delayed_ack_count", l.delayed_ack_count, 1, L::kMaxDelayedAckCount);
  in("link.min_rto_ms", l.min_rto_ms, 0, L::kMaxMinRtoMs, true);
  const GpuSpec& g = c.gpu;
  in("gpu.peak_flops", g.peak_flops, 0, L::kMaxPeakFlops);
  in("gpu.memory_bytes_per_s", g.memory_bytes_per_s, 0, L::kMaxBytesPerS);
  in("gpu.efficiency", g.efficiency, 0, 1, true);
  if (!(g.busy_fraction >= 0 && g.busy_fraction < 1))
    throw Error(fmt::format("gpu.busy_fraction: expected a number in [0, 1), got {:g}", g.busy_fraction));
  in("gpu.decode_bytes_per_s", g.decode_bytes_per_s, 0, L::kMaxBytesPerS);
  in("gpu.decode_speedup", g.decode_speedup, 0, L::kMaxDecodeSpeedup, true);
  if (!(g.first_token_s <= L::kMaxFirstTokenS))
    throw Error(fmt::format("gpu.first_token_s: expected at most {:g}, got {:g}", L::kMaxFirstTokenS, g.first_token_s));
  in("max_sim_s", c.max_sim_s, 0, L::kMaxSimS, true);
  in("slo_s", c.slo_s, 0, L::kMaxSimS);
  in("sample_interval_ms", c.sample_interval_ms, 0, L::kMaxSampleIntervalMs, true);
  most("in_flight", c.in_flight, L::kMaxInFlight);
  most("request_header_bytes", c.request_header_bytes, L::kMaxHeaderBytes);
  most("response_header_bytes", c.response_header_bytes, L::kMaxHeaderBytes);
  const ArrivalSpec& a = c.arrivals;
  if (a.mode == "poisson") {
    most("arrivals.count (requests)", a.count, L::kMaxRequests);
    in("arrivals.rate_per_s", a.rate_per_s, 0, L::kMaxArrivalRatePerS, true);
  } else {
    most("arrivals.times_s (requests)", a.times_s.size(), L::kMaxRequests);
    for (double t : a.times_s)
      if (!(t < c.max_sim_s))
        throw Error(fmt::format("arrivals.times_s: arrival at {:g} s is not before max_sim_s ({:g} s)", t, c.max_sim_s));
  }
  const CrossTrafficSpec& x = c.cross;
  most("cross_traffic.bulk_tcp_flows", x.bulk_tcp_flows, L::kMaxCrossFlows);
  most("cross_traffic.onoff_udp_flows", x.onoff_udp_flows, L::kMaxCrossFlows);
  in("cross_traffic.udp_rate_mbps", x.udp_rate_mbps, 0, std::min(L::kMaxRateMbps, l.access_rate_mbps), true);
  in("cross_traffic.udp_on_s", x.udp_on_s, L::kMinUdpPeriodS, L::kMaxSimS);
  in("cross_traffic.udp_off_s", x.udp_off_s, L::kMinUdpPeriodS, L::kMaxSimS);
  in("cross_traffic.start_s", x.start_s, 0, L::kMaxSimS);
}

// Every number of a result is finite (absurd profile values could make a
// TTFT infinite; JSON would print null): else an error naming the field.
void check_finite(const RunResult& r) {
  auto check = [](double v, const RequestResult& q, const std::string& what) {
    if (!std::isfinite(v))
      throw Error(fmt::format("request {} (context {}): {} is {} (not a finite number; are the profile's values in "
                              "range?)",
                              q.id, q.context_id, what, v));
  };
  for (const auto& q : r.requests) {
    check(q.start_s, q, "start_s");
    check(q.ttft_s, q, "ttft_s");
    check(q.first_token_s, q, "first_token_s");
    check(q.breakdown.network_s, q, "breakdown.network_s");
    check(q.breakdown.queueing_s, q, "breakdown.queueing_s");
    check(q.breakdown.decode_s, q, "breakdown.decode_s");
    check(q.breakdown.recompute_s, q, "breakdown.recompute_s");
    check(q.breakdown.first_token_s, q, "breakdown.first_token_s");
    check(q.decode_total_s, q, "decode_total_s");
    check(q.recompute_total_s, q, "recompute_total_s");
    check(q.quality_loss_increase, q, "quality_loss_increase");
    check(q.quality_kl_nats, q, "quality_kl_nats");
    for (const auto& ch : q.chunks) {
      const std::string c = fmt::format("chunk {} ", ch.index);
      check(ch.gpu_start_s, q, c + "gpu_start_s");
      check(ch.gpu_end_s, q, c + "gpu_end_s");
      check(ch.last_byte_s, q, c + "last_byte_s");
      check(ch.loss_increase, q, c + "loss_increase");
    }
  }
}

// Portable exponential variates: the same numbers with every standard library.
std::vector<double> arrival_times(const ArrivalSpec& a, uint32_t seed, uint32_t run) {
  if (a.mode == "schedule") return a.times_s;
  std::mt19937_64 rng(uint64_t(seed) * 1000003ull + run);
  std::vector<double> times;
  double t = 0;
  for (uint32_t i = 0; i < a.count; ++i) {
    const double u = double(rng() >> 11) * 0x1.0p-53;
    t += -std::log1p(-u) / a.rate_per_s;
    times.push_back(t);
  }
  return times;
}

// Target layer l's share of a chunk's bytes: the profiled layer at the same
// depth (l x profiled layers / target layers), renormalized; an even split
// when the profile records none.
std::vector<double> target_layer_shares(const std::vector<double>& profiled, size_t target_layers) {
  std::vector<double> shares(target_layers, 1.0 / double(target_layers));
  if (profiled.empty()) return shares;
  double sum = 0;
  for (size_t l = 0; l < target_layers; ++l) sum += shares[l] = profiled[l * profiled.size() / target_layers];
  if (!(sum > 0)) return std::vector<double>(target_layers, 1.0 / double(target_layers));
  for (double& x : shares) x /= sum;
  return shares;
}

// Records each layer's part of the chunk (`profiled_shares[k]`: the
// profile's layer split at level index k) for recomputes that need a
// left-out layer and for the selective schedule; a windowed target's chunk
// keeps the bytes of the layers the query reads and their even share of the
// decode time.
void split_chunk_over_layers(ContextSpec& cs, size_t chunk,
                             const std::vector<const std::vector<double>*>& profiled_shares) {
  ChunkSpec& s = cs.chunks[chunk];
  const size_t L = cs.layers;
  std::vector<bool> read(L);
  size_t read_count = 0;
  for (size_t l = 0; l < L; ++l) read_count += read[l] = cs.query_reads(chunk, l);
  std::vector<std::vector<double>> layer_bytes;
  std::vector<double> layer_decode_s;
  for (size_t k = 0; k < s.bytes.size(); ++k) {
    std::vector<double> parts = target_layer_shares(*profiled_shares[k], L);
    double sent = 0;
    for (size_t l = 0; l < L; ++l) {
      parts[l] *= double(s.bytes[k]);
      if (read[l]) sent += parts[l];
    }
    layer_bytes.push_back(std::move(parts));
    layer_decode_s.push_back(s.decode_s[k] / double(L));
    if (read_count < L) {
      s.bytes[k] = uint64_t(std::llround(sent));
      s.decode_s[k] *= double(read_count) / double(L);
    }
  }
  cs.layer_bytes.push_back(std::move(layer_bytes));
  cs.layer_decode_s.push_back(std::move(layer_decode_s));
}

// ChunkInfo::window_reads of a windowed target's chunk `chunk` (the chunks
// before it already split over layers).
void set_window_reads(ContextSpec& cs, size_t chunk) {
  const uint64_t begin = cs.chunks[chunk].token_begin;
  auto& reads = cs.chunks[chunk].window_reads;
  for (size_t j = chunk; j-- > 0;) {
    policies::ChunkInfo::WindowRead r;
    bool reached = false;  // some windowed layer reads chunk j
    const size_t levels = cs.chunks[j].bytes.size();
    r.bytes.assign(levels, 0.0);
    r.decode_s.assign(levels, 0.0);
    if (!cs.query_reads_any(j)) r.quality_cost = cs.chunks[j].quality_cost;
    for (size_t l = 0; l < cs.layer_windows.size(); ++l) {
      const uint32_t w = cs.layer_windows[l];
      if (w == 0 || !window_reaches(w, cs.chunk_end(j), begin)) continue;  // full layers are always in
      reached = true;
      if (cs.query_reads(j, l)) continue;  // fetched with its chunk
      ++r.layers;
      for (size_t k = 0; k < levels; ++k) {
        r.bytes[k] += cs.layer_bytes[j][k][l];
        r.decode_s[k] += cs.layer_decode_s[j][k];
      }
    }
    if (!reached) break;  // no window reaches further back
    reads.push_back(std::move(r));
  }
}

}  // namespace

double kv_size_scale(const codec::ModelInfo& profiled, const codec::ModelInfo& target) {
  const uint64_t p = profiled.kv.elements_per_token();
  if (p == 0) throw Error("profile model: KV shape has no elements");
  return double(target.kv.elements_per_token()) / double(p);
}

codec::ModelInfo resolve_target(const SimConfig& c, const codec::Profile& profile) {
  if (c.target_model) return *c.target_model;
  if (!c.target.empty()) return model_preset(c.target);
  return profile.model;
}

SimOutput simulate(const SimConfig& config, const codec::Profile& profile, const SimHooks& hooks) {
  validate(config);
  const codec::CodecProfile* cp = nullptr;
  try {
    cp = &profile.codec(config.codec);
  } catch (const std::invalid_argument& e) {
    throw Error(e.what());
  }
  if (cp->contexts.empty()) throw Error(fmt::format("profile codec '{}' has no contexts", config.codec));
  for (uint32_t c : config.arrivals.contexts)
    if (c >= cp->contexts.size())
      throw Error(fmt::format("arrivals contexts: index {} but the profile has {} contexts", c, cp->contexts.size()));

  // The ladder policies are offered: codec level of each offered index.
  bool all_levels = config.all_levels;
  if (!hooks.make_policy)
    for (const auto& spec : policies::policy_info(config.policy).params) all_levels = all_levels || spec.name == "level";
  std::vector<int> ladder;
  if (all_levels) {
    for (size_t l = 0; l < cp->levels(); ++l) ladder.push_back(int(l));
  } else {
    ladder = cp->front_levels();
  }
  const policies::QualityMeasure measure =
      config.quality_loss_increase ? policies::QualityMeasure::kLossIncrease : policies::QualityMeasure::kKl;

  const codec::ModelInfo target = resolve_target(config, profile);
  const double scale = kv_size_scale(profile.model, target);
  const ComputeModel compute(target, config.gpu, profile.device);  // GPU-measured decode times: no decode_speedup

  // The profile as the engine sees it: sizes scaled, GPU times computed.
  // Every time and size must be one a run can have (ns-3 time is an integer
  // of nanoseconds; an infinite or 10^300 s decode is a broken profile).
  auto in_range = [&](double v, double max, const codec::ContextProfile& ctx, size_t chunk, const char* what) {
    if (!(v >= 0 && v <= max))
      throw Error(fmt::format("{}: context '{}' chunk {}: {} {:g} is out of range (0..{:g}) for a run", config.profile_path,
                              ctx.id, chunk, what, v, max));
    return v;
  };
  std::vector<ContextSpec> contexts;
  for (const auto& ctx : cp->contexts) {
    if (ctx.chunks.empty()) throw Error(fmt::format("profile context '{}' has no chunks", ctx.id));
    ContextSpec cs;
    cs.id = ctx.id;
    cs.level_numbers = ladder;
    cs.quality_measure = measure;
    cs.tokens = ctx.tokens;
    cs.layers = target.kv.layers, cs.kv_heads = target.kv.kv_heads, cs.head_dim = target.kv.head_dim;
    cs.first_token_s = in_range(compute.first_token_s(ctx.tokens), limits::kMaxSimS, ctx, 0, "first token s");
    if (target.has_windows()) cs.layer_windows = target.layer_windows;
    for (const auto& ch : ctx.chunks) {
      const size_t chunk = size_t(&ch - ctx.chunks.data());
      ChunkSpec s;
      s.token_begin = ch.token_begin;
      s.tokens = ch.tokens;
      s.recompute_s = in_range(compute.recompute_s(ch.token_begin, ch.tokens), limits::kMaxSimS, ctx, chunk, "recompute s");
      const double fp16_bytes = 2.0 * double(target.kv.elements_per_token()) * ch.tokens;
      for (const int level : ladder) {
        if (size_t(level) >= ch.levels.size())
          throw Error(fmt::format("{}: context '{}' chunk {}: {} levels, the codec has {}", config.profile_path, ctx.id,
                                  chunk, ch.levels.size(), cp->levels()));
        const codec::ChunkLevel& lv = ch.levels[size_t(level)];
        s.bytes.push_back(scale == 1.0 ? lv.bytes
                                       : uint64_t(in_range(std::round(double(lv.bytes) * scale), 0x1p53, ctx, chunk, "bytes")));
        s.decode_s.push_back(in_range(compute.decode_s(config.codec, lv.decode_s, scale, fp16_bytes), limits::kMaxSimS,
                                      ctx, chunk, "decode s"));
        s.quality_cost.push_back(measure == policies::QualityMeasure::kKl ? lv.kl_nats : lv.loss_increase);
      }
      cs.chunks.push_back(std::move(s));
      std::vector<const std::vector<double>*> shares;
      bool recorded = false;  // the profile splits this chunk's bytes over layers
      for (const int level : ladder) {
        shares.push_back(&ch.levels[size_t(level)].layer_shares);
        recorded = recorded || !shares.back()->empty();
      }
      if (cs.windowed() || recorded) split_chunk_over_layers(cs, cs.chunks.size() - 1, shares);
      if (cs.windowed()) set_window_reads(cs, cs.chunks.size() - 1);
    }
    // A chunk the query reads nothing of costs nothing (ChunkInfo::window_reads:
    // unless a recompute reads it; its cost went there above).
    for (size_t c = 0; c < cs.chunks.size() && cs.windowed(); ++c)
      if (!cs.query_reads_any(c)) std::fill(cs.chunks[c].quality_cost.begin(), cs.chunks[c].quality_cost.end(), 0.0);
    contexts.push_back(std::move(cs));
  }

  EngineConfig ec;
  ec.network = config.network;
  ec.link = config.link;
  ec.cross = config.cross;
  ec.arrival_s = arrival_times(config.arrivals, config.seed, config.run);
  for (size_t i = 0; i < ec.arrival_s.size(); ++i)
    ec.contexts.push_back(config.arrivals.contexts.empty()
                              ? uint32_t(i % contexts.size())
                              : config.arrivals.contexts[i % config.arrivals.contexts.size()]);
  ec.slo_s = config.slo_s;
  ec.in_flight = config.in_flight;
  ec.sample_interval_s = config.sample_interval_ms / 1000;
  ec.request_header_bytes = config.request_header_bytes;
  ec.response_header_bytes = config.response_header_bytes;
  ec.seed = config.seed;
  ec.run = config.run;
  ec.max_sim_s = config.max_sim_s;
  ec.show_progress = config.show_progress;

  ec.policy_reads_future = !hooks.make_policy && policies::policy_info(config.policy).reads_future;

  std::string policy_name;
  policies::Schedule schedule = policies::Schedule::kInOrder;
  PolicyFactory factory = [&](uint32_t request) {
    auto p = hooks.make_policy ? hooks.make_policy(request) : policies::make_policy(config.policy, config.policy_params);
    if (policy_name.empty()) policy_name = p->name(), schedule = p->schedule();
    return p;
  };
  EngineOutput eo = run_engine(ec, contexts, factory);

  SimOutput out;
  RunResult& r = out.result;
  r.policy = policy_name;
  r.policy_reads_future = ec.policy_reads_future;
  r.schedule = schedule == policies::Schedule::kInOrder                ? "in-order"
               : schedule == policies::Schedule::kLoadBackComputeFront ? "load-back-compute-front"
                                                                       : "selective-layers";
  r.decode_timing = compute.decode_timing_note(config.codec, profile.device);
  r.profile = config.profile_path;
  r.codec = config.codec;
  r.model = target.name;
  r.profiled_model = profile.model.name;
  r.size_scale = scale;
  r.slo_s = config.slo_s;
  r.seed = config.seed;
  r.run = config.run;
  if (scale != 1.0 || target.name != profile.model.name)
    r.scaling_note = fmt::format(
        "sizes and decode times scaled x{:.6g} from the profiled model {} ({} KV elements/token) to {} ({} KV "
        "elements/token); recompute and first token use {}'s shape",
        scale, profile.model.name, profile.model.kv.elements_per_token(), target.name,
        target.kv.elements_per_token(), target.name);
  if (target.has_windows()) {
    uint32_t windowed = 0, smallest = 0, largest = 0;
    for (uint32_t w : target.layer_windows)
      if (w > 0) ++windowed, smallest = smallest ? std::min(smallest, w) : w, largest = std::max(largest, w);
    r.window_note = fmt::format(
        "{} of {}'s {} layers attend within a sliding window ({} tokens): a chunk carries only the layers whose "
        "window reaches the first token (their share of its bytes as the profile splits them, else even; an even "
        "share of its decode time), a "
        "recomputed chunk first fetches the left-out layers of the tokens its window reads (and takes on the quality "
        "cost of the chunks they belong to that no layer of the query reads: such a chunk costs nothing else), and "
        "prefill and the first token attend within the windows",
        windowed, target.name, target.kv.layers,
        smallest == largest ? fmt::format("{}", smallest) : fmt::format("{} to {}", smallest, largest));
  }
  r.network_model = eo.network_model;
  r.network = eo.network;
  r.network_settings = std::move(eo.network_settings);
  r.sim_end_s = eo.sim_end_s;
  r.events = eo.events;
  r.requests = std::move(eo.requests);
  for (size_t i = 0; i < r.requests.size() && i < ec.arrival_s.size(); ++i) {
    r.requests[i].arrival_s = ec.arrival_s[i];
    r.requests[i].started = !r.requests[i].chunks.empty();  // a started request lists its chunks
  }
  r.quality_measure = policies::quality_measure_name(measure);
  r.levels_offered = ladder;
  for (auto& q : r.requests) {  // codec level numbers, and both measures by name from the profile
    const auto& ctx = cp->contexts[q.context];
    const ContextSpec& spec = contexts[q.context];
    q.quality_loss_increase = q.quality_kl_nats = 0;
    auto add = [&](ChunkRecord& ch, size_t chunk, int level_index) {
      const auto& lv = ctx.chunks[chunk].levels.at(size_t(ladder.at(size_t(level_index))));
      ch.loss_increase += lv.loss_increase;
      ch.kl_nats += lv.kl_nats;
      q.quality_loss_increase += lv.loss_increase;
      q.quality_kl_nats += lv.kl_nats;
    };
    for (auto& ch : q.chunks) {  // level indices still
      if (ch.index >= ctx.chunks.size()) continue;
      if (ch.level >= 0) {
        if (spec.query_reads_any(ch.index)) add(ch, ch.index, ch.level);  // else: no layer read, no cost
        continue;
      }
      // A windowed recompute takes on the costs of the unread chunks it read (ChunkInfo::window_reads).
      policies::for_each_window_read(
          spec.chunks[ch.index], ch.index, [&](uint32_t j) { return q.chunks[j].level; },
          [&](const policies::ChunkInfo::WindowRead& read, uint32_t j, int level) {
            if (!read.quality_cost.empty()) add(ch, j, level);
          });
    }
    for (auto& ch : q.chunks)
      if (ch.level >= 0 && ch.index < ctx.chunks.size()) ch.level = ladder.at(size_t(ch.level));
  }
  check_finite(r);
  out.events_jsonl = std::move(eo.events_jsonl);
  out.result_json = result_to_json(r);
  out.summary = result_summary(r, config.slo_s);
  return out;
}

void write_outputs(const SimOutput& output, const std::string& out_dir) {
  write_files_atomic(out_dir, {{"results.json", output.result_json},
                               {"events.jsonl", output.events_jsonl},
                               {"summary.txt", output.summary}});
}

std::string unfinished_reason(const RunResult& r, double max_sim_s) {
  std::vector<std::string> parts;
  for (const auto& q : r.requests) {
    if (q.finished) continue;
    if (!q.started) {
      parts.push_back(fmt::format("request {} (arrives at {:g} s) never started", q.id, q.arrival_s));
      continue;
    }
    size_t received = 0;
    for (const auto& ch : q.chunks) received += ch.gpu_end_s >= 0 ? 1 : 0;
    parts.push_back(fmt::format("request {} (context {}, started at {:g} s) had {} of {} chunks ready", q.id,
                                q.context_id, q.start_s, received, q.chunks.size()));
  }
  if (parts.empty()) return "";
  std::string shown;
  for (size_t i = 0; i < parts.size() && i < 5; ++i) shown += (i ? "; " : "") + parts[i];
  if (parts.size() > 5) shown += fmt::format("; and {} more", parts.size() - 5);
  return fmt::format("the run stopped at max_sim_s = {:g} s with {} of {} requests unfinished: {} (raise max_sim_s, "
                     "or check the link)",
                     max_sim_s, parts.size(), r.requests.size(), shown);
}

}  // namespace kvs::sim
