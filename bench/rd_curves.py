#!/usr/bin/env python3
"""Size-quality curves of every codec and level on the bundled model's KV caches (issue 6).

Runs `kvstream profile` once per codec group, each into its own file under
--out, then aggregates per codec and level over all contexts:

  bits/element     mean over contexts of the context's bitstream bytes x 8 / KV elements
  loss increase    mean and median over contexts of the relative continuation-NLL increase (%)
  greedy agreement mean fraction of the next 16 greedy tokens equal to the exact cache's
  retrieval        exact-match accuracy on the contexts' questions (with the exact cache
                   too: `exact retrieval`; models/default answers all 24 with it)

Groups (one profile each, since `--param` applies to every codec of a run):
  baselines (raw, zstd, quant8), kivi (kivi2, kivi4), cachegen (released-code scheme,
  the default), cachegen-paper (`--param scheme=paper` with a codec model trained here
  by `kvstream codec-model train` on --paper-train contexts that share no 60-byte
  window with the evaluation contexts), kvs.

Resumable: a group whose output already holds every evaluation context is skipped
(delete the file to redo it); an interrupted one resumes from its `.partial`
(kvstream's own resume). Wall times per step are kept in OUT/timings.json.

Writes OUT/rd_curves.csv, OUT/rd_curves.json (points and summary), OUT/rd_curves.png
and prints a markdown table plus a summary: BD-rate of kvs against cachegen
(tools/codec/bd_rate.py, on the loss increase and on 1 - greedy agreement) and
cachegen's default level (L2) against quant8, at face value and at equal quality.

    nice /usr/bin/python3 bench/rd_curves.py [--out runs/rd-curves] [--chunk-tokens 1500]
        [--contexts data/retrieval/contexts-2048.jsonl] [--kvstream build/apps/kvstream]
        [--only baselines,kivi,...] [--aggregate-only] [--self-test]

Needs the libtorch build of `kvstream` (target `kvstream`), numpy and matplotlib
(Debian python3-numpy, python3-matplotlib).
"""
import argparse
import csv
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools", "codec"))

# (group name, codecs, extra profile arguments, label for its codec in the results or None for the codec's name)
GROUPS = [
    ("baselines", "raw,zstd,quant8", [], None),
    ("kivi", "kivi2,kivi4", [], None),
    ("cachegen", "cachegen", [], None),
    ("cachegen-paper", "cachegen", ["--param", "scheme=paper"], "cachegen-paper"),
    ("kvs", "kvs", [], None),
]
DEFAULT_LEVEL = {"cachegen": "L2", "cachegen-paper": "L2"}  # CacheGen's default (its level 2)
WINDOW_BYTES = 60  # overlap test between codec-model training text and evaluation text


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def windows(text, step):
    return {text[i:i + WINDOW_BYTES] for i in range(0, max(1, len(text) - WINDOW_BYTES), step)}


def disjoint_training_contexts(train_rows, eval_rows, count):
    """The first `count` training rows that share no WINDOW_BYTES-byte window with any evaluation text."""
    seen = set()
    for r in eval_rows:
        seen |= windows(r["context"] + r["continuation"], 1)
    out = [r for r in train_rows if not (windows(r["context"] + r["continuation"], 20) & seen)]
    return out[:count]


def profile_complete(path, ids):
    """True when `path` is a profile whose every codec holds exactly the contexts `ids`."""
    if not os.path.exists(path):
        return False
    try:
        with open(path) as f:
            prof = json.load(f)
        return all([c["id"] for c in codec["contexts"]] == ids for codec in prof["codecs"])
    except (OSError, ValueError, KeyError):
        return False


def run_step(name, cmd, timings, log, resumed=False):
    """Runs one step; its wall time is added to an earlier run's when it resumes one (an interrupted run's time
    is not recorded, so a resumed step's time is a lower bound)."""
    print(f"[rd_curves] {name}: {' '.join(cmd)}", flush=True)
    t0 = time.monotonic()
    with open(log, "a") as lf:
        res = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT)
    wall = time.monotonic() - t0
    if res.returncode != 0:
        sys.exit(f"rd_curves: {name} failed (exit {res.returncode}); see {log}")
    timings[name] = wall + (timings.get(name, 0.0) if resumed else 0.0)
    print(f"[rd_curves] {name}: {wall:.0f} s", flush=True)


