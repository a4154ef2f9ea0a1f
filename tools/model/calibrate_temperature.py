#!/usr/bin/env python3
"""Post-hoc temperature calibration of a byte-level Llama checkpoint.

A model trained for many epochs on a small corpus becomes overconfident: its
held-out loss rises while its argmax predictions stay good. Dividing the logits
by a temperature T > 1 undoes most of that. For a Llama with a final RMSNorm
before the LM head, logits / T is exactly the model with `model.norm.weight / T`,
so the calibrated checkpoint is an ordinary HF checkpoint: the KV cache, every
greedy prediction (and so retrieval accuracy and greedy agreement) are
unchanged; only the probabilities soften.

T is chosen on a calibration byte range of a text (--calib-range), which must be
disjoint from whatever the model is evaluated on afterwards.

    /usr/bin/python3 tools/model/calibrate_temperature.py --model runs/x --text data/brown/heldout.txt \\
        --calib-range 200000:400000 [--grid 1.0,1.2,...] -o models/default
"""
import argparse
import json
import math
import os
import shutil
import sys
from importlib.machinery import SourceFileLoader

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
tt = SourceFileLoader("train_torch", os.path.join(ROOT, "scripts", "train-torch")).load_module()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--calib-range", default="200000:400000", help="byte range START:END of --text")
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--stride", type=int, default=10000, help="bytes between window starts")
    ap.add_argument("--grid", default="1.0,1.1,1.2,1.3,1.4,1.5,1.6,1.7,1.8,1.9,2.0,2.2,2.4,2.6,2.8,3.0")
    ap.add_argument("-o", "--out", required=True, help="folder for the calibrated checkpoint")
    args = ap.parse_args()

    a, b = (int(x) for x in args.calib_range.split(":"))
    data = open(args.text, "rb").read()
    if not 0 <= a < b <= len(data) or b - a <= args.window:
        sys.exit(f"calibrate_temperature: {args.text}: range {a}:{b} is not inside its {len(data)} bytes")
    calib = data[a:b]
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    tensors = tt.read_safetensors(os.path.join(args.model, "model.safetensors"))
    model = tt.Llama(cfg)
    model.load_hf(tensors)
    model.eval()
    grid = [float(x) for x in args.grid.split(",")]
    nll = {t: 0.0 for t in grid}
    n = 0
    with torch.no_grad():
        for s in range(0, len(calib) - args.window - 1, args.stride):
            ids = torch.tensor(list(calib[s:s + args.window + 1])).unsqueeze(0)
            logits = model(ids[:, :-1])[0]
            for t in grid:
                nll[t] += F.cross_entropy(logits / t, ids[0, 1:], reduction="sum").item()
            n += args.window
    bits = {t: nll[t] / n / math.log(2) for t in grid}
    best = min(grid, key=lambda t: bits[t])
    for t in grid:
        print(f"T {t:4.2f}: {bits[t]:.4f} bits/byte{'  <- chosen' if t == best else ''}")
    os.makedirs(args.out, exist_ok=True)
    tensors["model.norm.weight"] = tensors["model.norm.weight"] / best
    tt.write_safetensors(os.path.join(args.out, "model.safetensors"), tensors)
    if os.path.abspath(args.out) != os.path.abspath(args.model):
        shutil.copy(os.path.join(args.model, "config.json"), os.path.join(args.out, "config.json"))
    record = {"temperature": best, "calibration": {"text": args.text, "range": [a, b], "window": args.window,
              "stride": args.stride, "tokens": n, "bits_per_byte": {str(t): round(bits[t], 4) for t in grid}}}
    with open(os.path.join(args.out, "calibration.json"), "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    print(f"calibrate_temperature: T = {best}: model.norm.weight / {best} -> {args.out}")


if __name__ == "__main__":
    main()
