#!/usr/bin/python3
"""fastText CLI side of the fortunes topic benchmark (goal P3).

Writes fortunes/{train,test}.fasttext.txt once (one "__label__<topic> <text>"
line per document, from the same train.tsv/test.tsv every contender reads),
then per repetition runs the Debian CLI

    fasttext supervised -input train.fasttext.txt -output <tmp>/model \
        -epoch 25 -wordNgrams 2 -dim 50 -thread 2 -seed <base+rep>

timed as the wall time of that process (fastText reads, tokenises and trains in
it), and `fasttext test <tmp>/model.bin test.fasttext.txt` for the accuracy
(P@1 is accuracy for one label per document). Prints one JSON line.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

FASTTEXT = "/usr/bin/fasttext"


def write_ft(src, dst):
    if os.path.exists(dst):
        return
    out = []
    with open(src, "rb") as f:
        for line in f.read().decode("utf-8").split("\n"):
            if not line:
                continue
            lab, _, text = line.partition("\t")
            out.append("__label__%s %s\n" % (lab, text))
    with open(dst + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(out)
    os.replace(dst + ".tmp", dst)


def median(v):
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seed-base", type=int, default=1, help="repetition i uses -seed base+i")
    args = ap.parse_args()
    if not os.access(FASTTEXT, os.X_OK):
        print(json.dumps({"goal": "P3", "contender": "fasttext",
                          "error": "%s missing (apt-get install fasttext)" % FASTTEXT}))
        return 1
    fdir = os.path.join(args.data_dir, "fortunes")
    train = os.path.join(fdir, "train.fasttext.txt")
    test = os.path.join(fdir, "test.fasttext.txt")
    write_ft(os.path.join(fdir, "train.tsv"), train)
    write_ft(os.path.join(fdir, "test.tsv"), test)
    tmp = tempfile.mkdtemp(prefix="aims-ft-")
    times, accs = [], []
    try:
        for rep in range(args.reps):
            model = os.path.join(tmp, "model")
            cmd = [FASTTEXT, "supervised", "-input", train, "-output", model,
                   "-epoch", str(args.epochs), "-wordNgrams", "2", "-dim", "50",
                   "-thread", str(args.threads), "-seed", str(args.seed_base + rep), "-verbose", "0"]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
            res = subprocess.run([FASTTEXT, "test", model + ".bin", test], check=True,
                                 stdout=subprocess.PIPE).stdout.decode()
            acc = None
            for line in res.splitlines():
                if line.startswith("P@1"):
                    acc = float(line.split()[1])
            accs.append(acc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rec = {"goal": "P3", "contender": "fasttext", "metric": "train_s", "unit": "s",
           "samples": times, "median": median(times), "min": min(times), "max": max(times),
           "n": len(times), "accuracy": median(accs), "accuracies": accs,
           "version": "fastText 0.9 (Debian CLI)",
           "env": {"threads": args.threads, "epochs": args.epochs,
                   "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
                   "python": sys.version.split()[0]}}
    print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
