#!/usr/bin/python3
"""Preprocessing benchmark harness: libaims against scikit-learn, numpy and pandas.

    /usr/bin/python3 bench/run.py [--build-dir build-bench] [--rounds 3] [--reps 5]

1. runs bench/prepare_data.py (idempotent) so both sides read the same files;
2. for each goal, alternates the two sides in separate processes, swapping who
   goes first every round (C, peer / peer, C / C, peer ...), so drift in machine
   speed hits both; each process does one untimed warm-up and --reps timed runs;
3. pools the samples of all rounds: median, min, max, n (= rounds x reps);
4. checks the outputs the last processes dumped: D1 within rtol/atol 1e-5,
   D2 every TF-IDF row (ids exact, weights within rtol/atol 1e-5), D3 exact;
5. writes one JSON object per measurement to bench/results/preprocess-<UTC>.jsonl
   and bench/results/latest-preprocess.jsonl, and prints a markdown table.

ratio = libaims median / peer median (on the libaims row; below 1 means libaims
is faster). met = ratio within the goal's target AND outputs_equal.
OPENBLAS_* variables are recorded in every row. With --blas-env both (the
default) every process runs with the machine's OPENBLAS_* settings AND with
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (benchlib.py, issue 15); each
contender's ratio uses its faster setting ("blas_best"), both are recorded
("blas_settings"). numpy, pandas and scikit-learn load OpenBLAS too.
"""
import argparse
import datetime
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

from benchlib import (blas_cell, blas_desc, blas_env, blas_summary, blas_variants, machine_info,
                      pool_by_blas)

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PY = "/usr/bin/python3"

# goal -> (peer contender, metric, target ratio, description)
GOALS = {
    "D1": ("scikit-learn", "fit_transform_s", 1.0 / 3.0,
           "StandardScaler fit+transform, Fashion-MNIST train 60000x784 f32"),
    "D2": ("scikit-learn", "fit_transform_s", 1.0 / 3.0,
           "HashingVectorizer(2**18)+TfidfTransformer fit+transform, fortunes train"),
    "D3a": ("numpy", "idx_load_s", 1.0,
            "IDX load train images+labels (np.frombuffer + astype f32)"),
    "D3b": ("pandas", "csv_load_s", 1.0,
            "CSV load 60000x785 with header (pandas.read_csv + to_numpy f32)"),
}
TARGET_TEXT = {1.0 / 3.0: "<= 0.333", 1.0: "<= 1.0"}


