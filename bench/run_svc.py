#!/usr/bin/python3
"""Service/transport benchmark harness (issue 4, goals P6..P10): libaims's
nodes, services and clients against ZeroMQ 4.3 and NNG 1.5.

    /usr/bin/python3 bench/run_svc.py [--build-dir build-bench] [--rounds 3]
        [--goals P6,P7,P8,P9,P10] [--iters 20000] [--quick]

1. every measurement is one process (bench/peers/peer_rt.c built as
   peer_zmq_rt / peer_nng_rt, and bench/bench_svc.c); within a round the
   contenders of a measurement run back to back, and the order rotates every
   round so drift in machine speed hits all of them;
2. P6 (64-byte REQ/REP round trip, server on another thread or process):
   per contender and transport the median over rounds of each round's p50
   (and p99), min/max over rounds; ratio = libaims p50 / ZeroMQ p50 (and NNG);
   one-way PUSH/PULL throughput of both peers is recorded alongside;
3. P7: a single-row predict directly and through aims_client_call (by name,
   local registry), interleaved call by call; added p50 per transport;
4. P8: 4 handler instances, one 3x slower, open loop at 70 %: P2C vs round
   robin p99 (and the balancer's pick cost from bench_orch);
5. P9: infer capacity (rows/s of goodput) through the client with 2 instances
   vs 1, the same load for both (one async generator thread keeping up to
   --par-clients calls in flight, within one instance's admission window;
   --par-gen sync: closed-loop threads); rejections are counted apart from
   errors, and the CPU per call outside the instances' runs is recorded;
6. P10: the seed's example steps (preprocess 100 records, train, infer 100
   records) through the services, against the seed's 5 s / 10 min / 3 s;
7. writes one JSON object per row to bench/results/svc-<UTC>.jsonl and
   bench/results/latest-svc.jsonl, and prints a markdown table.

A contender that is not built (no libzmq3-dev / libnng-dev, or a library
without the service API yet) or that fails is recorded with "error" and the run
goes on. met = ratio within the goal's target.

BLAS settings (benchlib.py, issue 15): where BLAS runs -- libaims' predicts in
P7 and P9 -- every process runs with the machine's OPENBLAS_* settings AND with
OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset (--blas-env both), and each figure uses
its faster setting ("blas_best", both in "blas_settings"); P9's ratio divides
the two-instance figure at its best setting by the one-instance figure at its
best. P6 (ZeroMQ, NNG and libaims moving bytes, no BLAS call on any side), P8
and P10 run once, with the machine's settings.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys

from benchlib import blas_env, blas_summary, blas_variants, machine_info, machine_line, pool_by_blas

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

RT_CASES = [("rt-thread", "inproc"), ("rt-thread", "ipc"), ("rt-thread", "tcp"),
            ("rt-proc", "ipc"), ("rt-proc", "tcp")]
LAYOUT = {"rt-thread": "threads", "rt-proc": "processes"}
P6_TARGET = {"inproc": 0.25, "ipc": 1.0, "tcp": 1.0}


def run_json(cmd, timeout, env=None, tag="machine"):
    """Run cmd with BLAS setting `tag` (benchlib.blas_env) and `env` on top;
    return (list of JSON objects from stdout, each tagged "blas", error text or None)."""
    e = blas_env(tag)
    e.update(env or {})
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)
    except subprocess.TimeoutExpired:
        return [], "timeout after %ss" % timeout
    except OSError as ex:
        return [], str(ex)
    recs = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                recs.append(dict(json.loads(line), blas=tag))
            except ValueError:
                pass
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]
        return recs, "exit %d: %s" % (p.returncode, tail)
    return recs, None


def stats(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)


def pool_medians(recs):
    """Stats over records' "median" values, for benchlib.pool_by_blas."""
    med, lo, hi = stats([r.get("median") for r in recs])
    return None if med is None else {"median": med, "min": lo, "max": hi, "n": len(recs)}


def rotate(lst, k):
    k %= len(lst)
    return lst[k:] + lst[:k]


