#!/usr/bin/env python3
"""Bjontegaard delta rate (BD-rate) between two codecs of kvstream profiles.

Rate: bits per element. Quality (--quality): `kl`, the KL divergence of the
next-token distribution (nats/token; profiles of schema 2), `loss`, the
continuation-loss increase, `disagreement`, 1 - greedy agreement, or
`top1-disagreement`, 1 - teacher-forced top-1 agreement; each the mean over a
profile's contexts per level, as `kvstream profile` prints them. Like BD-rate
on PSNR (a log of the MSE), the fit is log10(rate) against log10(quality);
levels whose mean is below --floor are left out (below the noise they carry no
quality signal, and log needs positive values). Both codecs' curves are
fitted, the log-rate difference is averaged over the quality range they share,
and BD-rate = 10^(mean difference) - 1: the change in bits the test codec needs
for the anchor's quality (negative: fewer). Two fits: a cubic polynomial
(Bjontegaard, VCEG-M33) and piecewise-cubic monotone Hermite interpolation
(PCHIP, as VCEG-AL22 recommends for non-smooth curves).

    /usr/bin/python3 tools/codec/bd_rate.py PROFILE.json [MORE.json ...] \
        [--anchor cachegen] [--test kvs] [--quality loss] [--floor 0.001] [--test-levels L0,L1,...]
        [--plot rd.png] [--markdown]

Profiles given together are merged per codec (e.g. one run per codec on the
same contexts); a codec's contexts must be the same in every level.
"""
import argparse
import json
import math
import sys

import numpy as np


def load_points(paths):
    """codec -> list of (level name, mean bits/element, mean loss increase, mean agreement, contexts,
    mean KL nats/token, mean top-1 agreement); KL and top-1 are None in profiles without them."""
    out = {}
    for path in paths:
        with open(path) as f:
            prof = json.load(f)
        for c in prof["codecs"]:
            ctxs = c["contexts"]
            n = len(ctxs)
            pts = []
            for i, name in enumerate(c["level_names"]):
                q = [ctx["quality"][i] for ctx in ctxs]
                kl = [x.get("kl_nats") for x in q]
                top1 = [x.get("top1_agreement") for x in q]
                pts.append((name, sum(x["bits_per_element"] for x in q) / n,
                            sum(x["loss_increase"] for x in q) / n, sum(x["greedy_agreement"] for x in q) / n, n,
                            None if None in kl else sum(kl) / n, None if None in top1 else sum(top1) / n))
            out[c["codec"]] = pts
    return out


def pchip_slopes(x, y):
    """Fritsch-Carlson slopes of the monotone piecewise-cubic Hermite interpolant."""
    h = np.diff(x)
    delta = np.diff(y) / h
    n = len(x)
    d = np.zeros(n)
    if n == 2:
        d[:] = delta[0]
        return d
    for k in range(1, n - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])
    for k, (hk0, hk1, dl0, dl1) in ((0, (h[0], h[1], delta[0], delta[1])), (n - 1, (h[-1], h[-2], delta[-1], delta[-2]))):
        v = ((2 * hk0 + hk1) * dl0 - hk0 * dl1) / (hk0 + hk1)
        if np.sign(v) != np.sign(dl0):
            v = 0.0
        elif np.sign(dl0) != np.sign(dl1) and abs(v) > abs(3 * dl0):
            v = 3 * dl0
        d[k] = v
    return d


def pchip_integral(x, y, lo, hi, steps=2000):
    """Integral of the PCHIP interpolant of (x, y) over [lo, hi] (x increasing)."""
    d = pchip_slopes(x, y)
    t = np.linspace(lo, hi, steps + 1)
    k = np.clip(np.searchsorted(x, t) - 1, 0, len(x) - 2)
    h = x[k + 1] - x[k]
    s = (t - x[k]) / h
    h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
    v = h00 * y[k] + h10 * h * d[k] + h01 * y[k + 1] + h11 * h * d[k + 1]
    return np.trapz(v, t)


QUALITIES = ("kl", "loss", "disagreement", "top1-disagreement")


def distortion(point, quality):
    """The point's distortion in the named measure (lower is better)."""
    if quality == "loss":
        return point[2]
    if quality == "disagreement":
        return 1.0 - point[3]
    value = point[5] if quality == "kl" else (None if point[6] is None else 1.0 - point[6])
    if value is None:
        raise ValueError(f"bd_rate: the profile has no {quality} (profiles before schema 2 have no KL or top-1)")
    return value