def run_json(cmd, timeout, tag="machine"):
    """Run one contender process with BLAS setting `tag`; return its JSON lines
    (and stderr on failure), each tagged with "blas"."""
    if not os.access(cmd[0], os.X_OK):
        return [{"error": "%s: not built" % cmd[0], "blas": tag}]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       cwd=REPO, env=blas_env(tag))
    recs = []
    for line in p.stdout.decode(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            recs.append(dict(json.loads(line), blas=tag))
    if p.returncode != 0 and not recs:
        recs.append({"error": "exit %d: %s" % (p.returncode,
                                               p.stderr.decode(errors="replace")[-2000:]),
                     "blas": tag})
    if p.stderr and p.returncode != 0:
        sys.stderr.write(p.stderr.decode(errors="replace")[-2000:])
    return recs


# ---------------------------------------------------------------------------
# Output equality


def read_f32(path):
    return np.fromfile(path, dtype=np.float32)


def read_csr(path):
    with open(path, "rb") as f:
        rows, cols, nnz = struct.unpack("<QQQ", f.read(24))
        off = np.frombuffer(f.read(8 * (rows + 1)), "<u8")
        ids = np.frombuffer(f.read(4 * nnz), "<u4")
        w = np.frombuffer(f.read(4 * nnz), "<f4")
    return rows, cols, off, ids, w


def non_ascii_rows(data_dir):
    """Row numbers of training documents holding non-ASCII bytes (D2 diagnosis)."""
    with open(os.path.join(data_dir, "fortunes", "train-ascii.tsv"), "rb") as f:
        return {i for i, line in enumerate(f.read().split(b"\n")) if max(line, default=0) > 127}


def compare(goal, out_dir, peer, rec_c, rec_p, data_dir):
    """Returns (outputs_equal, detail dict)."""
    cc, cp = rec_c.get("check", {}), rec_p.get("check", {})
    detail = {}
    try:
        if goal == "D2":
            a = read_csr(os.path.join(out_dir, "D2_libaims.csr"))
            b = read_csr(os.path.join(out_dir, "D2_%s.csr" % peer))
            if a[0] != b[0] or a[1] != b[1]:
                return False, {"why": "shape %s vs %s" % (a[:2], b[:2])}
            bad, worst = [], 0.0
            for i in range(a[0]):
                ia, wa = a[3][a[2][i]:a[2][i + 1]], a[4][a[2][i]:a[2][i + 1]]
                ib, wb = b[3][b[2][i]:b[2][i + 1]], b[4][b[2][i]:b[2][i + 1]]
                oa, ob = np.argsort(ia, kind="stable"), np.argsort(ib, kind="stable")
                ia, wa, ib, wb = ia[oa], wa[oa], ib[ob], wb[ob]
                if len(ia) != len(ib) or not np.array_equal(ia, ib):
                    bad.append(i)
                    continue
                if len(wa):
                    worst = max(worst, float(np.max(np.abs(wa - wb))))
                if not np.allclose(wa, wb, rtol=1e-5, atol=1e-5):
                    bad.append(i)
            # Why rows differ: tokens of non-ASCII documents (libaims counts every
            # non-ASCII character as a word character, Python's \w does not), and
            # through the idf, every row sharing a bucket whose document frequency moved.
            dfa = np.bincount(a[3], minlength=int(a[1]))
            dfb = np.bincount(b[3], minlength=int(b[1]))
            nonascii = non_ascii_rows(data_dir)
            detail = {"rows_compared": int(a[0]), "mismatch_rows": len(bad),
                      "first_mismatches": bad[:10], "max_abs_diff": worst,
                      "nnz": [int(a[2][-1]), int(b[2][-1])],
                      "non_ascii_docs": len(nonascii),
                      "mismatch_non_ascii_docs": len(nonascii.intersection(bad)),
                      "df_diff_buckets": int(np.count_nonzero(dfa != dfb))}
            return not bad, detail
        fa = read_f32(os.path.join(out_dir, "%s_libaims.f32" % goal))
        fb = read_f32(os.path.join(out_dir, "%s_%s.f32" % (goal, peer)))
        if fa.shape != fb.shape:
            return False, {"why": "sample sizes %d vs %d" % (fa.size, fb.size)}
        if goal == "D1":
            diff = float(np.max(np.abs(fa - fb)))
            ok = bool(np.allclose(fa, fb, rtol=1e-5, atol=1e-5))
            ok = ok and cc.get("rows") == cp.get("rows") and cc.get("cols") == cp.get("cols")
            ssa, ssb = cc.get("sum_sq", 0.0), cp.get("sum_sq", 0.0)
            ok = ok and abs(ssa - ssb) <= 1e-5 * max(abs(ssa), abs(ssb), 1.0)
            detail = {"sample_rows": int(fa.size // max(cc.get("cols", 1), 1)),
                      "max_abs_diff": diff, "sum_sq": [ssa, ssb]}
            return ok, detail
        same = bool(np.array_equal(fa, fb))
        keys = ("rows", "cols", "sum", "rowsum_w", "colsum_w", "labels_sum", "labels_w")
        diffs = [k for k in keys if cc.get(k) != cp.get(k)]
        detail = {"sample_equal": same, "checksum_diffs": diffs}
        return same and not diffs, detail
    except (OSError, ValueError, IndexError, struct.error) as e:
        return False, {"why": "compare failed: %s" % e}


# ---------------------------------------------------------------------------


def pooled(recs):
    samples = [t for r in recs for t in r.get("samples", [])]
    if not samples:
        return None
    return {"median": float(np.median(samples)), "min": float(min(samples)),
            "max": float(max(samples)), "n": len(samples),
            "round_medians": [r["median"] for r in recs if "median" in r]}


def fmt_s(v):
    if v is None:
        return "-"
    return "%.4f" % v if v < 10 else "%.2f" % v


def main():
    ap = argparse.ArgumentParser(description="libaims preprocessing benchmark")
    ap.add_argument("--build-dir", default="build-bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--goals", default="D1,D2,D3a,D3b")
    ap.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--timeout", type=int, default=1200)
    ap.add_argument("--blas-env", choices=("both", "native", "inherit"), default="both",
                    help="both: every process with the machine's OPENBLAS_* settings and with "
                         "OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset, each contender at its "
                         "faster one; native: unset only; inherit: as set")
    args = ap.parse_args()
    tags = blas_variants(args.blas_env)
    if args.rounds < 1 or args.reps < 1:
        sys.exit("run.py: --rounds and --reps must be >= 1")

    data_dir = subprocess.run([PY, os.path.join(HERE, "prepare_data.py")], check=True,
                              stdout=subprocess.PIPE, cwd=REPO).stdout.decode().strip()
    build = args.build_dir if os.path.isabs(args.build_dir) else os.path.join(REPO,
                                                                               args.build_dir)
    exe = os.path.join(build, "bench", "bench_preprocess")
    if not os.access(exe, os.X_OK):
        # Still measure the peers, so their numbers exist; libaims rows carry the error.
        sys.stderr.write("run.py: %s not built (ninja -C %s)\n" % (exe, args.build_dir))
    peer_script = os.path.join(HERE, "peers", "sklearn_preprocess.py")
    out_dir = tempfile.mkdtemp(prefix="aims-bench-")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    machine = machine_info(build)
    machine["blas_env"] = args.blas_env
    rows, failures = [], 0
    try:
        for goal in args.goals.split(","):
            peer, metric, target, desc = GOALS[goal]
            c_cmd = [exe, data_dir, out_dir, str(args.reps), goal]
            p_cmd = [PY, peer_script, "--data-dir", data_dir, "--out-dir", out_dir,
                     "--reps", str(args.reps), "--goals", goal]
            got = {"libaims": [], peer: []}
            for r in range(args.rounds):
                order = [("libaims", c_cmd), (peer, p_cmd)]
                if r % 2:
                    order.reverse()
                for who, cmd in order:
                    for tag in (tags if r % 2 == 0 else tags[::-1]):
                        sys.stderr.write("[bench] %s round %d/%d: %s, BLAS %s\n"
                                         % (goal, r + 1, args.rounds, who, tag))
                        got[who].extend(rec for rec in run_json(cmd, args.timeout, tag)
                                        if rec.get("goal", goal) == goal)
            errs = {who: [r["error"] for r in recs if "error" in r] for who, recs in got.items()}
            good = {who: [r for r in recs if "error" not in r] for who, recs in got.items()}
            # each contender at its faster BLAS setting, both recorded
            blas = {who: pool_by_blas(recs, pooled) for who, recs in good.items()}
            st = {who: b[2] for who, b in blas.items()}
            if errs["libaims"] or errs[peer] or not st["libaims"] or not st[peer]:
                equal, detail = False, {"why": "a contender failed"}
            else:
                equal, detail = compare(goal, out_dir, peer, good["libaims"][-1],
                                        good[peer][-1], data_dir)
            ratio = None
            if st["libaims"] and st[peer] and st[peer]["median"] > 0:
                ratio = st["libaims"]["median"] / st[peer]["median"]
            for who in ("libaims", peer):
                s = st[who] or {}
                last = (good[who] or [{}])[-1]
                env = dict(machine)
                env.update(last.get("env", {}))
                row = {"goal": goal, "description": desc, "contender": who, "metric": metric,
                       "median": s.get("median"), "min": s.get("min"), "max": s.get("max"),
                       "unit": "s", "ratio": ratio if who == "libaims" else None,
                       "target": TARGET_TEXT[target] if who == "libaims" else None,
                       "met": (ratio is not None and ratio <= target and equal)
                       if who == "libaims" else None,
                       "outputs_equal": equal, "equality": detail, "n": s.get("n", 0),
                       "rounds": args.rounds, "reps": args.reps,
                       "round_medians": s.get("round_medians"), "check": last.get("check"),
                       "blas_best": blas[who][0],
                       "blas_settings": blas_summary(blas[who][1]),
                       "env": env, "timestamp": stamp}
                if "version" in last:
                    row["version"] = last["version"]
                if errs[who]:
                    row["error"] = errs[who][0]
                    failures += 1
                rows.append(row)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)

    os.makedirs(args.results_dir, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path = os.path.join(args.results_dir, "preprocess-%s.jsonl" % stamp)
    for p in (path, os.path.join(args.results_dir, "latest-preprocess.jsonl")):
        with open(p + ".tmp", "w") as f:
            f.write(text)
        os.replace(p + ".tmp", p)

    print("| goal | contender | metric | median | min | max | n | BLAS used (other) | ratio "
          "| target | met | outputs equal |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- | --- | --- |")
    for r in rows:
        ratio = "%.3f" % r["ratio"] if r["ratio"] is not None else ""
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        name = r["contender"] + (" (error)" if "error" in r else "")
        bl = blas_cell(r, fmt_s)
        print("| %s | %s | %s | %s | %s | %s | %d | %s | %s | %s | %s | %s |"
              % (r["goal"], name, r["metric"], fmt_s(r["median"]), fmt_s(r["min"]),
                 fmt_s(r["max"]), r["n"], bl, ratio, r["target"] or "", met,
                 "yes" if r["outputs_equal"] else "**no**"))
    print("\nCPU: %s; OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s; every contender ran "
          "with BLAS settings: %s, and its ratio uses its faster one; results: %s"
          % (machine["machine"]["short"], machine["OPENBLAS_CORETYPE"],
             machine["OPENBLAS_L2_SIZE"], "; ".join(blas_desc(t) for t in tags),
             os.path.relpath(path, REPO)))
    for r in rows:
        if "error" in r:
            print("error: %s %s: %s" % (r["goal"], r["contender"], r["error"][:300]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
