#!/usr/bin/env bash
# Issue 20's runner benchmark: a 1,000-run sweep (10 SLOs x 10 link rates x
# 10 policies) on the default profile, then the same command again (every
# run done: what is left is the runner's own work, expansion, checks and
# merging). Prints the wall times, the per-run wall time and the runner's
# overhead as a share of the sweep.
# Usage: bench/sweep_bench.sh [KVSTREAM] [PROFILE] [JOBS]   (default build/apps/kvstream runs/default/profile.json 2)
set -euo pipefail
cd "$(dirname "$0")/.."
kvstream=${1:-build/apps/kvstream}
profile=$(realpath "${2:-runs/default/profile.json}")
jobs=${3:-2}
out=$(mktemp -d /tmp/kvs-sweep-bench.XXXXXX)
trap 'rm -rf "$out"' EXIT
cat > "$out/sweep.yaml" <<YAML
profile: $profile
codec: cachegen
link: {rtt_ms: 20}
arrivals: {contexts: [0]}
sweep:
  slo_s: {from: 0.05, to: 0.5, step: 0.05}
  link.rate_mbps: {from: 10, to: 10000, count: 10, scale: log}
  policy: [fixed:0, fixed:2, fixed:4, recompute, hybrid:2, rate, cachegen, mpc, bola, oracle]
YAML
t0=$(date +%s.%N)
"$kvstream" run "$out/sweep.yaml" -o "$out/out" -j "$jobs" --no-progress > "$out/first.txt"
t1=$(date +%s.%N)
"$kvstream" run "$out/sweep.yaml" -o "$out/out" -j "$jobs" --no-progress > "$out/second.txt"
t2=$(date +%s.%N)
runs=$(($(wc -l < "$out/out/results.jsonl")))
python3 - "$t0" "$t1" "$t2" "$runs" "$jobs" <<'PY'
import sys
t0, t1, t2, runs, jobs = map(float, sys.argv[1:])
sweep, again = t1 - t0, t2 - t1
print(f"sweep_bench: {int(runs)} runs, -j {int(jobs)}: {sweep:.1f} s wall ({sweep / runs * jobs:.3f} s per run per worker); "
      f"runner alone (all done) {again:.2f} s = {100 * again / sweep:.2f} % of the sweep")
PY
