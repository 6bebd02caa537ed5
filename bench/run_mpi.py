#!/usr/bin/env python3
"""run_mpi.py -- the seed's parallelism degree for training (issue 16 item 5).

Times one epoch of the Fashion-MNIST MLP (784-256-10, SGD, batch 128 by
default) in four set-ups, alternating them round after round on the same
machine:

  1r1t    one process, the ordinary trainer, 1 compute thread (OpenBLAS 1 thread)
  1r2t    one process, the ordinary trainer, 2 compute threads (OpenBLAS 2)
  2r1t    mpirun -np 2, one shard per rank, 1 thread each (OpenBLAS 1 each)
  1p2s    one process with 2 shards, 1 thread: the bit-identical reference of 2r1t

parallelism degree (seed: total capacity / single-node capacity) =
    time per epoch of 1r1t / time per epoch of 2r1t
(samples per second of 2 ranks over 1). Prints one JSON line per run and a
table; writes bench/results/mpi-<UTC>.json and bench/results/latest-mpi.json.

  /usr/bin/python3 bench/run_mpi.py --build-dir build-bench [--rows 60000]
      [--epochs 3] [--batch 128] [--hidden 256] [--rounds 3]
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from mpi_env import MPI_ENV  # noqa: E402
import machine  # noqa: E402  (bench/, the script's own folder)


def one(exe, data, args, setup):
    env = dict(os.environ)
    env.update(MPI_ENV)
    threads = {"1r1t": 1, "1r2t": 2, "2r1t": 1, "1p2s": 1}[setup]
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    cmd = [exe, data] + args + ["--threads", str(threads), "--test", "10000"]
    if setup == "2r1t":
        cmd = [shutil.which("mpirun"), "--oversubscribe", "--allow-run-as-root", "-np", "2"] + \
            cmd + ["--mpi"]
    elif setup == "1p2s":
        cmd += ["--shards", "2"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit("run failed: " + " ".join(cmd))
    line = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")][0]
    # epoch 1 carries the page faults of the first touch: the median of the rest
    secs = line["epoch_s"][1:] if len(line["epoch_s"]) > 1 else line["epoch_s"]
    line["setup"] = setup
    line["epoch_median_s"] = statistics.median(secs)
    return line


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default="build-bench")
    ap.add_argument("--data", default=os.environ.get("AIMS_DATA_DIR",
                                                     os.path.join(ROOT, "data-cache")))
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    exe = os.path.join(a.build_dir, "examples", "aims_train_mpi")
    if shutil.which("mpirun") is None:
        raise SystemExit("mpirun not found: apt-get install openmpi-bin libopenmpi-dev")
    args = ["--rows", str(a.rows), "--epochs", str(a.epochs), "--batch", str(a.batch),
            "--hidden", str(a.hidden)]
    setups = ["1r1t", "1r2t", "2r1t", "1p2s"]
    runs = {s: [] for s in setups}
    for rnd in range(a.rounds):
        for s in setups:
            line = one(exe, a.data, args, s)
            line["round"] = rnd
            runs[s].append(line)
            print(json.dumps(line), flush=True)
    summary = {}
    for s in setups:
        t = [r["epoch_median_s"] for r in runs[s]]
        summary[s] = {"epoch_s_median": statistics.median(t), "min": min(t), "max": max(t),
                      "test_accuracy": runs[s][-1]["test_accuracy"],
                      "samples_per_s": a.rows / statistics.median(t)}
    base = summary["1r1t"]["epoch_s_median"]
    result = {
        "bench": "mpi", "utc": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rows": a.rows, "epochs": a.epochs, "batch": a.batch, "hidden": a.hidden,
        "rounds": a.rounds, "cores": os.cpu_count(), "load1_start": os.getloadavg()[0],
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
        "machine": machine.describe(a.build_dir),
        "summary": summary,
        "parallelism_2r_vs_1r1t": base / summary["2r1t"]["epoch_s_median"],
        "parallelism_1r2t_vs_1r1t": base / summary["1r2t"]["epoch_s_median"],
        "two_ranks_vs_1r2t": summary["1r2t"]["epoch_s_median"] / summary["2r1t"]["epoch_s_median"],
        "runs": runs,
    }
    print("\nmachine: %s" % result["machine"]["short"])
    print("setup  s/epoch (median, min-max)   samples/s   test acc")
    for s in setups:
        v = summary[s]
        print("%-5s  %.3f (%.3f-%.3f)        %8.0f    %.4f" % (s, v["epoch_s_median"], v["min"],
                                                             v["max"], v["samples_per_s"],
                                                             v["test_accuracy"]))
    print("parallelism degree, 2 ranks vs 1 rank 1 thread: %.2f" %
          result["parallelism_2r_vs_1r1t"])
    print("1 rank 2 threads vs 1 rank 1 thread:           %.2f" %
          result["parallelism_1r2t_vs_1r1t"])
    out_dir = os.path.join(ROOT, "bench", "results")
    stamp = datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")
    for name in ("mpi-%s.json" % stamp, "latest-mpi.json"):
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
