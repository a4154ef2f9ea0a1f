#!/usr/bin/python3
"""Issue 21's acceptance grid: TCP under random loss against the response functions.

One bulk transfer per cell (tests/sim/kvstream_tcp_trace, the simulator's
dumbbell and TCP settings) over random loss x RTT x rate x TCP variant. The
steady throughput (payload after the first tenth of the bytes, as
tests/sim/tcp_loss_test.cc measures it) is compared with

  - NewReno: Padhye et al.'s full model (b = 2: delayed ACKs; T0 = RTT + 200 ms,
    the RTO of a steady path here), Mathis (b = 2) shown beside it;
  - Cubic: RFC 9438's average window, 5.1-5.2: the larger of the cubic
    curve's average and the Reno-friendly region's sqrt(3 / (2 p)), so never
    below Reno's;

or, where the path's payload rate (rate x MSS / (MSS + 54)) is below the
model, with that rate ("rate-limited": random loss does not limit there). A
cell passes when measured / expected is within a factor of 1.5.

Stalls ("idle in repeated RTO backoff while data is waiting and the path is
up"; the paths here are constant and a bulk sender always has data): a cell
is flagged when its longest run of back-to-back timeouts without new data
acknowledged (the tool's "longest RTO run") has a probability under 1 % of
coming from random loss alone (a run of k needs k - 1 lost retransmissions:
timeouts x p^(k-1) < 0.01), or when its time waiting for timeouts exceeds
max(10 %, 2x Padhye's timeout share) of the transfer.

With --kvstream it also checks the simulator end to end: the 20-request
case (`simulate scenarios/default.yaml --requests 20 --arrival-rate 5`) has
no request slower than twice the slowest of the others, and a run that hits
max_sim_s exits non-zero naming what was unfinished.

  /usr/bin/python3 bench/tcp_grid.py --tool build-grid/tests/sim/kvstream_tcp_trace \\
      --out runs/tcp_grid [--losses 0.001,0.01] [--rtts 20] [--rates 1000] [-j 1]

Writes OUT/grid.csv (one row per cell, appended as cells finish: a rerun
skips cells already there) and OUT/grid.md (the table and the failing cells);
exits 1 when a cell or check fails. `--self-test` checks the response
functions and the verdicts without running anything (a ctest).
"""
import argparse
import csv
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

MSS = 1448
WIRE_OVERHEAD = 54  # IP 20 + TCP 20 + timestamps 12 + PPP 2, per data packet
FACTOR = 1.5


def base_rtt_s(rtt_ms, rate_mbps):
    """Propagation plus one full packet's serialization (an empty queue)."""
    return rtt_ms / 1000 + 8.0 * (MSS + WIRE_OVERHEAD) / (rate_mbps * 1e6)


def mathis_bps(p, rtt_s):
    return math.sqrt(3.0 / (4.0 * p)) * MSS * 8 / rtt_s


def padhye(p, rtt_s, t0_s):
    """(bit/s, the share of time in timeouts) of Padhye et al.'s eq. 30, b = 2."""
    b = 2
    ca = rtt_s * math.sqrt(2 * b * p / 3)
    to = t0_s * min(1.0, 3 * math.sqrt(3 * b * p / 8)) * p * (1 + 32 * p * p)
    return MSS * 8 / (ca + to), to / (ca + to)


def cubic_bps(p, rtt_s):
    beta, c = 0.7, 0.4
    w_cubic = (c * (3 + beta) / (4 * (1 - beta))) ** 0.25 * rtt_s ** 0.75 / p ** 0.75
    w_reno = math.sqrt(3.0 / (2.0 * p))
    return max(w_cubic, w_reno) * MSS * 8 / rtt_s


