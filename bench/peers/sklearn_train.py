#!/usr/bin/python3
"""scikit-learn side of the training benchmark (run with Debian's /usr/bin/python3).

Prints JSON lines that bench/run_train.py reads:
  P2lbfgs  LogisticRegression(solver="lbfgs") with its defaults (multinomial,
           C=1, max_iter=100) on Fashion-MNIST pixels / 255 (60,000 train rows);
           timed: fit; accuracy on the 10,000 test rows
  P3sk     fortunes topics: HashingVectorizer(2**18, alternate_sign=False,
           norm=None) + TfidfTransformer() + SGDClassifier(random_state=seed)
           (defaults: hinge loss, alpha 1e-4); timed: vectorize + fit on
           fortunes/train.tsv (the whole training, from texts); accuracy on test.tsv
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


def goal_p3(args):
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.linear_model import SGDClassifier
    ftr, ttr = read_tsv(os.path.join(args.data_dir, "fortunes", "train.tsv"))
    fte, tte = read_tsv(os.path.join(args.data_dir, "fortunes", "test.tsv"))
    times, accs = [], []
    for rep in range(args.reps):
        t0 = time.perf_counter()
        hv = HashingVectorizer(n_features=2 ** 18, alternate_sign=False, norm=None)
        tf = TfidfTransformer()
        xtr = tf.fit_transform(hv.transform(ttr))
        clf = SGDClassifier(random_state=args.seed_base + rep).fit(xtr, ftr)
        times.append(time.perf_counter() - t0)
        pred = clf.predict(tf.transform(hv.transform(tte)))
        accs.append(float(np.mean(pred == np.asarray(fte))))
    emit("P3", "scikit-learn-sgd", times, accs)


GOALS = {"P2lbfgs": goal_p2, "P3": goal_p3}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--goals", default="P2lbfgs,P3")
    ap.add_argument("--seed-base", type=int, default=1, help="SGDClassifier random_state base")
    args = ap.parse_args()
    for g in args.goals.split(","):
        GOALS[g](args)


if __name__ == "__main__":
    main()