def run_profiles(args, ids):
    os.makedirs(args.out, exist_ok=True)
    tpath = os.path.join(args.out, "timings.json")
    timings = json.load(open(tpath)) if os.path.exists(tpath) else {}
    log = os.path.join(args.out, "profile.log")
    env_cmd = ["env", "OMP_WAIT_POLICY=PASSIVE"]
    # Per-level quality is what the curves need; per-chunk quality measured
    # chunk by chunk would triple the time for nothing here.
    common = ["--model", args.model, "--contexts", args.contexts, "--chunk-tokens", str(args.chunk_tokens),
              "--threads", str(args.threads), "--chunk-quality", "estimated"]
    if args.max_contexts:
        common += ["--max-contexts", str(args.max_contexts)]
    only = set(args.only.split(",")) if args.only else None
    for group, codecs, extra, _ in GROUPS:
        if only is not None and group not in only:
            continue
        out = os.path.join(args.out, group + ".json")
        if profile_complete(out, ids):
            print(f"[rd_curves] {group}: {out} complete, skipped", flush=True)
            continue
        cmd = env_cmd + [args.kvstream, "profile"] + common + ["--codecs", codecs] + extra + ["-o", out]
        if group == "cachegen-paper":
            cgm = os.path.join(args.out, "cachegen-paper.cgm")
            if not os.path.exists(cgm):
                train = disjoint_training_contexts(read_jsonl(args.paper_train), read_jsonl(args.contexts),
                                                   args.paper_train_contexts)
                if not train:
                    sys.exit(f"rd_curves: no context of {args.paper_train} is disjoint from {args.contexts}")
                tfile = os.path.join(args.out, "cachegen-paper-train.jsonl")
                with open(tfile, "w") as f:
                    for r in train:
                        f.write(json.dumps(r) + "\n")
                print(f"[rd_curves] codec model: {len(train)} training contexts ({', '.join(r['id'] for r in train)})")
                run_step("codec-model", env_cmd + [
                    args.kvstream, "codec-model", "train", "--codec", "cachegen", "--param", "scheme=paper",
                    "--model", args.model, "--contexts", tfile, "--max-context-tokens", str(args.paper_train_tokens),
                    "--chunk-tokens", str(args.chunk_tokens), "--threads", str(args.threads), "-o", cgm], timings, log)
            cmd += ["--codec-model", cgm]
        run_step(group, cmd, timings, log, resumed=os.path.exists(out + ".partial"))
        with open(tpath, "w") as f:
            json.dump(timings, f, indent=1)
    return timings


# --- aggregation ---------------------------------------------------------------------------------------------------

def aggregate_profile(prof, label=None):
    """Rows (dicts) per codec and level of one profile, means over its contexts."""
    rows = []
    for codec in prof["codecs"]:
        name = label or codec["codec"]
        ctxs = codec["contexts"]
        for i, level in enumerate(codec["level_names"]):
            q = [c["quality"][i] for c in ctxs]
            loss = [x["loss_increase"] for x in q]
            kl = [x.get("kl_nats") for x in q]
            top1 = [x.get("top1_agreement") for x in q]
            task = [x["task_accuracy"] for x in q if x["task_accuracy"] >= 0]
            base_task = [c["base_task_accuracy"] for c in ctxs if c["base_task_accuracy"] >= 0]
            rows.append({
                "codec": name, "level": level, "params": codec["params"], "contexts": len(ctxs),
                "tokens_min": min(c["tokens"] for c in ctxs), "tokens_max": max(c["tokens"] for c in ctxs),
                "bits_per_element": statistics.fmean(x["bits_per_element"] for x in q),
                "loss_increase_mean": statistics.fmean(loss),
                "loss_increase_median": statistics.median(loss),
                "greedy_agreement": statistics.fmean(x["greedy_agreement"] for x in q),
                "kl_nats_mean": None if None in kl else statistics.fmean(kl),
                "top1_agreement": None if None in top1 else statistics.fmean(top1),
                "retrieval_accuracy": statistics.fmean(task) if task else None,
                "exact_retrieval_accuracy": statistics.fmean(base_task) if base_task else None,
                "questions": len(task),
            })
    return rows


def points(rows, codec):
    """Points in tools/codec/bd_rate.py's form: (level, bits, loss, agreement, contexts, KL, top-1)."""
    return [(r["level"], r["bits_per_element"], r["loss_increase_mean"], r["greedy_agreement"], r["contexts"],
             r.get("kl_nats_mean"), r.get("top1_agreement")) for r in rows if r["codec"] == codec]


