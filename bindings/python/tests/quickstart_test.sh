#!/bin/sh
# quickstart_test.sh SOURCE_DIR -- README.md's quick start, run as written.
#
# The block between <!-- quickstart:begin --> and <!-- quickstart:end --> is
# extracted (its one ```sh fence) and run with `sh -e` in a copy of the source
# tree (the files git knows, so the copy is what a fresh clone holds plus any
# uncommitted change), with HOME in a temporary directory so the virtual
# environment and the install prefix land there, and the data from
# AIMS_DATA_DIR. Then its results are checked: the programs and package came
# from the environment, the model trained (accuracy), the quantized bundle
# loads, the SVG is XML, the HTTP and native calls answered. Nothing but pip's
# index is switched off (PIP_NO_INDEX: no network), and /usr/bin comes first
# in PATH: the README is written for Debian 12, whose python3 (with
# python3-wheel, numpy, scikit-learn) is /usr/bin/python3; a pyenv or conda
# python3 earlier in a developer's PATH would lack them. Skips (77) without
# the Fashion-MNIST cache or curl.
set -eu
src=$(cd "$1" && pwd)
data=${AIMS_DATA_DIR:-$src/data-cache}
[ -f "$data/fashion-mnist/train-images-idx3-ubyte" ] || { echo "no Fashion-MNIST in $data"; exit 77; }
command -v curl >/dev/null 2>&1 || { echo "curl not installed"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/aims-quickstart.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

mkdir "$tmp/home" "$tmp/src"
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$src" && git ls-files -z --cached --others --exclude-standard |
        xargs -0 tar cf - --no-recursion 2>/dev/null) | tar xf - -C "$tmp/src"
else
    (cd "$src" && tar cf - --exclude='./build*' --exclude=./data-cache .) | tar xf - -C "$tmp/src"
fi
awk '/<!-- quickstart:begin -->/ {on = 1} /<!-- quickstart:end -->/ {on = 0}
     on && /^```/ {fence = !fence; next} on && fence' "$src/README.md" > "$tmp/quickstart.sh"
[ -s "$tmp/quickstart.sh" ] || { echo "FAIL: no quick-start block in README.md"; exit 1; }
echo "== README quick start ($(wc -l < "$tmp/quickstart.sh") lines)"

cd "$tmp/src"
status=0
env -u AIMS_LIBRARY -u PYTHONPATH -u LD_LIBRARY_PATH -u VIRTUAL_ENV HOME="$tmp/home" \
    PATH="/usr/bin:/bin:$PATH" \
    AIMS_DATA_DIR="$data" PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    sh -e "$tmp/quickstart.sh" > "$tmp/out.log" 2> "$tmp/err.log" || status=$?
cat "$tmp/out.log"
if [ "$status" -ne 0 ]; then
    tail -40 "$tmp/err.log"
    echo "FAIL: the quick start stopped with status $status"
    exit 1
fi

fail() { echo "FAIL: $*"; exit 1; }
env=$tmp/home/aims-env
[ -x "$env/bin/aims" ] && [ -x "$env/bin/aims-node" ] || fail "aims/aims-node not installed in the venv"
grep -q "^aims 0\.1\.0 (libaims .*$env/" "$tmp/out.log" || fail "python -m aims did not use the venv's library"
acc=$(grep '"accuracy"' "$tmp/out.log" | sed 's/.*"accuracy":\([0-9.]*\).*/\1/')
python3 -c "import sys; sys.exit(0 if float('$acc') > 0.75 else 1)" || fail "accuracy $acc"
grep -q '"kind":"bundle"' "$tmp/out.log" || grep -q 'bundle' "$tmp/out.log" || fail "inspect"
python3 -c "import xml.etree.ElementTree as E, sys; E.parse(sys.argv[1])" "$tmp/src/train.svg" ||
    fail "train.svg is not XML"
grep -q '{"ready":true}' "$tmp/out.log" || fail "HTTP readiness"
grep -q '"outputs"' "$tmp/out.log" || fail "HTTP infer"
grep -q '"service":"fmnist","method":"predict","tensors":{"y"' "$tmp/out.log" || fail "aims call"
echo "README quick start: ok (accuracy $acc)"
