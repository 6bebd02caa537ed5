#!/usr/bin/python3
"""scikit-learn side of the training benchmark (run with Debian's /usr/bin/python3).

Prints JSON lines that bench/run_train.py reads:
  P2lbfgs  LogisticRegression(solver="lbfgs") with its defaults (multinomial,
           C=1, max_iter=100) on Fashion-MNIST pixels / 255 (60,000 train rows);
           timed: fit; accuracy on the 10,000 test rows
  P3       fortunes topics: HashingVectorizer(2**18, alternate_sign=False,
           norm=None, ngram_range=R) + TfidfTransformer() +
           SGDClassifier(alpha=A, random_state=seed) (hinge loss); timed:
           vectorize + fit on fortunes/train.tsv (the whole training, from texts);
           accuracy on test.tsv. A and R are scikit-learn's best: a grid (alpha
           1e-5..1e-3 x ngram_range (1,1), (1,2)) trained on tune-train.tsv and
           judged on tune-valid.tsv (never the test set), cached with every grid
           point in fortunes/sklearn-grid.json and recorded in the JSON line.
Each goal runs --reps times (no warm-up needed: a fit is seconds long and the
imports happen before the clock starts).
"""
import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import cached_grid  # noqa: E402


def read_idx(images, labels):
    with open(images, "rb") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with open(labels, "rb") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return x.astype(np.float32) / np.float32(255.0), y.astype(np.int32)


def read_tsv(path):
    labels, texts = [], []
    with open(path, "rb") as f:
        for line in f.read().decode("utf-8").split("\n"):
            if not line:
                continue
            lab, _, text = line.partition("\t")
            labels.append(lab)
            texts.append(text)
    return labels, texts


def env_info():
    info = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                           "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    info["python"] = sys.version.split()[0]
    return info


def emit(goal, contender, times, accs, extra=None):
    import sklearn
    rec = {"goal": goal, "contender": contender, "metric": "train_s", "unit": "s",
           "samples": times, "median": float(np.median(times)), "min": float(min(times)),
           "max": float(max(times)), "n": len(times),
           "accuracy": float(np.median(accs)), "accuracies": accs,
           "version": sklearn.__version__, "env": env_info()}
    if extra:
        rec.update(extra)
    print(json.dumps(rec), flush=True)


def goal_p2(args):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    fm = os.path.join(args.data_dir, "fashion-mnist")
    xtr, ytr = read_idx(os.path.join(fm, "train-images-idx3-ubyte"),
                        os.path.join(fm, "train-labels-idx1-ubyte"))
    xte, yte = read_idx(os.path.join(fm, "t10k-images-idx3-ubyte"),
                        os.path.join(fm, "t10k-labels-idx1-ubyte"))
    times, accs = [], []
    for _ in range(args.reps):
        clf = LogisticRegression(solver="lbfgs")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            clf.fit(xtr, ytr)
            times.append(time.perf_counter() - t0)
        accs.append(float((clf.predict(xte) == yte).mean()))
    emit("P2lbfgs", "scikit-learn-lbfgs", times, accs, {"n_iter": int(clf.n_iter_[0])})


SK_GRID_VERSION = "sk-grid-v1"
SK_GRID = [dict(alpha=a, ngram_max=n) for a in (1e-5, 3e-5, 1e-4, 3e-4, 1e-3) for n in (1, 2)]


def p3_fit_eval(ttr, ftr, tte, fte, cfg, seed):
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.linear_model import SGDClassifier
    t0 = time.perf_counter()
    hv = HashingVectorizer(n_features=2 ** 18, alternate_sign=False, norm=None,
                           ngram_range=(1, cfg["ngram_max"]))
    tf = TfidfTransformer()
    xtr = tf.fit_transform(hv.transform(ttr))
    clf = SGDClassifier(alpha=cfg["alpha"], random_state=seed).fit(xtr, ftr)
    secs = time.perf_counter() - t0
    pred = clf.predict(tf.transform(hv.transform(tte)))
    return secs, float(np.mean(pred == np.asarray(fte)))


def p3_grid(fdir, force=False):
    return cached_grid(os.path.join(fdir, "sklearn-grid.json"), SK_GRID_VERSION,
                       lambda: p3_tune(fdir), force)


def p3_tune(fdir):
    ftr, ttr = read_tsv(os.path.join(fdir, "tune-train.tsv"))
    fva, tva = read_tsv(os.path.join(fdir, "tune-valid.tsv"))
    grid = []
    for cfg in SK_GRID:
        secs, acc = p3_fit_eval(ttr, ftr, tva, fva, cfg, 1)
        grid.append(dict(cfg, valid_accuracy=acc, train_s=round(secs, 3)))
        sys.stderr.write("[sklearn grid] %s -> %.4f in %.2f s\n" % (cfg, acc, secs))
    b = max(grid, key=lambda g: (g["valid_accuracy"], -g["train_s"]))
    return {"version": SK_GRID_VERSION, "tuned_on": "fortunes/tune-train.tsv -> tune-valid.tsv",
            "best": {"alpha": b["alpha"], "ngram_max": b["ngram_max"]},
            "best_valid_accuracy": b["valid_accuracy"], "grid": grid}


def goal_p3(args):
    fdir = os.path.join(args.data_dir, "fortunes")
    grid = p3_grid(fdir, force=args.tune_only)
    if args.tune_only:
        print(json.dumps(grid))
        return
    ftr, ttr = read_tsv(os.path.join(fdir, "train.tsv"))
    fte, tte = read_tsv(os.path.join(fdir, "test.tsv"))
    times, accs = [], []
    for rep in range(args.reps):
        secs, acc = p3_fit_eval(ttr, ftr, tte, fte, grid["best"], args.seed_base + rep)
        times.append(secs)
        accs.append(acc)
    emit("P3", "scikit-learn-sgd", times, accs,
         {"config": dict(grid["best"], n_features=2 ** 18, loss="hinge", tfidf=True),
          "tuning": {"tuned_on": grid["tuned_on"],
                     "best_valid_accuracy": grid["best_valid_accuracy"],
                     "grid_points": len(grid["grid"])}})


GOALS = {"P2lbfgs": goal_p2, "P3": goal_p3}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--goals", default="P2lbfgs,P3")
    ap.add_argument("--seed-base", type=int, default=1, help="SGDClassifier random_state base")
    ap.add_argument("--tune-only", action="store_true", help="P3: re-run the grid, print it")
    args = ap.parse_args()
    for g in args.goals.split(","):
        GOALS[g](args)


if __name__ == "__main__":
    main()
