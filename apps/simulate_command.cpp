// `kvstream simulate`: one simulation run, from options or a scenario YAML.
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "apps/commands.h"
#include "base/error.h"
#include "codec/profile.h"
#include "scenarios/scenario.h"
#include "sim/gpu_model.h"
#include "sim/simulation.h"
#include "traces/formats.h"
#include "traces/generators.h"
#include "traces/transforms.h"
#include "traces/trace.h"

#ifdef KVSTREAM_HAVE_TORCH
#include <filesystem>
#include <map>

#include "codec/codec.h"
#include "llm/checkpoint.h"
#include "llm/kvs_calibration.h"
#include "llm/model.h"
#include "llm/profiler.h"
#include "llm/tokenizer.h"
#endif

namespace kvs::apps {

namespace {

struct SimulateOptions {
  std::string config_path;
  std::string out_dir;
  std::string profile, codec, policy, target, trace, trace_gen, trace_mode, queue, tcp, gpu, decode, network;
  bool ns3_stock = false;  // --ns3-stock: unmodified ns-3 TCP (LinkSpec::ns3_stock)
  std::vector<std::string> policy_params;
  double trace_scale = 1, rate_mbps = 0, rtt_ms = 0, loss = 0, slo_s = 0, efficiency = 0, busy_fraction = 0, decode_speedup = 0, decode_gbps = 0,
         arrival_rate = 0;
  uint32_t queue_packets = 0, mtu = 0, in_flight = 0, requests = 0, seed = 0, run = 0, bulk = 0, udp = 0;
  bool quiet = false;
  // --exact-quality: the profiled model and contexts, and the codec's options.
  bool exact_quality = false;
  std::string model_dir, contexts, codec_model;
  std::vector<std::string> codec_params;
  int threads = 2;
};

#ifdef KVSTREAM_HAVE_TORCH
// Runs the profiled model on the cache each finished request assembled: every
// fetched chunk encoded and decoded at the level the policy chose, recomputed
// chunks exact. Contexts are found by the profile's ids; a context whose token
// count differs from the profile's (another model or contexts file) is an error.
void measure_exact_quality(const SimulateOptions& o, const codec::Profile& profile, sim::RunResult& result) {
  if (o.model_dir.empty() || o.contexts.empty())
    throw Error("simulate --exact-quality: give --model (the profiled model) and --contexts (the profiled contexts)");
  const codec::CodecProfile* cp = nullptr;
  for (const auto& c : profile.codecs)
    if (c.codec == result.codec) cp = &c;
  if (!cp) throw Error(fmt::format("simulate --exact-quality: codec {} is not in the profile", result.codec));
  llm::set_cpu_threads(o.threads);
  const llm::Model model = llm::load_model(o.model_dir);
  codec::CodecOptions codec_options = parse_codec_options(o.codec_params, o.codec_model);
  // kvs: the model's calibrated weights, as `kvstream profile` gave them (llm/kvs_calibration.h),
  // unless --codec-param gives weights; without a calibration the check below names the profile's.
  if (std::filesystem::exists(llm::kvs_calibration_path(o.model_dir)))
    llm::apply_kvs_calibration(o.model_dir, uint32_t(model.config().num_hidden_layers), {result.codec},
                               &codec_options);
  const auto codec = codec::make_codec(result.codec, codec_options);
  if (codec->params() != cp->params)
    throw Error(fmt::format("simulate --exact-quality: the profile's {} has parameters '{}', this one '{}' "
                            "(pass the profile's with --codec-param)",
                            cp->codec, cp->params, codec->params()));

  const auto tokenizer = llm::load_tokenizer(o.model_dir, model.config());
  std::map<std::string, llm::ProfileContext> contexts;
  for (auto& c : llm::load_contexts(o.contexts)) contexts.emplace(c.id, std::move(c));

  std::map<std::string, llm::PreparedContext> prepared;  // a context may serve several requests
  for (auto& req : result.requests) {
    if (!req.finished) continue;
    const codec::ContextProfile& ctx = cp->contexts.at(req.context);
    const auto text = contexts.find(ctx.id);
    if (text == contexts.end())
      throw Error(fmt::format("{}: no context with id {} (the profile's context {})", o.contexts, ctx.id, req.context));
    auto it = prepared.find(ctx.id);
    if (it == prepared.end()) {
      llm::PreparedContext p = llm::prepare_context(model, *tokenizer, text->second, ctx.tokens + 1,
                                                    profile.model.dtype, profile.greedy_tokens);
      if (p.exact_chunk.tokens != ctx.tokens)
        throw Error(fmt::format("context {}: {} cache tokens with {} but {} in the profile (another model or contexts?)",
                                ctx.id, p.exact_chunk.tokens, o.model_dir, ctx.tokens));
      it = prepared.emplace(ctx.id, std::move(p)).first;
    }
    std::vector<llm::ChunkChoice> choices;
    for (const auto& ch : req.chunks) {
      const codec::ChunkProfile& pc = ctx.chunks.at(ch.index);
      choices.push_back({pc.token_begin, pc.tokens, ch.level});
    }
    const codec::LevelQuality q =
        llm::measure_quality(model, it->second, llm::assemble_cache(*codec, it->second.exact_chunk, choices));
    sim::MeasuredQuality& m = req.exact_quality;
    m.measured = true;
    m.loss_increase = q.loss_increase;
    m.kl_nats = q.kl_nats;
    m.kl_stderr_nats = q.kl_stderr_nats;
    m.top1_agreement = q.top1_agreement;
    m.greedy_agreement = q.greedy_agreement;
    m.task_accuracy = q.task_accuracy;
  }
}
#endif

void run_simulate(const SimulateOptions& o, const CLI::App& cmd) {
  auto given = [&](const char* name) { return cmd.get_option(name)->count() > 0; };
  scenarios::Scenario sc;
  if (!o.config_path.empty()) {
    sc = scenarios::load_scenario(o.config_path);
    if (sc.sweeps || sc.profile_from)
      throw Error(fmt::format("{}: this scenario {}: run it with `kvstream run {}`", o.config_path,
                              sc.sweeps ? "sweeps parameters" : "computes its profile (profile_from)", o.config_path));
  } else {
    if (o.profile.empty() || o.codec.empty())
      throw Error("simulate: give a scenario file, or at least --profile and --codec");
    if (!given("--rate-mbps") && o.trace.empty() && o.trace_gen.empty())
      throw Error("simulate: give one of --trace, --trace-gen or --rate-mbps");
  }
  sim::SimConfig& c = sc.sim;
  // Options given on the command line override the scenario file.
  if (given("--profile")) c.profile_path = o.profile;
  if (given("--codec")) c.codec = o.codec;
  if (given("--policy")) c.policy = o.policy, c.policy_params.clear();
  if (given("--policy-param")) {
    c.policy_params.clear();
    for (const auto& kv : o.policy_params) {
      const auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0)
        throw Error(fmt::format("--policy-param: expected KEY=VALUE, got '{}'", kv));
      c.policy_params[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
  }
  if (given("--target")) c.target = o.target;
  if (given("--trace")) sc.trace_file = o.trace, sc.trace_gen.clear();
  if (given("--trace-gen")) sc.trace_gen = o.trace_gen, sc.trace_file.clear();
  // A constant rate replaces the file's trace, and with it the file's
  // link.trace_scale (which scaled that trace).
  if (given("--rate-mbps"))
    c.link.rate_mbps = o.rate_mbps, sc.trace_file.clear(), sc.trace_gen.clear(), sc.trace_scale = 1;
  if (given("--rtt-ms")) c.link.rtt_ms = o.rtt_ms;
  if (given("--loss")) c.link.loss_rate = o.loss;
  if (given("--queue-packets")) c.link.queue_packets = o.queue_packets;
  if (given("--queue")) c.link.queue = o.queue;
  if (given("--trace-mode")) c.link.trace_mode = o.trace_mode;
  if (given("--mtu")) c.link.mtu_bytes = o.mtu;
  if (given("--tcp")) c.link.tcp = o.tcp;
  if (given("--ns3-stock")) c.link.ns3_stock = o.ns3_stock;
  if (given("--network")) c.network = o.network;
  if (given("--slo-s")) c.slo_s = o.slo_s;
  if (given("--gpu")) c.gpu.preset = o.gpu;
  if (given("--gpu-efficiency")) c.gpu.efficiency = o.efficiency;
  if (given("--gpu-busy-fraction")) c.gpu.busy_fraction = o.busy_fraction;
  if (given("--decode")) c.gpu.decode = o.decode;
  if (given("--decode-gbps")) c.gpu.decode_bytes_per_s = o.decode_gbps * 1e9;
  if (given("--decode-speedup")) c.gpu.decode_speedup = o.decode_speedup;
  if (given("--in-flight")) c.in_flight = o.in_flight;
  if (given("--requests")) {
    c.arrivals.mode = "poisson";
    c.arrivals.count = o.requests;
  }
  if (given("--arrival-rate")) c.arrivals.rate_per_s = o.arrival_rate;
  if (given("--seed")) c.seed = o.seed;
  if (given("--run")) c.run = o.run;
  if (given("--cross-bulk")) c.cross.bulk_tcp_flows = o.bulk;
  if (given("--cross-udp")) c.cross.onoff_udp_flows = o.udp;
  // A value given as an option no longer comes from the scenario file: errors
  // about it name the key without the file's line.
  const std::pair<const char*, const char*> overrides[] = {
      {"--profile", "profile"}, {"--codec", "codec"},       {"--policy", "policy"}, {"--policy-param", "policy.params"},
      {"--target", "target"},   {"--trace", "link.trace"},  {"--trace-gen", "link.trace"}, {"--rate-mbps", "link.trace"},
      {"--gpu", "gpu.preset"},  {"--requests", "arrivals.count"}};
  for (const auto& [option, key] : overrides)
    if (given(option))
      for (auto it = sc.lines.begin(); it != sc.lines.end();)
        it = it->first.rfind(key, 0) == 0 ? sc.lines.erase(it) : std::next(it);
  std::string out_dir = given("--out") ? o.out_dir : sc.output_dir;
  if (out_dir.empty()) throw Error("simulate: no output folder (give -o OUTDIR or `output:` in the scenario)");

  if (given("--trace-scale")) sc.trace_scale = o.trace_scale;
  if (!sc.trace_file.empty()) {
    try {
      c.link.trace = traces::load_trace(sc.trace_file, sc.trace_load);
    } catch (const Error& e) {  // names the trace file and line; say where the scenario names the trace
      throw Error(sc.lines.count("link.trace") ? sc.at("link.trace", e.what()) : std::string(e.what()));
    }
  }
  if (!sc.trace_gen.empty()) {
    try {
      c.link.trace = traces::generate_trace(sc.trace_gen);
    } catch (const Error& e) {
      throw Error(sc.at("link.trace_gen", e.what()));
    }
  }
  if (sc.trace_scale != 1) {
    if (!c.link.trace) throw Error("simulate: --trace-scale scales a trace: give --trace or --trace-gen");
    // A scaled trace keeps no delivery opportunities: it is replayed at its rate.
    c.link.trace = traces::scale(*c.link.trace, sc.trace_scale);
  }

  codec::Profile profile;
  try {
    profile = codec::read_profile(c.profile_path);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(e.what());
  }
  // Checks that need the profile or the presets, naming the scenario's file,
  // line and key when the value came from there.
  scenarios::check_against_profile(sc, profile);
  const bool preset_used = !(c.gpu.peak_flops > 0 && c.gpu.memory_bytes_per_s > 0 &&
                             (c.gpu.decode == "profile" || c.gpu.decode_bytes_per_s > 0 ||
                              (c.gpu.decode == "auto" && codec::measured_on_gpu(profile.device))));
  try {
    if (preset_used) sim::gpu_preset_peak_flops(c.gpu.preset);
  } catch (const Error& e) {
    throw Error(sc.at("gpu.preset", e.what() + did_you_mean(c.gpu.preset, sim::gpu_preset_names())));
  }
  if (!c.target.empty()) {
    try {
      sim::model_preset(c.target);
    } catch (const Error& e) {
      throw Error(sc.at("target", e.what() + did_you_mean(c.target, sim::model_preset_names())));
    }
  }
  c.show_progress = !o.quiet;
  sim::SimOutput out = sim::simulate(c, profile);
  if (o.exact_quality) {
#ifdef KVSTREAM_HAVE_TORCH
    measure_exact_quality(o, profile, out.result);
    out.result_json = sim::result_to_json(out.result);
    out.summary = sim::result_summary(out.result, c.slo_s);
#else
    throw Error("simulate --exact-quality needs the model, and this kvstream was built without libtorch");
#endif
  }
  sim::write_outputs(out, out_dir);
  if (!o.quiet) std::fputs(out.summary.c_str(), stdout);
  std::printf("wrote %s/results.json, events.jsonl, summary.txt\n", out_dir.c_str());
  // A run that stopped before its requests finished is not a result: say why, exit non-zero.
  const std::string unfinished = sim::unfinished_reason(out.result, c.max_sim_s);
  if (!unfinished.empty()) throw Error(unfinished);
}

}  // namespace

void add_simulate_command(CLI::App& app) {
  auto o = std::make_shared<SimulateOptions>();
  CLI::App* cmd = app.add_subcommand("simulate",
                                     "Simulate streaming the KV caches of a profile over a network (ns-3, or a fluid model); "
                                     "see docs/simulator.md");
  cmd->add_option("config", o->config_path, "Scenario YAML (options given here override its values)")
      ->check(CLI::ExistingFile);
  cmd->add_option("-o,--out", o->out_dir, "Output folder for results.json, events.jsonl, summary.txt");
  cmd->add_option("--profile", o->profile, "Codec profile JSON (from `kvstream profile`)");
  cmd->add_option("--codec", o->codec, "Codec in the profile, e.g. cachegen");
  cmd->add_option("--policy", o->policy, "Adaptation policy (default: fixed)");
  cmd->add_option("--policy-param", o->policy_params, "Policy parameter KEY=VALUE, repeatable (e.g. level=2)");
  cmd->add_option("--target", o->target,
                  fmt::format("Target model whose KV cache is streamed (sizes scaled from the profiled model): {} "
                              "(default: the profiled model)",
                              fmt::join(sim::model_preset_names(), ", ")));
  cmd->add_option("--trace", o->trace, "Bandwidth trace file for the bottleneck (mahimahi, two-column, CSV); a scenario's "
                  "link.trace_scale still applies to it (--trace-scale 1 to drop it)");
  cmd->add_option("--trace-scale", o->trace_scale, "Multiply the trace's rate by this (default: the scenario's link.trace_scale, else 1)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--trace-gen", o->trace_gen, "Bandwidth trace generator spec (see `kvstream trace gen`); a scenario's link.trace_scale "
                  "still applies to it");
  cmd->add_option("--rate-mbps", o->rate_mbps,
                  "Constant bottleneck rate in Mbit/s (without a scenario, this or --trace or --trace-gen is required)");
  cmd->add_option("--rtt-ms", o->rtt_ms, "Round-trip propagation delay in ms (default 20)");
  cmd->add_option("--loss", o->loss, "Random packet loss rate on the bottleneck, 0..1 (default 0)");
  cmd->add_option("--trace-mode", o->trace_mode,
                  "How a trace drives the bottleneck: auto, rate, mahimahi (default auto: mahimahi for mahimahi files)")
      ->check(CLI::IsMember({"auto", "rate", "mahimahi"}));
  cmd->add_option("--queue", o->queue, "Bottleneck queue discipline: droptail, codel, fqcodel (default droptail)")
      ->check(CLI::IsMember({"droptail", "codel", "fqcodel"}));
  cmd->add_option("--queue-packets", o->queue_packets, "Bottleneck queue size in packets (default: 1 BDP, >= 100)");
  cmd->add_option("--mtu", o->mtu, "MTU in bytes (default 1500)");
  cmd->add_option("--tcp", o->tcp, "TCP variant: cubic (RFC 9438), cubic-rfc9438, cubic-ns3 (ns-3.37's TcpCubic), cubic-hystart-fix, newreno, bbr (default cubic)");
  cmd->add_flag("--ns3-stock", o->ns3_stock,
                "Unmodified ns-3.37 TCP for comparison: `cubic` is ns-3's TcpCubic, ns-3's RTO rule and 200 ms "
                "delayed-ACK timer (docs/simulator.md, \"Loss\")");
  cmd->add_option("--network", o->network,
                  "How the network is simulated: ns3 (packets, the reference; default), fluid (bytes at the link's "
                  "rate with slow start, >1000x faster), pensieve (Pensieve's simulator); docs/simulator.md");
  cmd->add_option("--slo-s", o->slo_s, "TTFT target in seconds (default 0: none)");
  cmd->add_option("--gpu", o->gpu, fmt::format("GPU preset: {} (default h100)", fmt::join(sim::gpu_preset_names(), ", ")));
  cmd->add_option("--gpu-efficiency", o->efficiency, "Achieved fraction of peak FLOP/s for prefill (default 0.5)");
  cmd->add_option("--gpu-busy-fraction", o->busy_fraction,
                  "Share of the GPU taken by other work, [0, 1) (default 0: a dedicated GPU)");
  cmd->add_option("--decode", o->decode,
                  "GPU decode times: auto (profile for a GPU-measured profile, else assumed; default), assumed (an "
                  "assumed throughput per codec and GPU, sim/gpu_model.h) or profile (the profile's measured seconds: "
                  "as measured on a GPU, / --decode-speedup on a CPU)")
      ->check(CLI::IsMember({"auto", "assumed", "profile"}));
  cmd->add_option("--decode-gbps", o->decode_gbps,
                  "With --decode assumed: GPU decode throughput in GB/s of fp16 output (default: the preset's)");
  cmd->add_option("--decode-speedup", o->decode_speedup,
                  "With --decode profile: decode speed of the GPU relative to the profile's device (default 1)");
  cmd->add_option("--in-flight", o->in_flight, "Chunk requests outstanding per connection (default 1)");
  cmd->add_option("--requests", o->requests, "Number of requests arriving as a Poisson process (default: one at t=0)");
  cmd->add_option("--arrival-rate", o->arrival_rate, "Poisson arrival rate in requests per second (default 1)");
  cmd->add_option("--seed", o->seed, "ns-3 seed (default 1)");
  cmd->add_option("--run", o->run, "ns-3 run number (default 1)");
  cmd->add_option("--cross-bulk", o->bulk, "Bulk TCP cross-traffic flows (default 0)");
  cmd->add_option("--cross-udp", o->udp, "On/off UDP cross-traffic sources (default 0)");
  cmd->add_flag("-q,--quiet", o->quiet, "Do not print the summary or the progress bar");
  cmd->add_flag("--exact-quality", o->exact_quality,
                "Also measure quality by running the profiled model on each request's assembled cache "
                "(needs --model and --contexts)");
  cmd->add_option("--model", o->model_dir, "With --exact-quality: the profiled model (HF folder)");
  cmd->add_option("--contexts", o->contexts, "With --exact-quality: the profiled contexts (JSON lines or folder)");
  cmd->add_option("--codec-param", o->codec_params,
                  "With --exact-quality: codec parameter key=value as given to `kvstream profile` (repeatable; "
                  "codec.key=value applies only when the run's codec is that codec)");
  cmd->add_option("--codec-model", o->codec_model, "With --exact-quality: codec model file, for codecs that need one");
  cmd->add_option("--threads", o->threads, "With --exact-quality: CPU threads for libtorch")->capture_default_str();
  cmd->callback([o, cmd] { run_simulate(*o, *cmd); });
}

}  // namespace kvs::apps
