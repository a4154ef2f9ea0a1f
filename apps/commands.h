// Subcommands of the `kvstream` tool: one registration function per file,
// each file owned by the module it drives. Callbacks throw kvs::Error (or any
// std::exception) for user errors; main() prints it on one line and exits 1.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "codec/codec.h"

namespace kvs::apps {

// The whole command line (args[0] = the program), as main() runs it; returns
// the exit status. `kvstream run` calls it in forked workers.
int run_kvstream(const std::vector<std::string>& args);

void add_trace_commands(CLI::App& app);     // trace_commands.cpp: trace stats|plot|gen|convert
void add_codec_commands(CLI::App& app);     // codec_commands.cpp: encode, decode, codecs
void add_codec_model_command(CLI::App& app);  // codec_model_command.cpp: codec-model train
void add_policy_commands(CLI::App& app);    // policy_commands.cpp: policies
void add_report_command(CLI::App& app);    // report_command.cpp: report (analysis/report.py)

// --param strings and a codec model file as codec options (codec_commands.cpp):
// "key=value" goes to every codec (CodecOptions::params), "codec.key=value"
// to that codec only (CodecOptions::codec_params, e.g. cachegen.scheme=paper).
// Throws kvs::Error for a malformed parameter or an unknown codec name.
codec::CodecOptions parse_codec_options(const std::vector<std::string>& params, const std::string& model_file);
// Makes each of the command's `codecs` with `options` once, before any work;
// throws kvs::Error naming the codec for a parameter scoped to a codec not in
// `codecs` (`flag`: the option that names them, e.g. "--codecs"), for an
// unscoped one that some codec does not take (saying which codecs take it and
// how to scope it), or for any other parameter a codec rejects.
void check_codec_params(const codec::CodecOptions& options, const std::vector<std::string>& codecs,
                        const std::string& flag);
#ifdef KVSTREAM_HAVE_TORCH
void add_model_commands(CLI::App& app);     // model_commands.cpp: kv dump, eval
void add_train_command(CLI::App& app);      // train_command.cpp: train
void add_profile_command(CLI::App& app);    // profile_command.cpp: profile
void add_selective_command(CLI::App& app);  // selective_command.cpp: selective-profile
#endif
#ifdef KVSTREAM_HAVE_NS3
void add_simulate_command(CLI::App& app);   // simulate_command.cpp: simulate
void add_run_commands(CLI::App& app);       // run_command.cpp: run, merge
void add_offload_command(CLI::App& app);    // offload_command.cpp: offload (sim/offload.h)
#endif

}  // namespace kvs::apps
