// `kvstream report DIR [-o OUT]` and `kvstream report --compare DIR_A DIR_B`:
// the tables, plots and HTML page of a sweep's output folder (`kvstream run`),
// drawn by analysis/report.py with Debian's python3-matplotlib. This command
// only finds the interpreter and the script, checks that matplotlib and numpy
// import, runs the script and exits with its exit status.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "apps/commands.h"
#include "base/error.h"

namespace kvs::apps {
namespace {

// Runs argv[0] with argv (no shell) and returns its exit status (128 + signal when killed).
int run_process(const std::vector<std::string>& argv, bool quiet_output = false) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid < 0) throw Error(fmt::format("report: cannot start {}", argv[0]));
  if (pid == 0) {
    if (quiet_output) {
      std::freopen("/dev/null", "w", stdout);
      std::freopen("/dev/null", "w", stderr);
    }
    ::execv(args[0], args.data());
    std::_Exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw Error(fmt::format("report: lost {}", argv[0]));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

constexpr const char* kInstall =
    "install Debian's python3, python3-matplotlib and python3-numpy (apt-get install python3 python3-matplotlib "
    "python3-numpy, or scripts/install-deps)";

}  // namespace

void add_report_command(CLI::App& app) {
  struct Args {
    std::string dir, out, runs;
    std::vector<std::string> compare;
    int timelines = 8;
    bool quiet = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "report", "Tables, plots and one self-contained HTML page of a sweep's output folder (`kvstream run`), or "
                "--compare of two (analysis/report.py, matplotlib)");
  cmd->add_option("dir", a->dir, "Output folder of `kvstream run` (results.jsonl, runs/)")->check(CLI::ExistingDirectory);
  cmd->add_option("-o,--out", a->out, "Report folder (default DIR/report; with --compare DIR_B/compare)");
  cmd->add_option("--compare", a->compare, "Before/after: DIR_A DIR_B; differences beyond the spread over seeds are marked")
      ->expected(2)
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--runs", a->runs, "Comma-separated run ids to draw timelines of (default: the first run of each policy)");
  cmd->add_option("--timelines", a->timelines, "At most this many timelines")->capture_default_str()->check(CLI::Range(0, 1000));
  cmd->add_flag("-q,--quiet", a->quiet, "Do not print the summary");
  cmd->callback([a] {
    if (a->dir.empty() == a->compare.empty())
      throw Error("report: give DIR (the output folder of `kvstream run`) or --compare DIR_A DIR_B");
    // Debian's python3-matplotlib belongs to /usr/bin/python3 (another python3 may come first on PATH).
    const char* env_py = std::getenv("KVSTREAM_PYTHON3");
    const std::string python = env_py ? env_py : "/usr/bin/python3";
    if (!std::filesystem::exists(python))
      throw Error(fmt::format("report: {} not found: {}", python, kInstall));
    const char* env_dir = std::getenv("KVSTREAM_ANALYSIS_DIR");
    const std::string script = std::string(env_dir ? env_dir : KVSTREAM_SOURCE_DIR "/analysis") + "/report.py";
    if (!std::filesystem::exists(script))
      throw Error(fmt::format("report: {} not found (the source tree this kvstream was built from; "
                              "KVSTREAM_ANALYSIS_DIR names another analysis/ folder)", script));
    if (run_process({python, "-c", "import matplotlib, numpy"}, true) != 0)
      throw Error(fmt::format("report: {} cannot import matplotlib and numpy: {}", python, kInstall));
    std::vector<std::string> argv = {python, script};
    if (!a->compare.empty()) argv.insert(argv.end(), {"--compare", a->compare[0], a->compare[1]});
    else argv.push_back(a->dir);
    if (!a->out.empty()) argv.insert(argv.end(), {"-o", a->out});
    if (!a->runs.empty()) argv.insert(argv.end(), {"--runs", a->runs});
    argv.insert(argv.end(), {"--timelines", std::to_string(a->timelines)});
    if (a->quiet) argv.push_back("-q");
    const int rc = run_process(argv);
    if (rc != 0) {
      std::fflush(stdout);
      std::exit(rc);  // the script has said why; its exit status is ours
    }
  });
}

}  // namespace kvs::apps
