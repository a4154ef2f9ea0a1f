#!/usr/bin/env python3
"""Retrieval exact match of a checkpoint on a fresh, seeded sample of contexts.

The committed contexts (data/retrieval/contexts-{2048,4096}.jsonl) are 24 per
length, too few to tell 75 % from 85 %. This scores any number of contexts
built exactly like them (scripts/prepare-data's make_context over
data/brown/heldout.txt) from a seed, so a figure in the model card can be
reproduced and a checkpoint selected on one seed and reported on another:

  seed 4242 + length   validation (used to select checkpoints)
  seed  777 + length   report (scripts/train-torch's --final-contexts sample)

Exact match is teacher-forced: every answer byte must be the argmax given the
bytes before it, which equals greedy decoding's exact match. The model is
scripts/train-torch's, which its --self-test checks against `kvstream eval`.
--first/--count score a slice of the sample, so that two processes can share it.

    /usr/bin/python3 tools/model/retrieval_sample.py --model models/default --length 4096 \\
        --seed 777 --contexts 200 [--weights runs/x/step-400.safetensors] [--json]
"""
import argparse
import json
import os
import sys
import time
from importlib.machinery import SourceFileLoader

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
tt = SourceFileLoader("train_torch", os.path.join(ROOT, "scripts", "train-torch")).load_module()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF checkpoint dir (config.json, model.safetensors)")
    ap.add_argument("--weights", help="a safetensors file to use instead of DIR/model.safetensors")
    ap.add_argument("--length", type=int, required=True, help="context bytes, e.g. 2048 or 4096")
    ap.add_argument("--seed", type=int, required=True, help="the sample's seed is SEED + LENGTH")
    ap.add_argument("--contexts", type=int, default=200, help="size of the sample")
    ap.add_argument("--first", type=int, default=0, help="score contexts [first, first+count) of the sample")
    ap.add_argument("--count", type=int, default=0, help="0: to the end of the sample")
    ap.add_argument("--text", default=os.path.join(ROOT, "data", "brown", "heldout.txt"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="one JSON line on stdout")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        cfg = json.load(open(os.path.join(args.model, "config.json")))
        weights = args.weights or os.path.join(args.model, "model.safetensors")
        text = open(args.text, "rb").read().decode("utf-8", "replace")
    except (OSError, ValueError) as e:
        sys.exit(f"retrieval_sample: {e}")
    if len(text) < args.length + 1000:
        sys.exit(f"retrieval_sample: {args.text}: {len(text)} bytes, too short for {args.length}-byte contexts")
    model = tt.Llama(cfg)
    model.load_hf(tt.read_safetensors(weights))
    model.eval()

    sample = tt.sample_contexts(text, args.length, args.seed + args.length, args.contexts)
    end = args.contexts if args.count <= 0 else min(args.contexts, args.first + args.count)
    chosen = sample[args.first:end]
    right, t0 = 0, time.time()
    tty = sys.stderr.isatty()
    for i, pair in enumerate(chosen, 1):
        right += int(tt.retrieval_accuracy(model, [pair], "cpu", torch.no_grad) == 1.0)
        el = time.time() - t0
        if tty or i % 10 == 0 or i == len(chosen):
            line = (f"retrieval_sample: {i}/{len(chosen)} {right} right, {i / el:.2f} contexts/s, "
                    f"ETA {(len(chosen) - i) * el / i:.0f}s")
            print(("\r" + line) if tty else line, end="" if tty and i < len(chosen) else "\n", file=sys.stderr, flush=True)
    result = {"model": args.model, "weights": weights, "length": args.length, "seed": args.seed + args.length,
              "first": args.first, "contexts": len(chosen), "right": right,
              "exact_match": right / max(1, len(chosen))}
    print(json.dumps(result) if args.json else
          f"{weights}: {right}/{len(chosen)} = {result['exact_match']:.3f} on {args.length}-byte contexts "
          f"(seed {args.seed + args.length}, contexts {args.first}..{end - 1})")


if __name__ == "__main__":
    main()
