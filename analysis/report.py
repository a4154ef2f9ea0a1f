#!/usr/bin/env python3
"""Report of a sweep (`kvstream run SCENARIO.yaml -o DIR`): tables, plots and one HTML page.

    report.py DIR [-o OUT]                 OUT defaults to DIR/report
    report.py --compare DIR_A DIR_B [-o OUT]   before/after; OUT defaults to DIR_B/compare
    report.py --self-test                  checks the tables against a hand computation on
                                           tests/analysis/fixtures/sweep

Reads DIR/results.jsonl (or DIR/results.csv), one row per run, and each run's
DIR/runs/<id>/results.json, events.jsonl and scenario.yaml for the per-request
TTFTs and the timelines. Writes into OUT:

  summary.md          per policy, then per policy x each swept key other than
                      policy and seed: runs (failed), TTFT mean/p50/p95, SLO
                      violations, quality (mean and worst loss increase), MB
                      fetched, recomputed share; the oracle's predicted TTFT
                      against the simulated one; the failed runs
  ttft_cdf.png        TTFT CDF per policy (over requests)
  quality_ttft.png    estimated quality loss vs TTFT, one point per run; the
                      oracle's runs marked and their Pareto frontier drawn
  slo.png             SLO-violation rate and quality vs the swept SLO (when
                      slo_s is swept)
  timeline_<id>.png   a run's timeline: trace bandwidth, each chunk's request,
                      first and last byte with its level (R = recompute), GPU
                      decode and recompute spans (the first run of every policy
                      unless --runs names others)
  report.html         all of it on one self-contained page (images embedded,
                      sortable tables, no network)

Statistics: the unit is the run. TTFT mean/p50/p95 are over the runs' mean
TTFT (a run with several requests counts with its mean), percentiles by
linear interpolation; SLO violations = 1 - mean of the runs' fraction of
requests that met it; quality = mean of the runs' mean estimated loss
increase (relative; 0.12 % = 0.0012, lower is better, can be slightly
negative), worst = the largest request's; MB = mean payload. Failed runs are
counted and left out of every statistic. SLO violations count only runs with
an SLO (slo_s > 0; "-" where none has one). A figure that is missing or null
(NaN) in a run's row leaves that run out of that figure's statistic only (an
empty cell where no run has it).

--compare: for every policy (and policy x swept key value) the difference
B - A of the mean TTFT, SLO-violation rate, quality and MB (the same runs and
rules as the report's tables; "-" where a side has no value). A difference is
marked (`*`) when it exceeds 2 standard errors of the difference estimated
from the spread over replicates: runs whose parameters differ only in `seed`
form a point; the variance of a group mean is sum_p n_p s_p^2 / N^2 (s_p the
sample variance at point p, or the group's pooled one where a point has one
run); a side without replicates is given the other side's pooled variance.
Without any replicate on either side nothing is marked.

Needs Debian's python3-matplotlib and python3-numpy (/usr/bin/python3).
"""
import argparse
import base64
import csv
import html
import json
import math
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRIC_KEYS = ("ttft_s", "slo_met", "quality_loss_increase", "payload_bytes")

# ---------------------------------------------------------------- loading


def read_results(d):
    """The rows of DIR/results.jsonl (or results.csv, params from the param.* columns)."""
    jl = os.path.join(d, "results.jsonl")
    if os.path.exists(jl):
        with open(jl) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    elif os.path.exists(os.path.join(d, "results.csv")):
        rows = []
        with open(os.path.join(d, "results.csv"), newline="") as f:
            for r in csv.DictReader(f):
                row = {"params": {}}
                for k, v in r.items():
                    if k.startswith("param."):
                        row["params"][k[6:]] = _csv_value(v)
                    else:
                        row[k] = _csv_value(v)
                rows.append(row)
    else:
        raise SystemExit(f"report: {d}: no results.jsonl or results.csv (the output folder of `kvstream run`)")
    for i, r in enumerate(rows):
        r.setdefault("params", {})
        r.setdefault("index", i)
        r.setdefault("status", "ok")
    return rows


def _number(v):
    """An int or float when the text is one, else the text."""
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def _csv_value(v):
    if v == "":
        return None
    if v in ("True", "true"):
        return True
    if v in ("False", "false"):
        return False
    return _number(v)


def swept_keys(rows):
    keys = []
    for r in rows:
        for k in r["params"]:
            if k not in keys:
                keys.append(k)
    return keys


def as_number(v):
    """A swept value as a number (the runner writes values as given, e.g. "1.5"), or None."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def value_label(key, v):
    if isinstance(v, str) and v.startswith("{") and v.endswith("}"):  # a flow map, e.g. {name: fixed, params: {level: 2}}
        m = {}
        for item in _split_flow(v[1:-1]):
            k, _, x = item.partition(":")
            x = x.strip()
            m[k.strip()] = ({a.strip(): _scalar(b.strip()) for a, _, b in
                             (i.partition(":") for i in _split_flow(x[1:-1]))} if x.startswith("{") else _scalar(x))
        if "name" in m:
            v = m
    if isinstance(v, dict):
        name = v.get("name", "?")
        ps = v.get("params") or {}
        return name + ("(" + ",".join(f"{k}={ps[k]}" for k in ps) + ")" if ps else "")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value_label(key, x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, str) and ("trace" in key or "/" in v) and "/" in v:
        return os.path.basename(v)
    return str(v)


def policy_label(r):
    if "_label" in r:
        return r["_label"]
    if "policy" in r["params"]:
        return value_label("policy", r["params"]["policy"])
    return str(r.get("policy") or "-")


def is_oracle(r):
    p = r.get("policy")
    if p is None:
        p = value_label("policy", r["params"].get("policy", ""))
    return str(p).startswith("oracle")


def ordered_values(key, rows):
    """The distinct values of a swept key: numbers ascending, others in order of first appearance."""
    seen, out = set(), []
    for r in rows:
        if key not in r["params"]:
            continue
        v = r["params"][key]
        k = json.dumps(v, sort_keys=True)
        if k not in seen:
            seen.add(k)
            out.append(v)
    if out and all(as_number(v) is not None for v in out):
        out.sort(key=as_number)
    return out


def same(a, b):
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def request_ttfts(d, r):
    """Per-request TTFTs of a run from its results.json (inf: unfinished), else [its mean]."""
    res = load_json(os.path.join(d, r.get("run_dir") or f"runs/{r['id']}", "results.json"))
    if res and res.get("requests"):
        return [q["ttft_s"] if q.get("finished", True) else math.inf for q in res["requests"]]
    return [num(r.get("ttft_s"))]


def num(v):
    return math.inf if v is None else float(v)


def figure(r, key):
    """A run's figure as a float, or None where it is missing, null (the runner writes NaN as null; results.csv
    leaves it empty or writes "null") or not a number: such a run is left out of that figure's statistic."""
    v = r.get(key)
    if v is None or isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def has_slo(r):
    """Whether the run had a TTFT target (slo_s > 0): only those count for the SLO-violation rate (without
    one the simulator marks every request as met)."""
    return (as_number(r.get("slo_s")) or as_number(r["params"].get("slo_s")) or 0) > 0


# ---------------------------------------------------------------- statistics