def bits_at_loss(pts, loss):
    """Bits/element a codec needs for a mean loss increase, linear between its levels; None outside its range."""
    pts = sorted(pts, key=lambda p: p[2])
    for (_, b0, l0, *_), (_, b1, l1, *_) in zip(pts, pts[1:]):
        if l0 <= loss <= l1:
            return b0 + (b1 - b0) * (loss - l0) / (l1 - l0) if l1 > l0 else min(b0, b1)
    return None


def summarize(rows, loss_target=0.02, floor_loss=0.0005, floor_disagreement=0.01, floor_kl=1e-4):
    import bd_rate
    s = {}
    cg, kvs, q8 = points(rows, "cachegen"), points(rows, "kvs"), points(rows, "quant8")
    if cg and kvs:
        measures = [("loss", floor_loss), ("disagreement", floor_disagreement)]
        if all(p[5] is not None for p in cg + kvs):
            measures = [("kl", floor_kl), ("top1-disagreement", floor_disagreement)] + measures
        for quality, floor in measures:
            r = bd_rate.bd_rate(cg, kvs, floor, quality)
            s[f"bd_rate_kvs_vs_cachegen_{quality}"] = None if r is None else {
                "floor": floor, "range": list(r["range"]), "cubic": r["cubic"], "pchip": r["pchip"],
                "anchor_points": r["anchor_points"], "test_points": r["test_points"]}
    if q8:
        qbits, qloss = q8[0][1], q8[0][2]
        for codec in ("cachegen", "cachegen-paper"):
            pts = points(rows, codec)
            if not pts:
                continue
            d = next(p for p in pts if p[0] == DEFAULT_LEVEL[codec])
            ok = [p for p in pts if p[2] <= loss_target]
            best = min(ok, key=lambda p: p[1]) if ok else None
            need = bits_at_loss(pts, qloss)
            s[f"{codec}_vs_quant8"] = {
                "quant8_bits": qbits, "quant8_loss": qloss,
                "default_level": d[0], "default_bits": d[1], "default_loss": d[2],
                "default_ratio": qbits / d[1],
                "smallest_level_within_target": None if best is None else best[0],
                "smallest_bits_within_target": None if best is None else best[1],
                "ratio_within_target": None if best is None else qbits / best[1],
                "bits_at_quant8_loss": need,
                "ratio_at_quant8_loss": None if need is None else qbits / need,
                "loss_target": loss_target,
            }
    return s


def fmt_pct(x, digits=2):
    return "-" if x is None else f"{100 * x:.{digits}f} %".replace("-", "−")


