#!/usr/bin/env python3
"""kvs with each layer's own RoPE against one RoPE for all (docs/codecs.md).

Models whose layers rotate differently (gemma3_text: sliding layers at
rope_local_base_freq 10^4, the others at rope_theta 10^6 and its scaling)
had their minority layers' keys coded at the majority's frequencies. This
measures what per-layer RoPE (kvs's rope_alt_* parameters) gains on keys of a
trained model: the KV caches of models/default (base 10^4) for the first N
contexts of data/retrieval/contexts-4096.jsonl (`kvstream kv dump`), with the
keys of the layers --alt-layers rotated back at 10^4 and forward at
--alt-theta (what a layer with that base and the same pre-RoPE keys would
hold; 0: not rotated, a layer without RoPE such as Llama 4's every fourth), encoded at every --levels level (`kvstream encode --model
models/default`: its calibrated step weights) with
  one     --param kvs.rope_theta=10000 (every layer at the majority's base: before),
  layers  the same with rope_alt_theta and rope_alt_layers (each layer its own),
  orig    the unmodified cache at 10^4 (what the keys cost at their own base),
then decoded (`kvstream decode`); prints bytes, bits per value and the mean
squared error of each, summed over the contexts. Needs numpy and a libtorch
build of kvstream.

  /usr/bin/python3 bench/kvs_rope_layers.py --kvstream build/apps/kvstream -o /tmp/rope-layers [--contexts 2]
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools", "model"))
from kv_stats import read_safetensors, write_safetensors  # noqa: E402  (float32 in and out)


def rerotate(keys, theta_from, theta_to):
    """Keys [heads, tokens, dim] at positions 0.. (HF rotate-half pairs) from one base to another
    (theta_to 0: not rotated, as a layer without RoPE holds them)."""
    _, tokens, dim = keys.shape
    half = dim // 2
    pos = np.arange(tokens, dtype=np.float64)[:, None]
    i = np.arange(half, dtype=np.float64)[None, :]
    k = keys.astype(np.float64)
    lo, hi = k[..., :half], k[..., half:]
    a = pos * theta_from ** (-2.0 * i / dim)  # back by the old angle
    plo, phi = lo * np.cos(a) + hi * np.sin(a), hi * np.cos(a) - lo * np.sin(a)
    b = pos * theta_to ** (-2.0 * i / dim) if theta_to > 0 else 0 * pos * i  # forward by the new one
    out = np.concatenate([plo * np.cos(b) - phi * np.sin(b), phi * np.cos(b) + plo * np.sin(b)], axis=-1)
    return out.astype(np.float32)


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kvstream", default=os.path.join(ROOT, "build", "apps", "kvstream"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    ap.add_argument("--contexts-file", default=os.path.join(ROOT, "data", "retrieval", "contexts-4096.jsonl"))
    ap.add_argument("--contexts", type=int, default=2)
    ap.add_argument("--alt-layers", default="3", help="layers whose keys rotate at --alt-theta (':'-separated)")
    ap.add_argument("--alt-theta", type=float, default=1e6)
    ap.add_argument("--levels", default="0,2,4,6,8")
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.model, "config.json")) as f:
        base = float(json.load(f).get("rope_theta", 10000.0))
    alt = [int(x) for x in a.alt_layers.split(":")]
    levels = [int(x) for x in a.levels.split(",")]
    variants = {
        "one": ("mixed", ["--param", "kvs.rope_theta=%g" % base]),
        "layers": ("mixed", ["--param", "kvs.rope_theta=%g" % base, "--param", "kvs.rope_alt_theta=%g" % a.alt_theta,
                             "--param", "kvs.rope_alt_layers=" + a.alt_layers]),
        "orig": ("orig", ["--param", "kvs.rope_theta=%g" % base]),
    }
    totals = {(v, lv): [0, 0.0, 0] for v in variants for lv in levels}  # bytes, squared error, values
    with open(a.contexts_file) as f:
        contexts = [json.loads(line)["context"] for line, _ in zip(f, range(a.contexts))]
    for n, text in enumerate(contexts):
        txt = os.path.join(a.out, "ctx%d.txt" % n)
        with open(txt, "w") as f:
            f.write(text)
        orig = os.path.join(a.out, "ctx%d-orig.safetensors" % n)
        run([a.kvstream, "kv", "dump", "--model", a.model, "--text", txt, "-o", orig, "--kv-dtype", "fp32"])
        kv = read_safetensors(orig)
        mixed = dict(kv)
        for layer in alt:
            mixed["layers.%d.key" % layer] = rerotate(kv["layers.%d.key" % layer], base, a.alt_theta)
        files = {"orig": orig, "mixed": os.path.join(a.out, "ctx%d-mixed.safetensors" % n)}
        write_safetensors(files["mixed"], mixed)
        source = {"orig": kv, "mixed": mixed}
        for name, (src, params) in variants.items():
            for lv in levels:
                enc = os.path.join(a.out, "ctx%d-%s-L%d.kvs" % (n, name, lv))
                dec = enc[:-4] + ".safetensors"
                run([a.kvstream, "encode", files[src], "-o", enc, "--codec", "kvs", "--level", str(lv), "--model",
                     a.model] + params)
                run([a.kvstream, "decode", enc, "-o", dec])
                back = read_safetensors(dec)
                t = totals[(name, lv)]
                t[0] += os.path.getsize(enc)
                for k, v in source[src].items():
                    t[1] += float(np.sum((back[k].astype(np.float64) - v) ** 2))
                    t[2] += v.size
        print("context %d: %d tokens" % (n, kv["layers.0.key"].shape[1]), flush=True)
    print("\n| level | one RoPE (bytes) | per-layer RoPE (bytes) | per-layer / one | keys at their own base (bytes) "
          "| MSE one | MSE per-layer |")
    print("|---|---|---|---|---|---|---|")
    for lv in levels:
        one, lay, orig = totals[("one", lv)], totals[("layers", lv)], totals[("orig", lv)]
        print("| %d | %d | %d | %.3f | %d | %.3g | %.3g |" % (lv, one[0], lay[0], lay[0] / one[0], orig[0],
                                                           one[1] / one[2], lay[1] / lay[2]))


if __name__ == "__main__":
    main()