def mean(xs):
    return sum(xs) / len(xs) if xs else math.nan


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return math.nan
    k = (len(xs) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    if xs[hi] == xs[lo]:
        return xs[lo]
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def group_stats(rows):
    ok = [r for r in rows if r["status"] == "ok"]
    s = {"runs": len(ok), "failed": len(rows) - len(ok)}
    if not ok:
        return s
    t = [num(r.get("ttft_s")) for r in ok]
    s.update(ttft_mean=mean(t), ttft_p50=pct(t, 50), ttft_p95=pct(t, 95))
    met = [figure(r, "slo_met") for r in ok if has_slo(r)]
    met = [x for x in met if x is not None]
    s["violations"] = 1 - mean(met) if met else math.nan
    # Missing (null) figures leave that run out of that column only; a column without any value stays empty.
    q = [x for x in (figure(r, "quality_loss_increase") for r in ok) if x is not None]
    if q:
        s["quality_mean"] = mean(q)
    worst = [x for x in (figure(r, "quality_loss_increase_worst") if "quality_loss_increase_worst" in r
                         else figure(r, "quality_loss_increase") for r in ok) if x is not None]
    if worst:
        s["quality_worst"] = max(worst)
    mb = [x for x in (figure(r, "payload_bytes") for r in ok) if x is not None]
    if mb:
        s["mbytes"] = mean(mb) / 1e6
    rc = [x for x in (figure(r, "recomputed_share") for r in ok) if x is not None]
    if rc:
        s["recomputed"] = mean(rc)
    ex = [x for x in (figure(r, "exact_loss_increase") for r in ok) if x is not None]
    if ex:
        s["exact_mean"] = mean(ex)
    return s


COLUMNS = [  # (key in group_stats, header, format)
    ("runs", "runs", lambda s: f"{s['runs']}" + (f" (+{s['failed']} failed)" if s["failed"] else "")),
    ("ttft_mean", "TTFT mean (s)", "{:.3f}"),
    ("ttft_p50", "p50 (s)", "{:.3f}"),
    ("ttft_p95", "p95 (s)", "{:.3f}"),
    ("violations", "SLO violations", lambda s: "-" if math.isnan(s["violations"]) else f"{100 * s['violations']:.0f} %"),
    ("quality_mean", "loss increase mean", lambda s: f"{100 * s['quality_mean']:.3f} %"),
    ("quality_worst", "worst", lambda s: f"{100 * s['quality_worst']:.3f} %"),
    ("mbytes", "MB fetched", "{:.1f}"),
    ("recomputed", "recomputed", lambda s: f"{100 * s['recomputed']:.0f} %"),
]


def cell(s, key, fmt):
    """(text, sort value) of one table cell."""
    if key != "runs" and key not in s:
        return "", None
    v = s.get(key)
    text = fmt(s) if callable(fmt) else fmt.format(v)
    return text, (v if key != "runs" else s["runs"])


class Sweep:
    def __init__(self, d):
        self.dir = os.path.abspath(d)
        self.rows = read_results(self.dir)
        self.keys = swept_keys(self.rows)
        if "policy" not in self.keys:  # one policy: failed runs (no resolved name) belong to it too
            names = {r["policy"] for r in self.rows if r.get("policy")}
            if len(names) == 1:
                for r in self.rows:
                    r["_label"] = next(iter(names))
        self.policies = []
        for r in self.rows:
            label = policy_label(r)
            if label not in self.policies:
                self.policies.append(label)
        self.reads_future = {policy_label(r) for r in self.rows if r.get("policy_reads_future")}
        self.oracles = {policy_label(r) for r in self.rows if r["status"] == "ok" and is_oracle(r)}

    def of_policy(self, p, rows=None):
        return [r for r in (rows if rows is not None else self.rows) if policy_label(r) == p]

    def table_keys(self):
        return [k for k in self.keys if k not in ("policy", "seed")]

    def mark(self, p):
        return p + ("*" if p in self.reads_future else "")

    def tables(self):
        """[(title, header, [[(text, sortvalue), ...], ...])]: per policy, then per policy x each swept key."""
        out = []
        hdr = ["policy"] + [h for _, h, _ in COLUMNS]
        body = []
        for p in self.policies:
            s = group_stats(self.of_policy(p))
            body.append([(self.mark(p), None)] + [cell(s, k, f) for k, _, f in COLUMNS])
        out.append(("Per policy", hdr, body))
        for key in self.table_keys():
            body = []
            for p in self.policies:
                for v in ordered_values(key, self.rows):
                    rs = [r for r in self.of_policy(p) if key in r["params"] and same(r["params"][key], v)]
                    if not rs:
                        continue
                    s = group_stats(rs)
                    sv = as_number(v)
                    body.append([(self.mark(p), None), (value_label(key, v), sv)] +
                                [cell(s, k, f) for k, _, f in COLUMNS])
            out.append((f"Per policy x {key}", ["policy", key] + hdr[1:], body))
        return out

    def oracle_lines(self):
        lines = []
        for p in sorted(self.oracles):
            rs = [r for r in self.of_policy(p) if r["status"] == "ok" and figure(r, "predicted_ttft_s") is not None]
            if rs:
                gap = [num(r["ttft_s"]) - figure(r, "predicted_ttft_s") for r in rs]
                lines.append(f"{p}: simulated minus its own predicted TTFT over {len(gap)} runs: "
                             f"mean {mean(gap):+.3f} s, min {min(gap):+.3f}, max {max(gap):+.3f}")
        return lines

    def failed(self):
        return [r for r in self.rows if r["status"] != "ok"]

    def run_dir(self, r):
        return os.path.join(self.dir, r.get("run_dir") or f"runs/{r['id']}")

    def scenario_path(self, r):
        """The run's one-run scenario: runs/<id>/scenario.yaml or points/<id>.yaml (the runner's copy)."""
        for p in (os.path.join(self.run_dir(r), "scenario.yaml"), os.path.join(self.dir, "points", f"{r.get('id')}.yaml")):
            if os.path.exists(p):
                return p
        return None


def md_table(header, body):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < len(header) - len(COLUMNS) else "---:" for i in range(len(header))) + "|"]
    for row in body:
        lines.append("| " + " | ".join(t for t, _ in row) + " |")
    return "\n".join(lines)


def one_line(text):
    """A multi-line text (a failed run's error is the tail of its log) on one line, for a table cell."""
    return " / ".join(l.strip() for l in str(text).splitlines() if l.strip())


