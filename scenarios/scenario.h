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

#include <string>

#include "sim/config.h"

namespace kvs::scenarios {

struct Scenario {
  sim::SimConfig sim;       // profile_path resolved; link.trace left empty
  std::string trace_file;   // resolved path, or empty
  std::string trace_gen;    // generator spec, or empty
  std::string output_dir;   // `output:`, resolved; empty if not given
};

Scenario load_scenario(const std::string& path);
Scenario parse_scenario(const std::string& yaml_text, const std::string& source_name, const std::string& base_dir);

}  // namespace kvs::scenarios