class Run:
    def __init__(self, args):
        self.args = args
        b = os.path.join(REPO, args.build_dir, "bench")
        self.exe = {"zeromq": os.path.join(b, "peer_zmq_rt"),
                    "nng": os.path.join(b, "peer_nng_rt"),
                    "libaims": args.svc_exe or os.path.join(b, "bench_svc")}
        self.rows = []
        self.env = machine_info(os.path.join(REPO, args.build_dir))
        self.env["blas_env"] = args.blas_env
        self.tags = blas_variants(args.blas_env)
        self.stamp = datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")
        self.data = args.data_dir if os.path.isdir(
            os.path.join(args.data_dir, "fashion-mnist")) else "-"

    def have(self, who):
        return os.access(self.exe[who], os.X_OK)

    def row(self, **kw):
        kw.setdefault("timestamp", self.stamp)
        kw.setdefault("env", self.env)
        self.rows.append(kw)
        return kw

    def err(self, goal, contender, what, error):
        print("  %s %s %s: %s" % (goal, contender, what, error), file=sys.stderr)
        self.row(goal=goal, contender=contender, metric=what, error=error)

    # ------------------------------------------------------------------ P6
    def p6(self):
        a = self.args
        who = [w for w in ("libaims", "zeromq", "nng") if self.have(w)]
        for w in ("libaims", "zeromq", "nng"):
            if w not in who:
                self.err("P6", w, "rt_us", "not built: %s" % self.exe[w])
        samples = {}   # (contender, transport, layout) -> [rec...]
        errors = {}
        for rnd in range(a.rounds):
            for mode, tr in RT_CASES:
                for w in rotate(who, rnd):
                    iters = a.iters if w != "nng" else max(2000, a.iters // 2)
                    recs, e = run_json([self.exe[w], mode, tr, str(iters)], 300)
                    key = (w, tr, LAYOUT[mode])
                    if e:
                        errors[key] = e
                    samples.setdefault(key, []).extend(
                        r for r in recs if r.get("metric") == "rt_us")
            # reference floor: OS pipe ping-pong between two processes (any peer binary)
            pexe = [self.exe[x] for x in ("zeromq", "nng") if x in who]
            for how in (("free", "pinned") if pexe else ()):
                recs, e = run_json([pexe[0], "pipe", how, str(a.iters)], 300)
                key = ("os-pipe" + ("-pinned" if how == "pinned" else ""), "pipe", "processes")
                if e:
                    errors[key] = e
                samples.setdefault(key, []).extend(recs)
            # throughput of both peers, once per round
            for w in rotate([x for x in who if x != "libaims"], rnd):
                for tr in ("inproc", "ipc", "tcp"):
                    msgs = a.msgs if w == "zeromq" else a.nng_msgs
                    recs, e = run_json([self.exe[w], "thr", tr, str(msgs)], 300)
                    key = (w, tr, "thr")
                    if e:
                        errors[key] = e
                    samples.setdefault(key, []).extend(recs)
        base = {}
        order = {"libaims": 0, "zeromq": 1, "nng": 2, "os-pipe": 3, "os-pipe-pinned": 4}
        tr_order = {"inproc": 0, "ipc": 1, "tcp": 2, "pipe": 3}
        lay_order = {"threads": 0, "processes": 1, "thr": 2}
        for (w, tr, lay), recs in sorted(samples.items(), key=lambda kv: (
                lay_order[kv[0][2]], tr_order[kv[0][1]], order[kv[0][0]])):
            if lay == "thr":
                med, lo, hi = stats([r["median"] for r in recs])
                if med is None:
                    continue
                self.row(goal="P6", description="one-way PUSH/PULL throughput, 64 B, "
                         "sender and receiver on two threads", contender=w, metric="msgs_per_s",
                         transport=tr, layout="threads", median=med, min=lo, max=hi,
                         unit="msg/s", n=len(recs), round_values=[r["median"] for r in recs],
                         version=recs[0].get("version"))
                continue
            med, lo, hi = stats([r["p50"] for r in recs])
            if med is None:
                continue
            p99 = statistics.median([r["p99"] for r in recs])
            base[(w, tr, lay)] = (med, p99)
            desc = "64 B REQ/REP round trip p50, server on another %s" % (
                "thread" if lay == "threads" else "process")
            if tr == "pipe":
                desc = "reference: 64 B ping-pong over two OS pipes, two processes%s" % (
                    ", both pinned to CPU 0" if w.endswith("pinned") else "")
            self.row(goal="P6", description=desc, contender=w,
                     metric="rt_p50_us", transport=tr, layout=lay, median=med, min=lo, max=hi,
                     p99=p99, unit="us", n=len(recs), iters=recs[0].get("n"),
                     round_values=[r["p50"] for r in recs],
                     round_p99=[r["p99"] for r in recs], version=recs[0].get("version"))
        for key, e in errors.items():
            if key not in base and key[2] != "thr":
                self.err("P6", key[0], "rt_us %s %s" % (key[1], key[2]), e)
        for (w, tr, lay), (med, p99) in base.items():
            if w != "libaims":
                continue
            row = [r for r in self.rows if r.get("goal") == "P6" and r.get("contender") ==
                   "libaims" and r.get("transport") == tr and r.get("layout") == lay][0]
            z = base.get(("zeromq", tr, lay))
            n = base.get(("nng", tr, lay))
            if z:
                row.update(peer="zeromq", ratio=med / z[0], target="<= %g" % P6_TARGET[tr],
                           met=med / z[0] <= P6_TARGET[tr], ratio_p99=p99 / z[1])
            if n:
                row.update(ratio_nng=med / n[0])
        self.base = base

    # ------------------------------------------------------------------ P7
    def p7(self):
        a = self.args
        if not self.have("libaims"):
            self.err("P7", "libaims", "added_p50_us", "not built")
            return
        variants = [("default", [])] + ([("batch_delay_us=0", ["batch_delay_us=0"])]
                                        if not a.quick else [])
        for tr in ("inproc", "ipc", "tcp"):
            for vname, kv in variants:
                recs_all = []
                err = None
                for rnd in range(a.rounds):
                    for tag in rotate(self.tags, rnd):
                        recs, e = run_json([self.exe["libaims"], "infer", tr, str(a.iters),
                                            self.data] + kv, 600, tag=tag)
                        err = err or e
                        recs_all.extend(r for r in recs if r.get("metric") == "added_p50_us")
                if not recs_all:
                    self.err("P7", "libaims", "added_p50_us %s %s" % (tr, vname), err)
                    continue
                best, by, _ = pool_by_blas(recs_all, pool_medians)
                recs_all = [r for r in recs_all if r.get("blas") == best] or recs_all
                med, lo, hi = stats([r["median"] for r in recs_all])
                z = getattr(self, "base", {}).get(("zeromq", tr, "threads"))
                if tr == "inproc":
                    tgt, limit = "<= 5 us", 5.0
                else:
                    limit = (z[0] + 10.0) if z else None
                    tgt = ("<= ZeroMQ %s rt p50 + 10 us = %.1f us" % (tr, limit)) if z else \
                        "<= ZeroMQ rt + 10 us (ZeroMQ not measured)"
                self.row(goal="P7", description="added p50 of a full client call (resolve + "
                         "pick + transport + dispatch + reply) over a direct single-row "
                         "aims_bundle_predict_rows, MLP 784-256-10", contender="libaims",
                         variant=vname, metric="added_p50_us", transport=tr, median=med,
                         min=lo, max=hi, unit="us",
                         p50_call=statistics.median([r["p50_call"] for r in recs_all]),
                         p50_direct=statistics.median([r["p50_direct"] for r in recs_all]),
                         n=len(recs_all), round_values=[r["median"] for r in recs_all],
                         target=tgt, met=(med <= limit) if limit is not None else None,
                         blas_best=best, blas_settings=blas_summary(by),
                         loadavg_1m=[r.get("loadavg_1m") for r in recs_all],
                         data=recs_all[0].get("data"))

    # ------------------------------------------------------------------ P8
    def p8(self):
        a = self.args
        orch = os.path.join(REPO, a.build_dir, "bench", "bench_orch")
        if os.access(orch, os.X_OK):
            recs, e = run_json([orch, "200000"], 300)
            for r in recs:
                if r.get("n") != 4 or r.get("policy") != "p2c":
                    continue
                if r.get("what") == "pick_ns":
                    self.row(goal="P8", description="P2C pick cost, 4 instances, one thread "
                             "(bench_orch; pick_done_ns adds done() with its clock read)",
                             contender="libaims", metric="pick_ns", policy="p2c", instances=4,
                             median=r["pick_ns"], unit="ns", pick_done_ns=r["pick_done_ns"],
                             target="<= 100 ns", met=r["pick_ns"] <= 100, ratio=r["pick_ns"] /
                             100.0, peer="goal 100 ns")
                elif r.get("what") == "pick_done_wall_ns":
                    self.row(goal="P8", description="P2C pick+done, 4 instances, 2 threads on "
                             "one balancer (bench_orch)", contender="libaims",
                             metric="pick_done_2threads_ns", policy="p2c", instances=4,
                             median=r["ns"], unit="ns")
            if e:
                self.err("P8", "libaims", "pick_ns", e)
        if not self.have("libaims"):
            self.err("P8", "libaims", "p99_us", "not built")
            return
        res = {}
        for rnd in range(a.rounds):
            for pol in rotate(["p2c", "rr"], rnd):
                recs, e = run_json([self.exe["libaims"], "lb", pol, str(a.lb_seconds),
                                    str(a.fast_us), str(a.slow_us)], 600)
                if e:
                    self.err("P8", "libaims-" + pol, "p99_us", e)
                res.setdefault(pol, []).extend(recs)
        med = {}
        for pol, recs in res.items():
            if not recs:
                continue
            m, lo, hi = stats([r["p99"] for r in recs])
            med[pol] = m
            self.row(goal="P8", description="4 handler instances (one 3x slower: %g vs %g us), "
                     "open-loop Poisson load at 70 %% of capacity through "
                     "aims_client_call_async, p99 from the intended send time"
                     % (a.fast_us, a.slow_us), contender="libaims-" + pol, metric="p99_us",
                     policy=pol, median=m, min=lo, max=hi, unit="us",
                     p50=statistics.median([r["p50"] for r in recs]),
                     failed=sum(r.get("failed", 0) for r in recs), n=len(recs),
                     round_values=[r["p99"] for r in recs],
                     requests_per_instance=[r.get("requests_per_instance") for r in recs],
                     send_lag_p99_us=[r.get("send_lag_p99_us") for r in recs],
                     loadavg_1m=[r.get("loadavg_1m") for r in recs])
        if "p2c" in med and "rr" in med and med["rr"]:
            r = [x for x in self.rows if x.get("contender") == "libaims-p2c" and
                 x.get("metric") == "p99_us"][0]
            r.update(peer="libaims-rr", ratio=med["p2c"] / med["rr"], target="<= 0.5",
                     met=med["p2c"] / med["rr"] <= 0.5)

    # ------------------------------------------------------------------ P9
    def p9(self):
        a = self.args
        if not self.have("libaims"):
            self.err("P9", "libaims", "rows_per_s", "not built")
            return
        res = {}
        env = {"OPENBLAS_NUM_THREADS": "1"}
        for rnd in range(a.rounds):
            for n in rotate([1, 2], rnd):
                for tag in rotate(self.tags, rnd):
                    recs, e = run_json([self.exe["libaims"], "par", str(n),
                                        str(a.par_seconds), self.data, str(a.par_rows),
                                        str(a.par_clients), a.par_gen, str(a.par_delay_us),
                                        str(a.par_batch_max)], 600, env, tag=tag)
                    if e:
                        self.err("P9", "libaims-%d" % n, "rows_per_s", e)
                    res.setdefault(n, []).extend(recs)
        med = {}
        for n, recs in sorted(res.items()):
            if not recs:
                continue
            best, by, _ = pool_by_blas(recs, pool_medians, higher_is_better=True)
            recs = [r for r in recs if r.get("blas") == best] or recs
            m, lo, hi = stats([r["median"] for r in recs])
            med[n] = m
            how = ("one async generator thread, up to %d calls in flight (refilled at "
                   "half)" % a.par_clients if a.par_gen == "async"
                   else "%d closed-loop client threads" % a.par_clients)
            bm = ("batch_max %d rows" % a.par_batch_max if a.par_batch_max > 0
                  else "batch_max default 64 rows: one call per run")
            self.row(goal="P9", description="infer capacity (goodput) through the client, %s, "
                     "the same load for 1 and 2 instances, within one instance's admission "
                     "window; %d rows per call, one worker per instance (%s, batch delay "
                     "%d us), OPENBLAS_NUM_THREADS=1"
                     % (how, a.par_rows, bm, a.par_delay_us),
                     contender="libaims-%dinst" % n, metric="rows_per_s", instances=n,
                     median=m, min=lo, max=hi, unit="rows/s", n=len(recs),
                     errors=sum(r.get("errors", 0) for r in recs),
                     rejected=sum(r.get("rejected", 0) for r in recs),
                     overhead_us_per_call=stats([r.get("overhead_us_per_call")
                                                 for r in recs])[0],
                     gen_cpu_us_per_call=stats([r.get("gen_cpu_us_per_call")
                                                for r in recs])[0],
                     round_values=[r["median"] for r in recs], run_env=env,
                     blas_best=best, blas_settings=blas_summary(by),
                     busy_instances=[r.get("busy_instances") for r in recs],
                     loadavg_1m=[r.get("loadavg_1m") for r in recs])
        if 1 in med and 2 in med and med[1]:
            r = [x for x in self.rows if x.get("contender") == "libaims-2inst"][0]
            r.update(peer="libaims-1inst", ratio=med[2] / med[1], target=">= 1.8",
                     met=med[2] / med[1] >= 1.8)

    # ------------------------------------------------------------------ P10
    def p10(self):
        if not self.have("libaims"):
            self.err("P10", "libaims", "seed", "not built")
            return
        recs, e = run_json([self.exe["libaims"], "seed", self.data], 1200)
        if e:
            self.err("P10", "libaims", "seed", e)
        for r in recs:
            r.setdefault("timestamp", self.stamp)
            r["description"] = "the seed's example step %s through the services (seed: %g s)" \
                % (r["metric"], r["seed_s"])
            r["env"] = self.env
            self.rows.append(r)

    # ------------------------------------------------------------------ output
    def write(self):
        os.makedirs(self.args.results_dir, exist_ok=True)
        path = os.path.join(self.args.results_dir, "svc-%s.jsonl" % self.stamp)
        for p in (path, os.path.join(self.args.results_dir, "latest-svc.jsonl")):
            with open(p, "w") as f:
                for r in self.rows:
                    f.write(json.dumps(r) + "\n")
        return path

    def table(self):
        def f(v, nd=1):
            if v is None:
                return "-"
            if isinstance(v, bool):
                return "yes" if v else "no"
            if isinstance(v, float):
                if abs(v) >= 1e5 or (v != 0 and abs(v) < 0.1):
                    return "%.3g" % v
                return ("%%.%df" % nd) % v
            return str(v)
        print("\n| goal | contender | what | median | min | max | unit | ratio | target | met |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in self.rows:
            if "error" in r:
                print("| %s | %s | %s | error: %s | | | | | | |"
                      % (r["goal"], r["contender"], r["metric"], r["error"][:80]))
                continue
            what = r.get("metric", "")
            for k in ("transport", "layout", "variant", "policy"):
                if r.get(k):
                    what += " " + str(r[k])
            ratio = f(r.get("ratio"), 3)
            if r.get("ratio_nng") is not None:
                ratio += " (vs NNG %.3f)" % r["ratio_nng"]
            print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                r["goal"], r["contender"], what, f(r.get("median"), 2), f(r.get("min"), 2),
                f(r.get("max"), 2), r.get("unit", ""), ratio, r.get("target") or "-",
                f(r.get("met"))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default="build-bench")
    ap.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--data-dir", default=os.environ.get("AIMS_DATA_DIR",
                                                         os.path.join(REPO, "data-cache")))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--goals", default="P6,P7,P8,P9,P10")
    ap.add_argument("--iters", type=int, default=20000, help="timed round trips per process")
    ap.add_argument("--msgs", type=int, default=1000000, help="ZeroMQ PUSH/PULL messages")
    ap.add_argument("--nng-msgs", type=int, default=100000, help="NNG PUSH/PULL messages")
    ap.add_argument("--lb-seconds", type=float, default=5.0)
    ap.add_argument("--fast-us", type=float, default=1000.0)
    ap.add_argument("--slow-us", type=float, default=3000.0)
    ap.add_argument("--par-seconds", type=float, default=3.0)
    ap.add_argument("--par-rows", type=int, default=64)
    ap.add_argument("--par-clients", type=int, default=32,
                    help="P9: calls in flight (async) or client threads (sync)")
    ap.add_argument("--par-gen", default="async", choices=["async", "sync"],
                    help="P9 load: one async generator thread (does not take the "
                    "instances' cores) or closed-loop threads")
    ap.add_argument("--par-delay-us", type=int, default=0,
                    help="P9: the instances' batch delay (64-row calls are batches already)")
    ap.add_argument("--par-batch-max", type=int, default=0,
                    help="P9: the instances' AIMS_SERVICE_BATCH_MAX in ROWS (0: the default, "
                    "64 rows = one 64-row call per run). It was 4, read as calls: a 64-row "
                    "call still ran alone, but admission counted it as 16 runs and the one "
                    "instance refused calls (docs/P9.md)")
    ap.add_argument("--svc-exe", default=None,
                    help="bench_svc binary to use instead of BUILD/bench/bench_svc")
    ap.add_argument("--blas-env", choices=("both", "native", "inherit"), default="both",
                    help="P7/P9: both = libaims with the machine's OPENBLAS_* settings and "
                    "with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset, each figure at its faster "
                    "one; native: unset only; inherit: as set")
    ap.add_argument("--quick", action="store_true",
                    help="1 round, 5,000 round trips, shorter P8/P9 windows")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.iters, args.msgs, args.nng_msgs = 1, 5000, 300000, 30000
        args.lb_seconds, args.par_seconds = 3.0, 2.0
    run = Run(args)
    goals = [g.strip() for g in args.goals.split(",") if g.strip()]
    for g in ("P6", "P7", "P8", "P9", "P10"):
        if g in goals:
            print("== %s" % g, file=sys.stderr, flush=True)
            getattr(run, g.lower())()
    path = run.write()
    run.table()
    print("\n%s\nresults: %s" % (machine_line(run.env), os.path.relpath(path, REPO)))


if __name__ == "__main__":
    main()
