#!/usr/bin/env python3
"""The fluid network model against ns-3 on every shipped trace family.

For each family in traces/data (5gophers, mahimahi, pensieve-fcc,
pensieve-hsdpa) the first --per-family traces (sorted by name; mahimahi's
uplink files left out) are scaled to a mean of --mean-mbps (as
scenarios/adaptation.yaml does) and every policy of --policies fetches one
request under `network: ns3` and `network: fluid`, from scenario files this
script writes (the regime of adaptation.yaml: llama-70b on an A100, CacheGen,
20 ms RTT, MTU 9000, the request 37 s into the trace). Prints per policy the
mean and p95 of the TTFT difference (fluid - ns3) / ns3, and the wall time of
the two kinds of runs (whole `kvstream simulate` processes, so the fluid
figure is mostly start-up: bench/sim_run_bench.cc's BM_SimulateNetwork gives
the simulation's own speed ratio).

  /usr/bin/python3 bench/fluid_validation.py [--kvstream build/apps/kvstream]
      [--per-family 2] [--policies fixed:2,rate,cachegen,mpc,bola] [--mean-mbps 1000] [--profile P]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ["5gophers", "mahimahi", "pensieve-fcc", "pensieve-hsdpa"]
SKIP = {"LICENSE", "COPYING", "README.upstream", "README.upstream.md", "PROVENANCE.md"}


def traces_of(kvstream, family, n, tmp):
    folder = os.path.join(ROOT, "traces", "data", family)
    names = sorted(f for f in os.listdir(folder) if f not in SKIP and not f.endswith(".up"))
    if family != "5gophers":
        return [os.path.join(folder, f) for f in names[:n]]
    # The 5Gophers user-mobility CSVs, sampled every second (an assumption,
    # traces/data/PROVENANCE.md): their throughput column (the first carrier's
    # when there are several) converted to a two-column trace first.
    out = []
    for f in [f for f in names if f.startswith("03-")][:n]:
        with open(os.path.join(folder, f)) as fh:
            columns = fh.readline().strip().split(",")
        value = "throughput_mbps" if "throughput_mbps" in columns else next(
            c for c in columns if c.endswith("_throughput_mbps"))
        dst = os.path.join(tmp, f + ".txt")
        subprocess.run([kvstream, "trace", "convert", os.path.join(folder, f), "-o", dst, "--to", "two-column",
                        "--time-column", "seq_num", "--interval-s", "1", "--value-column", value],
                       check=True, capture_output=True, text=True)
        out.append(dst)
    return out


def mean_mbps(kvstream, trace):
    out = subprocess.run([kvstream, "trace", "stats", trace, "--json"], check=True, capture_output=True, text=True)
    stats = json.loads(out.stdout)
    if isinstance(stats, list):
        stats = stats[0]
    for key in ("mean_mbps", "mean_rate_mbps"):
        if key in stats:
            return float(stats[key])
    raise SystemExit(f"trace stats of {trace}: no mean in {sorted(stats)}")


def policy_yaml(spec):
    name, _, param = spec.partition(":")
    if not param:
        return name
    return "{name: %s, params: {level: %s}}" % (name, param)


def run(kvstream, profile, folder, trace, scale, policy, network):
    os.makedirs(folder, exist_ok=True)
    scenario = os.path.join(folder, "scenario.yaml")
    with open(scenario, "w") as f:
        f.write(
            f"profile: {profile}\n"
            f"codec: cachegen\npolicy: {policy_yaml(policy)}\ntarget: llama-70b\ngpu: {{preset: a100}}\n"
            f"network: {network}\n"
            f"link: {{rtt_ms: 20, mtu_bytes: 9000, trace: {trace}, trace_scale: {scale:.6g}}}\n"
            f"arrivals: {{times_s: [37]}}\nslo_s: 3\noutput: {os.path.join(folder, 'out')}\n")
    start = time.perf_counter()
    subprocess.run([kvstream, "simulate", scenario, "-q"], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    with open(os.path.join(folder, "out", "results.json")) as f:
        result = json.load(f)
    assert result["network_model"] == network, result["network_model"]
    return result["requests"][0]["ttft_s"], wall


def percentile(xs, q):
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kvstream", default=os.path.join(ROOT, "build", "apps", "kvstream"))
    ap.add_argument("--per-family", type=int, default=2)
    ap.add_argument("--policies", default="fixed:2,rate,cachegen,mpc,bola")
    ap.add_argument("--mean-mbps", type=float, default=1000)
    ap.add_argument("--profile", default=os.path.join(ROOT, "runs", "default", "profile.json"),
                    help="a CacheGen profile (default: the quick start's)")
    a = ap.parse_args()
    a.profile = os.path.abspath(a.profile)
    if not os.path.exists(a.profile):
        sys.exit(f"no profile at {a.profile} (run the quick start, or give --profile)")
    policies = a.policies.split(",")
    diffs = {p: [] for p in policies}
    walls = {"ns3": 0.0, "fluid": 0.0}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        i = 0
        for family in FAMILIES:
            for trace in traces_of(a.kvstream, family, a.per_family, tmp):
                scale = a.mean_mbps / mean_mbps(a.kvstream, trace)
                for policy in policies:
                    ttft = {}
                    for network in ("ns3", "fluid"):
                        ttft[network], wall = run(a.kvstream, a.profile, os.path.join(tmp, str(i), network), trace,
                                                  scale, policy, network)
                        walls[network] += wall
                    i += 1
                    d = (ttft["fluid"] - ttft["ns3"]) / ttft["ns3"]
                    diffs[policy].append(d)
                    rows.append((family, os.path.basename(trace), policy, ttft["ns3"], ttft["fluid"], d))
                    print(f"{family:15s} {os.path.basename(trace)[:34]:34s} {policy:9s} ns3 {ttft['ns3']:8.4f} s "
                          f"fluid {ttft['fluid']:8.4f} s  {100 * d:+7.2f} %", flush=True)
    print("\nTTFT difference (fluid - ns3) / ns3 per policy, over", len(rows) // len(policies), "traces:")
    print(f"{'policy':10s} {'mean':>8s} {'mean|d|':>8s} {'p95|d|':>8s}")
    for p in policies:
        xs = diffs[p]
        print(f"{p:10s} {100 * sum(xs) / len(xs):+7.2f}% {100 * sum(map(abs, xs)) / len(xs):7.2f}% "
              f"{100 * percentile([abs(x) for x in xs], 0.95):7.2f}%")
    print(f"\nwall time of the `kvstream simulate` processes: ns3 {walls['ns3']:.1f} s, fluid {walls['fluid']:.1f} s "
          f"({walls['ns3'] / walls['fluid']:.0f}x, start-up included)")


if __name__ == "__main__":
    main()
