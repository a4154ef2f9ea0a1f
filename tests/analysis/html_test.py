#!/usr/bin/env python3
"""report.html and compare.html in headless Chromium (Debian's `chromium`).

Writes the report of tests/analysis/fixtures/sweep (and a compare of it with
itself) with analysis/report.py, opens each page from disk with
`chromium --headless --dump-dom` (no server; every host name unresolvable, so
any use of the network would fail and be logged), and fails on:
  - any message on the page's console (Chromium logs them, errors and uncaught
    exceptions included, as `INFO:CONSOLE` lines with --enable-logging=stderr),
  - a page-internal self-check (analysis/report.py's script, run at `load`) not
    reporting `selfcheck: ok`: every image decoded, the runs table sorted by a
    simulated header click,
  - a table without rows, fewer tables or images than the report wrote,
  - an embedded image that is not a PNG of at least 200x150 pixels or is
    blank (fewer than 2 % of its pixels differ from its most common colour).
A page with a deliberate error is checked first, so that a detector that sees
nothing fails the test. Exits 77 (ctest SKIP_RETURN_CODE) when chromium is absent.

    /usr/bin/python3 tests/analysis/html_test.py [--keep DIR]
"""
import argparse
import base64
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SKIP = 77


def find_chromium():
    env = os.environ.get("KVSTREAM_CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def render(chromium, page, profile_dir):
    """(dom, console lines, exit status) of a page opened from disk."""
    cmd = [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
           f"--user-data-dir={profile_dir}", "--no-first-run", "--disable-extensions",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000",
           "--dump-dom", "file://" + os.path.abspath(page)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    console = [l for l in p.stderr.splitlines() if ":CONSOLE" in l or "Uncaught" in l]
    return p.stdout, console, p.returncode


def png_problem(data, what):
    """None when `data` is a non-blank PNG of a reasonable size, else what is wrong."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return f"{what}: not a PNG"
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if w < 200 or h < 150:
        return f"{what}: {w}x{h} pixels"
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import numpy as np
    img = mpimg.imread(io.BytesIO(data), format="png")
    flat = img.reshape(-1, img.shape[-1]) if img.ndim == 3 else img.reshape(-1, 1)
    _, counts = np.unique(flat, axis=0, return_counts=True)
    other = 1 - counts.max() / flat.shape[0]
    if other < 0.02:
        return f"{what}: blank ({100 * other:.2f} % of its pixels differ from the background)"
    return None


def check_page(chromium, page, profile_dir, min_tables, errors):
    with open(page) as f:
        source = f.read()
    n_img_src = source.count("<img ")
    dom, console, rc = render(chromium, page, profile_dir)
    name = os.path.basename(page)
    if rc != 0:
        errors.append(f"{name}: chromium exited {rc}")
    for l in console:
        errors.append(f"{name}: console: {l}")
    m = re.search(r"selfcheck: [^<]*", dom)
    if not m or not m.group(0).startswith("selfcheck: ok"):
        errors.append(f"{name}: page self-check: {m.group(0) if m else 'marker missing (the script did not run)'}")
    tables = re.findall(r"<table.*?</table>", dom, re.S)
    if len(tables) < min_tables:
        errors.append(f"{name}: {len(tables)} tables, expected at least {min_tables}")
    for i, t in enumerate(tables):
        if len(re.findall(r"<tr", t)) < 2 or "<td" not in t:
            errors.append(f"{name}: table {i} has no rows")
    imgs = re.findall(r'<img[^>]*src="data:image/png;base64,([^"]*)"', dom)
    if len(imgs) != n_img_src:
        errors.append(f"{name}: {len(imgs)} embedded PNGs in the DOM, the page has {n_img_src} images")
    if re.search(r'<img[^>]*src="(?!data:)', dom):
        errors.append(f"{name}: an image that is not embedded")
    for i, b in enumerate(imgs):
        prob = png_problem(base64.b64decode(b), f"{name}: image {i}")
        if prob:
            errors.append(prob)
    return len(tables), len(imgs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", help="write the report here and keep it")
    args = ap.parse_args()
    chromium = find_chromium()
    if not chromium:
        print("html_test: SKIPPED: chromium is not installed (scripts/install-deps installs Debian's chromium; "
              "KVSTREAM_CHROMIUM names another browser binary)")
        return SKIP
    tmp = tempfile.mkdtemp(prefix="kvstream-html-test-")
    out = os.path.abspath(args.keep) if args.keep else os.path.join(tmp, "report")
    try:
        profile = os.path.join(tmp, "chromium-profile")
        # The detector itself: a page with a console error and an uncaught exception must be caught.
        bad = os.path.join(tmp, "bad.html")
        with open(bad, "w") as f:
            f.write("<html><body><script>console.error('deliberate');undefinedFunction();</script></body></html>")
        _, console, _ = render(chromium, bad, profile)
        if not any("deliberate" in l for l in console) or not any("Uncaught" in l for l in console):
            print(f"html_test: FAILED: the console detector does not see a deliberate error: {console}")
            return 1
        # ... and the blank-image detector: a uniform PNG must be flagged.
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig = plt.figure(figsize=(4, 3))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        if png_problem(buf.getvalue(), "blank") is None:
            print("html_test: FAILED: the blank-image detector accepts a blank PNG")
            return 1
        fx = os.path.join(ROOT, "tests", "analysis", "fixtures", "sweep")
        py = sys.executable
        for cmd in ([py, os.path.join(ROOT, "analysis", "report.py"), fx, "-o", out, "-q"],
                    [py, os.path.join(ROOT, "analysis", "report.py"), "--compare", fx, fx, "-o",
                     os.path.join(out, "compare"), "-q"]):
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                print(f"html_test: FAILED: {' '.join(cmd)}: {p.stderr}")
                return 1
        errors = []
        # per policy, per policy x slo_s, per policy x link.trace, all runs
        nt, ni = check_page(chromium, os.path.join(out, "report.html"), profile, 4, errors)
        if ni < 6:
            errors.append(f"report.html: {ni} images, expected 3 plots and 3 timelines")
        ct, _ = check_page(chromium, os.path.join(out, "compare", "compare.html"), profile, 1, errors)
        if errors:
            print("html_test: FAILED\n  " + "\n  ".join(errors))
            return 1
        print(f"html_test: ok ({os.path.basename(chromium)}: report.html {nt} tables, {ni} images; "
              f"compare.html {ct} tables; no console messages)")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
