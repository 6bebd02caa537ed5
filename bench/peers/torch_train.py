#!/usr/bin/python3
"""PyTorch side of the training benchmark (run with Debian's /usr/bin/python3).

Same data and hyper-parameters as bench_train.c, printed as JSON lines that
bench/run_train.py reads (one object per goal and contender):
  P1sgd   MLP 784-256(ReLU)-10, batch 128, 5 epochs, SGD lr 0.1 momentum 0.9
  P1adam  the same MLP with Adam lr 1e-3
  P2      softmax regression 784-10, batch 128, 5 epochs, SGD lr 0.1 momentum 0.9
  P5      single-row forward latency of the trained P1sgd MLP (eval mode, no_grad):
          p50 over --latency-calls calls, after 1,000 warm-up calls
Inputs: the Fashion-MNIST IDX files, pixels / 255 as float32; train on all 60,000
training rows, report accuracy on the 10,000 test rows.

The training loop is the fastest plain PyTorch form (no DataLoader: a seeded
torch.randperm per epoch and tensor slicing), so the peer is not a strawman.
Timed: the epochs only (model creation, data loading and evaluation excluded).

--threads N sets torch.set_num_threads(N) (ATen's OpenMP intra-op pool). It does
NOT set the BLAS's threads: Debian's PyTorch (BLAS_INFO=generic) calls sgemm_ of
the system libblas.so.3, which is OpenBLAS's pthreads build, whose own pool has
one thread per core unless OPENBLAS_NUM_THREADS says otherwise. --blas-threads N
sets that pool too (threadpoolctl -> openblas_set_num_threads, what a user of
numpy/PyTorch does; 0 = leave it as the environment made it). Every record
carries the settings in "config" and the BLAS the process really used in
"blas_runtime" (threadpoolctl: library, threading layer, kernel architecture,
threads).

Peer settings (issue 15, "the peer at its best"; what each did on this machine
is in docs/BENCH_PEERS.md; none was measurably faster, so all default off):
--flush-denormal (torch.set_flush_denormal), --foreach (multi-tensor optimizer step), --batches gather|epoch (index every batch out of
the full tensor, or gather the whole shuffled epoch once and slice contiguous
batches), --mkldnn on|off (torch.backends.mkldnn.enabled), --jit (torch.jit.trace
of the model), --step-times (per-step time quantiles in the record: tells a
uniform slow-down from stalls). bench/run_train.py runs the configurations
named in its torch_cmds() and reports the fastest as PyTorch's best.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

try:
    import threadpoolctl
except ImportError:  # python3-threadpoolctl is a bench dependency; degrade to "unknown"
    threadpoolctl = None


def read_idx(images, labels):
    with open(images, "rb") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with open(labels, "rb") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return (torch.from_numpy(x.astype(np.float32) / np.float32(255.0)),
            torch.from_numpy(y.astype(np.int64)))


def load(data_dir):
    fm = os.path.join(data_dir, "fashion-mnist")
    xtr, ytr = read_idx(os.path.join(fm, "train-images-idx3-ubyte"),
                        os.path.join(fm, "train-labels-idx1-ubyte"))
    xte, yte = read_idx(os.path.join(fm, "t10k-images-idx3-ubyte"),
                        os.path.join(fm, "t10k-labels-idx1-ubyte"))
    return xtr, ytr, xte, yte


def make_model(kind):
    if kind == "softmax":
        return torch.nn.Linear(784, 10)
    return torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 10))


def train(kind, opt_name, data, seed, epochs, batch, cfg=None, steps=None):
    """Train one model; return (seconds of the epochs, test accuracy, model, CPU
    seconds all the process's threads used during the epochs). cfg: the peer
    settings (main()); steps: a list that gets every step's time."""
    cfg = cfg or {}
    xtr, ytr, xte, yte = data
    torch.manual_seed(seed)
    model = make_model(kind)
    foreach = True if cfg.get("foreach") else None
    if opt_name == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=foreach)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=foreach)
    fwd = model
    if cfg.get("jit"):
        fwd = torch.jit.trace(model, xtr[:batch])
    loss_fn = torch.nn.CrossEntropyLoss()
    n = xtr.shape[0]
    gen = torch.Generator().manual_seed(seed)
    epoch_gather = cfg.get("batches") == "epoch"
    clock = time.perf_counter
    c0 = time.process_time()
    t0 = clock()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        if epoch_gather:  # one gather per epoch, then contiguous batch views
            xs, ys = xtr[perm], ytr[perm]
        for i in range(0, n, batch):
            if steps is not None:
                ts = clock()
            if epoch_gather:
                xb, yb = xs[i:i + batch], ys[i:i + batch]
            else:
                idx = perm[i:i + batch]
                xb, yb = xtr[idx], ytr[idx]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(fwd(xb), yb)
            loss.backward()
            opt.step()
            if steps is not None:
                steps.append(clock() - ts)
    elapsed = clock() - t0
    cpu = time.process_time() - c0
    with torch.no_grad():
        acc = float((model(xte).argmax(1) == yte).float().mean())
    return elapsed, acc, model, cpu


def latency(model, xte, calls):
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(1000):
            model(xte[i:i + 1])
        for i in range(calls):
            row = xte[i % 10000:i % 10000 + 1]
            t0 = time.perf_counter_ns()
            model(row)
            times.append(time.perf_counter_ns() - t0)
    return np.asarray(times, dtype=np.float64) / 1000.0  # microseconds


