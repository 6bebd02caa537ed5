#!/usr/bin/python3
"""liblinear CLI reference for softmax/logistic regression on Fashion-MNIST (goal P2).

Writes fashion-mnist/{train,test}.svm once (svmlight, pixels / 255 with zeros
left out, labels 0..9), then per repetition times

    liblinear-train -s 0 -q train.svm <tmp>/model     (L2-regularised LR, C = 1)

as the wall time of that process, and reads the accuracy printed by
liblinear-predict on test.svm. Slow (about a minute per fit): run_train.py runs
it once per benchmark as a reference row, without a ratio or goal.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

TRAIN = "/usr/bin/liblinear-train"
PREDICT = "/usr/bin/liblinear-predict"


def write_svm(images, labels, dst):
    if os.path.exists(dst):
        return
    with open(images, "rb") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with open(labels, "rb") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    lines = []
    for row, lab in zip(x, y):
        nz = np.nonzero(row)[0]
        lines.append("%d %s\n" % (lab, " ".join("%d:%.6g" % (j + 1, row[j] / 255.0)
                                                 for j in nz)))
    with open(dst + ".tmp", "w") as f:
        f.writelines(lines)
    os.replace(dst + ".tmp", dst)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()
    if not os.access(TRAIN, os.X_OK):
        print(json.dumps({"goal": "P2lbfgs", "contender": "liblinear",
                          "error": "%s missing (apt-get install liblinear-tools)" % TRAIN}))
        return 1
    fm = os.path.join(args.data_dir, "fashion-mnist")
    train = os.path.join(fm, "train.svm")
    test = os.path.join(fm, "test.svm")
    write_svm(os.path.join(fm, "train-images-idx3-ubyte"),
              os.path.join(fm, "train-labels-idx1-ubyte"), train)
    write_svm(os.path.join(fm, "t10k-images-idx3-ubyte"),
              os.path.join(fm, "t10k-labels-idx1-ubyte"), test)
    tmp = tempfile.mkdtemp(prefix="aims-ll-")
    times, accs = [], []
    try:
        for _ in range(args.reps):
            model = os.path.join(tmp, "model")
            t0 = time.perf_counter()
            subprocess.run([TRAIN, "-s", "0", "-q", train, model], check=True,
                           stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
            out = subprocess.run([PREDICT, test, model, os.path.join(tmp, "pred")], check=True,
                                 stdout=subprocess.PIPE).stdout.decode()
            m = re.search(r"Accuracy = ([0-9.]+)%", out)
            accs.append(float(m.group(1)) / 100.0 if m else None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rec = {"goal": "P2lbfgs", "contender": "liblinear", "metric": "train_s", "unit": "s",
           "samples": times, "median": float(np.median(times)), "min": min(times),
           "max": max(times), "n": len(times), "accuracy": float(np.median(accs)),
           "accuracies": accs, "version": "liblinear 2.3 (Debian CLI, -s 0)",
           "env": {"OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
                   "python": sys.version.split()[0]}}
    print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
