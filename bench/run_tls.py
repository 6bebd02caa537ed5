#!/usr/bin/env python3
"""Issue 10 goals P11a-c, side by side in one run (bench/bench.mk bench-tls).

Per round (alternating, ROUNDS rounds):
  1. bench_tls (libaims): tls:// vs tcp:// through the same node and client in
     one process -- 64 B round trip p50 (P11a), 1 MiB frames bytes/s (P11b),
     new connection + handshake + first call p50 with and without TLS session
     resumption (P11c);
  2. peer_zmq_curve (ZeroMQ 4.3 REQ/REP over tcp with CURVE, the peer named by
     P11a), the same 64 B round trip.
Medians over the rounds (min/max kept) give the ratios:
  P11a  tls p50 / tcp p50            target <= 1.15
        tls p50 / ZeroMQ CURVE p50   target <= 0.8
  P11b  tls bytes/s / tcp bytes/s    target >= 0.7
  P11c  reported (no target): tcp, tls resumed, tls full handshake.
One JSON object per goal to bench/results/tls-<UTC>.jsonl and latest-tls.jsonl.

usage: run_tls.py --build-dir DIR [--rounds 3] [--iters 5000 --iters-mb 200 --iters-conn 200]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchlib import machine_info

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_json(cmd, env=None):
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env, timeout=900)
    if out.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (cmd[0], out.returncode, out.stderr.strip()))
    return json.loads(out.stdout)


def spread(vals):
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default="build-bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=5000)
    ap.add_argument("--iters-mb", type=int, default=200)
    ap.add_argument("--iters-conn", type=int, default=200)
    a = ap.parse_args()
    bench = os.path.join(a.build_dir, "bench", "bench_tls")
    peer = os.path.join(a.build_dir, "bench", "peer_zmq_curve")
    env = dict(os.environ, AIMS_SOURCE_DIR=ROOT)
    machine = machine_info()
    aims_rounds, zmq_rounds, zmq_error = [], [], None
    for r in range(a.rounds):
        res = run_json([bench, str(a.iters), str(a.iters_mb), str(a.iters_conn)], env)
        aims_rounds.append(res)
        print("round %d libaims: %s" % (r, json.dumps(res)), file=sys.stderr)
        if os.path.exists(peer):
            try:
                z = run_json([peer, str(a.iters), str(a.iters_mb)])
                zmq_rounds.append(z)
                print("round %d zmq: %s" % (r, json.dumps(z)), file=sys.stderr)
            except (RuntimeError, ValueError) as e:
                zmq_error = str(e)
        else:
            zmq_error = "peer_zmq_curve not built (libzmq3-dev missing?)"

    def col(key, sub):
        return [x[key][sub] for x in aims_rounds]

    rt_tcp, rt_tls = spread(col("P11a_rt64_p50_us", "tcp")), spread(col("P11a_rt64_p50_us", "tls"))
    mb_tcp = spread(col("P11b_1mib_bytes_per_s", "tcp"))
    mb_tls = spread(col("P11b_1mib_bytes_per_s", "tls"))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    common = {"rounds": a.rounds, "machine": machine, "utc": stamp,
              "command": "make -f bench/bench.mk bench-tls"}
    recs = []
    r_tcp = rt_tls["median"] / rt_tcp["median"]
    recs.append(dict(common, goal="P11a", metric="rt64_p50_ratio", contender="aims_tls",
                     reference="aims_tcp", value_us=rt_tls, reference_us=rt_tcp, ratio=r_tcp,
                     target=1.15, met=r_tcp <= 1.15, iters=a.iters))
    if zmq_rounds:
        rt_zmq = spread([z["rt64_p50_us"]["curve"] for z in zmq_rounds])
        rt_zplain = spread([z["rt64_p50_us"]["plain"] for z in zmq_rounds])
        r_zmq = rt_tls["median"] / rt_zmq["median"]
        recs.append(dict(common, goal="P11a", metric="rt64_p50_ratio", contender="aims_tls",
                         reference="zmq_curve_tcp", value_us=rt_tls, reference_us=rt_zmq,
                         zmq_plain_tcp_us=rt_zplain, zmq=zmq_rounds[0].get("zmq"),
                         ratio=r_zmq, target=0.8, met=r_zmq <= 0.8, iters=a.iters))
        zmb = spread([z["curve_1mib_bytes_per_s"] for z in zmq_rounds])
    else:
        recs.append(dict(common, goal="P11a", metric="rt64_p50_ratio", contender="aims_tls",
                         reference="zmq_curve_tcp", error=zmq_error))
        zmb = None
    r_mb = mb_tls["median"] / mb_tcp["median"]
    rec_b = dict(common, goal="P11b", metric="1mib_bytes_per_s_ratio", contender="aims_tls",
                 reference="aims_tcp", value=mb_tls, reference_value=mb_tcp, ratio=r_mb,
                 target=0.7, met=r_mb >= 0.7, iters=a.iters_mb)
    if zmb is not None:
        rec_b["zmq_curve_bytes_per_s"] = zmb
    recs.append(rec_b)
    recs.append(dict(common, goal="P11c", metric="connect_first_call_p50_us",
                     contender="aims_tls", tcp=spread(col("P11c_connect_first_call_p50_us", "tcp")),
                     tls_resumed=spread(col("P11c_connect_first_call_p50_us", "tls_resumed")),
                     tls_full=spread(col("P11c_connect_first_call_p50_us", "tls_full")),
                     failed_first_calls=[x.get("P11c_failed_first_calls") for x in aims_rounds],
                     iters=a.iters_conn))
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    for path in (os.path.join(HERE, "results", "tls-%s.jsonl" % stamp),
                 os.path.join(HERE, "results", "latest-tls.jsonl")):
        with open(path, "w") as f:
            for rec in recs:
                f.write(json.dumps(rec) + "\n")
    print("%-6s %-28s %12s %12s %8s %6s" % ("goal", "what", "libaims tls", "reference", "ratio",
                                            "target"))
    for rec in recs:
        if "ratio" in rec:
            v = rec.get("value_us", rec.get("value"))
            ref = rec.get("reference_us", rec.get("reference_value"))
            print("%-6s %-28s %12.4g %12.4g %8.3f %6s %s" % (
                rec["goal"], rec["reference"], v["median"], ref["median"], rec["ratio"],
                rec["target"], "met" if rec["met"] else "NOT met"))
        elif "error" in rec:
            print("%-6s %-28s %s" % (rec["goal"], rec["reference"], rec["error"]))
        else:
            print("%-6s connect+first call p50 us: tcp %.1f, tls resumed %.1f, tls full %.1f" % (
                rec["goal"], rec["tcp"]["median"], rec["tls_resumed"]["median"],
                rec["tls_full"]["median"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