ENV_KEYS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY",
            "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "ATEN_CPU_CAPABILITY")


def env_info(threads):
    info = {k: os.environ.get(k) for k in ENV_KEYS}
    info["torch_threads"] = threads
    info["python"] = sys.version.split()[0]
    return info


def blas_threads(n):
    """Set the BLAS pool (OpenBLAS pthreads here) to n threads (n > 0)."""
    if n > 0 and threadpoolctl is not None:
        threadpoolctl.threadpool_limits(limits=n, user_api="blas")


def blas_runtime():
    """What the process really runs: BLAS library, threading, kernels, threads."""
    if threadpoolctl is None:
        return None
    return [{k: i.get(k) for k in ("internal_api", "version", "threading_layer", "architecture",
                                   "num_threads")}
            for i in threadpoolctl.threadpool_info()]


def step_stats(steps):
    """Per-step time quantiles (ms) and the share of the time in steps > 2x p50."""
    if not steps:
        return None
    a = np.asarray(steps) * 1000.0
    p50 = float(np.median(a))
    slow = a[a > 2 * p50]
    return {"steps": len(a), "p10_ms": float(np.percentile(a, 10)), "p50_ms": p50,
            "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max()), "sum_s": float(a.sum() / 1000.0),
            "slow_steps": int(len(slow)), "slow_share": float(slow.sum() / a.sum())}


def emit(goal, contender, metric, unit, samples, accs, threads, extra=None, cfg=None):
    rec = {"goal": goal, "contender": contender, "metric": metric, "unit": unit,
           "samples": [float(s) for s in samples], "median": float(np.median(samples)),
           "min": float(np.min(samples)), "max": float(np.max(samples)), "n": len(samples),
           "accuracy": float(np.median(accs)) if accs else None,
           "accuracies": [float(a) for a in accs], "version": torch.__version__,
           "env": env_info(threads), "config": cfg, "blas_runtime": blas_runtime()}
    if extra:
        rec.update(extra)
    print(json.dumps(rec), flush=True)


GOALS = {"P1sgd": ("mlp", "sgd"), "P1adam": ("mlp", "adam"), "P2": ("softmax", "sgd")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--goals", default="P1sgd,P1adam,P2,P5")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--latency-calls", type=int, default=20000)
    ap.add_argument("--contender", default=None)
    ap.add_argument("--seed-base", type=int, default=1, help="repetition i uses seed base+i")
    ap.add_argument("--blas-threads", type=int, default=0,
                    help="OpenBLAS pool threads (0: as the environment set it)")
    ap.add_argument("--flush-denormal", type=int, default=0, choices=(0, 1))
    ap.add_argument("--foreach", type=int, default=0, choices=(0, 1))
    ap.add_argument("--batches", default="gather", choices=("gather", "epoch"))
    ap.add_argument("--mkldnn", default="on", choices=("on", "off"))
    ap.add_argument("--jit", type=int, default=0, choices=(0, 1))
    ap.add_argument("--step-times", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    blas_threads(args.blas_threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    torch.backends.mkldnn.enabled = args.mkldnn == "on"
    cfg = {"torch_threads": args.threads, "blas_threads": args.blas_threads or None,
           "flush_denormal": bool(args.flush_denormal), "foreach": bool(args.foreach),
           "batches": args.batches, "mkldnn": args.mkldnn, "jit": bool(args.jit)}
    contender = args.contender or "pytorch-%dt" % args.threads
    data = load(args.data_dir)
    goals = args.goals.split(",")
    # Warm-up (untimed): one short pass so lazy initialisation is not timed.
    train("mlp", "sgd", (data[0][:2048], data[1][:2048], data[2], data[3]), 0, 1, args.batch,
          cfg)
    for goal in goals:
        if goal == "P5":
            _, acc, model, _ = train("mlp", "sgd", data, args.seed_base, args.epochs, args.batch,
                                     cfg)
            lat = latency(model, data[2], args.latency_calls)
            p50 = float(np.median(lat))
            rec_samples = [p50]
            emit("P5", contender, "predict_row_p50_us", "us", rec_samples, [acc], args.threads,
                 {"p90_us": float(np.percentile(lat, 90)),
                  "p99_us": float(np.percentile(lat, 99)), "calls": len(lat),
                  "variant": "fp32"}, cfg)
            continue
        kind, opt = GOALS[goal]
        times, accs, stats, cpus = [], [], [], []
        for rep in range(args.reps):
            steps = [] if args.step_times else None
            t, acc, _, cpu = train(kind, opt, data, args.seed_base + rep, args.epochs,
                                   args.batch, cfg, steps)
            times.append(t)
            accs.append(acc)
            cpus.append(round(cpu, 4))
            stats.append(step_stats(steps))
        # CPU seconds of all threads during the epochs: > the wall time means more
        # than one busy (or spinning) thread; their ratio is the cores it kept busy.
        extra = {"epochs": args.epochs, "batch": args.batch, "train_cpu_s": cpus}
        if args.step_times:
            extra["step_times"] = stats
        emit(goal, contender, "train_s", "s", times, accs, args.threads, extra, cfg)


if __name__ == "__main__":
    main()
