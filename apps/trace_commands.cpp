// `kvstream trace stats|gen|convert|plot`: bandwidth traces on the command line.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include <unistd.h>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "base/error.h"
#include "base/files.h"
#include "traces/formats.h"
#include "traces/generators.h"
#include "traces/stats.h"
#include "traces/transforms.h"

namespace kvs::apps {
namespace {

// Reading options shared by the subcommands that read trace files.
struct ReadOptions {
  std::string format = "auto";
  std::string time_column = "time_s", value_column = "throughput_mbps";
  double interval_s = 0;
  std::vector<std::string> filters;

  void add(CLI::App* cmd) {
    cmd->add_option("--format", format, "Input format: auto, mahimahi, two-column, csv")->capture_default_str();
    cmd->add_option("--time-column", time_column, "CSV: time column (unit from its suffix _s/_ms, or see --interval-s)")
        ->capture_default_str();
    cmd->add_option("--interval-s", interval_s, "CSV: seconds per unit of the time column (for sample indices)")
        ->capture_default_str();
    cmd->add_option("--value-column", value_column, "CSV: throughput column (unit from its suffix _mbps/_bps/_bytes)")
        ->capture_default_str();
    cmd->add_option("--filter", filters, "CSV: keep rows with COLUMN=VALUE (repeatable)");
  }
  traces::LoadOptions load_options() const {
    traces::LoadOptions o;
    o.format = traces::format_from_string(format);
    o.csv.time_column = time_column;
    o.csv.value_column = value_column;
    o.csv.interval_s = interval_s;
    for (const auto& f : filters) {
      const auto eq = f.find('=');
      if (eq == std::string::npos || eq == 0) throw Error(fmt::format("--filter '{}': expected COLUMN=VALUE", f));
      o.csv.filters[f.substr(0, eq)] = f.substr(eq + 1);
    }
    return o;
  }
};

void add_stats(CLI::App& trace) {
  struct Args {
    std::vector<std::string> files;
    ReadOptions read;
    double threshold_mbps = 0.1, min_outage_s = 0, window_s = 0.1;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = trace.add_subcommand("stats", "Duration, mean/median/p5/p95 throughput, variation, outages of traces");
  cmd->add_option("files", a->files, "Trace files")->required()->check(CLI::ExistingFile);
  a->read.add(cmd);
  cmd->add_option("--threshold-mbps", a->threshold_mbps, "Rates below this count as outage (Mbit/s)")->capture_default_str();
  cmd->add_option("--min-outage-s", a->min_outage_s, "Shortest run below the threshold counted as an outage (s)")
      ->capture_default_str();
  cmd->add_option("--window-s", a->window_s, "Average the rate over windows of this length first (s; 0: raw segments)")
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "Print JSON instead of a table");
  cmd->callback([a] {
    nlohmann::json out = nlohmann::json::array();
    std::vector<std::pair<std::string, traces::TraceStats>> rows;
    for (const auto& f : a->files)  // read all first: an error prints nothing else
      rows.emplace_back(f, traces::compute_stats(traces::load_trace(f, a->read.load_options()),
                                                 a->threshold_mbps * 1e6, a->min_outage_s, a->window_s));
    if (!a->json)
      std::printf("%-48s %10s %9s %9s %9s %9s %6s %7s %7s\n", "trace", "duration_s", "mean", "median", "p5", "p95",
                  "cv", "below", "outages");
    for (const auto& [f, s] : rows) {
      if (a->json) {
        out.push_back({{"trace", f}, {"duration_s", s.duration_s}, {"mean_mbps", s.mean_bps / 1e6},
                       {"median_mbps", s.median_bps / 1e6}, {"p5_mbps", s.p5_bps / 1e6}, {"p95_mbps", s.p95_bps / 1e6},
                       {"min_mbps", s.min_bps / 1e6}, {"max_mbps", s.max_bps / 1e6}, {"cv", s.cv},
                       {"fraction_below_threshold", s.below_threshold}, {"outages", s.outages},
                       {"threshold_mbps", a->threshold_mbps}, {"min_outage_s", a->min_outage_s}, {"window_s", a->window_s}});
      } else {
        std::string name = std::filesystem::path(f).filename().string();
        if (name.size() > 48) name = name.substr(0, 45) + "...";
        std::printf("%-48s %10.2f %9.3f %9.3f %9.3f %9.3f %6.2f %6.1f%% %7d\n", name.c_str(), s.duration_s,
                    s.mean_bps / 1e6, s.median_bps / 1e6, s.p5_bps / 1e6, s.p95_bps / 1e6, s.cv, 100 * s.below_threshold,
                    s.outages);
      }
    }
    if (a->json) std::printf("%s\n", out.dump(1).c_str());
    else
      std::printf("(Mbit/s, time-weighted over %.3g s windows; below = time under %.3g Mbit/s)\n", a->window_s,
                  a->threshold_mbps);
  });
}

void add_gen(CLI::App& trace) {
  struct Args {
    std::string spec, out, format = "two-column";
  };
  auto a = std::make_shared<Args>();
  auto* cmd = trace.add_subcommand("gen", "Write a generated trace (see traces/generators.h for SPEC), e.g. "
                                          "'markov:rates=10mbps|50mbps,hold=2s|3s,duration=120s,seed=7'");
  cmd->add_option("spec", a->spec, "Generator spec KIND:key=value,...")->required();
  cmd->add_option("-o,--out", a->out, "Output file")->required();
  cmd->add_option("--format", a->format, "Output format: mahimahi, two-column, csv")->capture_default_str();
  cmd->callback([a] {
    const traces::Trace t = traces::generate_trace(a->spec);
    traces::save_trace(t, a->out, traces::format_from_string(a->format));
    std::printf("%s: %zu segments, %.3f s\n", a->out.c_str(), t.segments.size(), t.duration_s);
  });
}

void add_convert(CLI::App& trace) {
  struct Args {
    std::string in, out, to;
    ReadOptions read;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = trace.add_subcommand("convert", "Convert a trace between formats");
  cmd->add_option("input", a->in, "Input trace")->required()->check(CLI::ExistingFile);
  cmd->add_option("-o,--out", a->out, "Output file")->required();
  cmd->add_option("--to", a->to, "Output format: mahimahi, two-column, csv")->required();
  a->read.add(cmd);
  cmd->callback([a] {
    const traces::Trace t = traces::load_trace(a->in, a->read.load_options());
    traces::save_trace(t, a->out, traces::format_from_string(a->to));
    std::printf("%s -> %s (%s)\n", a->in.c_str(), a->out.c_str(), a->to.c_str());
  });
}

void add_plot(CLI::App& trace) {
  struct Args {
    std::vector<std::string> files;
    std::string out;
    ReadOptions read;
    double window_s = 0.1;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = trace.add_subcommand("plot", "Plot throughput over time (matplotlib, via analysis/plot_trace.py)");
  cmd->add_option("files", a->files, "Trace files")->required()->check(CLI::ExistingFile);
  cmd->add_option("-o,--out", a->out, "Output image (.png, .pdf, .svg)")->required();
  cmd->add_option("--window-s", a->window_s, "Plot the mean rate over windows of this length (s; 0: raw)")
      ->capture_default_str();
  a->read.add(cmd);
  cmd->callback([a] {
    // Each trace goes to the script as a two-column file (its exact rate form).
    const auto dir = std::filesystem::temp_directory_path() / fmt::format("kvstream-plot-{}", ::getpid());
    std::filesystem::create_directories(dir);
    // Debian's python3-matplotlib belongs to /usr/bin/python3 (another python3 may come first on PATH).
    std::string command = std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3 " : "python3 ";
    const char* env = std::getenv("KVSTREAM_ANALYSIS_DIR");
    command += fmt::format("'{}/plot_trace.py' -o '{}'", env ? env : KVSTREAM_SOURCE_DIR "/analysis", a->out);
    for (size_t i = 0; i < a->files.size(); ++i) {
      traces::Trace t = traces::load_trace(a->files[i], a->read.load_options());
      if (a->window_s > 0) t = traces::resample(t, a->window_s);
      const auto path = dir / fmt::format("{}.txt", i);
      traces::save_trace(t, path.string(), traces::Format::kTwoColumn);
      command += fmt::format(" '{}={}'", std::filesystem::path(a->files[i]).filename().string(), path.string());
    }
    const int rc = std::system(command.c_str());
    std::filesystem::remove_all(dir);
    if (rc != 0) throw Error(fmt::format("trace plot: '{}' failed (is python3-matplotlib installed?)", command));
    std::printf("wrote %s\n", a->out.c_str());
  });
}

}  // namespace

void add_trace_commands(CLI::App& app) {
  auto* trace = app.add_subcommand("trace", "Bandwidth traces: stats, gen, convert, plot");
  trace->require_subcommand(1);
  add_stats(*trace);
  add_gen(*trace);
  add_convert(*trace);
  add_plot(*trace);
}

}  // namespace kvs::apps
