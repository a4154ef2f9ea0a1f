// `kvstream run`: every run of a scenario's sweep in parallel workers
// (resumable, shardable), then results.csv / results.jsonl and a summary
// table; `kvstream merge`: shards of one sweep into one results folder.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "base/error.h"
#include "base/files.h"
#include "codec/profile.h"
#include "scenarios/profile_cache.h"
#include "scenarios/runner.h"
#include "scenarios/sweep.h"

extern char** environ;

namespace kvs::apps {

namespace {

struct RunOptions {
  std::string scenario, out_dir, shard = "1/1", emit;
  unsigned jobs = 0, shards = 0;
  bool no_progress = false;
};

std::string self_exe() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw Error("run: cannot find the kvstream executable (/proc/self/exe)");
  return std::string(buf, size_t(n));
}

// Mean TTFT, SLO met and quality per value of the first swept key (the policy, usually).
void print_summary(const std::string& dir, const std::vector<std::string>& keys) {
  const std::string key = keys.empty() ? "" : (std::find(keys.begin(), keys.end(), "policy") != keys.end() ? "policy" : keys[0]);
  struct Acc {
    int runs = 0, ok = 0;
    double ttft = 0, met = 0, loss = 0, kl = 0, mb = 0;
  };
  std::vector<std::string> order;
  std::map<std::string, Acc> acc;
  const std::string text = read_file(dir + "/results.jsonl");
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = text.find('\n', pos);
    const auto row = nlohmann::json::parse(text.substr(pos, end - pos));
    pos = end == std::string::npos ? text.size() : end + 1;
    const std::string v = key.empty() ? "(all)" : row["params"].value(key, "");
    if (!acc.count(v)) order.push_back(v);
    Acc& a = acc[v];
    ++a.runs;
    if (row["status"] != "ok") continue;
    ++a.ok;
    a.ttft += row["ttft_s"].get<double>(), a.met += row["slo_met"].get<double>();
    a.loss += row["quality_loss_increase"].get<double>(), a.mb += row["payload_bytes"].get<double>() / 1e6;
    a.kl += row.value("quality_kl_nats", 0.0);
  }
  std::printf("%-28s %5s %12s %9s %14s %11s %10s\n", key.empty() ? "runs" : key.c_str(), "runs", "TTFT mean s",
              "SLO met", "loss increase", "KL nats", "MB");
  for (const auto& v : order) {
    const Acc& a = acc[v];
    if (a.ok == 0) {
      std::printf("%-28s %5d %12s\n", v.c_str(), a.runs, "failed");
      continue;
    }
    std::printf("%-28s %5d %12.3f %8.0f%% %13.3f%% %11.4g %10.1f\n", v.c_str(), a.runs, a.ttft / a.ok,
                100 * a.met / a.ok, 100 * a.loss / a.ok, a.kl / a.ok, a.mb / a.ok);
  }
}

// Runs a command with the runner's terminal; an error when it fails.
void run_child(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0)
    throw Error(fmt::format("cannot start {}", argv[0]));
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw Error(fmt::format("`{}` failed", fmt::join(argv, " ")));
}

// The profile of a `profile_from:` recipe: from the cache, or computed into it.
std::string recipe_profile(const std::string& scenario) {
  const auto recipe = scenarios::read_profile_recipe(read_file(scenario), scenario,
                                                     std::filesystem::path(scenario).parent_path().string());
  if (!recipe) return {};
  if (std::filesystem::exists(recipe->cache_path)) {
    std::fprintf(stderr, "run: profile from the cache: %s\n", recipe->cache_path.c_str());
    return recipe->cache_path;
  }
#ifndef KVSTREAM_HAVE_TORCH
  throw Error(fmt::format("{}: profile_from needs `kvstream profile`, which this build lacks (libtorch); give "
                          "`profile:` instead",
                          scenario));
#endif
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(recipe->cache_path).parent_path(), ec);
  std::fprintf(stderr, "run: computing the profile once: %s\n", recipe->cache_path.c_str());
  std::vector<std::string> argv = {self_exe(), "profile"};
  argv.insert(argv.end(), recipe->args.begin(), recipe->args.end());
  argv.insert(argv.end(), {"-o", recipe->cache_path});
  run_child(argv);
  return recipe->cache_path;
}

// Every run against its profile (codec, contexts, levels) before any runs.
void check_runs(const scenarios::Sweep& sweep) {
  std::map<std::string, codec::Profile> profiles;
  for (const auto& r : sweep.runs) {
    const std::string& path = r.scenario.sim.profile_path;
    auto it = profiles.find(path);
    if (it == profiles.end()) {
      try {
        it = profiles.emplace(path, codec::read_profile(path)).first;
      } catch (const Error&) {
        throw;
      } catch (const std::exception& e) {
        throw Error(e.what());
      }
    }
    try {
      scenarios::check_against_profile(r.scenario, it->second);
    } catch (const Error& e) {
      std::string params;
      for (const auto& [k, v] : r.params) params += (params.empty() ? "" : ", ") + k + "=" + v;
      throw Error(fmt::format("{}: sweep run {}{}: {}", sweep.source, r.index, params.empty() ? "" : " (" + params + ")",
                              e.what()));
    }
  }
}

