#!/usr/bin/python3
"""Why does PyTorch's P1 time vary? (issue 15, bench honesty) -- a diagnostic.

    /usr/bin/python3 bench/torch_noise.py [--rounds 3] [--goal P1sgd]
        [--configs NAME,NAME...] [--nice 19] [--data-dir DIR]

Runs bench/peers/torch_train.py (one timed training, --step-times) in several
configurations, interleaved (the order rotates every round, so drift in machine
speed hits all of them), each process under `perf stat` (task-clock, page
faults, context switches, CPU migrations; cycles and instructions too when the
machine has a PMU -- this VM has none: "PMU not available due to
virtualization") and `/usr/bin/time -v` (voluntary / involuntary context
switches, max RSS). Per configuration it prints the training wall time, the
CPU time all threads used during the epochs (train_cpu_s: above the wall time
means more than one busy or spinning thread), per-step quantiles and the share
of the time spent in steps slower than 2x the median step (stalls: a thread
waited for a core), and the whole process's counters.

How to read it: if a configuration's wall time varies while its CPU time per
step and its step p10 do not, the work is the same and the time goes to
waiting (descheduled threads, a BLAS worker that a barrier waits for); if the
CPU time itself varies with the wall time, the threads spin (or the work
differs). Nothing here is a benchmark result: the figures go to stdout and to
--out (JSON lines) only; docs/BENCH_PEERS.md has the measured answer.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
TORCH = os.path.join(HERE, "peers", "torch_train.py")

# name -> (torch_train.py arguments, extra environment)
CONFIGS = {
    # the harness's configurations before issue 15's fix: torch 1 or 2 intra-op
    # threads, OpenBLAS left at its default (a pool of one thread per core)
    "t1-blasdef": (["--threads", "1"], {}),
    "t2p-blasdef": (["--threads", "2"], {"OMP_WAIT_POLICY": "PASSIVE"}),
    # the BLAS pool set as well
    "t1-blas1": (["--threads", "1", "--blas-threads", "1"], {}),
    "t1-blas1env": (["--threads", "1"], {"OPENBLAS_NUM_THREADS": "1"}),
    "t2p-blas1": (["--threads", "2", "--blas-threads", "1"], {"OMP_WAIT_POLICY": "PASSIVE"}),
    "t2p-blas2": (["--threads", "2", "--blas-threads", "2"], {"OMP_WAIT_POLICY": "PASSIVE"}),
    "t2-blas2": (["--threads", "2", "--blas-threads", "2"], {}),
    # single-thread PyTorch practices
    "t1-blas1-fd": (["--threads", "1", "--blas-threads", "1", "--flush-denormal", "1"], {}),
    "t1-blas1-fe": (["--threads", "1", "--blas-threads", "1", "--foreach", "1"], {}),
    "t1-blas1-ep": (["--threads", "1", "--blas-threads", "1", "--batches", "epoch"], {}),
    "t1-blas1-jit": (["--threads", "1", "--blas-threads", "1", "--jit", "1"], {}),
    "t1-blas1-nodnnl": (["--threads", "1", "--blas-threads", "1", "--mkldnn", "off"], {}),
    "t1-blas1-avx512": (["--threads", "1", "--blas-threads", "1"],
                        {"ATEN_CPU_CAPABILITY": "avx512"}),
}
PERF_EVENTS = "task-clock,cycles,instructions,page-faults,context-switches,cpu-migrations"


def parse_perf(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(",")
                if len(parts) < 3 or not parts[2]:
                    continue
                try:
                    out[parts[2]] = float(parts[0])
                except ValueError:
                    out[parts[2]] = None  # "<not supported>"
    except OSError:
        pass
    return out


def parse_time_v(path):
    keys = {"Voluntary context switches": "vol_cs", "Involuntary context switches": "invol_cs",
            "Maximum resident set size (kbytes)": "max_rss_kb",
            "Elapsed (wall clock) time (h:mm:ss or m:ss)": "elapsed",
            "User time (seconds)": "user_s", "System time (seconds)": "sys_s"}
    out = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.strip().rpartition(": ")
                if k in keys:
                    out[keys[k]] = v if keys[k] == "elapsed" else float(v)
    except OSError:
        pass
    return out


def run_one(name, goal, data_dir, seed, nice, tmp):
    args, extra = CONFIGS[name]
    env = dict(os.environ)
    env.update(extra)
    perf_out = os.path.join(tmp, "perf.csv")
    time_out = os.path.join(tmp, "time.txt")
    cmd = (["nice", "-n", str(nice), "/usr/bin/time", "-v", "-o", time_out,
            "perf", "stat", "-x,", "-o", perf_out, "-e", PERF_EVENTS,
            PY, TORCH, "--data-dir", data_dir, "--goals", goal, "--reps", "1",
            "--seed-base", str(seed), "--step-times", "--contender", name] + args)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                       timeout=900)
    rec = {"config": name, "goal": goal, "seed": seed, "args": args, "env": extra}
    for line in p.stdout.decode(errors="replace").splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            rec.update(train_s=r["samples"][0], train_cpu_s=r["train_cpu_s"][0],
                       accuracy=r["accuracy"], steps=r["step_times"][0],
                       blas_runtime=r.get("blas_runtime"))
    if "train_s" not in rec:
        rec["error"] = "exit %d: %s" % (p.returncode, p.stderr.decode(errors="replace")[-800:])
    rec["perf"] = parse_perf(perf_out)
    rec["time_v"] = parse_time_v(time_out)
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--goal", default="P1sgd")
    ap.add_argument("--configs", default="t1-blasdef,t1-blas1,t2p-blasdef,t2p-blas1")
    ap.add_argument("--nice", type=int, default=19)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None, help="also append the records here (JSON lines)")
    args = ap.parse_args()
    names = args.configs.split(",")
    for n in names:
        if n not in CONFIGS:
            sys.exit("torch_noise.py: unknown config %r (one of %s)" % (n, ", ".join(CONFIGS)))
    data_dir = args.data_dir or subprocess.run(
        [PY, os.path.join(HERE, "prepare_data.py")], check=True,
        stdout=subprocess.PIPE).stdout.decode().strip()
    recs = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            if r % 2:
                order = order[::-1]
            for name in order:
                rec = run_one(name, args.goal, data_dir, r + 1, args.nice, tmp)
                rec["round"] = r
                recs.append(rec)
                sys.stderr.write("[torch-noise] round %d %s: %s\n" % (
                    r, name, rec.get("error") or "%.3f s wall, %.3f s cpu, load %.1f" % (
                        rec["train_s"], rec["train_cpu_s"], os.getloadavg()[0])))
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(rec) + "\n")
    print("| config | round | train s | train cpu s | cpu/wall | step p10 / p50 / p99 ms "
          "| slow-step share | acc | task-clock s | cycles | instructions | vol / invol cs |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name in names:
        for rec in sorted((x for x in recs if x["config"] == name), key=lambda x: x["round"]):
            if "error" in rec:
                print("| %s | %d | error: %s |" % (name, rec["round"],
                                                   re.sub(r"\s+", " ", rec["error"])[:200]))
                continue
            st, pf, tv = rec["steps"], rec["perf"], rec["time_v"]

            def num(v, scale=1.0, f="%.3g"):
                return "n/a" if v is None else f % (v / scale)
            print("| %s | %d | %.3f | %.3f | %.2f | %.2f / %.2f / %.2f | %.1f %% | %.4f | %s "
                  "| %s | %s | %s / %s |" % (
                      name, rec["round"], rec["train_s"], rec["train_cpu_s"],
                      rec["train_cpu_s"] / rec["train_s"], st["p10_ms"], st["p50_ms"],
                      st["p99_ms"], 100 * st["slow_share"], rec["accuracy"],
                      num(pf.get("task-clock"), 1000.0, "%.2f"), num(pf.get("cycles")),
                      num(pf.get("instructions")), num(tv.get("vol_cs"), 1, "%d"),
                      num(tv.get("invol_cs"), 1, "%d")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