def expectation(tcp, p, rtt_ms, rate_mbps):
    """What a cell should reach, as a band [low, high] of payload Mbit/s.

    NewReno: from Padhye's (Reno's timeouts when a loss leaves fewer than
    three duplicate ACKs: most losses at small windows) to Mathis's (no
    timeouts, as SACK recovery nearly achieves); the two agree where windows
    are large and part where the RTO (>= RTT + 200 ms) dwarfs the RTT.
    Cubic: RFC 9438's average, low = high. Both capped at the path's payload rate."""
    rtt = base_rtt_s(rtt_ms, rate_mbps)
    pad, to_share = padhye(p, rtt, rtt_ms / 1000 + 0.2)
    mathis = mathis_bps(p, rtt)
    low, high = (pad, mathis) if tcp == "newreno" else (cubic_bps(p, rtt),) * 2
    path = rate_mbps * 1e6 * MSS / (MSS + WIRE_OVERHEAD)
    return {
        "padhye_mbps": pad / 1e6,
        "mathis_mbps": mathis / 1e6,
        "rfc9438_mbps": cubic_bps(p, rtt) / 1e6,
        "path_mbps": path / 1e6,
        "limit": "rate" if path < low else "loss" if path >= high else "rate/loss",
        "low_mbps": min(low, path) / 1e6,
        "high_mbps": min(high, path) / 1e6,
        "timeout_share_model": to_share,
    }


def transfer_bytes(tcp, p, rate_mbps, rtt_ms, loss_events, max_segments, min_windows):
    """loss_events / p segments (the measurement needs tens of loss events),
    at least min_windows of the expected window (slow start is then a small
    part), at most max_segments (CPU)."""
    e = expectation(tcp, p, rtt_ms, rate_mbps)
    window = e["high_mbps"] * 1e6 / 8 * base_rtt_s(rtt_ms, rate_mbps) / MSS
    segments = max(loss_events / p, min_windows * window)
    return int(min(segments, max_segments) * MSS)


