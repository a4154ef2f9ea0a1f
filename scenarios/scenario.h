// One simulation described in YAML: the schema and its strict validation.
//
// Every key is known and typed: an unknown key, a value of the wrong type, a
// value out of its range or not among its choices (link.queue, trace_mode,
// tcp, arrivals.mode), or a missing required key is a kvs::Error naming the
// file, the line and the key ("s.yaml:7: link.rtt_ms: expected a number"). Relative paths (profile,
// trace) are resolved against the scenario file's folder. The schema is the
// one-run config; sweeps will wrap it (a sweep = this document plus lists of
// values for some of its keys). See docs/simulator.md for every key.
#pragma once

#include <map>
#include <string>

#include "codec/profile.h"
#include "sim/config.h"
#include "traces/formats.h"

namespace YAML {
class Node;
}

namespace kvs::scenarios {

struct Scenario {
  sim::SimConfig sim;       // profile_path resolved; link.trace left empty
  std::string trace_file;   // resolved path, or empty
  traces::LoadOptions trace_load;  // how to read it (`link.trace_csv` picks a CSV's columns)
  std::string trace_gen;    // generator spec, or empty
  double trace_scale = 1;   // `link.trace_scale`: the trace's rate x this (1: as recorded)
  std::string output_dir;   // `output:`, resolved; empty if not given
  std::string source;       // the file (or name) it was read from
  // Line of every key found: "codec", "link.rtt_ms", "policy.params.level",
  // list items as "arrivals.contexts[2]". A caller that overrides a value
  // (a command-line option) erases its key, so that at() no longer points here.
  std::map<std::string, size_t> lines;

  // "FILE:LINE: KEY: message" for a key of this scenario; "KEY: message" when
  // the key did not come from the file.
  std::string at(const std::string& key, const std::string& message) const;
  bool profile_from = false;  // the profile comes from `profile_from:` (computed by `kvstream run`)
  bool sweeps = false;      // the file has `sweep:` or `replicates:` (run it with `kvstream run`)
};

Scenario load_scenario(const std::string& path);
// Checks that need the profile: the codec is in it, every arrivals.contexts
// index is one of its contexts, a policy's `level` parameter one of the
// codec's levels; errors name the file, line and key (Scenario::at).
void check_against_profile(const Scenario& scenario, const codec::Profile& profile);
Scenario parse_scenario(const std::string& yaml_text, const std::string& source_name, const std::string& base_dir);
// The same checks on a document already loaded (a sweep's expanded run): no
// text round trip. Lines are the node's marks (0 for nodes built in code).
Scenario parse_scenario_node(const YAML::Node& root, const std::string& source_name, const std::string& base_dir);

}  // namespace kvs::scenarios