def summary_md(sw):
    n_ok = sum(r["status"] == "ok" for r in sw.rows)
    out = ["# Sweep report", "",
           f"`{sw.dir}`: {len(sw.rows)} runs, {n_ok} ok, {len(sw.rows) - n_ok} failed; swept: "
           + (", ".join(f"{k} ({len(ordered_values(k, sw.rows))})" for k in sw.keys) or "nothing") + ".",
           "Statistics over runs (a run counts with its mean over its requests; failed runs are counted, not "
           "averaged). Loss increase: the profile's estimate, relative, lower is better."
           + (" * reads the future of the trace." if sw.reads_future else ""), ""]
    for title, header, body in sw.tables():
        out += [f"## {title}", "", md_table(header, body), ""]
    ol = sw.oracle_lines()
    if ol:
        out += ["## The oracle", ""] + ol + [""]
    fails = sw.failed()
    if fails:
        out += ["## Failed runs", "", "| id | " + " | ".join(sw.keys) + " | error |",
                "|---|" + "---|" * len(sw.keys) + "---|"]
        for r in fails:
            out.append(f"| {r.get('id', '')} | " + " | ".join(value_label(k, r['params'].get(k, ''))
                                                             for k in sw.keys)
                       + " | " + one_line(r.get("error", "")).replace("|", "\\|") + " |")
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- traces (kvstream's format rules, traces/formats.h)


class Trace:
    """Piecewise-constant rate: starts (s, increasing, first 0), rates (bit/s), duration (s), looping."""

    def __init__(self, starts, rates, duration, loops=True):
        self.starts, self.rates, self.duration, self.loops = starts, rates, duration, loops
        self.cum = [0.0]  # bits carried up to each segment's start
        for i in range(len(starts)):
            end = starts[i + 1] if i + 1 < len(starts) else duration
            self.cum.append(self.cum[-1] + rates[i] * (end - starts[i]))

    def _bits_to(self, t):  # bits from 0 to t (t >= 0), looping
        import bisect
        period_bits = self.cum[-1]
        k = 0
        if t >= self.duration:
            if not self.loops:
                return period_bits
            k = math.floor(t / self.duration)
            t -= k * self.duration
        i = max(0, bisect.bisect_right(self.starts, t) - 1)
        return k * period_bits + self.cum[i] + self.rates[i] * (t - self.starts[i])

    def bits_between(self, t0, t1):
        return self._bits_to(t1) - self._bits_to(t0)

    def scaled(self, f):
        return Trace(self.starts, [x * f for x in self.rates], self.duration, self.loops)


def parse_trace(text, name="trace"):
    """A trace file's rate form, as kvstream reads it (auto-detected: csv, mahimahi, two-column)."""
    lines = text.splitlines()
    first = next((l for l in lines if l.strip()), None)
    if first is None:
        raise ValueError(f"{name}: empty trace")
    if any(c.isalpha() or c == "_" for c in first) and "," in first:
        return _parse_csv(lines, name)
    if len(first.split()) == 1 and first.strip().isdigit():
        return _parse_mahimahi(lines, name)
    return _parse_two_column(lines, name)


def _parse_mahimahi(lines, name):
    times = [int(l) for l in lines if l != ""]
    period = times[-1]
    if period <= 0:
        raise ValueError(f"{name}: last timestamp must be > 0")
    bins = {}
    for t in times:  # a timestamp equal to the period belongs to the next period's bin 0
        bins[t % period] = bins.get(t % period, 0) + 1
    starts, rates, cursor = [], [], 0
    for ms in sorted(bins):
        if ms > cursor:
            starts.append(cursor / 1000.0)
            rates.append(0.0)
        starts.append(ms / 1000.0)
        rates.append(1500 * 8.0 * bins[ms] * 1000.0)
        cursor = ms + 1
    if cursor < period:
        starts.append(cursor / 1000.0)
        rates.append(0.0)
    return Trace(starts, rates, period / 1000.0)


def _parse_two_column(lines, name):
    rows = [tuple(float(x) for x in l.split()) for l in lines if l.strip()]
    if len(rows) < 2 or any(len(r) != 2 for r in rows):
        raise ValueError(f"{name}: expected at least 2 rows of 'time_s throughput_mbps'")
    t0 = rows[0][0]  # row i's value holds from t(i-1) to t(i); the first row's value is never used
    return Trace([rows[i - 1][0] - t0 for i in range(1, len(rows))], [rows[i][1] * 1e6 for i in range(1, len(rows))],
                 rows[-1][0] - t0)


def _parse_csv(lines, name, time_column="time_s", value_column="throughput_mbps"):
    body = [l for l in lines if l.strip()]
    header = [h.strip().strip('"') for h in body[0].split(",")]
    if time_column not in header or value_column not in header:
        raise ValueError(f"{name}: csv without columns {time_column}, {value_column} (the scenario's defaults)")
    ti, vi = header.index(time_column), header.index(value_column)
    rows, end = [], None
    for n, l in enumerate(body[1:], start=2):
        f = [x.strip().strip('"') for x in l.split(",")]
        if end is not None:
            raise ValueError(f"{name}: row {n} after the end row (a time with an empty value)")
        if f[vi] == "":  # the end row (traces/formats.h): the last row's value holds until its time
            end = float(f[ti])
            continue
        rows.append((float(f[ti]), float(f[vi]) * 1e6))
    if not rows:
        raise ValueError(f"{name}: csv without data rows")
    gaps = sorted(rows[i][0] - rows[i - 1][0] for i in range(1, len(rows)))
    if end is None and not gaps:
        raise ValueError(f"{name}: a single csv row without an end row says nothing of its duration")
    t0 = rows[0][0]
    stop = end if end is not None else rows[-1][0] + gaps[len(gaps) // 2]
    return Trace([r[0] - t0 for r in rows], [r[1] for r in rows], stop - t0)


def read_scenario(path):
    """The few keys a timeline needs from a one-run scenario YAML (block or flow maps, scalars):
    {'link.trace': ..., 'link.trace_scale': ..., 'link.rate_mbps': ..., 'link.trace_gen': ..., 'slo_s': ...}."""
    out = {}
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return out
    stack = []  # (indent, key)
    for raw in text.splitlines():
        line = _strip_comment(raw).rstrip()
        if not line.strip() or line.strip().startswith("- "):
            continue
        indent = len(line) - len(line.lstrip())
        if ":" not in line:
            continue
        key, _, val = line.strip().partition(":")
        key, val = key.strip(), val.strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        prefix = ".".join(k for _, k in stack)
        full = f"{prefix}.{key}" if prefix else key
        if not val:
            stack.append((indent, key))
        elif val.startswith("{") and val.endswith("}"):
            for item in _split_flow(val[1:-1]):
                k, _, v = item.partition(":")
                out[f"{full}.{k.strip()}"] = _scalar(v.strip())
        else:
            out[full] = _scalar(val)
    return out


def _strip_comment(line):
    q = None
    for i, c in enumerate(line):
        if c in "\"'" and q in (None, c):
            q = None if q else c
        elif c == "#" and q is None and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _split_flow(s):
    parts, depth, cur = [], 0, ""
    for c in s:
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    if cur.strip():
        parts.append(cur)
    return parts


def _scalar(v):
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        return v[1:-1]
    return _number(v)


def find_file(path, base):
    """A scenario's path: relative to the scenario's folder; else its traces/... suffix under the repository."""
    cand = path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))
    if os.path.exists(cand):
        return cand
    parts = cand.replace("\\", "/").split("/")
    for i in range(len(parts)):
        if parts[i] == "traces":
            c = os.path.join(ROOT, *parts[i:])
            if os.path.exists(c):
                return c
    return None


def run_bandwidth(scenario, res):
    """(Trace or None, description) of a run's bottleneck: its scenario's trace file (x trace_scale) or
    constant rate; None where neither can be read (a generated trace)."""
    sc = read_scenario(scenario) if scenario else {}
    run_dir = os.path.dirname(scenario) if scenario else "."
    trace = sc.get("link.trace")
    if sc.get("link.trace_gen"):
        return None, f"generated trace {sc['link.trace_gen']}: bandwidth not drawn"
    if trace:
        path = find_file(str(trace), run_dir)
        if path is None:
            return None, f"trace {trace} not found: bandwidth not drawn"
        try:
            with open(path) as f:
                tr = parse_trace(f.read(), path)
        except (OSError, ValueError) as e:
            return None, f"trace {os.path.basename(path)} not read ({e}): bandwidth not drawn"
        scale = float(sc.get("link.trace_scale", 1))
        return tr.scaled(scale), os.path.basename(path) + (f" x {scale:g}" if scale != 1 else "")
    ns = (res or {}).get("network_settings", {})
    if ns.get("link.bottleneck", "constant") != "constant":
        return None, f"{ns['link.bottleneck']}: bandwidth not drawn (no scenario.yaml)"
    rate = sc.get("link.rate_mbps")
    rate = float(rate) * 1e6 if rate is not None else float(ns.get("link.device_rate_bps", 100e6))
    return Trace([0.0], [rate], 1.0), f"constant {rate / 1e6:g} Mbit/s"


# ---------------------------------------------------------------- plots


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


MAX_TIMELINE_ROWS = 64  # chunk rows of one timeline
MARKERS = ["o", "s", "^", "v", "D", "P", "X", "<", ">"]
LINESTYLES = ["-", "--", "-.", ":"]  # overlapping lines stay visible


def colors(policies):
    plt = _plt()
    cmap = plt.get_cmap("tab10" if len(policies) <= 10 else "tab20")
    return {p: cmap(i % cmap.N) for i, p in enumerate(policies)}


