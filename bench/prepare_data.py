#!/usr/bin/python3
"""Prepare the benchmark inputs once, so every contender reads the same files.

Writes into $AIMS_DATA_DIR (default <repo>/data-cache):
  fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte   gzip -dc of the
      Debian files (zstd cannot read gzip, and decompressing is not what D3 measures)
  fashion-mnist/train.csv   "label,p0,...,p783" header, then 60,000 integer rows
  fortunes/{train,test}.tsv "topic<TAB>text", one document per line: a seeded,
      stratified 80/20 split (train_test_split, random_state=0) of the fortunes
      corpus built with the DATA.md rules (40 topics, 15,193 documents).
  fortunes/tune-{train,valid}.tsv  a seeded, stratified 80/20 split
      (random_state=1) of train.tsv alone: every contender's hyper-parameters
      (fastText's grid, scikit-learn's alpha and n-grams, libaims' settings) are
      chosen on tune-valid.tsv, never on test.tsv (DATA.md).

Inside a document, newlines and tabs become single spaces: the line format has
no escape, and both tokenizers (libaims TOKENIZE and scikit-learn's \\b\\w\\w+\\b)
treat any whitespace as a separator, so the tokens are unchanged.

Idempotent: every output is written to a temp name and renamed, and a stamp file
records the version of this recipe; a second run only checks that files exist.
"""
import gzip
import os
import re
import shutil
import sys

RECIPE = "prepare-v2"
FMNIST_SRC = "/usr/share/datasets/fashion-mnist"
FORTUNES_SRC = "/usr/share/games/fortunes"
FMNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
EXPECT_TOPICS = 40
EXPECT_DOCS = 15193


def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data_dir():
    return os.environ.get("AIMS_DATA_DIR") or os.path.join(repo_root(), "data-cache")


def atomic_write(path, writer):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        writer(f)
    os.replace(tmp, path)


def stamped(path):
    try:
        with open(path) as f:
            return f.read().strip() == RECIPE
    except OSError:
        return False


def prepare_fmnist(root):
    out = os.path.join(root, "fashion-mnist")
    os.makedirs(out, exist_ok=True)
    for name in FMNIST_FILES:
        dst = os.path.join(out, name)
        if os.path.exists(dst):
            continue
        src = os.path.join(FMNIST_SRC, name + ".gz")
        if not os.path.exists(src):
            sys.exit("prepare_data: %s missing (apt-get install dataset-fashion-mnist)" % src)

        def copy(f, src=src):
            with gzip.open(src, "rb") as g:
                shutil.copyfileobj(g, f, 1 << 20)
        atomic_write(dst, copy)
    csv = os.path.join(out, "train.csv")
    if not os.path.exists(csv):
        write_csv(out, csv)


def write_csv(out, csv):
    import numpy as np
    with open(os.path.join(out, "train-images-idx3-ubyte"), "rb") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with open(os.path.join(out, "train-labels-idx1-ubyte"), "rb") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    assert x.shape[0] == y.shape[0] == 60000
    table = [str(v) for v in range(256)]

    def writer(f):
        f.write(("label," + ",".join("p%d" % j for j in range(784)) + "\n").encode())
        lines = []
        for i in range(x.shape[0]):
            row = x[i].tolist()
            lines.append(table[int(y[i])] + "," + ",".join([table[v] for v in row]))
            if len(lines) == 2000:
                f.write(("\n".join(lines) + "\n").encode())
                lines = []
        if lines:
            f.write(("\n".join(lines) + "\n").encode())
    atomic_write(csv, writer)


OVERSTRIKE = re.compile(r".\x08", re.S)
SPACES = re.compile(r"[\r\n\t\v\f]")


def read_topic(path):
    with open(path, "rb") as f:
        raw = f.read().decode("utf-8", errors="replace")
    docs = []
    cur = []
    for line in raw.split("\n"):
        if line == "%":
            docs.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    docs.append("\n".join(cur))
    out = []
    for d in docs:
        d = OVERSTRIKE.sub("", d)
        if d.strip() == "":
            continue
        out.append(SPACES.sub(" ", d).strip())
    return out


def load_fortunes():
    texts, topics = [], []
    for name in sorted(os.listdir(FORTUNES_SRC)):
        path = os.path.join(FORTUNES_SRC, name)
        if name.startswith(".") or name.endswith(".dat") or name.endswith(".u8"):
            continue
        if os.path.islink(path) or not os.path.isfile(path) or name == "ascii-art":
            continue
        docs = read_topic(path)
        if len(docs) < 20:
            continue
        texts.extend(docs)
        topics.extend([name] * len(docs))
    return texts, topics


def prepare_fortunes(root):
    out = os.path.join(root, "fortunes")
    stamp = os.path.join(out, ".stamp")
    if stamped(stamp) and all(os.path.exists(os.path.join(out, n))
                              for n in ("train.tsv", "test.tsv", "train-ascii.tsv")):
        return
    os.makedirs(out, exist_ok=True)
    texts, topics = load_fortunes()
    ntopics = len(set(topics))
    if ntopics != EXPECT_TOPICS or len(texts) != EXPECT_DOCS:
        sys.exit("prepare_data: fortunes gave %d topics / %d docs, expected %d / %d"
                 % (ntopics, len(texts), EXPECT_TOPICS, EXPECT_DOCS))
    from sklearn.model_selection import train_test_split
    idx = list(range(len(texts)))
    tr, te = train_test_split(idx, test_size=0.2, stratify=topics, random_state=0)
    for fname, part in (("train.tsv", tr), ("test.tsv", te)):
        def writer(f, part=part):
            f.write("".join("%s\t%s\n" % (topics[i], texts[i]) for i in part).encode("utf-8"))
        atomic_write(os.path.join(out, fname), writer)
    # D2 input: the ASCII documents of the training split. On non-ASCII text the
    # two tokenizers differ by design (libaims lower-cases ASCII only and treats
    # every non-ASCII character as a word character; Python's \w and str.lower()
    # follow Unicode tables), so outputs are comparable only on ASCII text.
    ascii_tr = [i for i in tr if texts[i].isascii()]
    atomic_write(os.path.join(out, "train-ascii.tsv"), lambda f: f.write(
        "".join("%s\t%s\n" % (topics[i], texts[i]) for i in ascii_tr).encode("utf-8")))
    atomic_write(stamp, lambda f: f.write((RECIPE + "\n").encode()))


def prepare_tuning(root):
    """tune-train.tsv / tune-valid.tsv: the validation slice carved from train.tsv."""
    out = os.path.join(root, "fortunes")
    names = ("tune-train.tsv", "tune-valid.tsv")
    if all(os.path.exists(os.path.join(out, n)) for n in names):
        return
    with open(os.path.join(out, "train.tsv"), "rb") as f:
        lines = [ln for ln in f.read().decode("utf-8").split("\n") if ln]
    topics = [ln.partition("\t")[0] for ln in lines]
    from sklearn.model_selection import train_test_split
    tr, va = train_test_split(list(range(len(lines))), test_size=0.2, stratify=topics,
                              random_state=1)
    for fname, part in zip(names, (tr, va)):
        atomic_write(os.path.join(out, fname), lambda f, part=part: f.write(
            "".join(lines[i] + "\n" for i in part).encode("utf-8")))


def main():
    root = data_dir()
    prepare_fmnist(root)
    prepare_fortunes(root)
    prepare_tuning(root)
    print(root)


if __name__ == "__main__":
    main()
