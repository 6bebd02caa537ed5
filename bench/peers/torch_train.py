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

--threads N sets torch.set_num_threads(N). The harness runs this script with
--threads 1 and with --threads 2 under OMP_WAIT_POLICY=PASSIVE and reports the
faster as PyTorch's best configuration (DATA.md).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch


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


def train(kind, opt_name, data, seed, epochs, batch):
    xtr, ytr, xte, yte = data
    torch.manual_seed(seed)
    model = make_model(kind)
    if opt_name == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = xtr.shape[0]
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
    elapsed = time.perf_counter() - t0
    with torch.no_grad():
        acc = float((model(xte).argmax(1) == yte).float().mean())
    return elapsed, acc, model


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


def env_info(threads):
    info = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                           "OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    info["torch_threads"] = threads
    info["python"] = sys.version.split()[0]
    return info


def emit(goal, contender, metric, unit, samples, accs, threads, extra=None):
    rec = {"goal": goal, "contender": contender, "metric": metric, "unit": unit,
           "samples": [float(s) for s in samples], "median": float(np.median(samples)),
           "min": float(np.min(samples)), "max": float(np.max(samples)), "n": len(samples),
           "accuracy": float(np.median(accs)) if accs else None,
           "accuracies": [float(a) for a in accs], "version": torch.__version__,
           "env": env_info(threads)}
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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    contender = args.contender or "pytorch-%dt" % args.threads
    data = load(args.data_dir)
    goals = args.goals.split(",")
    # Warm-up (untimed): one short pass so lazy initialisation is not timed.
    train("mlp", "sgd", (data[0][:2048], data[1][:2048], data[2], data[3]), 0, 1, args.batch)
    for goal in goals:
        if goal == "P5":
            _, acc, model = train("mlp", "sgd", data, args.seed_base, args.epochs, args.batch)
            lat = latency(model, data[2], args.latency_calls)
            p50 = float(np.median(lat))
            rec_samples = [p50]
            emit("P5", contender, "predict_row_p50_us", "us", rec_samples, [acc], args.threads,
                 {"p90_us": float(np.percentile(lat, 90)),
                  "p99_us": float(np.percentile(lat, 99)), "calls": len(lat),
                  "variant": "fp32"})
            continue
        kind, opt = GOALS[goal]
        times, accs = [], []
        for rep in range(args.reps):
            t, acc, _ = train(kind, opt, data, args.seed_base + rep, args.epochs, args.batch)
            times.append(t)
            accs.append(acc)
        emit(goal, contender, "train_s", "s", times, accs, args.threads,
             {"epochs": args.epochs, "batch": args.batch})


if __name__ == "__main__":
    main()