def markdown_table(rows):
    out = ["| codec | level | bits/element | KL nats/token | top-1 | loss increase, mean | median | greedy agreement | "
           "retrieval (exact cache) | contexts |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ret = "-" if r["retrieval_accuracy"] is None else \
            f"{100 * r['retrieval_accuracy']:.0f} % ({100 * r['exact_retrieval_accuracy']:.0f} %)"
        kl = "-" if r.get("kl_nats_mean") is None else f"{r['kl_nats_mean']:.3g}"
        top1 = "-" if r.get("top1_agreement") is None else f"{r['top1_agreement']:.3f}"
        out.append(f"| {r['codec']} | {r['level']} | {r['bits_per_element']:.2f} | {kl} | {top1} | "
                   f"{fmt_pct(r['loss_increase_mean'])} | "
                   f"{fmt_pct(r['loss_increase_median'])} | {r['greedy_agreement']:.3f} | {ret} | {r['contexts']} |")
    return "\n".join(out)


def summary_text(s):
    lines = []
    for quality, label in (("kl", "the KL divergence (nats/token)"), ("top1-disagreement", "1 − top-1 agreement"),
                           ("loss", "the continuation-loss increase"), ("disagreement", "1 − greedy agreement")):
        key = f"bd_rate_kvs_vs_cachegen_{quality}"
        if key not in s:
            continue
        r = s[key]
        if r is None:
            lines.append(f"- BD-rate of kvs against cachegen on {label}: none (the curves share no range "
                         f"above the floor)")
        else:
            show = (lambda v: f"{v:.3g}") if quality == "kl" else fmt_pct
            lines.append(f"- BD-rate of kvs against cachegen on {label} (levels >= {show(r['floor'])}, "
                         f"common range {show(r['range'][0])}..{show(r['range'][1])}, {r['anchor_points']} and "
                         f"{r['test_points']} levels): cubic {100 * r['cubic']:+.1f} %, PCHIP {100 * r['pchip']:+.1f} %")
    for codec in ("cachegen", "cachegen-paper"):
        r = s.get(f"{codec}_vs_quant8")
        if r is None:
            continue
        eq = "outside its range" if r["bits_at_quant8_loss"] is None else \
            f"{r['bits_at_quant8_loss']:.2f} bits, {r['ratio_at_quant8_loss']:.2f}x smaller"
        within = "no level" if r["smallest_level_within_target"] is None else \
            f"{r['smallest_level_within_target']} ({r['smallest_bits_within_target']:.2f} bits, " \
            f"{r['ratio_within_target']:.2f}x smaller)"
        lines.append(f"- {codec} default ({r['default_level']}) against quant8: {r['default_bits']:.2f} vs "
                     f"{r['quant8_bits']:.2f} bits/element = {r['default_ratio']:.2f}x smaller at "
                     f"{fmt_pct(r['default_loss'])} loss increase (quant8 {fmt_pct(r['quant8_loss'], 3)}); "
                     f"at quant8's loss: {eq}; smallest level within {fmt_pct(r['loss_target'], 0)}: {within}")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"raw": "kx", "zstd": "k+", "quant8": "ks", "kivi2": "m^", "kivi4": "mv",
              "cachegen": "o-", "cachegen-paper": "d--", "kvs": "s-"}
    for codec in dict.fromkeys(r["codec"] for r in rows):
        pts = sorted((r["bits_per_element"], r["loss_increase_mean"], r["greedy_agreement"])
                     for r in rows if r["codec"] == codec)
        st = styles.get(codec, "o-")
        a1.plot([p[0] for p in pts], [100 * p[1] for p in pts], st, label=codec, ms=5)
        a2.plot([p[0] for p in pts], [p[2] for p in pts], st, label=codec, ms=5)
    a1.set_yscale("symlog", linthresh=0.1)
    a1.axhline(2, color="grey", lw=0.8, ls=":")
    a1.set_ylabel("continuation-loss increase, mean (%)\n(symlog, linear within ±0.1 %)")
    a2.set_ylabel("greedy agreement (16 tokens)")
    for a in (a1, a2):
        a.set_xscale("log")
        a.set_xlabel("bits per element")
        a.grid(True, which="both", alpha=0.3)
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def aggregate(args):
    rows = []
    meta = {}
    for group, _, _, label in GROUPS:
        path = os.path.join(args.out, group + ".json")
        if not os.path.exists(path):
            print(f"[rd_curves] {group}: no {path}, left out", file=sys.stderr)
            continue
        with open(path) as f:
            prof = json.load(f)
        meta.setdefault("chunk_tokens", prof["chunk_tokens"])
        meta.setdefault("device", prof["device"])
        meta.setdefault("greedy_tokens", prof["greedy_tokens"])
        rows += aggregate_profile(prof, label)
    if not rows:
        sys.exit(f"rd_curves: no profiles in {args.out}")
    return rows, meta


