#!/usr/bin/env python3
"""Writes a small sweep output folder in the format of `kvstream run` from real
`kvstream simulate` runs: the fixture of analysis/report.py's tests.

The folder (docs of the runner: results.jsonl, results.csv, runs/<id>/) holds
one run per point of a sweep over policy x slo_s x link.trace x seed (3 x 2 x
2 x 2 = 24 runs): a llama-70b-sized KV cache on an A100 (recomputing the whole
context and fetching it take about as long, so the policies differ) over two
real traces scaled by 150 (HSDPA ~0.44 Gbit/s, LTE ~0.78 Gbit/s) with two
on/off UDP cross-traffic sources (their on/off periods depend on the seed, so
seeds are replicates with a spread), one request per run. One run is recorded
as failed ("worker killed by signal 9", as the runner records a worker that
died) so that failed runs are exercised too; a simulation that fails is
recorded as failed with its error. When the fixture was made, 4 runs (seed 2
on norway_bus_1) crashed in ns-3 (segmentation fault in
ns3::TcpRateLinux::SkbSent under the on/off cross traffic); they are kept as
the real failures they were. Params are written typed (1.5, 1); `kvstream
run` writes them as given ("1.5"), which report.py's self-test also checks.

Until `kvstream run` exists this is the only producer of such folders; when it
does, regenerate the fixture with it and keep this for reference.

    /usr/bin/python3 tests/analysis/make_fixture.py --kvstream build/apps/kvstream \\
        --profile runs/default/profile.json -o tests/analysis/fixtures/sweep
"""
import argparse
import csv
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SWEEP = [  # (key, values), expanded as a cartesian product in this order (the last varies fastest)
    ("policy", ["fixed:2", "rate", "oracle"]),
    ("slo_s", [1.5, 3.0]),
    ("link.trace", ["../traces/data/pensieve-hsdpa/norway_bus_1", "../traces/data/mahimahi/ATT-LTE-driving.down"]),
    ("seed", [1, 2]),
]
FAILED_INDEX = 9  # recorded as failed ("worker killed by signal 9", as the runner records a dead worker)
SHORTHAND = {"fixed": "level"}  # policy "name:value" -> {name, params: {key: value}}


def policy_yaml(value):
    name, _, arg = value.partition(":")
    if arg:
        return f"{{name: {name}, params: {{{SHORTHAND[name]}: {arg}}}}}"
    return name


def scenario_text(params, profile_rel, trace_rel):
    return "\n".join([
        "# one run of the fixture sweep (tests/analysis/make_fixture.py)",
        f"profile: {profile_rel}",
        "codec: cachegen",
        f"policy: {policy_yaml(params['policy'])}",
        "target: llama-70b",
        "link:",
        f"  trace: {trace_rel}",
        "  trace_scale: 150",
        "  rtt_ms: 20",
        "  mtu_bytes: 9000",
        "gpu:",
        "  preset: a100",
        "arrivals:",
        "  times_s: [0]",
        "  contexts: [0]",
        "cross_traffic: {onoff_udp_flows: 2, udp_rate_mbps: 150, udp_on_s: 0.5, udp_off_s: 0.5}",
        f"slo_s: {params['slo_s']}",
        f"seed: {params['seed']}",
        "output: .",
        "",
    ])


def pct(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def row_of(res):
    qs = res["requests"]
    n = len(qs)
    mean = lambda xs: sum(xs) / len(xs)
    t = [q["ttft_s"] for q in qs]
    pred = [q["predicted_ttft_s"] for q in qs if "predicted_ttft_s" in q]
    trace = res["network_settings"].get("link.bottleneck", "")
    trace = os.path.basename(trace.split("(", 1)[-1].rstrip(")")) if trace.startswith("trace") else ""
    return {
        "policy": res["policy"], "policy_reads_future": res["policy_reads_future"], "codec": res["codec"],
        "model": res["model"], "trace": trace, "slo_s": res["slo_s"], "requests": n,
        "ttft_s": mean(t), "ttft_p50_s": pct(t, 50), "ttft_p95_s": pct(t, 95), "ttft_max_s": max(t),
        **{k: mean([q["breakdown"][k] for q in qs])
           for k in ("network_s", "queueing_s", "decode_s", "recompute_s", "first_token_s")},
        "slo_met": mean([1.0 if q["slo_met"] else 0.0 for q in qs]),
        "quality_loss_increase": mean([q["quality_loss_increase"] for q in qs]),
        "quality_loss_increase_worst": max(q["quality_loss_increase"] for q in qs),
        "exact_loss_increase": None,
        "payload_bytes": mean([q["payload_bytes"] for q in qs]),
        "recomputed_share": mean([q["recomputed_chunks"] / len(q["chunks"]) for q in qs]),
        "levels": " ".join("R" if c["level"] < 0 else str(c["level"]) for c in qs[0]["chunks"]),
        "predicted_ttft_s": mean(pred) if pred else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kvstream", default=os.path.join(ROOT, "build", "apps", "kvstream"))
    ap.add_argument("--profile", default=os.path.join(ROOT, "runs", "default", "profile.json"))
    ap.add_argument("-o", "--out", default=os.path.join(ROOT, "tests", "analysis", "fixtures", "sweep"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "runs"))
    keys = [k for k, _ in SWEEP]
    rows = []
    for index, values in enumerate(itertools.product(*[v for _, v in SWEEP])):
        params = dict(zip(keys, values))
        rid = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
        run_dir = os.path.join(out, "runs", rid)
        os.makedirs(run_dir)
        # Paths in scenario.yaml relative to the run folder, as the scenario loader resolves them.
        rel = lambda p: os.path.relpath(os.path.join(ROOT, p), run_dir)
        trace_rel = rel(os.path.join("scenarios", params["link.trace"]))
        with open(os.path.join(run_dir, "scenario.yaml"), "w") as f:
            f.write(scenario_text(params, os.path.relpath(os.path.abspath(args.profile), run_dir), trace_rel))
        row = {"id": rid, "index": index, "params": params}
        if index == FAILED_INDEX:
            row.update(status="failed", error="worker killed by signal 9")
            rows.append(row)
            continue
        p = subprocess.run([args.kvstream, "simulate", os.path.join(run_dir, "scenario.yaml"), "-q"],
                           capture_output=True, text=True)
        if p.returncode != 0:
            err = p.stderr.strip().splitlines()
            row.update(status="failed", error=err[-1] if err else
                       f"kvstream simulate: exit status {p.returncode}" if p.returncode > 0 else
                       f"kvstream simulate: killed by signal {-p.returncode}")
        else:
            with open(os.path.join(run_dir, "results.json")) as f:
                row.update(status="ok", **row_of(json.load(f)), run_dir=f"runs/{rid}")
        rows.append(row)
        print(f"{index + 1}/{len(list(itertools.product(*[v for _, v in SWEEP])))} {rid} {row['status']}", file=sys.stderr)
    with open(os.path.join(out, "results.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    cols = ["id", "index"] + [f"param.{k}" for k in keys]
    for r in rows:
        for k in r:
            if k not in ("id", "index", "params") and k not in cols:
                cols.append(k)
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            flat = {k: v for k, v in r.items() if k != "params"}
            flat.update({f"param.{k}": v for k, v in r["params"].items()})
            w.writerow({k: ("" if v is None else v) for k, v in flat.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