void run(const RunOptions& o) {
  const auto sweep = scenarios::load_sweep(o.scenario, recipe_profile(o.scenario));
  check_runs(sweep);
  std::string dir = o.out_dir.empty() ? sweep.output_dir : o.out_dir;
  if (dir.empty()) throw Error(fmt::format("{}: no output folder (give -o DIR or `output:` in the scenario)", o.scenario));
  const unsigned jobs = o.jobs ? o.jobs : std::max(1u, std::thread::hardware_concurrency());
  if (!o.emit.empty()) {
    const unsigned shards = o.shards ? o.shards : unsigned(std::min<size_t>(sweep.runs.size(), 64));
    const std::string path = scenarios::emit_shards(o.emit, self_exe(), o.scenario, dir, shards, o.jobs ? o.jobs : 1);
    std::printf("%s: %zu runs in %u shards; %s\n", path.c_str(), sweep.runs.size(), shards,
                o.emit == "slurm" ? fmt::format("submit with `sbatch {}`, then `kvstream merge {}`", path, dir).c_str()
                                  : fmt::format("run with `parallel -j N < {}`, then `kvstream merge {}`", path, dir).c_str());
    return;
  }
  scenarios::RunnerOptions ro;
  ro.out_dir = dir;
  ro.jobs = jobs;
  const size_t slash = o.shard.find('/');
  try {
    if (slash == std::string::npos) throw std::invalid_argument("");
    ro.shard = unsigned(std::stoul(o.shard.substr(0, slash)));
    ro.shards = unsigned(std::stoul(o.shard.substr(slash + 1)));
  } catch (const std::exception&) {
    throw Error(fmt::format("--shard: expected K/N (e.g. 2/8), got '{}'", o.shard));
  }
  ro.worker = {self_exe(), "simulate"};
  ro.in_process = [](const std::vector<std::string>& argv) { return run_kvstream(argv); };
  ro.progress = !o.no_progress;
  const auto s = scenarios::run_sweep(sweep, ro);
  std::fprintf(stderr, "run: %zu runs%s: %zu done before, %zu now, %zu failed%s\n", s.total,
               ro.shards > 1 ? fmt::format(" in shard {}/{}", ro.shard, ro.shards).c_str() : "", s.done_before, s.ran,
               s.failed, s.interrupted ? "; interrupted: run the same command again to finish" : "");
  if (s.interrupted) std::exit(130);
  if (ro.shards == 1) {
    print_summary(dir, sweep.keys);
    std::printf("results: %s/results.csv, %s/results.jsonl%s\n", dir.c_str(), dir.c_str(),
                s.failed ? fmt::format("; failed runs: {}/failed/", dir).c_str() : "");
  }
  if (s.failed) std::exit(int(std::min<size_t>(s.failed, 100)));
}

}  // namespace

void add_run_commands(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  auto* cmd = app.add_subcommand("run", "Run every run of a scenario's sweep in parallel workers (resumable), "
                                        "then write results.csv and results.jsonl");
  cmd->add_option("scenario", o->scenario, "Scenario YAML (with or without `sweep:`)")->required()->check(CLI::ExistingFile);
  cmd->add_option("-o,--out", o->out_dir, "Output folder (default: the scenario's `output:`)");
  cmd->add_option("-j,--jobs", o->jobs, "Worker processes at once (default: the machine's cores)");
  cmd->add_option("--shard", o->shard, "Run only shard K of N (K/N; runs with index % N == K - 1)");
  cmd->add_option("--emit", o->emit, "Write a script that runs the shards instead: slurm (job array) or parallel "
                                     "(a command file for GNU parallel)")
      ->check(CLI::IsMember({"slurm", "parallel"}));
  cmd->add_option("--shards", o->shards, "With --emit: number of shards (default: runs, at most 64)");
  cmd->add_flag("--no-progress", o->no_progress, "No progress bar or progress lines");
  cmd->callback([o] { run(*o); });

  auto dirs = std::make_shared<std::vector<std::string>>();
  auto out = std::make_shared<std::string>();
  auto* merge = app.add_subcommand("merge", "Merge the output folders of shards of one sweep (refuses others)");
  merge->add_option("dirs", *dirs, "Output folders of `kvstream run --shard`")->required();
  merge->add_option("-o,--out", *out, "Folder for results.csv / results.jsonl (default: the first folder)");
  merge->callback([dirs, out] {
    const std::string dest = out->empty() ? (*dirs)[0] : *out;
    const size_t missing = scenarios::merge_results(*dirs, dest);
    std::printf("merged into %s/results.csv, %s/results.jsonl%s\n", dest.c_str(), dest.c_str(),
                missing ? fmt::format(" ({} runs without a result)", missing).c_str() : "");
    if (missing) std::exit(int(std::min<size_t>(missing, 100)));
  });
}

}  // namespace kvs::apps
