#!/usr/bin/env python3
"""kvs with the model's RoPE frequencies against the base's (docs/codecs.md).

Makes two variants of models/default (same weights, another RoPE):
  llama3   its config given Llama 3.1's rope_scaling (llama3, factor 8,
           original 8192, low/high frequency factors 1 and 4; 131072 positions);
  longrope a phi3 checkpoint (q/k/v and gate/up fused, the same tensors) with
           LongRoPE: original 1024, short factors 1..1.1, long factors 1..32
           (geometric over the pairs), 32768 positions.
Profiles each with kvs twice (`kvstream profile --codecs kvs`, models/default's
step weights, --chunk-quality estimated) on the first N contexts of
data/retrieval/contexts-2048.jsonl: with the RoPE kvstream takes from the
model (the table, or LongRoPE's two tables) and with the RoPE it used before
(llama3: --param kvs.rope_theta=10000; longrope: the short table alone), then
prints bytes and KL per level. Needs numpy and a libtorch build of kvstream.

  /usr/bin/python3 bench/kvs_rope_tables.py --kvstream build/apps/kvstream -o /tmp/rope [--contexts 4]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools", "model"))
from kv_stats import read_safetensors, write_safetensors  # noqa: E402  (float32 in and out)


def variant(src, dst, edit):
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    cal = os.path.join(dst, "kvs-calibration.json")
    if os.path.exists(cal):
        os.remove(cal)  # another model's content hash: the weights are given explicitly
    with open(os.path.join(dst, "config.json")) as f:
        cfg = json.load(f)
    edit(cfg, dst)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def llama3(cfg, _):
    cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192,
                           "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    cfg["max_position_embeddings"] = 131072


def longrope(cfg, dst):
    path = os.path.join(dst, "model.safetensors")
    t = read_safetensors(path)
    layers = sorted({int(k.split(".")[2]) for k in t if k.startswith("model.layers.")})
    fused = {k: v for k, v in t.items() if not any(p in k for p in (".q_proj.", ".k_proj.", ".v_proj.",
                                                                      ".gate_proj.", ".up_proj."))}
    for l in layers:
        p = f"model.layers.{l}."
        fused[p + "self_attn.qkv_proj.weight"] = np.concatenate(
            [t[p + "self_attn.q_proj.weight"], t[p + "self_attn.k_proj.weight"], t[p + "self_attn.v_proj.weight"]])
        fused[p + "mlp.gate_up_proj.weight"] = np.concatenate([t[p + "mlp.gate_proj.weight"], t[p + "mlp.up_proj.weight"]])
    write_safetensors(path, fused)
    pairs = cfg["head_dim"] // 2
    cfg["model_type"], cfg["architectures"], cfg["sliding_window"] = "phi3", ["Phi3ForCausalLM"], None
    cfg["rope_scaling"] = {"type": "longrope", "original_max_position_embeddings": 1024,
                           "short_factor": [1.0 + 0.1 * i / (pairs - 1) for i in range(pairs)],
                           "long_factor": [round(32.0 ** (i / (pairs - 1)), 4) for i in range(pairs)]}
    cfg["max_position_embeddings"] = 32768


def profile(kvstream, model, out, contexts, weights, extra):
    cmd = [kvstream, "profile", "--model", model, "--contexts",
           os.path.join(ROOT, "data", "retrieval", "contexts-2048.jsonl"), "--codecs", "kvs",
           "--param", "kvs.weights=" + weights, "--max-contexts", str(contexts), "--chunk-quality", "estimated",
           "-o", out] + extra
    if os.path.exists(out):
        os.remove(out)
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        c = json.load(f)["codecs"][0]
    rows = []
    for level in range(len(c["level_names"])):
        b = sum(ch["levels"][level]["bytes"] for cx in c["contexts"] for ch in cx["chunks"])
        kl = sum(cx["quality"][level]["kl_nats"] for cx in c["contexts"]) / len(c["contexts"])
        rows.append((b, kl))
    return c["params"], rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kvstream", required=True)
    ap.add_argument("-o", "--out", required=True, help="folder for the model variants and profiles")
    ap.add_argument("--contexts", type=int, default=4)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    src = os.path.join(ROOT, "models", "default")
    with open(os.path.join(src, "kvs-calibration.json")) as f:
        weights = ":".join(repr(float(w)) for w in json.load(f)["weights"])
    for name, edit in (("llama3", llama3), ("longrope", longrope)):
        model = os.path.join(args.out, name)
        variant(src, model, edit)
        params, model_rope = profile(args.kvstream, model, os.path.join(args.out, name + "-model.json"),
                                     args.contexts, weights, [])
        if name == "llama3":
            before = ["--param", "kvs.rope_theta=10000"]
        else:  # the short table alone, as before LongRoPE's long one
            before = ["--param", "kvs.rope_inv_freq=" + params.split("rope_inv_freq=")[1].split(",")[0]]
        _, old = profile(args.kvstream, model, os.path.join(args.out, name + "-before.json"), args.contexts,
                         weights, before)
        print(f"\n{name}: level, bytes (model's RoPE / before), fewer, KL nats/token (model's / before)")
        for level, ((b, kl), (b0, kl0)) in enumerate(zip(model_rope, old)):
            print(f"  L{level}  {b:>10,} / {b0:>10,}  {1 - b / b0:6.1%}   {kl:.5f} / {kl0:.5f}")


if __name__ == "__main__":
    main()
