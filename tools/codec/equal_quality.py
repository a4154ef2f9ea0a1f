#!/usr/bin/env python3
"""Compares two profiles (`kvstream profile`) at equal quality: for each level
of profile A (its first codec), the mean bits/element and continuation-loss
increase over contexts, and the bits/element profile B (its first codec)
needs for the same loss increase, by piecewise-linear interpolation between
B's levels ('-' where A's loss increase is outside B's range).

    /usr/bin/python3 tools/codec/equal_quality.py A.json B.json
"""
import argparse
import json


def curve(path):
    with open(path) as f:
        codec = json.load(f)["codecs"][0]
    n = len(codec["contexts"])
    out = []
    for level, name in enumerate(codec["level_names"]):
        q = [ctx["quality"][level] for ctx in codec["contexts"]]
        out.append((name, sum(x["bits_per_element"] for x in q) / n, sum(x["loss_increase"] for x in q) / n))
    return codec["params"], out


def bits_at(points, loss):
    points = sorted(points, key=lambda p: p[2])
    for (_, b0, l0), (_, b1, l1) in zip(points, points[1:]):
        if l0 <= loss <= l1:
            return b0 + (b1 - b0) * (loss - l0) / (l1 - l0) if l1 > l0 else min(b0, b1)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args()
    pa, a = curve(args.a)
    pb, b = curve(args.b)
    print(f"A: {args.a} [{pa}]\nB: {args.b} [{pb}]")
    print("| level | A bits/element | A loss increase | B bits/element at that loss | A vs B |")
    print("|---|---:|---:|---:|---:|")
    for name, bits, loss in a:
        need = bits_at(b, loss)
        cmp = "-" if need is None else f"{100 * (bits / need - 1):+.0f} %"
        need_s = "-" if need is None else f"{need:.2f}"
        print(f"| {name} | {bits:.2f} | {100 * loss:.2f} % | {need_s} | {cmp} |")


if __name__ == "__main__":
    main()
