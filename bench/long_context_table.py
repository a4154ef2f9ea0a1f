#!/usr/bin/env python3
"""TTFT table of scenarios/long_context.yaml: loading versus recomputing.

Reads the runner's results.csv (kvstream run scenarios/long_context.yaml -o DIR)
and prints, per target model, GPU and busy share, the TTFT of every swept
option at every link rate, the fastest option, and the slowest link rate at
which the fastest loading option beats recomputing (the crossover).

  /usr/bin/python3 bench/long_context_table.py DIR/results.csv [--markdown]
"""
import argparse
import collections
import csv
import sys


def option_name(row):
    if row["param.policy"] == "recompute":
        return "recompute"
    level = row["param.policy"].split(":", 1)[1] if ":" in row["param.policy"] else "?"
    return row["codec"] if row["codec"] in ("raw", "quant8") else f"{row['codec']} L{level}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--markdown", action="store_true", help="Markdown tables")
    args = ap.parse_args()
    with open(args.results) as f:
        rows = [r for r in csv.DictReader(f)]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        sys.exit(f"{len(failed)} runs failed, e.g. {failed[0]['id']}: {failed[0]['error']}")
    groups = collections.OrderedDict()
    for r in rows:
        key = (r["param.target"], r["param.gpu.preset"], float(r["param.gpu.busy_fraction"]))
        groups.setdefault(key, collections.OrderedDict()).setdefault(float(r["param.link.rate_mbps"]), {})[
            option_name(r)] = float(r["ttft_s"])
    for (target, gpu, busy), by_rate in groups.items():
        options = list(next(iter(by_rate.values())).keys())
        print(f"\n{target} on {gpu}, busy {busy:g}: TTFT (s)")
        head = ["rate (Mbit/s)"] + options + ["fastest"]
        if args.markdown:
            print("| " + " | ".join(head) + " |")
            print("|" + "|".join(["---:"] * (len(head) - 1) + ["---"]) + "|")
        else:
            print("  ".join(f"{h:>13}" for h in head))
        crossover = None
        for rate, ttft in sorted(by_rate.items()):
            best = min(ttft, key=ttft.get)
            loading = min(v for k, v in ttft.items() if k != "recompute")
            if crossover is None and loading < ttft["recompute"]:
                crossover = rate
            cells = [f"{rate:g}"] + [f"{ttft[o]:.2f}" for o in options] + [best]
            print(("| " + " | ".join(cells) + " |") if args.markdown else "  ".join(f"{c:>13}" for c in cells))
        print(f"loading beats recomputing from {crossover:g} Mbit/s" if crossover else
              "recomputing is fastest at every rate swept")


if __name__ == "__main__":
    main()
