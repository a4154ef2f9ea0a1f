// The sweep runner: every run of a Sweep in parallel worker processes,
// resumable and shardable.
//
// Layout of the output folder:
//   sweep.json          the sweep: source, hash, swept keys, every run's index, id and values
//   points/<id>.yaml    each run's one-run scenario (absolute paths; rewritten when they changed)
//   runs/<id>/          each run's simulation output (results.json, events.jsonl, summary.txt)
//   logs/<id>.log       each worker's output; failed/<id>.txt the error of a failed run
//                       (failed/<id>.out: what its worker left, moved aside)
//   results.jsonl       one row per run, in run order (merge_results)
//   results.csv         the same, one column per swept key ("param.<key>") and per figure
// A run is done when its runs/<id>/ holds results.json and summary.txt; a
// worker writes them atomically, so an interrupted sweep (Ctrl-C, SIGTERM,
// kill -9 of the runner or of a worker) started again with the same command
// runs only what is missing, and the merged files equal an uninterrupted
// sweep's byte for byte (they hold no times or paths of this machine).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "scenarios/sweep.h"

namespace kvs::scenarios {

struct RunnerOptions {
  std::string out_dir;
  unsigned jobs = 1;                 // worker processes at once
  unsigned shard = 1, shards = 1;    // run only runs with index % shards == shard - 1
  // A worker is a fork of this process that calls `in_process` with the
  // command line `worker` + <points/id.yaml> -o <runs/id> -q and exits with
  // what it returns: no program start per run (a libtorch build of kvstream
  // takes ~0.5 s to start).
  std::vector<std::string> worker;   // e.g. {"/path/to/kvstream", "simulate"}
  std::function<int(const std::vector<std::string>&)> in_process;
  bool progress = true;              // progress bar (terminal) or lines on stderr
};

struct RunnerSummary {
  size_t total = 0;        // runs in this shard
  size_t done_before = 0;  // finished by an earlier invocation
  size_t ran = 0;          // finished now
  size_t failed = 0;       // failed now (recorded in failed/<id>.txt)
  bool interrupted = false;
};

// Runs the shard's missing runs; writes sweep.json and the points first, and
// (when not sharded and nothing was interrupted) results.jsonl / results.csv.
RunnerSummary run_sweep(const Sweep& sweep, const RunnerOptions& options);

// One row per run of the sweep recorded in dirs[0]/sweep.json, looking for
// each run's output in every dir (shards of one sweep); writes
// results.jsonl / results.csv into `out_dir` (copying run folders there when
// they are elsewhere). A dir whose sweep.json names another sweep is an
// error. Returns the number of runs without a result (failed or missing).
size_t merge_results(const std::vector<std::string>& dirs, const std::string& out_dir);

// Scripts that run the sweep's shards on existing engines (in `out_dir`):
// "slurm" writes slurm.sh (a job array, one task per shard, resumable) and
// "parallel" parallel.txt (one `kvstream run --shard K/N` command per line,
// for GNU parallel). Returns the file written.
std::string emit_shards(const std::string& engine, const std::string& kvstream, const std::string& scenario,
                        const std::string& out_dir, unsigned shards, unsigned jobs_per_shard);

}  // namespace kvs::scenarios
