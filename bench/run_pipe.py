#!/usr/bin/python3
"""Pipelined throughput benchmark (issue 15 item 5, goal P14).

    /usr/bin/python3 bench/run_pipe.py [--build-dir build-bench] [--rounds 3]
        [--window 64] [--seconds 2] [--infer-window 8] [--infer-rows 64]

1. echo: 64-byte calls with WINDOW in flight on one connection, the server in
   a forked process, over ipc:// and tcp://: libaims (bench/bench_pipe.c,
   aims_client_call_async by name through a local registry) against ZeroMQ
   (bench/peers/peer_zmq_pipe.c, DEALER -> ROUTER echo) with the same window;
   within a round the two run back to back, the order rotating every round;
   per contender and transport the median over rounds of calls/s, min/max
   beside it; ratio = libaims / ZeroMQ (goal >= 1.0), the peer's
   configuration recorded beside the ratio;
2. infer: rows/s through one tcp:// connection with pipelining (a 784-256-10
   MLP infer service, INFER_ROWS rows per call, INFER_WINDOW calls in flight);
3. writes one JSON object per row to bench/results/pipe-<UTC>.jsonl and
   bench/results/latest-pipe.jsonl and prints a markdown table.
A contender that is not built (no libzmq3-dev) or fails is recorded with
"error" and the run goes on.
"""
import argparse
import datetime
import json
import os
import sys

from benchlib import machine_info, machine_line
from run_svc import run_json, stats, rotate

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", default="build-bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--infer-window", type=int, default=8)
    ap.add_argument("--infer-rows", type=int, default=64)
    ap.add_argument("--data-dir", default=os.environ.get(
        "AIMS_DATA_DIR", os.path.join(REPO, "data-cache")))
    a = ap.parse_args()
    b = os.path.join(REPO, a.build_dir, "bench")
    exe = {"libaims": os.path.join(b, "bench_pipe"),
           "zeromq": os.path.join(b, "peer_zmq_pipe")}
    stamp = datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")
    env = machine_info(os.path.join(REPO, a.build_dir))
    rows = []

    def row(**kw):
        kw.setdefault("timestamp", stamp)
        kw.setdefault("env", env)
        rows.append(kw)
        return kw

    def cmd(who, t):
        if who == "libaims":
            return [exe[who], "echo", t, str(a.window), str(a.seconds)]
        return [exe[who], t, str(a.window), str(a.seconds)]

    who = [w for w in ("libaims", "zeromq") if os.access(exe[w], os.X_OK)]
    for w in ("libaims", "zeromq"):
        if w not in who:
            row(goal="P14", contender=w, metric="calls_per_s", error="not built: " + exe[w])
    samples = {}
    for rnd in range(a.rounds):
        for t in ("ipc", "tcp"):
            for w in rotate(who, rnd):
                recs, e = run_json(cmd(w, t), 120)
                if e:
                    print("  P14 %s %s: %s" % (w, t, e), file=sys.stderr)
                    row(goal="P14", contender=w, metric="calls_per_s", transport=t, error=e)
                samples.setdefault((w, t), []).extend(recs)
    med = {}
    for (w, t), recs in sorted(samples.items()):
        if not recs:
            continue
        m, lo, hi = stats([r["value"] for r in recs])
        med[(w, t)] = m
        row(goal="P14", description="pipelined 64-byte echo calls, %d in flight on one "
            "connection, server in a forked process" % a.window, contender=w,
            version=recs[0].get("version"), metric="calls_per_s", transport=t,
            window=a.window, median=m, min=lo, max=hi, unit="calls/s", n=len(recs),
            round_values=[r["value"] for r in recs], config=recs[0].get("config"),
            cpu_us_per_call=stats([r.get("cpu_us_per_call") for r in recs])[0],
            round_cpu_us_per_call=[r.get("cpu_us_per_call") for r in recs],
            failed=sum(r.get("failed", 0) for r in recs),
            loadavg_1m=[r.get("loadavg_1m") for r in recs])
    for t in ("ipc", "tcp"):
        if ("libaims", t) in med and med.get(("zeromq", t)):
            r = [x for x in rows if x.get("contender") == "libaims" and
                 x.get("transport") == t and "median" in x][0]
            z = [x for x in rows if x.get("contender") == "zeromq" and
                 x.get("transport") == t and "median" in x][0]
            ratio = med[("libaims", t)] / med[("zeromq", t)]
            r.update(peer="zeromq", peer_config=z.get("config"), peer_version=z.get("version"),
                     ratio=ratio, target=">= 1.0", met=ratio >= 1.0)
    if "libaims" in who:
        vals = []
        for rnd in range(a.rounds):
            recs, e = run_json([exe["libaims"], "infer", "tcp", str(a.infer_window),
                                str(a.seconds), str(a.infer_rows), a.data_dir], 300,
                               {"OPENBLAS_NUM_THREADS": "1"})
            if e:
                row(goal="P14", contender="libaims", metric="infer_rows_per_s", error=e)
            vals.extend(r["value"] for r in recs)
        m, lo, hi = stats(vals)
        if m is not None:
            row(goal="P14", description="rows/s through one tcp:// connection, %d calls of %d "
                "rows in flight, 784-256-10 MLP infer service (server default workers), "
                "OPENBLAS_NUM_THREADS=1" % (a.infer_window, a.infer_rows), contender="libaims",
                metric="infer_rows_per_s", transport="tcp", window=a.infer_window,
                rows_per_call=a.infer_rows, median=m, min=lo, max=hi, unit="rows/s",
                n=len(vals), round_values=vals)
    out = os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    for name in ("pipe-%s.jsonl" % stamp, "latest-pipe.jsonl"):
        with open(os.path.join(out, name), "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(machine_line(env))
    print("| goal | contender | metric | transport | median | min | max | ratio | met |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "median" not in r:
            continue
        print("| %s | %s | %s | %s | %.0f | %.0f | %.0f | %s | %s |" % (
            r["goal"], r["contender"], r["metric"], r.get("transport", ""), r["median"],
            r["min"], r["max"], "%.2f" % r["ratio"] if "ratio" in r else "",
            r.get("met", "")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
