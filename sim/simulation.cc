#include "sim/simulation.h"

#include <cmath>
#include <filesystem>
#include <random>
#include <stdexcept>

#include <fmt/format.h>

#include "base/error.h"
#include "base/files.h"
#include "sim/engine.h"
#include "sim/gpu_model.h"

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

  const codec::ModelInfo target = resolve_target(config, profile);
  const double scale = kv_size_scale(profile.model, target);
  const ComputeModel compute(target, config.gpu);

  // The profile as the engine sees it: sizes scaled, GPU times computed.
  std::vector<ContextSpec> contexts;
  for (const auto& ctx : cp->contexts) {
    if (ctx.chunks.empty()) throw Error(fmt::format("profile context '{}' has no chunks", ctx.id));
    ContextSpec cs;
    cs.id = ctx.id;
    cs.tokens = ctx.tokens;
    cs.first_token_s = compute.first_token_s(ctx.tokens);
    for (const auto& ch : ctx.chunks) {
      ChunkSpec s;
      s.token_begin = ch.token_begin;
      s.tokens = ch.tokens;
      s.recompute_s = compute.recompute_s(ch.token_begin, ch.tokens);
      for (const auto& lv : ch.levels) {
        s.bytes.push_back(scale == 1.0 ? lv.bytes : uint64_t(std::llround(double(lv.bytes) * scale)));
        s.decode_s.push_back(compute.decode_s(lv.decode_s, scale));
        s.loss_increase.push_back(lv.loss_increase);
      }
      cs.chunks.push_back(std::move(s));
    }
    contexts.push_back(std::move(cs));
  }

  EngineConfig ec;
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

  std::string policy_name;
  PolicyFactory factory = [&](uint32_t request) {
    auto p = hooks.make_policy ? hooks.make_policy(request) : policies::make_policy(config.policy, config.policy_params);
    if (policy_name.empty()) policy_name = p->name();
    return p;
  };
  EngineOutput eo = run_engine(ec, contexts, factory);

  SimOutput out;
  RunResult& r = out.result;
  r.policy = policy_name;
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
  r.network = eo.network;
  r.network_settings = std::move(eo.network_settings);
  r.sim_end_s = eo.sim_end_s;
  r.events = eo.events;
  r.requests = std::move(eo.requests);
  out.events_jsonl = std::move(eo.events_jsonl);
  out.result_json = result_to_json(r);
  out.summary = result_summary(r, config.slo_s);
  return out;
}

void write_outputs(const SimOutput& output, const std::string& out_dir) {
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) throw Error(fmt::format("{}: cannot create the output folder: {}", out_dir, ec.message()));
  write_file_atomic(out_dir + "/results.json", output.result_json);
  write_file_atomic(out_dir + "/events.jsonl", output.events_jsonl);
  write_file_atomic(out_dir + "/summary.txt", output.summary);
}

}  // namespace kvs::sim
