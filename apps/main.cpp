// kvstream: the command-line tool. One subcommand per job; see --help.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "apps/commands.h"
#ifdef KVSTREAM_HAVE_CUDA
#include "codec/cuda/decode.h"
#endif
#ifdef KVSTREAM_HAVE_NS3
#include "sim/ns3_version.h"
#endif

namespace {

std::string version_text() {
  std::string s = "kvstream " KVSTREAM_VERSION "\n";
#ifdef KVSTREAM_HAVE_NS3
  // The ns-3 this process links, found at run time (sim/ns3_version.h).
  const kvs::sim::LinkedNs3& ns3 = kvs::sim::linked_ns3();
  s += "  ns-3:    yes, " + kvs::sim::describe_ns3(ns3);
  try {
    kvs::sim::check_ns3_version(ns3, false);
  } catch (const std::exception&) {
    s += "; not the ns-3.37 the TCP fixes need: runs only with --ns3-stock";
  }
  s += "\n";
#else
  s += "  ns-3:    no\n";
#endif
#ifdef KVSTREAM_HAVE_TORCH
  s += "  libtorch: yes (" KVSTREAM_TORCH_VERSION ")\n";
#else
  s += "  libtorch: no\n";
#endif
#ifdef KVSTREAM_HAVE_CUDA
  // What codec/cuda compiled in, and whether this machine can run it.
  s += "  CUDA:    yes (" + kvs::codec::cuda::built_kernels() + "; device: " + kvs::codec::cuda::device_description() + ")";
#else
  s += "  CUDA:    no";
#endif
  return s;
}

}  // namespace

namespace kvs::apps {

int run_kvstream(const std::vector<std::string>& args) {
  CLI::App app{"kvstream: a testbed for streaming LLM KV caches over networks"};
  // A callback: the CUDA device is looked up only when --version is asked for.
  app.set_version_flag("--version", std::function<std::string()>(version_text),
                       "Print the version and which optional parts were built in");
  app.require_subcommand(1);
  app.fallthrough(false);

  add_trace_commands(app);
  add_codec_commands(app);
  add_codec_model_command(app);
  add_policy_commands(app);
  add_report_command(app);
#ifdef KVSTREAM_HAVE_TORCH
  add_model_commands(app);
  add_train_command(app);
  add_profile_command(app);
  add_selective_command(app);
#endif
#ifdef KVSTREAM_HAVE_NS3
  add_simulate_command(app);
  add_run_commands(app);
  add_offload_command(app);
#endif

  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  try {
    app.parse(int(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvstream: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace kvs::apps

int main(int argc, char** argv) { return kvs::apps::run_kvstream(std::vector<std::string>(argv, argv + argc)); }
