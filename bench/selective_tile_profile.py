#!/usr/bin/env python3
"""Tiles every context of a codec profile to `--times` its length, for a
what-if at long contexts (BENCHMARKS.md, "Selective loading over a WAN").

The bundled model's contexts are 2,047 tokens; the simulator takes chunk
sizes and decode times from the profile and computes recompute and first-token
times from the target's shape and the token count. Repeating a context's
chunks k times (token positions shifted) keeps the measured bytes per token of
every level and gives a context k times as long; nothing else is invented.
The per-chunk quality estimates are copied as they are (so summed estimates
grow k-fold): use the tiled profile for timing, not for quality.

  python3 bench/selective_tile_profile.py runs/default/profile.json --times 4 -o runs/default/profile-x4.json
"""
import argparse
import json


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profile")
    ap.add_argument("--times", type=int, required=True)
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()
    if a.times < 1:
        raise SystemExit("--times: expected an integer >= 1")
    with open(a.profile) as f:
        doc = json.load(f)
    for codec in doc["codecs"]:
        for ctx in codec["contexts"]:
            n = ctx["tokens"]
            ctx["chunks"] = [dict(ch, token_begin=ch["token_begin"] + i * n)
                             for i in range(a.times) for ch in ctx["chunks"]]
            ctx["tokens"] = n * a.times
            ctx["id"] = f"{ctx['id']}-x{a.times}"
    with open(a.output, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
