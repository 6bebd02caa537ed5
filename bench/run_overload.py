#!/usr/bin/env python3
"""R6 of issue 11: goodput of one infer-like node offered 2.5x and 1.25x its capacity.

Runs tests/integration/test_goodput (one aims_node echo instance spinning 10 ms
per call on one worker, tcp:// on loopback, a registry node, a C client making
idempotent calls with 2 s deadlines, open loop at `factor` x the capacity it
measured first with a closed loop) in measure-only mode and writes one JSON line
per phase to bench/results/overload-<UTC>.jsonl and latest-overload.jsonl:
goodput (calls answered OK within their deadline per second, after the first
2 s) as % of the measured capacity and of the runs the node executed during the
phase, success p50/p99, the node's rejection p50/p99 (the 1-in-10 calls sent
through a client that never retries) and the method.

Under `chrt -f 1` by default (SCHED_FIFO for the client and the daemons it
spawns: the machine is shared, so without it the figures swing with other
load); --no-chrt to measure without.

--what picks the parts (default all, comma-separated):
  goodput  the test_goodput phases above (one instance; with --pair also two
           instances behind one client at the same factors)
  peer     R6 side by side: libaims' client vs nginx (max_conns, next-upstream)
           in front of the same two MLP instances' HTTP front doors, the same
           open-loop offer (bench/overload_peer.py says how)
  hung     R4b: failed calls and p99 with one of three instances SIGSTOPped
  lifo     FIFO (default) vs LIFO vs LIFO without the adaptive limit
  reject   the rejection latency with many samples: the goodput setup with
           every call through the client that never retries
           (AIMS_GOODPUT_DIRECT_EVERY=1), one instance; count, p50, p90, p99
           and max of the node's rejections per factor (R6-reject rows)
peer/hung/lifo use bench/bench_overload (the load generator, one thread).

Usage: python3 bench/run_overload.py --build-dir build-bench-ovl [--seconds 15]
       [--factors 2.5,1.25,5] [--pair] [--no-chrt] [--what goodput,peer,hung,lifo]
       [--nginx-max-conns 4[,0]]
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import machine_info, machine_line  # noqa: E402
import overload_peer  # noqa: E402

METHOD = ("tests/integration/test_goodput: registry node + one aims_node echo instance "
          "(--slow-us 10000 --concurrency 1 --workers 1) on tcp://127.0.0.1; capacity = closed "
          "loop from 6 threads for 3 s; then open loop at factor x capacity for `seconds` with "
          "2 s deadlines, idempotent calls (client retries OVERLOADED after its hint within "
          "the retry budget), 1 in 10 through a client with max_attempts 1 (rejection "
          "latency); goodput = OK within deadline per second over the windows after the first "
          "2 s")


def harness_record(row):
    """Goodput of one phase as a bench record: goal R6, the offered factor in
    the metric name, the percentage of capacity as the median."""
    if row.get("bench") == "R6-reject":
        return {"goal": "R6", "description": "latency of the node's rejections (no retry)",
                "contender": "libaims", "metric": "reject_p99_ms_%gx" % row["factor"],
                "median": row.get("reject_p99_ms"), "unit": "ms", "n": row.get("rejections_seen"),
                "reject_p50_ms": row.get("reject_p50_ms"), "reject_max_ms": row.get("reject_max_ms"),
                "git": row.get("git")}
    return {"goal": "R6", "description": "goodput under overload, % of capacity",
            "contender": "libaims", "metric": "goodput_pct_%gx" % row["factor"],
            "median": row["goodput_pct_of_capacity"], "unit": "%", "n": 1,
            "reject_p99_ms": row.get("reject_p99_ms"), "reject_n": row.get("rejections_seen"),
            "reject_max_ms": row.get("reject_max_ms"), "git": row.get("git")}


def peer_record(row):
    """A peer/hung/lifo row in the harness's record shape."""
    if row["bench"] == "R4b-hung":
        return {"goal": "R4b", "description": "failed idempotent calls, one of 3 instances hung",
                "contender": "libaims", "metric": "failed_calls", "median": row["failed"],
                "unit": "calls", "n": 1, "ok_p99_ms": row["ok_p99_ms"], "git": row.get("git")}
    who = row.get("via") or "libaims-" + row.get("variant", "")
    return {"goal": "R6", "description": "goodput under overload, % of capacity",
            "contender": who, "metric": "goodput_pct_%gx_%d_inst" % (row["factor"],
                                                                     row["instances"]),
            "median": row["goodput_pct_of_capacity"], "unit": "%", "n": 1,
            "ok_p99_ms": row["ok_p99_ms"], "git": row.get("git")}