def curve(points, floor, quality):
    """(log10 distortion, log10 rate) sorted by distortion, levels with distortion >= floor."""
    q = [(math.log10(distortion(p, quality)), math.log10(p[1])) for p in points if distortion(p, quality) >= floor]
    q.sort()
    # Equal qualities (noise) would break interpolation: keep the cheapest.
    out = []
    for x, y in q:
        if out and abs(x - out[-1][0]) < 1e-9:
            out[-1] = (x, min(y, out[-1][1]))
        else:
            out.append((x, y))
    return np.array([p[0] for p in out]), np.array([p[1] for p in out])


def bd_rate(anchor, test, floor, quality="loss"):
    xa, ya = curve(anchor, floor, quality)
    xt, yt = curve(test, floor, quality)
    if len(xa) < 2 or len(xt) < 2:
        return None
    lo, hi = max(xa.min(), xt.min()), min(xa.max(), xt.max())
    if hi <= lo:
        return None
    res = {"range": (10**lo, 10**hi), "anchor_points": len(xa), "test_points": len(xt)}
    # Cubic polynomial fit (degree limited by the number of points).
    pa = np.polyfit(xa, ya, min(3, len(xa) - 1))
    pt = np.polyfit(xt, yt, min(3, len(xt) - 1))
    ia, it = np.polyint(pa), np.polyint(pt)
    avg = ((np.polyval(it, hi) - np.polyval(it, lo)) - (np.polyval(ia, hi) - np.polyval(ia, lo))) / (hi - lo)
    res["cubic"] = 10**avg - 1
    avg = (pchip_integral(xt, yt, lo, hi) - pchip_integral(xa, ya, lo, hi)) / (hi - lo)
    res["pchip"] = 10**avg - 1
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profiles", nargs="+")
    ap.add_argument("--anchor", default="cachegen")
    ap.add_argument("--test", default="kvs")
    ap.add_argument("--quality", choices=QUALITIES, default="loss")
    ap.add_argument("--floor", type=float, default=0.001, help="smallest mean distortion used (0.001 = 0.1 %%)")
    ap.add_argument("--test-levels", help="comma-separated level names of the test codec to use (default: all)")
    ap.add_argument("--plot", help="write a rate-quality plot (PNG)")
    ap.add_argument("--markdown", action="store_true", help="print the points as a markdown table")
    args = ap.parse_args()
    pts = load_points(args.profiles)
    for name in (args.anchor, args.test):
        if name not in pts:
            sys.exit(f"bd_rate: codec '{name}' is not in the profiles (have: {', '.join(pts)})")
    if args.test_levels:
        keep = set(args.test_levels.split(","))
        pts[args.test] = [p for p in pts[args.test] if p[0] in keep]
    if args.markdown:
        print("| codec | level | bits/element | KL nats/token | loss increase | greedy agreement | contexts |")
        print("|---|---|---:|---:|---:|---:|---:|")
    for name in (args.anchor, args.test):
        for lvl, bits, loss, agree, n, kl, _ in pts[name]:
            kl_text = "-" if kl is None else f"{kl:.3g}"
            if args.markdown:
                print(f"| {name} | {lvl} | {bits:.3f} | {kl_text} | {100 * loss:.2f} % | {agree:.3f} | {n} |")
            else:
                print(f"{name:10s} {lvl:5s} {bits:7.3f} bits/elem  KL {kl_text:>8s}  loss {100 * loss:7.3f} %  "
                      f"agreement {agree:.3f}  ({n} contexts)")
    res = bd_rate(pts[args.anchor], pts[args.test], args.floor, args.quality)
    label = {"kl": "KL", "loss": "loss increase", "disagreement": "1 - agreement",
             "top1-disagreement": "1 - top-1 agreement"}[args.quality]
    if res is None:
        print("BD-rate: the curves share no quality range above the floor")
    else:
        lo, hi = res["range"]
        show = (lambda v: f"{v:.3g} nats") if args.quality == "kl" else (lambda v: f"{100 * v:.2f} %")
        print(f"BD-rate of {args.test} against {args.anchor} over {label} {show(lo)}..{show(hi)} "
              f"({res['anchor_points']} and {res['test_points']} levels >= {show(args.floor)}): "
              f"cubic {100 * res['cubic']:+.1f} %, pchip {100 * res['pchip']:+.1f} %")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, style in ((args.anchor, "o-"), (args.test, "s-")):
            p = [(distortion(q, args.quality), q[1]) for q in pts[name] if distortion(q, args.quality) >= args.floor]
            p.sort()
            ax.plot([100 * a for a, _ in p], [b for _, b in p], style, label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(("continuation-loss increase" if args.quality == "loss" else "1 - greedy agreement") + " (%)")
        ax.set_ylabel("bits per element")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main()
