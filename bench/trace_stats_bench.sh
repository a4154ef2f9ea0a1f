#!/usr/bin/env bash
# `kvstream trace stats` on generated mahimahi traces of growing size, up to
# 1 GB (issue 25: it was quadratic, 25.5 s for 9 MB; now one pass). Each trace
# is written on the fly into a temporary folder (removed at the end): a
# repeating 7 ms pattern of 0-8 delivery opportunities per millisecond (about
# 4 per ms, 48 Mbit/s), so a 1 GB file holds ~110 M lines and ~7.5 hours.
# Prints size, lines, wall seconds and peak memory of `trace stats` with the
# default 0.1 s windows and with --window-s 0 (raw segments).
#
#   bash bench/trace_stats_bench.sh [KVSTREAM_BINARY] [SIZES_MB...]
#   (default: build/apps/kvstream, sizes 1 4 16 64 256 1024)
set -euo pipefail
bin=${1:-build/apps/kvstream}
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1 4 16 64 256 1024)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
printf '%8s %12s %12s %10s %10s %10s %10s\n' size_MB lines duration_s win0.1_s win0.1_MB raw_s raw_MB
for mb in "${sizes[@]}"; do
  f="$dir/trace-$mb.mm"
  # mawk/gawk: one timestamp per line until the file holds $mb MB.
  awk -v limit=$((mb * 1000000)) 'BEGIN {
      split("3 8 0 5 2 7 3", pattern, " "); bytes = 0; ms = 1;
      while (bytes < limit) { c = pattern[ms % 7 + 1]; for (i = 0; i < c; i++) { print ms; bytes += length(ms) + 1 } ms++ }
      print ms }' > "$f"
  lines=$(wc -l < "$f")
  run() {  # wall seconds and peak RSS (MB) of one stats run
    /usr/bin/time -f '%e %M' "$bin" trace stats "$f" --json "$@" 2> "$dir/time" > "$dir/out"
    read -r secs kb < <(tail -n 1 "$dir/time")
    echo "$secs $((kb / 1024))"
  }
  read -r w_s w_mb < <(run)
  duration=$(python3 -c "import json,sys; print(round(json.load(open('$dir/out'))[0]['duration_s']))")
  read -r r_s r_mb < <(run --window-s 0)
  printf '%8s %12s %12s %10s %10s %10s %10s\n' "$mb" "$lines" "$duration" "$w_s" "$w_mb" "$r_s" "$r_mb"
  rm -f "$f"
done
