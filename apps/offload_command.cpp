// `kvstream offload`: decoding with the KV cache in host memory (sim/offload.h):
// full offloading, InfiniGen's selective fetch and a GPU-resident cache, per
// target model and context; a table on stdout, offload.json and offload.csv.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "base/error.h"
#include "base/files.h"
#include "policies/selective.h"
#include "sim/gpu_model.h"
#include "sim/offload.h"

namespace kvs::apps {

namespace {

struct OffloadOptions {
  std::vector<std::string> targets = {"llama-7b", "llama-13b"};
  std::vector<uint64_t> contexts = {2048, 4096, 8192, 16384, 32768};
  std::string gpu = "a100", out_dir, selective;
  double efficiency = 0.5, pcie_gbps = 25, pcie_latency_us = 5, fraction = -1, partial_ratio = 0.2;
  std::vector<double> budgets, alphas;  // with --selective: only these settings (empty: all)
  uint32_t output_tokens = 64, batch = 1;
  bool partial_ratio_given = false;
};

// One way of serving attention: its mode, a label for the outputs, and for
// InfiniGen settings of a selective profile, what they fetched and cost.
struct Variant {
  sim::OffloadMode mode;
  std::string label;
  double fraction = -1;                        // --fraction: InfiniGen's layout with this fraction
  const policies::SelectiveSetting* setting = nullptr;  // --selective
};

struct Row {
  std::string target;
  uint64_t context;
  const Variant* variant;
  sim::OffloadResult result;
  double fetched = 0;  // bytes fetched / full offloading's
  double speedup_tpot = 0, speedup_total = 0;  // full / this
};

nlohmann::json row_json(const Row& r) {
  const auto& x = r.result;
  nlohmann::json j = {{"target", r.target},
          {"context_tokens", r.context},
          {"mode", sim::offload_mode_name(x.mode)},
          {"setting", r.variant->label},
          {"fetched_vs_full", r.fetched},
          {"ttft_s", x.ttft_s},
          {"tpot_s", x.tpot_s},
          {"total_s", x.total_s},
          {"speedup_tpot_vs_full", r.speedup_tpot},
          {"speedup_total_vs_full", r.speedup_total},
          {"h2d_bytes", x.h2d_bytes},
          {"link_busy_s", x.link_busy_s},
          {"stall_s", x.stall_s},
          {"speculation_s", x.speculation_s},
          {"gpu_bytes", x.gpu_bytes},
          {"fits", x.fits}};
  if (const auto* q = r.variant->setting)
    j["measured_quality"] = {{"budget", q->budget},           {"alpha", q->alpha},
                             {"recall", q->recall},           {"kl_divergence", q->kl_divergence},
                             {"loss_increase", q->loss_increase}, {"greedy_agreement", q->greedy_agreement},
                             {"task_accuracy", q->task_accuracy}};
  return j;
}

bool wanted(const std::vector<double>& values, double x) {
  if (values.empty()) return true;
  for (double v : values)
    if (std::abs(v - x) < 1e-9) return true;
  return false;
}

void run_offload(const OffloadOptions& o) {
  if (o.out_dir.empty()) throw Error("offload: give an output folder with -o");
  if ((o.fraction < 0) == o.selective.empty())
    throw Error("offload: give either --fraction (0..1) or --selective (a `kvstream selective-profile` JSON)");
  if (o.selective.empty() && (!o.budgets.empty() || !o.alphas.empty()))
    throw Error("offload: --budget and --alpha choose settings of a --selective file");
  sim::OffloadConfig base;
  base.gpu.preset = o.gpu;
  base.gpu.efficiency = o.efficiency;
  try {
    sim::gpu_preset_peak_flops(o.gpu);
  } catch (const Error& e) {
    throw Error(std::string("offload --gpu: ") + e.what() + did_you_mean(o.gpu, sim::gpu_preset_names()));
  }
  base.pcie.rate_bytes_per_s = o.pcie_gbps * 1e9;
  base.pcie.latency_s = o.pcie_latency_us * 1e-6;
  base.output_tokens = o.output_tokens;
  base.batch = o.batch;
  base.partial_ratio = o.partial_ratio;

  std::vector<Variant> variants = {{sim::OffloadMode::kFull, "full"}};
  policies::SelectiveProfile profile;
  std::string selective_note;
  if (!o.selective.empty()) {
    profile = policies::read_selective_profile(o.selective);
    for (const auto& st : profile.settings)
      if (wanted(o.budgets, st.budget) && wanted(o.alphas, st.alpha))
        variants.push_back({sim::OffloadMode::kSelective, fmt::format("infinigen(b={:g},a={:g})", st.budget, st.alpha),
                            -1, &st});
    if (variants.size() == 1)
      throw Error(fmt::format("offload: {} has no infinigen setting with the given --budget/--alpha (it has: {})",
                              o.selective, policies::selective_settings_list(profile)));
    std::string tokens;
    for (auto t : profile.context_tokens) tokens += (tokens.empty() ? "" : ",") + std::to_string(t);
    std::string windows;
    for (auto w : profile.layer_windows)
      if (w > 0) windows = fmt::format("; sliding windows {} (per layer, 0 = full), in every mode",
                                       fmt::join(profile.layer_windows, ","));
    selective_note = fmt::format(
        "fractions measured by {} on model '{}' ({} layers, contexts of {} tokens; full front layers {}, last "
        "layer {}{}), applied unchanged at every context",
        o.selective, profile.model, profile.layers, tokens, profile.full_front_layers,
        profile.full_last_layer ? "full" : "speculated", windows);
  } else {
    variants.push_back({sim::OffloadMode::kSelective, fmt::format("infinigen(f={:g})", o.fraction), o.fraction});
  }
  variants.push_back({sim::OffloadMode::kResident, "resident"});

  std::vector<Row> rows;
  for (const auto& target : o.targets) {
    sim::OffloadConfig c = base;
    try {
      c.model = sim::model_preset(target);
    } catch (const Error& e) {
      throw Error(std::string("offload --target: ") + e.what() + did_you_mean(target, sim::model_preset_names()));
    }
    // The profiled model's sliding windows, when it has any, hold for every
    // mode (its fractions are shares of the windows' keys); else the target's
    // own (OffloadConfig::layer_window left empty), e.g. mistral-7b-v0.1's.
    if (std::any_of(profile.layer_windows.begin(), profile.layer_windows.end(), [](uint64_t w) { return w > 0; }))
      c.layer_window = policies::target_layer_windows(profile, c.model.kv.layers);
    for (uint64_t context : o.contexts) {
      c.prompt_tokens = context;
      const auto full = sim::simulate_offload(c, sim::OffloadMode::kFull);
      for (const auto& v : variants) {
        sim::OffloadConfig cv = c;
        if (v.setting) {
          cv.layer_fraction = policies::target_layer_fractions(profile, *v.setting, c.model.kv.layers);
          if (!o.partial_ratio_given) cv.partial_ratio = profile.ratio;
        } else if (v.mode == sim::OffloadMode::kSelective) {
          cv.layer_fraction = sim::infinigen_layer_fractions(c.model.kv.layers, v.fraction);
        }
        Row r{target, context, &v, v.mode == sim::OffloadMode::kFull ? full : sim::simulate_offload(cv, v.mode)};
        r.fetched = full.h2d_bytes > 0 ? r.result.h2d_bytes / full.h2d_bytes : 0.0;
        r.speedup_tpot = r.result.tpot_s > 0 ? full.tpot_s / r.result.tpot_s : 0.0;
        r.speedup_total = full.total_s / r.result.total_s;
        rows.push_back(std::move(r));
      }
    }
  }

  std::string setting =
      fmt::format("gpu {} (efficiency {}), PCIe {} GB/s + {} us per transfer, batch {}, {} output tokens; "
                  "selective: layers {} in full, partial ratio {}",
                  o.gpu, o.efficiency, o.pcie_gbps, o.pcie_latency_us, o.batch, o.output_tokens,
                  o.selective.empty() ? "0, 1 and the last" : "as the profile", o.partial_ratio_given || o.selective.empty() ? o.partial_ratio : profile.ratio);
  if (!selective_note.empty()) setting += "\n" + selective_note;
  std::string table = setting + "\n";
  table += fmt::format("{:<10} {:>7} {:<22} {:>8} {:>9} {:>8} {:>7} {:>7} {:>7} {:>7} {:>6} {:>4} {:>7} {:>6}\n",
                       "target", "context", "setting", "TTFT_s", "TPOT_ms", "total_s", "fetch", "x_TPOT", "x_total",
                       "stall", "GPU_GB", "fits", "KL", "agree");
  std::string csv =
      "target,context_tokens,mode,setting,ttft_s,tpot_s,total_s,fetched_vs_full,speedup_tpot_vs_full,"
      "speedup_total_vs_full,h2d_bytes,link_busy_s,stall_s,speculation_s,gpu_bytes,fits,recall,kl_divergence,"
      "loss_increase,greedy_agreement\n";
  nlohmann::json rows_json = nlohmann::json::array();
  for (const auto& r : rows) {
    const auto& x = r.result;
    const auto* q = r.variant->setting;
    const double stall_share = x.total_s > x.ttft_s ? x.stall_s / (x.total_s - x.ttft_s) : 0.0;
    table += fmt::format("{:<10} {:>7} {:<22} {:>8.3f} {:>9.2f} {:>8.3f} {:>7.3f} {:>7.2f} {:>7.2f} {:>7.2f} {:>6.1f} {:>4} "
                         "{:>7} {:>6}\n",
                         r.target, r.context, r.variant->label, x.ttft_s, x.tpot_s * 1e3, x.total_s, r.fetched,
                         r.speedup_tpot, r.speedup_total, stall_share, x.gpu_bytes / 1e9, x.fits ? "yes" : "no",
                         q ? fmt::format("{:.4f}", q->kl_divergence) : "-",
                         q ? fmt::format("{:.3f}", q->greedy_agreement) : "-");
    csv += fmt::format("{},{},{},{},{:.9g},{:.9g},{:.9g},{:.6g},{:.6g},{:.6g},{:.9g},{:.9g},{:.9g},{:.9g},{:.9g},{},{},{},{},{}\n",
                       r.target, r.context, sim::offload_mode_name(x.mode), r.variant->label, x.ttft_s, x.tpot_s,
                       x.total_s, r.fetched, r.speedup_tpot, r.speedup_total, x.h2d_bytes, x.link_busy_s, x.stall_s,
                       x.speculation_s, x.gpu_bytes, x.fits ? 1 : 0, q && q->recall >= 0 ? fmt::format("{:.6g}", q->recall) : "",
                       q ? fmt::format("{:.6g}", q->kl_divergence) : "", q ? fmt::format("{:.6g}", q->loss_increase) : "",
                       q ? fmt::format("{:.6g}", q->greedy_agreement) : "");
    rows_json.push_back(row_json(r));
  }
  nlohmann::json doc = {
      {"setting",
       {{"gpu", o.gpu},
        {"efficiency", o.efficiency},
        {"pcie_bytes_per_s", base.pcie.rate_bytes_per_s},
        {"pcie_latency_s", base.pcie.latency_s},
        {"batch", o.batch},
        {"output_tokens", o.output_tokens},
        {"partial_ratio", o.partial_ratio_given || o.selective.empty() ? o.partial_ratio : profile.ratio}}},
      {"model", "analytic pipeline, sim/offload.h; GPU times from preset peaks x efficiency (not measured)"},
      {"rows", rows_json}};
  if (o.selective.empty()) doc["setting"]["fraction"] = o.fraction;
  else doc["setting"]["selective_profile"] = {{"path", o.selective}, {"note", selective_note}};
  const std::string json = doc.dump(2) + "\n";
  write_files_atomic(o.out_dir, {{"offload.json", json}, {"offload.csv", csv}});
  std::fputs(table.c_str(), stdout);
  std::printf("(fetch: bytes fetched / full offloading's; x_: full offloading's time / this; stall: share of the "
              "decode time the GPU waited for PCIe)\nwrote %s/offload.json, offload.csv\n",
              o.out_dir.c_str());
}

}  // namespace

void add_offload_command(CLI::App& app) {
  auto o = std::make_shared<OffloadOptions>();
  CLI::App* cmd = app.add_subcommand(
      "offload",
      "Decoding with the KV cache in host memory: full offloading, InfiniGen's selective fetch and a GPU-resident "
      "cache over a PCIe link (analytic pipeline; see docs/simulator.md)");
  cmd->add_option("-o,--out", o->out_dir, "Output folder for offload.json and offload.csv")->required();
  cmd->add_option("--target", o->targets,
                  fmt::format("Target models, comma-separated: {}", fmt::join(sim::model_preset_names(), ", ")))
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--context", o->contexts, "Prompt lengths in tokens, comma-separated")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--gpu", o->gpu, fmt::format("GPU preset: {}", fmt::join(sim::gpu_preset_names(), ", ")))
      ->capture_default_str();
  cmd->add_option("--gpu-efficiency", o->efficiency, "Achieved fraction of peak FLOP/s and memory bandwidth")
      ->check(CLI::Range(1e-6, 1.0))
      ->capture_default_str();
  cmd->add_option("--output-tokens", o->output_tokens, "Output tokens, the prefill's first included")
      ->check(CLI::Range(1u, 1000000u))
      ->capture_default_str();
  cmd->add_option("--batch", o->batch, "Sequences decoded together")->check(CLI::Range(1u, 4096u))->capture_default_str();
  cmd->add_option("--pcie-gbps", o->pcie_gbps, "Effective host-to-GPU rate in GB/s")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--pcie-latency-us", o->pcie_latency_us, "Latency per transfer in microseconds")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--fraction", o->fraction,
                  "Selective: fraction of the past tokens fetched in every layer but 0, 1 and the last (0..1)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--partial-ratio", o->partial_ratio, "Selective: channels kept in the partial keys (0..1]; default the profile's ratio with --selective")
      ->check(CLI::Range(1e-6, 1.0))
      ->capture_default_str();
  cmd->add_option("--selective", o->selective,
                  "Selective: a `kvstream selective-profile` JSON (docs/selective-format.md); one row per infinigen "
                  "setting, its measured quality beside it")
      ->check(CLI::ExistingFile);
  cmd->add_option("--budget", o->budgets, "With --selective: only these budgets (comma-separated)")->delimiter(',');
  cmd->add_option("--alpha", o->alphas, "With --selective: only these alphas (comma-separated)")->delimiter(',');
  cmd->callback([o, cmd] {
    o->partial_ratio_given = cmd->count("--partial-ratio") > 0;
    run_offload(*o);
  });
}

}  // namespace kvs::apps
