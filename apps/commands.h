// Subcommands of the `kvstream` tool, one registration function per module.
// Each adds its subcommands to the app; callbacks throw kvs::Error (or any
// std::exception) for user errors, which main() prints on one line.
#pragma once

#include <CLI/CLI.hpp>

namespace kvs::apps {

void add_trace_commands(CLI::App& app);     // trace stats|plot|gen|convert
void add_codec_commands(CLI::App& app);     // encode, decode, codecs
#ifdef KVSTREAM_HAVE_TORCH
void add_model_commands(CLI::App& app);     // kv dump, eval, train, profile
#endif
#ifdef KVSTREAM_HAVE_NS3
void add_simulate_command(CLI::App& app);   // simulate
#endif

}  // namespace kvs::apps
