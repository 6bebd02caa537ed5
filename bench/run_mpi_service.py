#!/usr/bin/env python3
"""run_mpi_service.py -- a train job as a service on 1 process vs N MPI ranks
(`aims_node --train-mpi`, docs/MPI.md "As a train service"), same spec, same rows.

    AIMS_LIBRARY=build/src/libaims.so PYTHONPATH=bindings/python \\
        bench/run_mpi_service.py --build-dir build --rows 10000 --epochs 2 --rounds 2

For each round, alternating: a plain `aims_node --train` (1 process), and
`mpirun -np 2 aims_node --train-mpi`; the wall time from submit to "done" is
measured by polling status every 20 ms. Prints one JSON line per run and the
medians. Uses the Open MPI settings of tests/integration/mpi_env.py.
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from array import array

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
from mpi_env import MPI_ENV  # noqa: E402
import aims  # noqa: E402


def idx(data, rows):
    d = os.path.join(data, "fashion-mnist")
    with open(os.path.join(d, "train-images-idx3-ubyte"), "rb") as f:
        f.read(16)
        raw = f.read(rows * 784)
    with open(os.path.join(d, "train-labels-idx1-ubyte"), "rb") as f:
        f.read(8)
        lab = f.read(rows)
    return array("f", (b / 255.0 for b in raw)), array("i", list(lab))


def num(v):
    try:
        return int(v)
    except TypeError:
        d = v.data.tolist() if hasattr(v.data, "tolist") else v.data
        return int(d[0] if isinstance(d, (list, tuple)) else d)


def run_one(cmd, env, x, y, rows, spec, job):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    try:
        line = p.stdout.readline().split()
        assert line and line[0] == "ready", line
        addr = line[1]
        with aims.Client() as c:
            h = "handle-" + job + "-0123456789"
            req = {"job": job, "handle": h, "spec": spec,
                   "x": ("f32", (rows, 784), x), "y": ("i32", (rows,), y)}
            t0 = time.monotonic()
            c.call_addr(addr, "trainer", "submit", req, timeout_ms=120000)
            while True:
                st = c.call_addr(addr, "trainer", "status", {"job": job, "handle": h})
                s = num(st["state"])
                if s >= 2:
                    break
                time.sleep(0.02)
            secs = time.monotonic() - t0
            assert s == 2, "job ended in state %d" % s
        return secs, None
    finally:
        p.terminate()
        p.wait(60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--data", default="data-cache")
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    node = os.path.join(a.build_dir, "examples", "aims_node")
    x, y = idx(a.data, a.rows)
    spec = ("kind=mlp hidden=256 activation=relu epochs=%d batch=128 lr=0.05 seed=1 "
            "train_threads=1" % a.epochs)
    env = dict(os.environ)
    env.update(MPI_ENV)
    env["OPENBLAS_NUM_THREADS"] = "1"
    base = [node, "--name", "b", "--listen", "tcp://127.0.0.1:0", "--train", "trainer",
            "--log-level", "warn"]
    setups = {"1proc": base,
              "%dranks" % a.ranks: ["mpirun", "--oversubscribe", "--allow-run-as-root", "-np",
                                    str(a.ranks)] + base + ["--train-mpi"]}
    res = {k: [] for k in setups}
    for r in range(a.rounds):
        for name, cmd in setups.items():
            secs, _ = run_one(cmd, env, x, y, a.rows, spec, "j%d" % r)
            res[name].append(secs)
            print(json.dumps({"setup": name, "round": r, "rows": a.rows, "epochs": a.epochs,
                              "job_s": round(secs, 3), "load": os.getloadavg()[0]}), flush=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    print(json.dumps({"median_job_s": med, "min": {k: min(v) for k, v in res.items()},
                      "max": {k: max(v) for k, v in res.items()},
                      "parallelism": round(med["1proc"] / med["%dranks" % a.ranks], 3)}))


if __name__ == "__main__":
    main()