def write_outputs(out, rows, meta, summary, timings):
    keys = list(rows[0])
    with open(os.path.join(out, "rd_curves.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in r.items()})
    with open(os.path.join(out, "rd_curves.json"), "w") as f:
        json.dump({"meta": meta, "points": rows, "summary": summary, "timings_s": timings}, f, indent=1)
    plot(rows, os.path.join(out, "rd_curves.png"))


def self_test():
    """The aggregation on a 2-context fixture whose means and medians are known."""
    def ctx(i, q):
        return {"id": f"c{i}", "tokens": 100 + i, "base_task_accuracy": 1.0 if i == 0 else 0.0, "quality": q}
    def lq(b, l, a, t):
        return {"bits_per_element": b, "loss_increase": l, "greedy_agreement": a, "task_accuracy": t}
    prof = {"codecs": [
        {"codec": "quant8", "params": "", "level_names": ["int8"],
         "contexts": [ctx(0, [lq(8.5, 0.001, 1.0, 1.0)]), ctx(1, [lq(8.5, 0.003, 0.5, 0.0)])]},
        {"codec": "cachegen", "params": "", "level_names": ["L0", "L1", "L2"],
         "contexts": [ctx(0, [lq(9, 0.0, 1, 1), lq(6, 0.001, 1, 1), lq(4, 0.01, 0.5, 0)]),
                      ctx(1, [lq(9, 0.002, 1, 0), lq(6, 0.003, 0.75, 0), lq(3, 0.03, 0.25, 0)])]}]}
    rows = aggregate_profile(prof)
    by = {(r["codec"], r["level"]): r for r in rows}
    assert len(rows) == 4
    r = by[("cachegen", "L2")]
    assert r["bits_per_element"] == 3.5 and abs(r["loss_increase_mean"] - 0.02) < 1e-12
    assert abs(r["loss_increase_median"] - 0.02) < 1e-12 and r["greedy_agreement"] == 0.375
    assert r["retrieval_accuracy"] == 0.0 and r["exact_retrieval_accuracy"] == 0.5 and r["questions"] == 2
    assert (r["tokens_min"], r["tokens_max"], r["contexts"]) == (100, 101, 2)
    assert by[("quant8", "int8")]["retrieval_accuracy"] == 0.5
    s = summarize(rows)["cachegen_vs_quant8"]
    # quant8: 8.5 bits at 0.2 %; cachegen: 9 / 6 / 3.5 bits at 0.1 / 0.2 / 2 %.
    assert s["default_level"] == "L2" and abs(s["default_ratio"] - 8.5 / 3.5) < 1e-12
    assert abs(s["bits_at_quant8_loss"] - 6.0) < 1e-9 and s["smallest_level_within_target"] == "L2"
    assert bits_at_loss(points(rows, "cachegen"), 0.5) is None
    print("rd_curves self-test: ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kvstream", default=os.path.join(ROOT, "build", "apps", "kvstream"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    ap.add_argument("--contexts", default=os.path.join(ROOT, "data", "retrieval", "contexts-2048.jsonl"))
    ap.add_argument("--max-contexts", type=int, default=0, help="the first N contexts only (0: all)")
    ap.add_argument("--chunk-tokens", type=int, default=1500, help="tokens per chunk (profile's default, CacheGen's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--paper-train", default=os.path.join(ROOT, "data", "retrieval", "contexts-4096.jsonl"),
                    help="contexts the cachegen paper scheme's codec model is trained on")
    ap.add_argument("--paper-train-contexts", type=int, default=8)
    ap.add_argument("--paper-train-tokens", type=int, default=2048, help="training contexts truncated to this")
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "rd-curves"))
    ap.add_argument("--only", help="comma-separated groups to profile (default: all)")
    ap.add_argument("--aggregate-only", action="store_true", help="do not run profiles; aggregate what is in --out")
    ap.add_argument("--self-test", action="store_true", help="check the aggregation on a fixture and exit")
    args = ap.parse_args()
    if args.self_test:
        self_test()
        return
    ids = [r["id"] for r in read_jsonl(args.contexts)]
    if args.max_contexts:
        ids = ids[:args.max_contexts]
    t0 = time.monotonic()
    load0 = os.getloadavg()
    timings = {}
    if not args.aggregate_only:
        if not os.access(args.kvstream, os.X_OK):
            sys.exit(f"rd_curves: {args.kvstream} not found (build target kvstream with libtorch)")
        timings = run_profiles(args, ids)
    elif os.path.exists(os.path.join(args.out, "timings.json")):
        timings = json.load(open(os.path.join(args.out, "timings.json")))
    rows, meta = aggregate(args)
    meta.update({"contexts_file": os.path.relpath(args.contexts, ROOT), "machine": platform.machine(),
                 "cpus": os.cpu_count(), "this_invocation_s": time.monotonic() - t0,
                 "load_average_start": load0, "load_average_end": os.getloadavg()})
    summary = summarize(rows)
    write_outputs(args.out, rows, meta, summary, timings)
    print(f"\n{meta['device']}; chunks of {meta['chunk_tokens']} tokens; contexts of "
          f"{min(r['tokens_min'] for r in rows)}-{max(r['tokens_max'] for r in rows)} cached tokens\n")
    print(markdown_table(rows))
    print()
    print(summary_text(summary))
    total = sum(timings.values())
    print(f"\nprofile wall time, all steps (incl. earlier invocations): {total:.0f} s "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}); this invocation "
          f"{meta['this_invocation_s']:.0f} s; load average {load0[0]:.1f} -> {meta['load_average_end'][0]:.1f}")
    print(f"wrote {args.out}/rd_curves.csv, rd_curves.json, rd_curves.png")


if __name__ == "__main__":
    main()
