// Sweeps: one scenario file, many runs.
//
// A scenario may hold, beside the one-run keys (scenario.h), a `sweep:`
// mapping from keys of the one-run schema (dotted paths, e.g. `link.rtt_ms`,
// `policy`, `slo_s`, `link.trace`, `seed`) to the values to try:
//   key: [a, b, c]                              a list
//   key: {from: 10, to: 50, step: 10}           a linear range, `to` included
//   key: {from: 1, to: 1000, count: 4, scale: log}   count values, linear or log
//   zip: [{k1: [...], k2: [...]}, ...]          keys varied together (equal lengths)
// The runs are the cartesian product of the groups (every key its own group,
// each `zip` entry one group), in the order the file gives them, the first
// outermost. `replicates: N` runs every point with N seeds (seed, seed+1, ...).
// A policy value is a name ("mpc"), "name:N" (its `level` parameter, e.g.
// "fixed:2"), "name:k=v,k=v", or a map {name, params}.
//
// A value listed twice for a key (numbers by value, a policy shorthand as its
// map), or a zip's combination twice, is refused: it would be two points with
// one run id. Every expanded run is validated (as a one-run scenario) before any runs;
// an error names the file, the line of the swept key, the run and the one-run
// error. Each run has a stable id: a hash of its resolved document (as
// written, relative paths included) and of the content of its profile and
// trace, so adding values reuses finished runs and a changed input re-runs
// them.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "scenarios/scenario.h"

namespace kvs::scenarios {

struct SweepRun {
  size_t index = 0;
  std::string id;  // 12 hex digits
  // The swept keys and this run's values (as YAML flow text), in key order.
  std::vector<std::pair<std::string, std::string>> params;
  Scenario scenario;       // parsed and validated
  std::string run_yaml;    // the run's document, paths absolute, no `output:` (for a worker)
};

struct Sweep {
  std::string source;               // the scenario file
  std::vector<std::string> keys;    // swept keys (with "seed" last when replicated)
  std::vector<SweepRun> runs;
  std::string output_dir;           // `output:` of the base document, resolved; may be empty
  std::string hash;                 // of every run id, in order: identifies the sweep
};

// `profile_path`: the profile that a `profile_from:` recipe produced
// (scenarios/profile_cache.h); required when the scenario has one.
Sweep load_sweep(const std::string& path, const std::string& profile_path = {});
Sweep parse_sweep(const std::string& yaml_text, const std::string& source, const std::string& base_dir,
                  const std::string& profile_path = {});

// FNV-1a, 64 bits, as 16 hex digits: stable across runs and platforms.
std::string content_hash(std::string_view data);

}  // namespace kvs::scenarios