def plot_cdf(sw, path):
    plt = _plt()
    col = colors(sw.policies)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    finite_max = 0
    for p in sw.policies:
        t = sorted(x for r in sw.of_policy(p) if r["status"] == "ok" for x in request_ttfts(sw.dir, r))
        if not t:
            continue
        fin = [x for x in t if math.isfinite(x)]
        finite_max = max([finite_max] + fin)
        if not fin:
            continue
        ys = [0.0] + [(i + 1) / len(t) for i in range(len(fin))]
        ax.step([fin[0]] + fin, ys, where="post", label=f"{sw.mark(p)} ({len(t)})", color=col[p], lw=1.8,
                ls=LINESTYLES[sw.policies.index(p) % len(LINESTYLES)])
    slos = ordered_values("slo_s", sw.rows) if "slo_s" in sw.keys else []
    for s in map(as_number, slos):
        if s is not None and s > 0:
            ax.axvline(s, color="0.5", ls=":", lw=1)
            ax.text(s, 1.01, f"SLO {s:g}", ha="center", va="bottom", fontsize=7, color="0.4",
                    transform=ax.get_xaxis_transform())
    if finite_max > 0:
        fin_all = [num(r.get("ttft_s")) for r in sw.rows if r["status"] == "ok"]
        lo = min(x for x in fin_all if math.isfinite(x))
        if finite_max / max(lo, 1e-9) > 20:
            ax.set_xscale("log")
    ax.set_xlabel("TTFT (s)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.set_title("TTFT CDF per policy (requests of ok runs)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto(points):
    """Lower-left frontier of (x, y) points: no other point has both smaller or equal x and y."""
    front, best = [], math.inf
    for x, y in sorted(points):
        if y < best:
            front.append((x, y))
            best = y
    return front


def plot_quality_ttft(sw, path):
    plt = _plt()
    col = colors(sw.policies)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    big = False
    for p in sw.policies:
        rs = [r for r in sw.of_policy(p) if r["status"] == "ok" and math.isfinite(num(r.get("ttft_s")))
              and figure(r, "quality_loss_increase") is not None]
        if not rs:
            continue
        xs = [num(r["ttft_s"]) for r in rs]
        ys = [100 * figure(r, "quality_loss_increase") for r in rs]
        orc = p in sw.oracles
        ax.scatter(xs, ys, s=60 if orc else 22, marker="*" if orc else "o", color="k" if orc else col[p],
                   alpha=0.9 if orc else 0.55, label=sw.mark(p), zorder=3 if orc else 2)
        ax.scatter([mean(xs)], [mean(ys)], s=120, marker="D", facecolor="none", edgecolor="k" if orc else col[p],
                   lw=1.6, zorder=4)
        big = big or max(xs) / max(min(xs), 1e-9) > 20
    opts = [(num(r["ttft_s"]), 100 * figure(r, "quality_loss_increase")) for r in sw.rows
            if r["status"] == "ok" and policy_label(r) in sw.oracles and math.isfinite(num(r.get("ttft_s")))
            and figure(r, "quality_loss_increase") is not None]
    if opts:
        f = pareto(opts)
        ax.step([x for x, _ in f], [y for _, y in f], where="post", color="k", lw=1.2, ls="--",
                label="oracle frontier", zorder=3)
    if big:
        ax.set_xscale("log")
    ax.set_xlabel("TTFT (s), one point per run (diamond: policy mean)")
    ax.set_ylabel("estimated loss increase (%)")
    ax.grid(alpha=0.3)
    ax.set_title("Quality vs TTFT (lower-left is better)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_slo(sw, path):
    plt = _plt()
    col = colors(sw.policies)
    slos = [s for s in ordered_values("slo_s", sw.rows) if as_number(s) is not None]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for p in sw.policies:
        xs, viol, qual = [], [], []
        for s in slos:
            st = group_stats([r for r in sw.of_policy(p) if same(r["params"].get("slo_s"), s)])
            if st["runs"]:
                xs.append(as_number(s))
                viol.append(100 * st["violations"])
                qual.append(100 * st.get("quality_mean", math.nan))
        if xs:
            i = sw.policies.index(p)
            style = dict(color=col[p], label=sw.mark(p), marker=MARKERS[i % len(MARKERS)],
                         ls=LINESTYLES[i % len(LINESTYLES)], ms=7 - (i % 3) * 1.5)
            a1.plot(xs, viol, **style)
            a2.plot(xs, qual, **style)
    a1.set_xlabel("SLO (s)")
    a1.set_ylabel("SLO violations (% of runs' requests)")
    a2.set_xlabel("SLO (s)")
    a2.set_ylabel("mean estimated loss increase (%)")
    for a in (a1, a2):
        a.grid(alpha=0.3)
    a1.set_ylim(-3, 103)
    a1.legend(fontsize=8)
    fig.suptitle("Violation rate and quality vs the SLO", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_events(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line))
    except OSError:
        pass
    return out


def timeline_data(events):
    """{request: {"arrival", "first_token", "chunks": {chunk: {...}}}} from events.jsonl."""
    reqs = {}
    for e in events:
        q = reqs.setdefault(e.get("request", 0), {"chunks": {}, "gpu": []})
        ev, t = e.get("event"), e.get("t_s", 0.0)
        if ev == "request":
            q["arrival"] = t
        elif ev == "first_token":
            q["first_token"] = t
        elif "chunk" in e:
            c = q["chunks"].setdefault(e["chunk"], {})
            if ev == "decision":
                c["decided"] = t
                c["level"] = "R" if e.get("action") == "recompute" else str(e.get("level", "?"))
            elif ev in ("first_byte", "last_byte"):
                c[ev] = t
            elif ev in ("decode_start", "recompute_start"):
                c[ev] = t
            elif ev in ("decode_end", "recompute_end"):
                kind = ev.split("_")[0]
                c[ev] = t
                q["gpu"].append((kind, c.get(kind + "_start", t), t))
    return reqs


def plot_timeline(sw, r, path):
    """Returns a note (str) about what could not be drawn, or ''."""
    plt = _plt()
    rd = sw.run_dir(r)
    res = load_json(os.path.join(rd, "results.json"))
    reqs = timeline_data(read_events(os.path.join(rd, "events.jsonl")))
    if not reqs:
        return None
    rows = [(qi, ci) for qi in sorted(reqs) for ci in sorted(reqs[qi]["chunks"])]
    if len(rows) > MAX_TIMELINE_ROWS:  # many requests: the first ones that fit
        keep, count = set(), 0
        for qi in sorted(reqs):
            if keep and count + len(reqs[qi]["chunks"]) > MAX_TIMELINE_ROWS:
                break
            keep.add(qi)
            count += len(reqs[qi]["chunks"])
        dropped = len(reqs) - len(keep)
        reqs = {qi: reqs[qi] for qi in keep}
        rows = [(qi, ci) for qi, ci in rows if qi in keep]
        more = f"the first {len(keep)} of {len(keep) + dropped} requests drawn"
    else:
        more = ""
    end = max([q.get("first_token", 0) for q in reqs.values()] +
              [max([v for c in q["chunks"].values() for v in c.values() if isinstance(v, float)] + [0])
               for q in reqs.values()])
    slo = as_number(r.get("slo_s")) or as_number(r["params"].get("slo_s")) or 0
    start = min([q["arrival"] for q in reqs.values() if "arrival" in q] or [0.0])
    if slo:
        end = max([end] + [q["arrival"] + slo for q in reqs.values() if "arrival" in q])
    start = max(0.0, start - 0.02 * (end - start))
    end = end + 0.04 * (end - start) if end > start else start + 1e-3
    trace, tdesc = run_bandwidth(sw.scenario_path(r), res)
    h = 2.0 + 0.28 * len(rows)
    if trace:
        fig, (ab, ax) = plt.subplots(2, 1, figsize=(9, h + 1.6), sharex=True,
                                     gridspec_kw={"height_ratios": [1.6, h]})
        import numpy as np
        n = 400
        edges = np.linspace(start, end, n + 1)
        rate = [trace.bits_between(edges[i], edges[i + 1]) / (edges[i + 1] - edges[i]) / 1e6 for i in range(n)]
        ab.fill_between(edges[:-1], rate, step="post", color="#9ecae1", lw=0)
        ab.step(edges[:-1], rate, where="post", color="#3182bd", lw=0.8)
        ab.set_ylabel("Mbit/s")
        ab.set_title(f"bottleneck: {tdesc} (mean over {1000 * (end - start) / n:.3g} ms bins)", fontsize=8)
        ab.grid(alpha=0.3)
        note = ""
    else:
        fig, ax = plt.subplots(figsize=(9, h))
        note = tdesc
    if more:
        note = f"{note}; {more}" if note else more
    import matplotlib.cm as cm
    lv = sorted({c.get("level") for q in reqs.values() for c in q["chunks"].values() if c.get("level") not in (None, "R")},
                key=lambda x: (len(x), x))
    lcol = {l: cm.viridis(i / max(1, len(lv) - 1) * 0.85) for i, l in enumerate(lv)}
    ylabels = []
    for y, (qi, ci) in enumerate(rows):
        c = reqs[qi]["chunks"][ci]
        ylabels.append(f"r{qi} c{ci}" if len(reqs) > 1 else f"chunk {ci}")
        lvl = c.get("level", "?")
        if "decided" in c and "first_byte" in c:
            ax.plot([c["decided"], c["first_byte"]], [y + 0.18] * 2, color="0.55", lw=1.2)
            ax.plot([c["decided"]], [y + 0.18], "|", color="0.3", ms=7)
        if "first_byte" in c and "last_byte" in c:
            ax.barh(y + 0.18, c["last_byte"] - c["first_byte"], left=c["first_byte"], height=0.34,
                    color=lcol.get(lvl, "0.5"), edgecolor="k", lw=0.4)
            ax.text(c["last_byte"], y + 0.18, f" L{lvl}", va="center", fontsize=7)
        if "decode_start" in c and "decode_end" in c:
            ax.barh(y - 0.2, max(c["decode_end"] - c["decode_start"], (end - start) * 0.002), left=c["decode_start"],
                    height=0.3, color="#31a354", edgecolor="k", lw=0.4)
        if "recompute_start" in c and "recompute_end" in c:
            ax.barh(y - 0.2, c["recompute_end"] - c["recompute_start"], left=c["recompute_start"], height=0.3,
                    color="#de2d26", edgecolor="k", lw=0.4, hatch="//")
            ax.text(c["recompute_end"], y - 0.2, " R", va="center", fontsize=7, color="#a50f15")
    for qi, q in reqs.items():
        if "arrival" in q and q["chunks"]:
            y0 = rows.index((qi, min(q["chunks"])))
            ax.plot([q["arrival"]], [y0 - 0.45], marker="v", color="k", ms=6, clip_on=False)
        if "first_token" in q:
            ax.axvline(q["first_token"], color="k", lw=1.2)
            ax.text(q["first_token"], len(rows) - 0.4, f" first token r{qi}" if len(reqs) > 1 else " first token",
                    fontsize=7, va="bottom")
        if slo and "arrival" in q:
            ax.axvline(q["arrival"] + slo, color="#de2d26", ls="--", lw=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(ylabels, fontsize=7)
    ax.set_ylim(-0.7, len(rows) - 0.1)
    ax.invert_yaxis()
    ax.set_xlim(start, end)
    ax.set_xlabel("simulated time (s)")
    ax.grid(axis="x", alpha=0.3)
    from matplotlib.patches import Patch
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color="k", marker="v", ls="", label="request arrives"),
               Line2D([], [], color="0.55", label="chunk requested -> first byte"),
               Patch(color="#31a354", label="GPU decode"), Patch(facecolor="#de2d26", hatch="//", label="GPU recompute"),
               Line2D([], [], color="k", label="first token")]
    handles += [Patch(color=lcol[l], label=f"bytes at L{l}") for l in lv]
    if slo:
        handles.append(Line2D([], [], color="#de2d26", ls="--", label=f"SLO {slo:g} s"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    params = ", ".join(f"{k}={value_label(k, v)}" for k, v in r["params"].items())
    fig.suptitle(f"run {r.get('id', '')}: {params}\nTTFT {num(r.get('ttft_s')):.3f} s, levels {r.get('levels', '')}",
                 fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return note


# ---------------------------------------------------------------- html

CSS = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px}
th{background:#eef;cursor:pointer;user-select:none;white-space:nowrap}th.asc:after{content:" \\25B2"}
th.desc:after{content:" \\25BC"}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#f8f8fb}img{max-width:100%;border:1px solid #ddd;margin:0.3em 0}
.mark{color:#b00;font-weight:bold}.note{color:#666;font-size:12px}h2{margin-top:1.6em}
.better{background:#e3f4e3!important}.worse{background:#fbe3e3!important}"""

JS = """function sortTable(th){var t=th.closest('table'),i=[...th.parentNode.children].indexOf(th),
b=t.tBodies[0],rs=[...b.rows],asc=!th.classList.contains('asc');
[...th.parentNode.children].forEach(h=>h.classList.remove('asc','desc'));th.classList.add(asc?'asc':'desc');
var key=r=>{var c=r.cells[i],v=c.getAttribute('data-v');return v===null||v===''?c.textContent:parseFloat(v)};
rs.sort((x,y)=>{var a=key(x),c=key(y),n=typeof a==='number'&&typeof c==='number';
var d=n?a-c:String(a).localeCompare(String(c),undefined,{numeric:true});return asc?d:-d});
rs.forEach(r=>b.appendChild(r))}
document.querySelectorAll('table.sortable th').forEach(th=>th.addEventListener('click',()=>sortTable(th)));
window.addEventListener('load',function(){var ts=document.querySelectorAll('table.sortable'),
im=document.querySelectorAll('img'),bad=[...im].filter(x=>!x.complete||x.naturalWidth<10).length,
rows=[...ts].reduce((s,t)=>s+t.tBodies[0].rows.length,0),ok=true;
var t=document.getElementById('runs');if(t&&t.tBodies[0].rows.length>1){var th=t.tHead.rows[0].cells[0];
sortTable(th);sortTable(th);var v=[...t.tBodies[0].rows].map(r=>r.cells[0].textContent);
ok=v.every((x,k)=>k==0||String(v[k-1]).localeCompare(String(x),undefined,{numeric:true})>=0);sortTable(th)}
document.getElementById('selfcheck').textContent='selfcheck: '+(bad||!ok?'FAILED':'ok')+' tables='+ts.length+
' rows='+rows+' images='+im.length+' broken='+bad+' sort='+(ok?'ok':'wrong')});"""


def html_table(header, body, table_id=None, classes=None):
    out = [f"<table class=\"sortable\"{f' id={chr(34)}{table_id}{chr(34)}' if table_id else ''}><thead><tr>"]
    out += [f"<th>{html.escape(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(body):
        out.append("<tr>")
        for j, (text, v) in enumerate(row):
            cls = (classes[i][j] if classes else "") or ""
            if v is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
                vv = "" if (isinstance(v, float) and math.isnan(v)) else repr(float(v))
                out.append(f"<td class=\"n {cls}\" data-v=\"{vv}\">{html.escape(text)}</td>")
            else:
                out.append(f"<td class=\"{cls}\">{html.escape(str(text))}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def img_tag(path, alt):
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    return f"<img alt=\"{html.escape(alt)}\" src=\"data:image/png;base64,{data}\">"


def page(title, body):
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}<p id=\"selfcheck\" class=\"note\">selfcheck: not run</p>"
            f"<script>{JS}</script></body></html>\n")


def runs_table(sw):
    header = ["index", "id"] + sw.keys + ["status", "TTFT (s)", "SLO met", "loss increase", "MB", "levels", "error"]
    body = []
    for r in sw.rows:
        ok = r["status"] == "ok"
        row = [(str(r.get("index", "")), r.get("index")), (r.get("id", ""), None)]
        for k in sw.keys:
            v = r["params"].get(k, "")
            row.append((value_label(k, v), as_number(v)))
        row.append((r["status"], None))
        if ok:
            t = num(r.get("ttft_s"))
            met, q, b = (figure(r, k) for k in ("slo_met", "quality_loss_increase", "payload_bytes"))
            row += [(f"{t:.3f}", t if math.isfinite(t) else 1e300),
                    (f"{100 * met:.0f} %", met) if met is not None else ("", None),
                    (f"{100 * q:.3f} %", q) if q is not None else ("", None),
                    (f"{b / 1e6:.1f}", b / 1e6) if b is not None else ("", None),
                    (str(r.get("levels", "")), None), ("", None)]
        else:
            row += [("", None)] * 5 + [(str(r.get("error", "")), None)]
        body.append(row)
    return header, body


def select_runs(sw, ids, n):
    ok = [r for r in sw.rows if r["status"] == "ok"]
    if ids:
        want = ids.split(",")
        return [r for r in ok if r.get("id") in want]
    out = []
    for p in sw.policies:
        rs = sw.of_policy(p, ok)
        if rs:
            out.append(rs[0])
    return out[:n]


def report(d, out, run_ids="", max_timelines=8):
    sw = Sweep(d)
    os.makedirs(out, exist_ok=True)
    md = summary_md(sw)
    plots = []
    if any(r["status"] == "ok" for r in sw.rows):
        plot_cdf(sw, os.path.join(out, "ttft_cdf.png"))
        plots.append(("ttft_cdf.png", "TTFT CDF per policy"))
        plot_quality_ttft(sw, os.path.join(out, "quality_ttft.png"))
        plots.append(("quality_ttft.png", "Quality vs TTFT"))
        if "slo_s" in sw.keys:
            plot_slo(sw, os.path.join(out, "slo.png"))
            plots.append(("slo.png", "SLO-violation rate and quality vs SLO"))
    timelines = []
    for r in select_runs(sw, run_ids, max_timelines):
        name = f"timeline_{r.get('id', r['index'])}.png"
        note = plot_timeline(sw, r, os.path.join(out, name))
        if note is not None:
            timelines.append((name, r, note))

    figures = "".join(f"![{alt}]({name})\n\n" for name, alt in plots)
    figures += "".join(f"![timeline of run {r.get('id', '')}]({name})\n\n" for name, r, _ in timelines)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(md + ("\n## Plots\n\n" + figures if figures else ""))
    n_ok = sum(r["status"] == "ok" for r in sw.rows)
    body = [f"<h1>Sweep report</h1><p><code>{html.escape(sw.dir)}</code>: {len(sw.rows)} runs, {n_ok} ok, "
            f"{len(sw.rows) - n_ok} failed. Swept: {html.escape(', '.join(sw.keys) or 'nothing')}.</p>",
            "<p class=\"note\">Statistics over runs (a run counts with its mean over its requests); failed runs are "
            "counted, not averaged. Loss increase: the profile's estimate, relative, lower is better. "
            "Click a column header to sort." + (" * reads the future of the trace." if sw.reads_future else "")
            + "</p>"]
    for title, header, tb in sw.tables():
        body.append(f"<h2>{html.escape(title)}</h2>" + html_table(header, tb))
    ol = sw.oracle_lines()
    if ol:
        body.append("<h2>The oracle</h2>" + "".join(f"<p>{html.escape(l)}</p>" for l in ol))
    if plots:
        body.append("<h2>Plots</h2>")
        for name, alt in plots:
            body.append(f"<div>{img_tag(os.path.join(out, name), alt)}</div>")
    if timelines:
        body.append("<h2>Timelines</h2>")
        for name, r, note in timelines:
            body.append(f"<h3>run {html.escape(str(r.get('id', '')))} ({html.escape(policy_label(r))})</h3>"
                        + (f"<p class=\"note\">{html.escape(note)}</p>" if note else "")
                        + f"<div>{img_tag(os.path.join(out, name), 'timeline of run ' + str(r.get('id', '')))}</div>")
    header, rb = runs_table(sw)
    body.append("<h2>All runs</h2>" + html_table(header, rb, table_id="runs"))
    with open(os.path.join(out, "report.html"), "w") as f:
        f.write(page("Sweep report", "".join(body)))
    return md, sw


# ---------------------------------------------------------------- compare


def point_key(r):
    return json.dumps({k: v for k, v in r["params"].items() if k != "seed"}, sort_keys=True)


def mean_and_var(rows, metric):
    """(mean over runs, variance of that mean from the spread over replicates or None, n, pooled
    per-run variance or None) of a metric."""
    ok = [r for r in rows if r["status"] == "ok" and figure(r, metric) is not None
          and (metric != "slo_met" or has_slo(r))]  # violations: as in the report, runs with an SLO only
    vals = [figure(r, metric) for r in ok]
    if not vals:
        return math.nan, None, 0, None
    pts = {}
    for r in ok:
        pts.setdefault(point_key(r), []).append(figure(r, metric))
    ss, dof = 0.0, 0
    for xs in pts.values():
        if len(xs) > 1:
            m = mean(xs)
            ss += sum((x - m) ** 2 for x in xs)
            dof += len(xs) - 1
    if dof == 0:
        return mean(vals), None, len(vals), None
    pooled = ss / dof
    n = len(vals)
    var = 0.0
    for xs in pts.values():
        s2 = sum((x - mean(xs)) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else pooled
        var += len(xs) * s2
    return mean(vals), var / n ** 2, n, pooled


COMPARE_METRICS = [  # (metric, header, scale, unit, lower is better)
    ("ttft_s", "TTFT mean (s)", 1, "", True),
    ("slo_met", "SLO violations", -100, " %", True),
    ("quality_loss_increase", "loss increase", 100, " %", True),
    ("payload_bytes", "MB", 1e-6, "", True),
]


def compare_groups(a, b):
    """[(policy, key, value)] present in both sweeps: every policy, then policy x every swept key value."""
    groups = [(p, None, None) for p in a.policies if p in b.policies]
    keys = [k for k in a.table_keys() if k in b.table_keys()]
    for k in keys:
        for p in a.policies:
            if p not in b.policies:
                continue
            for v in ordered_values(k, a.rows):
                if any(same(r["params"].get(k), v) for r in b.of_policy(p)):
                    groups.append((p, k, v))
    return groups


def compare(da, db, out):
    a, b = Sweep(da), Sweep(db)
    os.makedirs(out, exist_ok=True)
    groups = compare_groups(a, b)
    header = ["policy", "group"]
    for _, h, _, _, _ in COMPARE_METRICS:
        header += [f"{h} A", "B", "B - A"]
    body, classes, marked = [], [], 0
    spread_known = False
    for p, k, v in groups:
        ra = [r for r in a.of_policy(p) if k is None or same(r["params"].get(k), v)]
        rb = [r for r in b.of_policy(p) if k is None or same(r["params"].get(k), v)]
        row = [(p, None), ("all" if k is None else f"{k}={value_label(k, v)}", None)]
        cls = ["", ""]
        for metric, _, scale, unit, lower_better in COMPARE_METRICS:
            ma, va, na, pa = mean_and_var(ra, metric)
            mb, vb, nb, pb = mean_and_var(rb, metric)
            if va is None and pb is not None and na:  # one side without replicates: assume the other's spread
                va = pb / na
            if vb is None and pa is not None and nb:
                vb = pa / nb
            if metric == "slo_met":  # shown as the violation rate
                ma, mb = (1 - ma, 1 - mb)
            sa, sb = (ma * abs(scale), mb * abs(scale))
            d = sb - sa
            mark, c = "", ""
            if va is not None or vb is not None:
                spread_known = True
                se = abs(scale) * math.sqrt((va or 0) + (vb or 0))
                if math.isfinite(d) and abs(d) > 2 * se and abs(d) > 1e-12:
                    mark = " *"
                    marked += 1
                    c = "better" if (d < 0) == lower_better else "worse"
            prec = 1 if metric in ("slo_met", "payload_bytes") else 3
            row += [(f"{sa:.{prec}f}{unit}" if math.isfinite(sa) else "-", sa),
                    (f"{sb:.{prec}f}{unit}" if math.isfinite(sb) else "-", sb),
                    (f"{d:+.{prec}f}{unit}{mark}" if math.isfinite(d) else "-", d)]
            cls += ["", "", c]
        body.append(row)
        classes.append(cls)
    only_a = [p for p in a.policies if p not in b.policies]
    only_b = [p for p in b.policies if p not in a.policies]
    intro = (f"A = `{a.dir}` ({len(a.rows)} runs, {len(a.failed())} failed), "
             f"B = `{b.dir}` ({len(b.rows)} runs, {len(b.failed())} failed). "
             + ("`*`: |B - A| > 2 standard errors of the difference, from the spread over replicates (runs that "
                "differ only in seed)." if spread_known else
                "No point has replicates (runs that differ only in seed): the spread is unknown, nothing is marked."))
    extra = []
    if only_a:
        extra.append("only in A: " + ", ".join(only_a))
    if only_b:
        extra.append("only in B: " + ", ".join(only_b))
    lines = ["# Compare", "", intro, ""] + ([", ".join(extra), ""] if extra else [])
    lines += ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    lines += ["| " + " | ".join(t for t, _ in row) + " |" for row in body]
    lines += ["", f"{marked} differences marked."]
    md = "\n".join(lines) + "\n"
    with open(os.path.join(out, "compare.md"), "w") as f:
        f.write(md)
    hb = [f"<h1>Compare</h1><p>{html.escape(intro).replace('`', '')}</p>"]
    if extra:
        hb.append(f"<p>{html.escape('; '.join(extra))}</p>")
    hb.append("<p class=\"note\">green: better beyond the spread, red: worse. Click a header to sort.</p>")
    hb.append(html_table(header, body, table_id="compare", classes=classes))
    with open(os.path.join(out, "compare.html"), "w") as f:
        f.write(page("Compare", "".join(hb)))
    return md, body


# ---------------------------------------------------------------- self-test


def self_test():
    fx = os.path.join(ROOT, "tests", "analysis", "fixtures", "sweep")
    rows = [json.loads(l) for l in open(os.path.join(fx, "results.jsonl")) if l.strip()]
    tmp = tempfile.mkdtemp(prefix="kvstream-report-test-")
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    try:
        md, sw = report(fx, os.path.join(tmp, "report"))
        # Hand computation, straight from results.jsonl, without the report's helpers.
        for pol in ("fixed:2", "rate", "oracle"):
            rs = [r for r in rows if r["params"]["policy"] == pol]
            ok = [r for r in rs if r["status"] == "ok"]
            t = sorted(r["ttft_s"] for r in ok)
            n = len(t)
            def lin(p):
                k = (n - 1) * p
                i = int(k)
                return t[i] + (t[min(i + 1, n - 1)] - t[i]) * (k - i)
            want = {"ttft_mean": sum(t) / n, "ttft_p50": lin(0.5), "ttft_p95": lin(0.95),
                    "violations": sum(1 - r["slo_met"] for r in ok) / n,
                    "quality_mean": sum(r["quality_loss_increase"] for r in ok) / n,
                    "quality_worst": max(r["quality_loss_increase_worst"] for r in ok),
                    "mbytes": sum(r["payload_bytes"] for r in ok) / n / 1e6}
            got = group_stats(rs)
            for k, v in want.items():
                check(abs(got[k] - v) <= 1e-12 * max(1, abs(v)), f"{pol} {k}: {got[k]} != {v}")
            check(got["failed"] == len(rs) - n, f"{pol}: failed {got['failed']} != {len(rs) - n}")
            # The markdown row carries the same numbers at its precision.
            label = pol + ("*" if pol == "oracle" else "")
            line = next((l for l in md.splitlines() if l.startswith(f"| {label} |")), "")
            runs = f"{n}" + (f" (+{len(rs) - n} failed)" if len(rs) > n else "")
            expect = (f"| {label} | {runs} | {want['ttft_mean']:.3f} | {want['ttft_p50']:.3f} | "
                      f"{want['ttft_p95']:.3f} | {100 * want['violations']:.0f} % | "
                      f"{100 * want['quality_mean']:.3f} % | {100 * want['quality_worst']:.3f} % | "
                      f"{want['mbytes']:.1f} |")
            check(line.startswith(expect), f"summary.md row for {pol}:\n  got  {line}\n  want {expect}")
        # Per policy x slo_s: one cell by hand.
        rs = [r for r in rows if r["params"]["policy"] == "rate" and r["params"]["slo_s"] == 3.0 and r["status"] == "ok"]
        v = sum(1 - r["slo_met"] for r in rs) / len(rs)
        check(f"| rate | 3 | {len(rs)} |" in md, "per-slo_s table lacks the rate x 3 row")
        check(abs(group_stats(rs)["violations"] - v) < 1e-12, "rate x slo 3 violations")
        check("## Per policy x slo_s" in md and "## Per policy x link.trace" in md, "per-key tables missing")
        check("## Per policy x seed" not in md, "seed must not get a table")
        check(md.count("worker killed by signal 9") == 1, "the failed run must be listed")
        for name in ("summary.md", "ttft_cdf.png", "quality_ttft.png", "slo.png", "report.html"):
            check(os.path.getsize(os.path.join(tmp, "report", name)) > 100, f"{name} missing or empty")
        tl = [f for f in os.listdir(os.path.join(tmp, "report")) if f.startswith("timeline_")]
        check(len(tl) == 3, f"one timeline per policy expected, got {tl}")
        page_text = open(os.path.join(tmp, "report", "report.html")).read()
        check("http://" not in page_text.replace("http://www.w3.org", "") and "https://" not in page_text,
              "report.html must not reference the network")
        check(page_text.count("data:image/png;base64,") == 3 + 3, "report.html must embed 3 plots and 3 timelines")
        # results.csv alone gives the same tables as results.jsonl.
        csv_only = os.path.join(tmp, "csv-only")
        os.makedirs(csv_only)
        shutil.copy(os.path.join(fx, "results.csv"), csv_only)
        check(Sweep(csv_only).tables() == sw.tables(), "results.csv and results.jsonl give different tables")
        # Swept values as strings, as `kvstream run` writes them ("1.5", "{name: fixed, params: {level: 2}}").
        as_text = os.path.join(tmp, "as-text")
        os.makedirs(as_text)
        with open(os.path.join(as_text, "results.jsonl"), "w") as f:
            for r in rows:
                r = dict(r, params={k: (f"{v:g}" if isinstance(v, float) else str(v)) for k, v in r["params"].items()})
                f.write(json.dumps(r) + "\n")
        check(Sweep(as_text).tables() == sw.tables(), "swept values as strings give different tables")
        check(value_label("policy", "{name: fixed, params: {level: 2}}") == "fixed(level=2)", "policy flow map label")
        # The oracle's frontier: lower-left points only.
        check(pareto([(1, 5), (2, 3), (3, 4), (4, 1)]) == [(1, 5), (2, 3), (4, 1)], "pareto")
        # Trace readers follow kvstream's rules (traces/formats.h).
        mm = parse_trace("0\n0\n2\n4\n")  # period 4 ms; bin 0 has 3 (the 4 wraps to it), bin 2 has 1
        check(abs(mm.bits_between(0, 0.004) - 4 * 12000) < 1e-6, f"mahimahi bits per period {mm.bits_between(0, 0.004)}")
        check(abs(mm.bits_between(0.004, 0.008) - 4 * 12000) < 1e-6, "mahimahi loops")
        tc = parse_trace("10 99\n11 2\n13 4\n")  # segment [0,1) at 2 Mbit/s, [1,3) at 4
        check(abs(tc.bits_between(0, 3) - 10e6) < 1e-3 and abs(tc.bits_between(3, 4) - 2e6) < 1e-3, "two-column")
        cv = parse_trace("time_s,throughput_mbps\n0,1\n2,3\n")  # [0,2) at 1, [2,4) at 3 (median gap)
        check(abs(cv.bits_between(0, 4) - 8e6) < 1e-3, "csv")
        ce = parse_trace("time_s,throughput_mbps\n0,1\n2,3\n5,\n")  # the end row: [2,5) at 3
        check(abs(ce.duration - 5) < 1e-12 and abs(ce.bits_between(0, 5) - 11e6) < 1e-3, "csv end row")
        sc = read_scenario(os.path.join(fx, "runs", rows[0]["id"], "scenario.yaml"))
        check(sc.get("link.trace_scale") == 150 and str(sc.get("link.trace", "")).endswith("norway_bus_1"), f"scenario {sc}")
        # Compare: B = A with the oracle's TTFT x 1.5 (marked) and a tiny change to fixed:2's (not marked).
        db = os.path.join(tmp, "b")
        os.makedirs(db)
        with open(os.path.join(db, "results.jsonl"), "w") as f:
            for r in rows:
                r = json.loads(json.dumps(r))
                if r["status"] == "ok" and r["params"]["policy"] == "oracle":
                    r["ttft_s"] *= 1.5
                if r["status"] == "ok" and r["params"]["policy"] == "fixed:2":
                    r["ttft_s"] += 1e-4
                f.write(json.dumps(r) + "\n")
        cmd, body = compare(fx, db, os.path.join(tmp, "cmp"))
        allrow = {row[0][0]: row for row in body if row[1][0] == "all"}
        check(allrow["oracle"][4][0].endswith(" *"), f"oracle's TTFT change must be marked: {allrow['oracle'][4][0]}")
        check(not allrow["fixed:2"][4][0].endswith("*"), "fixed:2's tiny change must not be marked")
        check(not allrow["rate"][4][0].endswith("*"), "rate unchanged must not be marked")
        check(not any(c[0].endswith("*") for row in body for c in row[5:]), "only TTFT changed")
        # Its standard error by hand: rate's replicate points (same params but seed) in A and B.
        ok = [r for r in rows if r["params"]["policy"] == "rate" and r["status"] == "ok"]
        pts = {}
        for r in ok:
            pts.setdefault((r["params"]["slo_s"], r["params"]["link.trace"]), []).append(r["ttft_s"])
        s2 = {k: (sum((x - sum(v) / len(v)) ** 2 for x in v) / (len(v) - 1)) for k, v in pts.items() if len(v) > 1}
        pooled = sum(s2[k] * (len(pts[k]) - 1) for k in s2) / sum(len(pts[k]) - 1 for k in s2)
        var_a = sum(len(v) * s2.get(k, pooled) for k, v in pts.items()) / len(ok) ** 2
        m, var, _, _ = mean_and_var(ok, "ttft_s")
        check(abs(var - var_a) < 1e-12 * max(1, var_a), f"variance {var} != {var_a}")
        check(os.path.getsize(os.path.join(tmp, "cmp", "compare.html")) > 500, "compare.html")
        # Null (NaN) or missing figures: left out of that figure's statistic only, no crash; from results.jsonl
        # (null) and from results.csv (empty, or "null" as nlohmann writes NaN).
        ok_i = [i for i, r in enumerate(rows) if r["status"] == "ok" and r["params"]["policy"] == "rate"]
        holes = json.loads(json.dumps(rows))
        holes[ok_i[0]]["quality_loss_increase_worst"] = None
        holes[ok_i[1]]["quality_loss_increase"] = None
        holes[ok_i[2]]["payload_bytes"] = None
        holes[ok_i[3]].pop("slo_met")
        rate_ok = [holes[i] for i in ok_i]
        want = {"quality_mean": mean([r["quality_loss_increase"] for r in rate_ok if r["quality_loss_increase"] is not None]),
                "quality_worst": max(r["quality_loss_increase_worst"] for r in rate_ok
                                     if r["quality_loss_increase_worst"] is not None),
                "mbytes": mean([r["payload_bytes"] for r in rate_ok if r["payload_bytes"] is not None]) / 1e6,
                "violations": 1 - mean([r["slo_met"] for r in rate_ok if "slo_met" in r]),
                "ttft_mean": mean([r["ttft_s"] for r in rate_ok])}
        for form in ("jsonl", "csv"):
            dh = os.path.join(tmp, "holes-" + form)
            os.makedirs(dh)
            os.symlink(os.path.join(fx, "runs"), os.path.join(dh, "runs"))
            if form == "jsonl":
                with open(os.path.join(dh, "results.jsonl"), "w") as f:
                    f.writelines(json.dumps(r) + "\n" for r in holes)
            else:
                cols = ["id", "index", "status", "error", "ttft_s", "slo_s", "slo_met", "quality_loss_increase",
                        "quality_loss_increase_worst", "payload_bytes", "recomputed_share", "policy", "run_dir"]
                with open(os.path.join(dh, "results.csv"), "w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow(cols + ["param." + k for k in rows[0]["params"]])
                    for j, r in enumerate(holes):
                        w.writerow([("null" if j == ok_i[1] and c == "quality_loss_increase" else
                                     "" if r.get(c) is None else r[c]) for c in cols] + list(r["params"].values()))
            try:
                hmd, hsw = report(dh, os.path.join(tmp, "holes-report-" + form), max_timelines=1)
                got = group_stats(hsw.of_policy("rate"))
                for k, v in want.items():
                    check(abs(got.get(k, math.nan) - v) <= 1e-12 * max(1, abs(v)), f"{form} with nulls: {k} {got.get(k)} != {v}")
            except Exception as e:  # noqa: BLE001 (the check is that it does not raise)
                check(False, f"{form} with null figures: {type(e).__name__}: {e}")
        # A column no run has stays empty, not "nan %".
        none_q = [dict(r, quality_loss_increase=None, quality_loss_increase_worst=None) for r in rows]
        try:
            st = group_stats(none_q)
            check(cell(st, "quality_mean", COLUMNS[5][2])[0] == "" and cell(st, "quality_worst", COLUMNS[6][2])[0] == "",
                  "a column without values must be empty")
        except Exception as e:  # noqa: BLE001
            check(False, f"a column without values: {type(e).__name__}: {e}")
        # A failed run's error (the tail of its log, several lines) stays on its table row.
        ml = os.path.join(tmp, "multiline")
        os.makedirs(ml)
        with open(os.path.join(ml, "results.jsonl"), "w") as f:
            for r in rows:
                if r["status"] != "ok":
                    r = dict(r, error="run 3: exit status 1\nkvstream: error: p.json: cannot open | x\n")
                f.write(json.dumps(r) + "\n")
        mmd = summary_md(Sweep(ml))
        frows = [l for l in mmd.split("## Failed runs")[1].splitlines() if l.startswith("| ")][1:]
        n_failed = sum(r["status"] != "ok" for r in rows)
        check(len(frows) == n_failed and all(l.endswith("run 3: exit status 1 / kvstream: error: p.json: cannot "
                                                         "open \\| x |") for l in frows),
              f"failed runs with multi-line errors: {frows}")
        # --compare counts SLO violations as the report does: runs without an SLO (slo_s 0, every request
        # met) are left out; a sweep without any SLO shows "-".
        mixed = json.loads(json.dumps(rows))
        for r in mixed:
            if r["params"]["slo_s"] == 1.5 and r["status"] == "ok":
                r["params"]["slo_s"], r["slo_s"], r["slo_met"] = 0, 0, 1.0
        no_slo = [dict(r, params=dict(r["params"], slo_s=0), slo_s=0, slo_met=1.0) if r["status"] == "ok" else r
                  for r in json.loads(json.dumps(rows))]
        for name, rs in (("mixed", mixed), ("no-slo", no_slo)):
            dm = os.path.join(tmp, name)
            os.makedirs(dm)
            with open(os.path.join(dm, "results.jsonl"), "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rs)
        _, cbody = compare(os.path.join(tmp, "mixed"), os.path.join(tmp, "mixed"), os.path.join(tmp, "cmp-mixed"))
        msw = Sweep(os.path.join(tmp, "mixed"))
        for row in cbody:
            if row[1][0] == "all":
                v = group_stats(msw.of_policy(row[0][0]))["violations"]
                check(abs(row[5][1] - 100 * v) < 1e-9, f"compare's SLO violations for {row[0][0]}: {row[5][1]} != {100 * v}")
        _, cbody = compare(os.path.join(tmp, "no-slo"), os.path.join(tmp, "no-slo"), os.path.join(tmp, "cmp-no-slo"))
        check(all(row[i][0] == "-" for row in cbody for i in (5, 6, 7)), "compare without SLOs: violations '-'")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("report self-test: FAILED\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("report self-test: ok")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="?", help="output folder of `kvstream run`")
    ap.add_argument("-o", "--out", help="report folder (default DIR/report, or DIR_B/compare)")
    ap.add_argument("--compare", nargs=2, metavar=("DIR_A", "DIR_B"), help="before/after of two sweeps")
    ap.add_argument("--runs", default="", help="comma-separated run ids to draw timelines of "
                    "(default: the first ok run of every policy)")
    ap.add_argument("--timelines", type=int, default=8, help="at most this many timelines (default 8)")
    ap.add_argument("-q", "--quiet", action="store_true", help="do not print the summary")
    ap.add_argument("--self-test", action="store_true", help="check the tables on the fixture and exit")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    try:
        return run(args, ap)
    except BrokenPipeError:  # e.g. | head
        return 0


def run(args, ap):
    try:
        import matplotlib  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as e:
        print(f"report: {e}: install Debian's python3-matplotlib and python3-numpy "
              "(apt-get install python3-matplotlib python3-numpy) and run with /usr/bin/python3", file=sys.stderr)
        return 2
    if args.compare:
        if args.dir:
            ap.error("give DIR or --compare DIR_A DIR_B, not both")
        for d in args.compare:
            if not os.path.isdir(d):
                print(f"report: {d}: no such folder", file=sys.stderr)
                return 1
        out = args.out or os.path.join(args.compare[1], "compare")
        md, _ = compare(args.compare[0], args.compare[1], out)
        if not args.quiet:
            print(md)
        print(f"wrote {os.path.join(out, 'compare.md')}, compare.html", file=sys.stderr)
        return 0
    if not args.dir:
        ap.error("give DIR (the output folder of `kvstream run`), --compare DIR_A DIR_B or --self-test")
    if not os.path.isdir(args.dir):
        print(f"report: {args.dir}: no such folder", file=sys.stderr)
        return 1
    out = args.out or os.path.join(args.dir, "report")
    md, _ = report(args.dir, out, args.runs, args.timelines)
    if not args.quiet:
        print(md)
    print(f"wrote {out}/summary.md, report.html and plots", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
