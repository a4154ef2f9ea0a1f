#include "scenarios/runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/files.h"
#include "base/progress.h"

namespace kvs::scenarios {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

volatile std::sig_atomic_t g_stop = 0;  // set by SIGINT / SIGTERM while a sweep runs
void on_stop_signal(int) { g_stop = 1; }

bool run_done(const std::string& dir) {
  return fs::exists(dir + "/results.json") && fs::exists(dir + "/summary.txt");
}

// A worker writes runs/<id> through a sibling runs/<id>.tmp.<pid>, renamed at
// the end (write_files_atomic); a killed one leaves it behind.
void remove_partial_outputs(const std::string& runs_dir, const std::string& id) {
  std::error_code ec;
  const std::string prefix = id + ".tmp.";
  for (const auto& e : fs::directory_iterator(runs_dir, ec))
    if (e.path().filename().string().rfind(prefix, 0) == 0) fs::remove_all(e.path(), ec);
}

std::string tail_of(const std::string& path, size_t max_bytes) {
  std::string text;
  try {
    text = read_file(path);
  } catch (const Error&) {
    return "";
  }
  if (text.size() > max_bytes) text = "..." + text.substr(text.size() - max_bytes);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

double percentile(std::vector<double> xs, double p) {
  if (xs.empty()) return NAN;
  std::sort(xs.begin(), xs.end());
  const double k = (double(xs.size()) - 1) * p / 100.0;
  const size_t lo = size_t(std::floor(k)), hi = size_t(std::ceil(k));
  return xs[lo] + (xs[hi] - xs[lo]) * (k - double(lo));
}

double round9(double x) { return std::round(x * 1e9) / 1e9; }

// The row of one finished run: the figures of its results.json, reduced over requests.
ordered_json row_of(const ordered_json& manifest_run, const std::string& run_dir_rel, const std::string& results_path,
                    const std::string& failed_path) {
  ordered_json row;
  row["id"] = manifest_run["id"];
  row["index"] = manifest_run["index"];
  row["params"] = manifest_run["params"];
  if (!fs::exists(results_path)) {
    row["status"] = "failed";
    row["error"] = fs::exists(failed_path) ? tail_of(failed_path, 2000) : std::string("no result (not run)");
    return row;
  }
  const ordered_json r = ordered_json::parse(read_file(results_path));
  std::vector<double> ttft;
  double net = 0, queue = 0, dec = 0, rec = 0, ft = 0, met = 0, q = 0, qworst = -INFINITY, bytes = 0, share = 0;
  double exact = 0, predicted = 0, kl = 0, klworst = -INFINITY, exact_kl = 0;
  size_t exact_n = 0, predicted_n = 0;
  for (const auto& req : r.at("requests")) {
    if (!req.at("finished").get<bool>()) continue;
    ttft.push_back(req.at("ttft_s").get<double>());
    const auto& b = req.at("breakdown");
    net += b.at("network_s").get<double>(), queue += b.at("queueing_s").get<double>();
    dec += b.at("decode_s").get<double>(), rec += b.at("recompute_s").get<double>();
    ft += b.at("first_token_s").get<double>();
    met += req.at("slo_met").get<bool>() ? 1 : 0;
    const double qi = req.at("quality_loss_increase").get<double>();
    q += qi, qworst = std::max(qworst, qi);
    const double ki = req.value("quality_kl_nats", 0.0);
    kl += ki, klworst = std::max(klworst, ki);
    bytes += double(req.at("payload_bytes").get<uint64_t>());
    const double chunks = double(std::max<size_t>(1, req.at("chunks").size()));
    share += double(req.at("recomputed_chunks").get<uint64_t>()) / chunks;
    if (req.contains("exact_quality")) {
      exact += req["exact_quality"].at("loss_increase").get<double>(), ++exact_n;
      exact_kl += req["exact_quality"].value("kl_nats", 0.0);
    }
    if (req.contains("predicted_ttft_s")) predicted += req["predicted_ttft_s"].get<double>(), ++predicted_n;
  }
  const size_t n = ttft.size();
  if (n == 0) {
    row["status"] = "failed";
    row["error"] = "no request finished";
    return row;
  }
  std::string trace;
  // "trace NAME" or "constant"; the file name only, so that rows do not depend on where the trace lies.
  const std::string bottleneck = r.at("network_settings").value("link.bottleneck", "");
  if (bottleneck.rfind("trace ", 0) == 0) {
    // A transformed trace is named "scale(NAME)": the file underneath.
    std::string name = bottleneck.substr(6);
    for (size_t open; !name.empty() && name.back() == ')' && (open = name.find('(')) != std::string::npos;)
      name = name.substr(open + 1, name.size() - open - 2);
    trace = fs::path(name).filename().string();
  }
  std::string levels;
  for (const auto& c : r.at("requests").at(0).at("chunks")) {
    const int l = c.at("level").get<int>();
    levels += (levels.empty() ? "" : " ") + (l < 0 ? std::string("R") : std::to_string(l));
  }
  const double dn = double(n);
  row["status"] = "ok";
  row["policy"] = r.at("policy");
  row["policy_reads_future"] = r.value("policy_reads_future", false);
  row["codec"] = r.at("codec");
  row["model"] = r.at("model");
  row["trace"] = trace;
  row["slo_s"] = r.at("slo_s");
  row["requests"] = n;
  row["ttft_s"] = round9(std::accumulate(ttft.begin(), ttft.end(), 0.0) / dn);
  row["ttft_p50_s"] = round9(percentile(ttft, 50));
  row["ttft_p95_s"] = round9(percentile(ttft, 95));
  row["ttft_max_s"] = round9(*std::max_element(ttft.begin(), ttft.end()));
  row["network_s"] = round9(net / dn);
  row["queueing_s"] = round9(queue / dn);
  row["decode_s"] = round9(dec / dn);
  row["recompute_s"] = round9(rec / dn);
  row["first_token_s"] = round9(ft / dn);
  row["slo_met"] = met / dn;
  row["quality_loss_increase"] = q / dn;
  row["quality_loss_increase_worst"] = qworst;
  row["exact_loss_increase"] = exact_n ? ordered_json(exact / double(exact_n)) : ordered_json(nullptr);
  row["quality_measure"] = r.value("quality_measure", "loss_increase");
  row["quality_kl_nats"] = kl / dn;
  row["quality_kl_nats_worst"] = klworst;
  row["exact_kl_nats"] = exact_n ? ordered_json(exact_kl / double(exact_n)) : ordered_json(nullptr);
  row["payload_bytes"] = bytes / dn;
  row["recomputed_share"] = share / dn;
  row["levels"] = levels;
  row["predicted_ttft_s"] = predicted_n ? ordered_json(round9(predicted / double(predicted_n))) : ordered_json(nullptr);
  row["decode_timing"] = r.value("decode_timing", "");
  row["run_dir"] = run_dir_rel;
  return row;
}

std::string csv_field(const ordered_json& v) {
  std::string s = v.is_string() ? v.get<std::string>() : v.is_null() ? std::string() : v.dump();
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

constexpr const char* kFigures[] = {"status", "error", "policy", "policy_reads_future", "codec", "model", "trace",
                                    "slo_s", "requests", "ttft_s", "ttft_p50_s", "ttft_p95_s", "ttft_max_s",
                                    "network_s", "queueing_s", "decode_s", "recompute_s", "first_token_s", "slo_met",
                                    "quality_loss_increase", "quality_loss_increase_worst", "exact_loss_increase",
                                    "quality_measure", "quality_kl_nats", "quality_kl_nats_worst", "exact_kl_nats",
                                    "payload_bytes", "recomputed_share", "levels", "predicted_ttft_s",
                                    "decode_timing", "run_dir"};

void write_tables(const std::vector<ordered_json>& rows, const std::vector<std::string>& keys,
                  const std::string& out_dir) {
  std::string jsonl, csv = "id,index";
  for (const auto& k : keys) csv += ",param." + k;
  for (const char* f : kFigures) csv += std::string(",") + f;
  csv += "\n";
  for (const auto& row : rows) {
    jsonl += row.dump() + "\n";
    csv += csv_field(row["id"]) + "," + row["index"].dump();
    for (const auto& k : keys) csv += "," + csv_field(row["params"].value(k, ordered_json("")));
    for (const char* f : kFigures) csv += "," + (row.contains(f) ? csv_field(row[f]) : std::string());
    csv += "\n";
  }
  write_file_atomic(out_dir + "/results.jsonl", jsonl);
  write_file_atomic(out_dir + "/results.csv", csv);
}

ordered_json manifest_of(const Sweep& sweep) {
  ordered_json m;
  m["source"] = fs::path(sweep.source).filename().string();
  m["hash"] = sweep.hash;
  m["keys"] = sweep.keys;
  ordered_json runs = ordered_json::array();
  for (const auto& r : sweep.runs) {
    ordered_json params = ordered_json::object();
    for (const auto& [k, v] : r.params) params[k] = v;
    runs.push_back({{"index", r.index}, {"id", r.id}, {"params", params}});
  }
  m["runs"] = std::move(runs);
  return m;
}

void make_dirs(const std::string& d) {
  std::error_code ec;
  fs::create_directories(d, ec);
  if (ec) throw Error(fmt::format("{}: cannot create the folder: {}", d, ec.message()));
}

// Starts one worker as a fork of this process calling `fn(argv)`.
pid_t fork_worker(const std::function<int(const std::vector<std::string>&)>& fn, const std::vector<std::string>& argv,
                  const std::string& log) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw Error(fmt::format("cannot start a worker: {}", std::strerror(errno)));
  if (pid > 0) return pid;
  // The child: its own output, default signals, the run, and out.
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const int null = ::open("/dev/null", O_RDONLY);
  if (fd < 0 || null < 0) ::_exit(125);
  ::dup2(fd, STDOUT_FILENO);
  ::dup2(fd, STDERR_FILENO);
  ::dup2(null, STDIN_FILENO);
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  int rc = 125;
  try {
    rc = fn(argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "worker: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "worker: unknown exception\n");
  }
  std::fflush(nullptr);
  ::_exit(rc);
}

}  // namespace

RunnerSummary run_sweep(const Sweep& sweep, const RunnerOptions& o) {
  if (o.shards < 1 || o.shard < 1 || o.shard > o.shards)
    throw Error(fmt::format("--shard: expected K/N with 1 <= K <= N, got {}/{}", o.shard, o.shards));
  if (o.worker.empty() || !o.in_process) throw Error("runner: no worker");
  const std::string dir = o.out_dir;
  for (const char* sub : {"", "/points", "/runs", "/logs", "/failed"}) make_dirs(dir + sub);
  write_file_atomic(dir + "/sweep.json", manifest_of(sweep).dump(1) + "\n");

  RunnerSummary s;
  std::vector<const SweepRun*> todo;
  for (const auto& r : sweep.runs) {
    if (r.index % o.shards != o.shard - 1) continue;
    ++s.total;
    // A point's file holds absolute paths, which its run id does not depend
    // on (the id hashes the document as written and the files' content):
    // rewritten when they differ, e.g. when the scenario's folder moved
    // between an interrupted invocation and its resumption, whose workers
    // would otherwise look for the profile where it was.
    const std::string point = dir + "/points/" + r.id + ".yaml";
    std::string written;
    if (fs::exists(point)) {
      try {
        written = read_file(point);
      } catch (const Error&) {
      }
    }
    if (written != r.run_yaml) write_file_atomic(point, r.run_yaml);
    if (run_done(dir + "/runs/" + r.id)) {
      ++s.done_before;
      std::error_code ec;
      fs::remove(dir + "/failed/" + r.id + ".txt", ec);  // an earlier failure, since redone
      continue;
    }
    remove_partial_outputs(dir + "/runs", r.id);  // of a runner killed before
    todo.push_back(&r);
  }

  struct sigaction sa {}, old_int {}, old_term {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: waitpid returns EINTR on a signal
  g_stop = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  std::unique_ptr<Progress> bar;
  if (o.progress) bar = std::make_unique<Progress>("run", s.total, "runs", s.done_before);
  std::map<pid_t, const SweepRun*> running;
  size_t next = 0;
  const unsigned jobs = std::max(1u, o.jobs);
  auto finish_one = [&](pid_t pid, int status) {
    auto it = running.find(pid);
    if (it == running.end()) return;
    const SweepRun& r = *it->second;
    running.erase(it);
    const std::string out = dir + "/runs/" + r.id, failed = dir + "/failed/" + r.id + ".txt";
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && run_done(out);
    if (ok) {
      ++s.ran;
      std::error_code ec;
      fs::remove(failed, ec);
    } else if (!g_stop) {
      ++s.failed;
      // Whatever the worker left is not a result: moved aside, so that the
      // next invocation runs it again (and a run killed after writing its
      // files is not taken for done).
      std::error_code ec;
      fs::remove_all(failed + ".out", ec);
      if (fs::exists(out)) fs::rename(out, failed + ".out", ec);
      remove_partial_outputs(dir + "/runs", r.id);
      const std::string why = WIFSIGNALED(status) ? fmt::format("killed by signal {}", WTERMSIG(status))
                              : WIFEXITED(status) ? fmt::format("exit status {}", WEXITSTATUS(status))
                                                  : std::string("stopped");
      write_file_atomic(failed, fmt::format("run {} ({}): {}\n{}\n", r.index, r.id, why,
                                            tail_of(dir + "/logs/" + r.id + ".log", 4000)));
    }
    if (bar && !g_stop) bar->advance(1, s.failed ? fmt::format("{} failed", s.failed) : std::string());
  };
  try {
    while ((next < todo.size() && !g_stop) || !running.empty()) {
      while (!g_stop && next < todo.size() && running.size() < jobs) {
        const SweepRun& r = *todo[next++];
        std::vector<std::string> argv = o.worker;
        argv.insert(argv.end(), {dir + "/points/" + r.id + ".yaml", "-o", dir + "/runs/" + r.id, "-q"});
        const std::string log = dir + "/logs/" + r.id + ".log";
        running[fork_worker(o.in_process, argv, log)] = &r;
      }
      if (g_stop)
        for (const auto& [pid, r] : running) kill(pid, SIGTERM);
      int status = 0;
      const pid_t pid = waitpid(-1, &status, 0);
      if (pid > 0) finish_one(pid, status);
      else if (pid < 0 && errno != EINTR) break;
    }
  } catch (...) {
    for (const auto& [pid, r] : running) kill(pid, SIGTERM);
    while (waitpid(-1, nullptr, 0) > 0) {}
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
    throw;
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (bar) bar->finish();
  s.interrupted = g_stop != 0;
  if (!s.interrupted && o.shards == 1) merge_results({dir}, dir);
  return s;
}

size_t merge_results(const std::vector<std::string>& dirs, const std::string& out_dir) {
  if (dirs.empty()) throw Error("merge: no folders");
  const std::string first = dirs[0] + "/sweep.json";
  ordered_json manifest;
  try {
    manifest = ordered_json::parse(read_file(first));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not a sweep manifest: {}", first, e.what()));
  }
  for (size_t i = 1; i < dirs.size(); ++i) {
    const std::string path = dirs[i] + "/sweep.json";
    ordered_json other;
    try {
      other = ordered_json::parse(read_file(path));
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("{}: not a sweep manifest: {}", path, e.what()));
    }
    if (other.value("hash", "") != manifest.value("hash", ""))
      throw Error(fmt::format("merge: {} holds sweep {} of {}, but {} holds sweep {} of {}: not shards of one sweep",
                              dirs[i], other.value("hash", "?"), other.value("source", "?"), dirs[0],
                              manifest.value("hash", "?"), manifest.value("source", "?")));
  }
  make_dirs(out_dir + "/runs");
  std::vector<std::string> keys = manifest.at("keys").get<std::vector<std::string>>();
  std::vector<ordered_json> rows;
  size_t missing = 0;
  for (const auto& run : manifest.at("runs")) {
    const std::string id = run.at("id").get<std::string>();
    const std::string rel = "runs/" + id;
    std::string found, failed;
    for (const auto& d : dirs) {
      if (found.empty() && run_done(d + "/" + rel)) found = d;
      if (failed.empty() && fs::exists(d + "/failed/" + id + ".txt")) failed = d + "/failed/" + id + ".txt";
    }
    if (!found.empty() && fs::weakly_canonical(found + "/" + rel) != fs::weakly_canonical(out_dir + "/" + rel)) {
      // Copy through a temporary folder, renamed at the end: all files or none.
      const std::string tmp = out_dir + "/" + rel + ".tmp";
      std::error_code ec;
      fs::remove_all(tmp, ec);
      fs::copy(found + "/" + rel, tmp, fs::copy_options::recursive, ec);
      if (!ec) fs::rename(tmp, out_dir + "/" + rel, ec);
      if (ec) throw Error(fmt::format("merge: cannot copy {} to {}: {}", found + "/" + rel, out_dir, ec.message()));
    }
    ordered_json row = row_of(run, rel, found.empty() ? std::string() : out_dir + "/" + rel + "/results.json",
                              failed);
    if (row["status"] != "ok") ++missing;
    rows.push_back(std::move(row));
  }
  if (fs::weakly_canonical(dirs[0]) != fs::weakly_canonical(out_dir))
    write_file_atomic(out_dir + "/sweep.json", manifest.dump(1) + "\n");
  write_tables(rows, keys, out_dir);
  return missing;
}

std::string emit_shards(const std::string& engine, const std::string& kvstream, const std::string& scenario,
                        const std::string& out_dir, unsigned shards, unsigned jobs_per_shard) {
  if (shards < 1) throw Error("--shards: expected at least 1");
  make_dirs(out_dir + "/logs");
  const std::string k = fs::absolute(kvstream).string(), sc = fs::absolute(scenario).string(),
                    dir = fs::absolute(out_dir).string();
  auto quote = [](const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  };
  if (engine == "parallel") {
    std::string text;
    for (unsigned i = 1; i <= shards; ++i)
      text += fmt::format("{} run {} -o {} --shard {}/{} -j {} --no-progress\n", quote(k), quote(sc), quote(dir), i,
                          shards, jobs_per_shard);
    const std::string path = out_dir + "/parallel.txt";
    write_file_atomic(path, text);
    return path;
  }
  if (engine == "slurm") {
    const std::string text = fmt::format(
        "#!/usr/bin/env bash\n"
        "# kvstream sweep {sc}: {n} shards as a Slurm job array. Submit with\n"
        "#   sbatch {path}\n"
        "# A task that fails or is preempted can be resubmitted: finished runs are kept.\n"
        "# When every task is done: {k} merge {dir}\n"
        "#SBATCH --job-name=kvstream-sweep\n"
        "#SBATCH --array=1-{n}\n"
        "#SBATCH --cpus-per-task={j}\n"
        "#SBATCH --output={dir}/logs/slurm-%A_%a.out\n"
        "set -euo pipefail\n"
        "exec {qk} run {qsc} -o {qdir} --shard \"${{SLURM_ARRAY_TASK_ID}}/{n}\" -j \"${{SLURM_CPUS_PER_TASK:-{j}}}\" "
        "--no-progress\n",
        fmt::arg("sc", sc), fmt::arg("n", shards), fmt::arg("path", dir + "/slurm.sh"), fmt::arg("k", k),
        fmt::arg("dir", dir), fmt::arg("j", jobs_per_shard), fmt::arg("qk", quote(k)), fmt::arg("qsc", quote(sc)),
        fmt::arg("qdir", quote(dir)));
    const std::string path = out_dir + "/slurm.sh";
    write_file_atomic(path, text);
    fs::permissions(path, fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec,
                    fs::perm_options::add);
    return path;
  }
  throw Error(fmt::format("--emit: expected slurm or parallel, got '{}'", engine));
}

}  // namespace kvs::scenarios
