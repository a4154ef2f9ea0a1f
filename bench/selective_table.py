#!/usr/bin/env python3
"""The tables of BENCHMARKS.md "Selective loading over a WAN" from a results
folder of scenarios/selective.yaml or bench/selective_long.yaml (`kvstream
run ... -o OUT`): per trace family (or target and context length), RTT and
policy, TTFT mean and p95 over the runs, bytes before the first token, when
the whole cache was in, and quality: the codec's summed per-chunk KL
estimate (results) and, for `selective`, the selection's measured KL and
greedy agreement (its `selective` object, from the selective profile).

  python3 bench/selective_table.py OUT [--by trace|model] [--wide]
"""
import argparse
import collections
import json
import os


def pct(xs, p):
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * p / 100
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


def short(policy):
    if policy.startswith("selective"):
        return "selective " + ("up-front" if "up-front" in policy else "per-layer")
    return policy.split("(")[0] + (policy[policy.index("(level="):] if "(level=" in policy else "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--by", choices=["trace", "model"], default="trace")
    ap.add_argument("--wide", action="store_true", help="one row per trace (or target) and RTT, TTFT only")
    a = ap.parse_args()
    groups = collections.defaultdict(list)
    order = []
    with open(os.path.join(a.out, "results.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if row.get("status") != "ok":
                print(f"(run {row['index']} {row['params']} did not finish: {row.get('error', '').splitlines()[1:2]})")
                continue
            res = json.load(open(os.path.join(a.out, row["run_dir"], "results.json")))
            req = res["requests"][0]
            rtt = row["params"].get("link.rtt_ms") or res["network_settings"].get("link.rtt_ms")
            if a.by == "trace":
                key0 = row["trace"]
            else:
                key0 = f"{res['model']} {req['tokens']}"
            key = (key0, rtt, short(row["policy"]))
            if key not in groups:
                order.append(key)
            groups[key].append((row, req))
    if a.wide:
        pols = []
        for k in order:
            if k[2] not in pols:
                pols.append(k[2])
        print("| {} | RTT ms | ".format("trace" if a.by == "trace" else "target, tokens") +
              " | ".join(f"{p} mean / p95 s" for p in pols) + " |")
        print("|---|---:|" + "---:|" * len(pols))
        seen = []
        for k in order:
            if k[:2] in seen:
                continue
            seen.append(k[:2])
            cells = []
            most = max(len(groups.get((k[0], k[1], p), [])) for p in pols)
            for p in pols:
                t = [r["ttft_s"] for r, _ in groups.get((k[0], k[1], p), [])]
                cells.append(f"{sum(t)/len(t):.2f} / {pct(t, 95):.2f}" + ("" if len(t) == most else f" ({len(t)} runs)")
                             if t else "-")
            print(f"| {k[0]} | {k[1]} | " + " | ".join(cells) + " |")
        return
    print("| {} | RTT ms | policy | runs | TTFT mean s | TTFT p95 s | MB before 1st token | whole cache in, s | codec KL est | "
          "selection KL | greedy agr. (64) |".format("trace" if a.by == "trace" else "target, tokens"))
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in order:
        rows = groups[key]
        ttft = [r["ttft_s"] for r, _ in rows]
        before, whole, kl_sel, agr = [], [], None, None
        for r, q in rows:
            s = q.get("selective")
            if s:
                before.append(s["before_first_token_bytes"])
                whole.append(s["rest_last_byte_s"] - q["start_s"])
                kl_sel, agr = s["kl_nats"], s["greedy_agreement"]
            else:
                before.append(q["payload_bytes"])
                whole.append(q["ttft_s"])
        kl_codec = sum(r["quality_kl_nats"] for r, _ in rows) / len(rows)
        fmt_q = lambda x: "-" if x is None else ("not measured" if x < 0 else f"{x:.4f}")
        print(f"| {key[0]} | {key[1]} | {key[2]} | {len(rows)} | {sum(ttft)/len(ttft):.3f} | {pct(ttft, 95):.3f} | "
              f"{sum(before)/len(before)/1e6:.1f} | {sum(whole)/len(whole):.3f} | {kl_codec:.5f} | {fmt_q(kl_sel)} | "
              f"{fmt_q(agr)} |")


if __name__ == "__main__":
    main()
