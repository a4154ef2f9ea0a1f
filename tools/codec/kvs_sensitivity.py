#!/usr/bin/env python3
"""Sensitivity of a model's continuation loss to quantization error in each
(layer, kind) plane of its KV cache, from `kvstream profile` runs of the kvs
codec that quantize one plane at a time (weight 8 for that plane, 0.001 for the
others, so only it carries error), and the kvs step weights that follow.

For plane p and each level: the loss increase (mean over contexts) and the
plane's mean squared error (the chunk MSE times the number of planes: the other
planes are nearly exact). The sensitivity w_p is the least-squares slope of
loss increase against MSE over the levels whose loss increase is at most
--max-loss (where loss is close to linear in MSE). Rate-distortion with a
uniform quantizer per plane (rate ~ -log2 step, distortion ~ w step^2 / 12)
gives equal w_p step_p^2 at the optimum, so weight_p ~ 1 / sqrt(w_p),
normalized to geometric mean 1. Sensitivities below --floor times the largest
(at or below the measurement's noise; some come out negative) are raised to
it, which caps the weights' range at 1 / sqrt(floor).

    /usr/bin/python3 tools/codec/kvs_sensitivity.py plane0.json ... plane7.json [--max-loss 0.01]
(plane files in order K0, V0, K1, V1, ...; see docs/codecs.md for the commands).

This is how models/default's weights were measured (loss-based). For another
model use `kvstream codec-model train --codec kvs --model DIR --text FILE -o
DIR/kvs-calibration.json` (llm/kvs_calibration.h): the same per-plane slope,
but of the KL divergence (never negative, so usable on weak models), in one
command, and written where `kvstream profile` looks for it.
"""
import argparse
import json
import math


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profiles", nargs="+")
    ap.add_argument("--max-loss", type=float, default=0.01)
    ap.add_argument("--floor", type=float, default=0.01)
    args = ap.parse_args()
    planes = len(args.profiles)
    rows = []
    for p, path in enumerate(args.profiles):
        with open(path) as f:
            prof = json.load(f)
        c = prof["codecs"][0]
        pts = []
        for i, name in enumerate(c["level_names"]):
            loss = sum(ctx["quality"][i]["loss_increase"] for ctx in c["contexts"]) / len(c["contexts"])
            mses = [ch["levels"][i]["mse"] for ctx in c["contexts"] for ch in ctx["chunks"]]
            pts.append((name, planes * sum(mses) / len(mses), loss))
        use = [(m, l) for _, m, l in pts if l <= args.max_loss]
        slope = sum(m * l for m, l in use) / sum(m * m for m, _ in use) if use else float("nan")
        rows.append((p, pts, slope, len(use)))
    kinds = "KV"
    for p, pts, slope, n in rows:
        print(f"{kinds[p % 2]}{p // 2}: " + "  ".join(f"mse {m:.4g} loss {100 * l:.3f}%" for _, m, l in pts)
              + f"  -> {slope:.4g} loss per unit MSE ({n} levels)")
    top = max(s for _, _, s, _ in rows)
    w = [max(s, args.floor * top) for _, _, s, _ in rows]
    inv = [1 / math.sqrt(x) for x in w]
    g = math.exp(sum(math.log(x) for x in inv) / len(inv))
    print("weights (step multipliers, geometric mean 1): " + ":".join(f"{x / g:.3g}" for x in inv))


if __name__ == "__main__":
    main()