def run_cell(tool, cell, args):
    cmd = ["nice", "-n", str(args.nice), tool, "--json", "1", "--tcp", cell["tcp"], "--loss", repr(cell["loss"]),
           "--rate-mbps", repr(cell["rate_mbps"]), "--rtt-ms", repr(cell["rtt_ms"]), "--bytes", str(cell["bytes"]),
           "--seed", str(args.seed), "--stop-s", repr(args.stop_s)]
    t0 = time.time()
    with tempfile.TemporaryFile("w+") as err_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_file, text=True)
        out = proc.stdout.read()
        # wait4: the CPU time of this child alone (nice execs the tool in the same process).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err_file.seek(0)
        err = err_file.read()
    wall = time.time() - t0
    line = next((l for l in out.splitlines() if l.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}, no result: {err.strip()[-500:]}")
    r = json.loads(line)
    r["wall_s"] = wall
    r["cpu_s"] = usage.ru_utime + usage.ru_stime
    r["command"] = " ".join(cmd[3:])
    return r


def judge(raw):
    """The verdict of one cell from its raw result (a CSV row or run_cell's dict)."""
    cell = {"tcp": raw["tcp"], "loss": float(raw["loss"]), "rtt_ms": float(raw["rtt_ms"]),
            "rate_mbps": float(raw["rate_mbps"]), "bytes": int(raw["bytes"])}
    num = {k: float(raw[k]) for k in ("completion_s", "tenth_s", "rto_wait_s")}
    timeouts, k = int(raw["timeouts"]), int(raw["max_backoff"])
    finished = str(raw["finished"]).lower() in ("true", "1") and num["completion_s"] > num["tenth_s"]
    e = expectation(cell["tcp"], cell["loss"], cell["rtt_ms"], cell["rate_mbps"])
    row = dict(raw)
    row.update(cell)
    row.update(e)
    measured = 8.0 * 0.9 * cell["bytes"] / (num["completion_s"] - num["tenth_s"]) / 1e6 if finished else 0.0
    row["measured_mbps"] = measured
    row["ratio_low"] = measured / e["low_mbps"]
    row["ratio_high"] = measured / e["high_mbps"]
    wait_share = num["rto_wait_s"] / num["completion_s"] if num["completion_s"] > 0 else 0.0
    row["rto_wait_share"] = wait_share
    run_chance = timeouts * cell["loss"] ** (k - 1) if k >= 2 else 1.0
    stall = []
    if k >= 2 and run_chance < 0.01:
        stall.append(f"{k} back-to-back timeouts (chance under random loss {run_chance:.2g})")
    if wait_share > max(0.10, 2 * e["timeout_share_model"]):
        stall.append(f"{100 * wait_share:.0f} % of the time waiting for timeouts "
                     f"(Padhye: {100 * e['timeout_share_model']:.0f} %)")
    row["stall"] = "; ".join(stall)
    why = []
    what = "the path rate" if e["limit"] == "rate" else "the model"
    if not finished:
        why.append(f"unfinished after {num['completion_s']:.0f} s")
    elif row["ratio_low"] < 1 / FACTOR:
        why.append(f"x{row['ratio_low']:.2f} of {what}")
    elif row["ratio_high"] > FACTOR:
        why.append(f"x{row['ratio_high']:.2f} of {what}")
    why += stall
    row["pass"] = not why
    row["why"] = "; ".join(why)
    return row


# Raw results, one row per cell (verdicts are recomputed from them).
FIELDS = ["tcp", "loss", "rtt_ms", "rate_mbps", "bytes", "seed", "tcp_type", "finished", "completion_s", "tenth_s",
          "timeouts", "max_backoff", "max_stall_s", "rto_wait_s", "data_segments", "retransmissions", "wall_s",
          "cpu_s", "command"]


def key(row):
    return (row["tcp"], float(row["loss"]), float(row["rtt_ms"]), float(row["rate_mbps"]), int(row["bytes"]))


def fmt_rate(mbps):
    return f"{mbps:.3g}" if mbps < 100 else f"{mbps:,.0f}"


def band(r):
    low, high = float(r["low_mbps"]), float(r["high_mbps"])
    name = {"rate": "rate", "loss": "Padhye-Mathis" if r["tcp"] == "newreno" else "RFC 9438",
            "rate/loss": "Padhye-rate"}[r["limit"]]
    if r["tcp"] != "newreno" or r["limit"] == "rate":
        return f"{fmt_rate(low)} ({name})"
    return f"{fmt_rate(low)}-{fmt_rate(high)} ({name})"


def markdown(rows, command):
    rows = sorted(rows, key=lambda r: (r["loss"], r["rtt_ms"], r["rate_mbps"], r["tcp"] != "newreno"))
    out = [f"`{command}`", "",
           "| loss | RTT ms | rate Mbit/s | TCP | MB | measured Mbit/s | expected | ratio | timeouts (longest run, wait) | sim s | CPU s | result |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = (f"{r['ratio_low']:.2f}" if r["low_mbps"] == r["high_mbps"]
                 else f"{r['ratio_low']:.2f} / {r['ratio_high']:.2f}")
        out.append(
            f"| {100 * r['loss']:g} % | {r['rtt_ms']:g} | {r['rate_mbps']:g} | {r['tcp']} | "
            f"{r['bytes'] / 1e6:.1f} | {fmt_rate(r['measured_mbps'])} | {band(r)} | {ratio} | "
            f"{r['timeouts']} ({r['max_backoff']}, {100 * r['rto_wait_share']:.1f} %) | "
            f"{float(r['completion_s']):.1f} | {float(r['cpu_s']):.1f} | {'pass' if r['pass'] else 'FAIL: ' + r['why']} |")
    fails = [r for r in rows if not r["pass"]]
    out += ["", f"{len(rows) - len(fails)} of {len(rows)} cells pass."]
    if fails:
        out.append("Failing cells (rerun one with the command shown):")
        for r in fails:
            out.append(f"- {r['tcp']}, loss {100 * r['loss']:g} %, {r['rtt_ms']:g} ms, "
                       f"{r['rate_mbps']:g} Mbit/s: {r['why']} (`{r['command']}`)")
    newreno = {(r["loss"], r["rtt_ms"], r["rate_mbps"]): r["measured_mbps"] for r in rows if r["tcp"] == "newreno"}
    below = [r for r in rows if r["tcp"] == "cubic" and r["limit"] != "rate" and r["measured_mbps"] < newreno.get(
        (r["loss"], r["rtt_ms"], r["rate_mbps"]), 0)]
    out.append("Cubic below NewReno in the same cell (not rate-limited): " + (", ".join(
        f"loss {100 * r['loss']:g} %, {r['rtt_ms']:g} ms, {r['rate_mbps']:g} Mbit/s "
        f"(x{r['measured_mbps'] / newreno[(r['loss'], r['rtt_ms'], r['rate_mbps'])]:.2f})" for r in below)
        if below else "none") + ".")
    return "\n".join(out) + "\n"


def matrix(rows):
    """The grid in one table: a row per loss and RTT, a column per rate and
    variant; each cell is the measured Mbit/s and its ratio to the model
    (NewReno: Padhye / Mathis; Cubic: RFC 9438) or, marked r, to the path rate."""
    rates = sorted({r["rate_mbps"] for r in rows})
    tcps = [t for t in ("newreno", "cubic") if any(r["tcp"] == t for r in rows)]
    by = {(r["loss"], r["rtt_ms"], r["rate_mbps"], r["tcp"]): r for r in rows}
    head = ["loss", "RTT ms"] + [f"{t} {fmt_rate(rt)}" for rt in rates for t in tcps]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for loss in sorted({r["loss"] for r in rows}):
        for rtt in sorted({r["rtt_ms"] for r in rows}):
            cells = []
            for rate in rates:
                for t in tcps:
                    r = by.get((loss, rtt, rate, t))
                    if r is None:
                        cells.append("")
                        continue
                    m = fmt_rate(r["measured_mbps"])
                    if r["limit"] == "rate":
                        text = f"{m} (x{r['ratio_low']:.2f} r)"
                    elif t == "newreno":
                        text = f"{m} (x{r['ratio_low']:.2f} / {r['ratio_high']:.2f})"
                    else:
                        text = f"{m} (x{r['ratio_low']:.2f})"
                    cells.append(text if r["pass"] else f"**{text} FAIL**")
            out.append(f"| {100 * loss:g} % | {rtt:g} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def simulator_checks(args):
    """The 20-request case and max_sim_s, through `kvstream simulate`."""
    lines, ok = [], True
    scenario = os.path.join(args.repo, "scenarios", "default.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["nice", "-n", str(args.nice), args.kvstream, "simulate", scenario, "--requests", "20",
               "--arrival-rate", "5", "-q", "-o", os.path.join(tmp, "r20")]
        for seed in args.request_seeds:
            p = subprocess.run(cmd + ["--seed", str(seed)], capture_output=True, text=True)
            shown = " ".join(cmd[3:] + ["--seed", str(seed)])
            if p.returncode != 0:
                ok = False
                lines.append(f"- 20 requests, seed {seed}: FAIL, exit {p.returncode}: {p.stderr.strip()[-300:]} (`{shown}`)")
                continue
            with open(os.path.join(tmp, "r20", "results.json")) as f:
                reqs = json.load(f)["requests"]
            ttft = sorted(q["ttft_s"] for q in reqs if q["finished"])
            good = len(ttft) == 20 and ttft[-1] <= 2 * ttft[-2]
            ok &= good
            lines.append(f"- 20 requests, seed {seed}: {len(ttft)} finished, TTFT {ttft[0]:.2f}-{ttft[-1]:.2f} s, "
                         f"slowest {ttft[-1]:.2f} s against {ttft[-2]:.2f} s for the next "
                         f"(x{ttft[-1] / ttft[-2]:.2f}): {'pass' if good else 'FAIL'} (`{shown}`)")
        # max_sim_s: the default scenario, stopped at 0.5 s (its TTFT is about 1 s).
        with open(scenario) as f:
            text = f.read()
        profile = os.path.join(os.path.dirname(scenario), re.search(r"^profile:\s*(\S+)", text, re.M).group(1))
        text = re.sub(r"^profile:.*$", f"profile: {os.path.abspath(profile)}", text, flags=re.M)
        text = re.sub(r"^output:.*$", f"output: {tmp}/maxsim", text, flags=re.M) + "max_sim_s: 0.5\n"
        path = os.path.join(tmp, "maxsim.yaml")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([args.kvstream, "simulate", path, "-q"], capture_output=True, text=True)
        good = p.returncode != 0 and "unfinished" in p.stderr and "max_sim_s" in p.stderr
        ok &= good
        lines.append(f"- max_sim_s 0.5 s on the default scenario: exit {p.returncode}, "
                     f"\"{p.stderr.strip()[-200:]}\": {'pass' if good else 'FAIL'}")
    return ok, lines


def self_test():
    """The response functions against the figures in BENCHMARKS.md (80.8 MB
    at 1 Gbit/s, 20 ms: Mathis 70.6 / 128.9 s, Padhye 75.9 / 160.9 s, RFC 9438
    49.9 / 91.2 s at 0.3 % / 1 %), and the verdicts on made-up results."""
    rtt = base_rtt_s(20, 1000)
    assert abs(rtt - 0.020012) < 1e-6, rtt
    for p, mathis, pad, cubic in ((0.003, 70.6, 75.9, 49.9), (0.01, 128.9, 160.9, 91.2)):
        seconds = lambda bps: 80.8e6 * 8 / bps
        assert round(seconds(mathis_bps(p, rtt)), 1) == mathis, (p, seconds(mathis_bps(p, rtt)))
        assert round(seconds(padhye(p, rtt, 0.22)[0]), 1) == pad, (p, seconds(padhye(p, rtt, 0.22)[0]))
        assert round(seconds(cubic_bps(p, rtt)), 1) == cubic, (p, seconds(cubic_bps(p, rtt)))
    e = expectation("newreno", 0.01, 20, 1000)
    assert e["limit"] == "loss" and e["low_mbps"] < e["high_mbps"]
    assert expectation("cubic", 0.0001, 2, 10)["limit"] == "rate"

    def raw(tcp, mbps, **kw):  # a finished 8.7 MB transfer at 1 %, 20 ms, 1 Gbit/s at `mbps` after its tenth
        r = {"tcp": tcp, "loss": 0.01, "rtt_ms": 20, "rate_mbps": 1000, "bytes": 8_688_000, "finished": "True",
             "tenth_s": 1.0, "timeouts": 0, "max_backoff": 0, "rto_wait_s": 0, "command": "-"}
        r["completion_s"] = 1.0 + 8 * 0.9 * r["bytes"] / (mbps * 1e6)
        r.update(kw)
        return r
    e = expectation("newreno", 0.01, 20, 1000)
    assert judge(raw("newreno", e["low_mbps"]))["pass"]
    assert judge(raw("newreno", e["high_mbps"] * 1.4))["pass"]
    assert not judge(raw("newreno", e["high_mbps"] * 1.6))["pass"]
    assert not judge(raw("newreno", e["low_mbps"] / 1.6))["pass"]
    c = expectation("cubic", 0.01, 20, 1000)["low_mbps"]
    assert judge(raw("cubic", c * 1.4))["pass"] and not judge(raw("cubic", c * 1.6))["pass"]
    assert not judge(raw("cubic", c, finished="False"))["pass"]
    # A run of 3 back-to-back timeouts among 10 at p = 1 %: chance 10 x 1e-4, flagged.
    assert "back-to-back" in judge(raw("cubic", c, timeouts=10, max_backoff=3))["why"]
    assert judge(raw("cubic", c, timeouts=10, max_backoff=2))["pass"]  # chance 0.1
    # A timeout loop without backoff: half the time waiting (Padhye's share here: 20 %).
    slow = raw("cubic", c)
    assert "waiting for timeouts" in judge(dict(slow, rto_wait_s=0.5 * slow["completion_s"], timeouts=50,
                                                max_backoff=1))["why"]
    print("tcp_grid self-test: ok")
    return 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tool", required=True, help="build*/tests/sim/kvstream_tcp_trace")
    ap.add_argument("--out", default="runs/tcp_grid")
    ap.add_argument("--losses", default="0.0001,0.001,0.003,0.01,0.02")
    ap.add_argument("--rtts", default="2,20,200", help="ms")
    ap.add_argument("--rates", default="10,100,1000,10000", help="Mbit/s")
    ap.add_argument("--tcps", default="newreno,cubic")
    # At 0.01 % and 200 ms a 200,000-segment Cubic transfer is still leaving
    # slow start's overshoot after its first tenth (x1.59 of RFC 9438; with
    # 1,000,000 segments x1.21, BENCHMARKS.md): the defaults give every cell
    # about 100 loss events, at about 35 s of CPU per 0.01 % cell.
    ap.add_argument("--loss-events", type=float, default=100, help="transfer length: this many / p segments")
    ap.add_argument("--max-segments", type=float, default=1_000_000,
                    help="cap on a transfer's segments (ns-3 costs tens of us of CPU per segment)")
    ap.add_argument("--min-windows", type=float, default=50, help="a transfer is at least this many expected windows")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stop-s", type=float, default=3600)
    ap.add_argument("-j", "--jobs", type=int, default=1)
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--kvstream", help="build*/apps/kvstream: also run the simulator checks")
    ap.add_argument("--request-seeds", default="1", help="seeds of the 20-request check")
    ap.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = ap.parse_args()
    args.request_seeds = [int(s) for s in args.request_seeds.split(",") if s]
    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, "grid.csv")

    cells = []
    for p in [float(x) for x in args.losses.split(",")]:
        for rtt in [float(x) for x in args.rtts.split(",")]:
            for rate in [float(x) for x in args.rates.split(",")]:
                for tcp in args.tcps.split(","):
                    cells.append({"tcp": tcp, "loss": p, "rtt_ms": rtt, "rate_mbps": rate,
                                  "bytes": transfer_bytes(tcp, p, rate, rtt, args.loss_events, args.max_segments,
                                                          args.min_windows)})
    done, header = {}, FIELDS
    if os.path.exists(csv_path):
        with open(csv_path) as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or FIELDS  # appended rows keep the file's columns
            for row in reader:
                done[key(row)] = row
    todo = [c for c in cells if key(c) not in done]
    print(f"{len(cells)} cells, {len(cells) - len(todo)} already in {csv_path}", flush=True)
    new_file = not os.path.exists(csv_path)
    with open(csv_path, "a", newline="") as f, ThreadPoolExecutor(max(1, args.jobs)) as pool:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        if new_file:
            w.writeheader()
        for cell, fut in [(c, pool.submit(run_cell, args.tool, c, args)) for c in todo]:
            raw = dict(cell)
            raw.update({k: v for k, v in fut.result().items() if k in FIELDS and k not in cell})
            w.writerow(raw)
            f.flush()
            done[key(raw)] = raw
            row = judge(raw)
            print(f"{row['tcp']:8} loss {row['loss']:<7g} {row['rtt_ms']:>4g} ms {row['rate_mbps']:>6g} Mbit/s "
                  f"{row['bytes'] / 1e6:8.1f} MB: {row['measured_mbps']:9.3f} Mbit/s, expected {band(row)}, "
                  f"x{row['ratio_low']:.2f}, timeouts {row['timeouts']} (run {row['max_backoff']}), "
                  f"{float(row['cpu_s']):.1f} s CPU: {'pass' if row['pass'] else row['why']}", flush=True)
    rows = [judge(done[key(c)]) for c in cells]
    command = "/usr/bin/python3 bench/tcp_grid.py " + " ".join(sys.argv[1:])
    text = markdown(rows, command) + "\nThe same as one table:\n\n" + matrix(rows)
    ok = all(r["pass"] for r in rows)
    if args.kvstream:
        good, lines = simulator_checks(args)
        ok &= good
        text += "\nSimulator checks:\n" + "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "grid.md"), "w") as f:
        f.write(text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