def run_goodput(a, chrt, direct_every=10):
    test = os.path.join(a.build_dir, "tests/integration/test_goodput")
    node = os.path.join(a.build_dir, "examples/aims_node")
    for f in (test, node):
        if not os.access(f, os.X_OK):
            sys.exit(f"missing {f}: build it (make -f bench/bench.mk bench-overload)")
    with tempfile.TemporaryDirectory() as tmp:
        jpath = os.path.join(tmp, "phases.jsonl")
        env = dict(os.environ, AIMS_GOODPUT_NOCHECK="1", AIMS_GOODPUT_JSON=jpath,
                   AIMS_GOODPUT_SECONDS=str(a.seconds), AIMS_GOODPUT_FACTORS=a.factors,
                   AIMS_GOODPUT_PAIR="1" if a.pair and direct_every == 10 else "0",
                   AIMS_GOODPUT_PAIR_FACTORS=a.factors,
                   AIMS_GOODPUT_DIRECT_EVERY=str(direct_every))
        cmd = (["chrt", "-f", "1"] if chrt else []) + [test, node]
        nf = len(a.factors.split(","))
        budget = 60 + (nf + (nf + 1 if a.pair else 0)) * (a.seconds + 15)
        r = subprocess.run(cmd, env=env, timeout=budget)
        rows = []
        if os.path.exists(jpath):
            with open(jpath) as f:
                rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        print(f"test_goodput produced no figures (exit {r.returncode})", file=sys.stderr)
    for row in rows:
        print(f"{row['instances']} instance(s) {row['factor']}x: goodput {row['goodput_per_s']}/s"
              f" = {row['goodput_pct_of_capacity']} % of capacity"
              f" ({row['goodput_pct_of_runs']} % of runs executed); ok p99 {row['ok_p99_ms']} ms;"
              f" node's rejections (1 call in {direct_every} without retry): n"
              f" {row['rejections_seen']}, p50 {row['reject_p50_ms']} ms, p99"
              f" {row['reject_p99_ms']} ms, max {row.get('reject_max_ms')} ms; $ping control n"
              f" {row.get('ping_n')}, p50 {row.get('ping_p50_ms')} ms, p99 {row.get('ping_p99_ms')}"
              f" ms, max {row.get('ping_max_ms')} ms")
    return rows, " ".join(cmd), r.returncode


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default="build-bench-ovl")
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--factors", default="1.25,2.5,5")
    ap.add_argument("--pair", action="store_true", help="goodput: also on two instances")
    ap.add_argument("--no-chrt", action="store_true")
    ap.add_argument("--what", default="goodput,reject,peer,hung,lifo")
    ap.add_argument("--nginx-max-conns", default="4,0",
                    help="comma-separated: one nginx per value, 0 = without max_conns")
    ap.add_argument("--hung-rate", type=float, default=300.0)
    ap.add_argument("--io-prio", type=int, default=0,
                    help="under chrt: put every libaims I/O thread (aims-io-*) of the run at "
                         "this SCHED_FIFO priority (1 = the workers' priority, as before "
                         "the I/O threads ran one above them; 0: as the library sets them)")
    ap.add_argument("--out-dir", default="bench/results")
    a = ap.parse_args()
    what = set(a.what.split(","))
    factors = [float(x) for x in a.factors.split(",")]
    chrt = not a.no_chrt and shutil.which("chrt") is not None
    if chrt and subprocess.run(["chrt", "-f", "1", "true"]).returncode != 0:
        print("chrt -f 1 not permitted here: measuring without it", file=sys.stderr)
        chrt = False
    info = machine_info(a.build_dir)
    print(machine_line(info), flush=True)
    overload_peer.PREFIX = ["chrt", "-f", "1"] if chrt else []
    rows, extra = [], []
    rc = 0
    cmd = "python3 bench/run_overload.py " + " ".join(sys.argv[1:])
    boost = None
    if chrt and a.io_prio > 0:
        boost = overload_peer.IoBoost(os.getpid(), a.io_prio)
        boost.start()
    if "goodput" in what:
        rows, cmd_g, rc = run_goodput(a, chrt)
        cmd = cmd_g if what == {"goodput"} else cmd
    if "reject" in what:
        rrows, _, rrc = run_goodput(a, chrt, direct_every=1)
        rows += [dict(r, bench="R6-reject") for r in rrows]
        rc = rc or rrc
    gen = os.path.join(a.build_dir, "bench/bench_overload")
    if what & {"peer", "hung", "lifo"} and not os.access(gen, os.X_OK):
        sys.exit(f"missing {gen}: build it (ninja -C {a.build_dir} bench/bench_overload)")
    log = lambda m: print(m, flush=True)  # noqa: E731
    try:
        if "peer" in what:
            extra += overload_peer.peer(a.build_dir, factors, a.seconds,
                                        [int(x) for x in a.nginx_max_conns.split(",")], log)
        if "hung" in what:
            extra += overload_peer.hung(a.build_dir, 12, a.hung_rate, log)
        if "lifo" in what:
            extra += overload_peer.lifo(a.build_dir, [f for f in factors if f >= 2.5] or factors,
                                        a.seconds, log)
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as ex:
        print(f"overload bench part failed: {ex}", file=sys.stderr)
        extra.append({"bench": "R6-peer", "error": str(ex)})
        rc = 1
    if boost is not None:
        n = boost.stop()
        print(f"--io-prio {a.io_prio}: {n} libaims I/O threads set to SCHED_FIFO {a.io_prio}")
        for row in rows + extra:
            row["io_threads_fifo_prio"] = a.io_prio
    if not rows and not extra:
        sys.exit("no figures")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = None
    ts = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    os.makedirs(a.out_dir, exist_ok=True)
    out = os.path.join(a.out_dir, f"overload-{ts}.jsonl")
    with open(out, "w") as f:
        for row in rows:
            row = {"bench": "R6-overload", "git": commit, "chrt_fifo_1": chrt,
                   "command": cmd, "method": METHOD, **row, "machine": info}
            if row["bench"] == "R6-reject":
                row["method"] = METHOD + "; R6-reject: every call through the client that " \
                    "never retries (AIMS_GOODPUT_DIRECT_EVERY=1), for the rejection latency"
            f.write(json.dumps(row) + "\n")
            # The harness's record shape too (goal, contender, metric, median), so
            # `aims plot` and the results tables read this file like the others.
            f.write(json.dumps(harness_record(row)) + "\n")
        for row in extra:
            row = {"git": commit, "command": cmd, "method": overload_peer.__doc__.strip(),
                   **row, "machine": info}
            f.write(json.dumps(row) + "\n")
            if "error" not in row:
                f.write(json.dumps(peer_record(row)) + "\n")
    shutil.copyfile(out, os.path.join(a.out_dir, "latest-overload.jsonl"))
    print(f"written {out}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
