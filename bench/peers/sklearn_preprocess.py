#!/usr/bin/python3
"""Peer side of the preprocessing benchmark (run with Debian's /usr/bin/python3).

Times the same operations as bench_preprocess.c, on the same files, and prints
one JSON object per measurement (the schema bench/run.py reads):
  D1  StandardScaler().fit_transform(X)            X: 60000x784 float32 (stays float32)
  D2  HashingVectorizer(2**18, alternate_sign=False, norm=None)
      + TfidfTransformer(), fit_transform on the fortunes training documents
  D3a IDX load: read the decompressed files, np.frombuffer(offset=16)
      .reshape(-1, 784).astype(float32), labels .astype(int32)
  D3b pandas.read_csv(header=0).to_numpy(float32); label = column 0

Each goal runs one untimed warm-up, then --reps timed repetitions. Outputs for
the equality check go to --out-dir (same layout as the C side writes):
  <goal>_<contender>.f32  first and last 100 rows of the dense output
  D2_<contender>.csr      the whole TF-IDF matrix (offsets u64, ids u32, weights f32)
and a "check" object with exact checksums in the JSON line.
Threads are not changed: OPENBLAS_* and thread-pool settings are recorded as found.
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np


def env_info():
    info = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                           "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    info["python"] = sys.version.split()[0]
    info["numpy"] = np.__version__
    try:
        import threadpoolctl
        info["threadpools"] = [{k: p.get(k) for k in ("internal_api", "num_threads", "version",
                                                      "threading_layer", "architecture")}
                               for p in threadpoolctl.threadpool_info()]
    except Exception as e:  # threadpoolctl is optional
        info["threadpools"] = "unavailable: %s" % e
    return info


def timeit(fn, reps):
    fn()  # warm-up: imports, page cache, allocator
    times = []
    result = None
    for _ in range(reps):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def dense_checks(x, y=None):
    """Checksums that are exact for integer-valued float32 data (D3)."""
    x64 = x.astype(np.float64)
    rows = x.shape[0]
    rowsum = x64.sum(axis=1)
    colsum = x64.sum(axis=0)
    chk = {"rows": int(rows), "cols": int(x.shape[1]),
           "sum": float(rowsum.sum()),
           "rowsum_w": float(((np.arange(rows) % 1000) * rowsum).sum()),
           "colsum_w": float((np.arange(x.shape[1]) * colsum).sum())}
    if y is not None:
        chk["labels_sum"] = int(y.astype(np.int64).sum())
        chk["labels_w"] = int(((np.arange(rows) % 1000) * y.astype(np.int64)).sum())
    return chk


def dump_rows(path, x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    sample = np.concatenate([x[:100], x[-100:]])
    with open(path, "wb") as f:
        f.write(sample.tobytes())


def emit(goal, contender, metric, times, args, check, extra=None):
    rec = {"goal": goal, "contender": contender, "metric": metric, "unit": "s",
           "samples": times, "median": float(np.median(times)), "min": min(times),
           "max": max(times), "n": len(times), "check": check, "env": ENV}
    if extra:
        rec.update(extra)
    print(json.dumps(rec), flush=True)


def read_idx(images, labels):
    with open(images, "rb") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32)
    with open(labels, "rb") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int32)
    return x, y


def goal_d1(args):
    from sklearn.preprocessing import StandardScaler
    fm = os.path.join(args.data_dir, "fashion-mnist")
    x, _ = read_idx(os.path.join(fm, "train-images-idx3-ubyte"),
                    os.path.join(fm, "train-labels-idx1-ubyte"))
    times, z = timeit(lambda: StandardScaler().fit_transform(x), args.reps)
    assert z.dtype == np.float32
    dump_rows(os.path.join(args.out_dir, "D1_scikit-learn.f32"), z)
    z64 = z.astype(np.float64)
    chk = {"rows": int(z.shape[0]), "cols": int(z.shape[1]), "sum_sq": float((z64 * z64).sum())}
    import sklearn
    emit("D1", "scikit-learn", "fit_transform_s", times, args, chk,
         {"version": sklearn.__version__})


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


def goal_d2(args):
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    _, texts = read_tsv(os.path.join(args.data_dir, "fortunes", "train-ascii.tsv"))

    def run():
        hv = HashingVectorizer(n_features=2 ** 18, alternate_sign=False, norm=None)
        return TfidfTransformer().fit_transform(hv.fit_transform(texts))
    times, m = timeit(run, args.reps)
    m = m.tocsr()
    m.sort_indices()
    with open(os.path.join(args.out_dir, "D2_scikit-learn.csr"), "wb") as f:
        f.write(struct.pack("<QQQ", m.shape[0], m.shape[1], m.nnz))
        f.write(m.indptr.astype("<u8").tobytes())
        f.write(m.indices.astype("<u4").tobytes())
        f.write(m.data.astype("<f4").tobytes())
    import sklearn
    emit("D2", "scikit-learn", "fit_transform_s", times, args,
         {"rows": int(m.shape[0]), "cols": int(m.shape[1]), "nnz": int(m.nnz)},
         {"version": sklearn.__version__})


def goal_d3a(args):
    fm = os.path.join(args.data_dir, "fashion-mnist")
    img = os.path.join(fm, "train-images-idx3-ubyte")
    lab = os.path.join(fm, "train-labels-idx1-ubyte")
    times, (x, y) = timeit(lambda: read_idx(img, lab), args.reps)
    dump_rows(os.path.join(args.out_dir, "D3a_numpy.f32"), x)
    emit("D3a", "numpy", "idx_load_s", times, args, dense_checks(x, y))


def goal_d3b(args):
    import pandas as pd
    path = os.path.join(args.data_dir, "fashion-mnist", "train.csv")

    def run():
        a = pd.read_csv(path, header=0).to_numpy(np.float32)
        return a[:, 1:], a[:, 0].astype(np.int32)
    times, (x, y) = timeit(run, args.reps)
    dump_rows(os.path.join(args.out_dir, "D3b_pandas.f32"), x)
    emit("D3b", "pandas", "csv_load_s", times, args, dense_checks(x, y),
         {"version": pd.__version__})


GOALS = {"D1": goal_d1, "D2": goal_d2, "D3a": goal_d3a, "D3b": goal_d3b}
ENV = {}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--goals", default="D1,D2,D3a,D3b")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    ENV.update(env_info())
    for g in args.goals.split(","):
        GOALS[g](args)


if __name__ == "__main__":
    main()
