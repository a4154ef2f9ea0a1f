// Simulating KV-cache streaming: the public API of kvs::sim.
//
// One run: requests arrive (on a schedule or as a Poisson process), each for
// one context of a codec profile; the GPU node fetches the context's chunks
// from a chunk server over one persistent TCP connection per request, across
// a bottleneck whose rate is constant or follows a trace, possibly shared with
// cross traffic; a policy picks, chunk by chunk, a codec level or recompute;
// the GPU decodes fetched chunks as they arrive (pipelined with reception),
// recomputes the others, and produces the first token. See docs/simulator.md.
//
// This header has no ns-3 types (apps/ includes it as C++20); the
// implementation is C++17.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "codec/profile.h"
#include "policies/policy.h"
#include "sim/config.h"
#include "sim/run_log.h"

namespace kvs::sim {

struct SimHooks {
  // Replaces make_policy(config.policy, config.policy_params), one policy per
  // request (tests use it to record the StreamStates a policy sees).
  std::function<std::unique_ptr<policies::Policy>(uint32_t request)> make_policy;
};

struct SimOutput {
  RunResult result;
  std::string events_jsonl;  // one event per line, in simulation-time order
  std::string result_json;
  std::string summary;       // one screen of text
};

// Ratio of KV elements per token, target over profiled: chunk sizes and decode
// seconds are multiplied by it.
double kv_size_scale(const codec::ModelInfo& profiled, const codec::ModelInfo& target);

// The target model a config names (the profiled model when it names none).
codec::ModelInfo resolve_target(const SimConfig& config, const codec::Profile& profile);

// Runs one simulation. Throws kvs::Error for a bad configuration (unknown
// codec, policy, preset, context index...). Deterministic: the same config,
// profile and seed give byte-identical outputs.
SimOutput simulate(const SimConfig& config, const codec::Profile& profile, const SimHooks& hooks = {});

// Writes results.json, events.jsonl and summary.txt into `out_dir` (created)
// as one set: all three or, on an error, none of them (base/files.h
// write_files_atomic).
void write_outputs(const SimOutput& output, const std::string& out_dir);

// Empty when every request finished; otherwise why the run is not a result:
// which requests were unfinished when it stopped at max_sim_s, how far each
// got, and which never started. `kvstream simulate` exits non-zero with it.
std::string unfinished_reason(const RunResult& result, double max_sim_s);

}  // namespace kvs::sim
