#!/usr/bin/env python3
"""Plots throughput over time of traces given as LABEL=FILE two-column files
(time_s, throughput_mbps; row i's value holds from row i-1's time), as
`kvstream trace plot` writes them."""
import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("traces", nargs="+", help="LABEL=FILE")
    ap.add_argument("-o", "--out", required=True)
    args = ap.parse_args()
    fig, ax = plt.subplots(figsize=(10, 4))
    for item in args.traces:
        label, path = item.split("=", 1)
        rows = [tuple(map(float, line.split())) for line in open(path) if line.strip()]
        xs, ys = [], []
        for (t0, _), (t1, v) in zip(rows, rows[1:]):
            xs += [t0, t1]
            ys += [v, v]
        ax.plot(xs, ys, label=label, linewidth=0.8)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("throughput (Mbit/s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)


if __name__ == "__main__":
    main()
