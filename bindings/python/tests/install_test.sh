#!/bin/sh
# install_test.sh BUILD_DIR SOURCE_DIR -- the Python package as a user installs it.
#
# 1. `meson install` the built library into a temporary staging prefix (DESTDIR);
# 2. a fresh `python3 -m venv --system-site-packages` (numpy/sklearn from Debian);
# 3. `pip install --no-build-isolation --no-index` from the source tree (nothing
#    from the network; the tree is copied first so the build leaves no build/ or
#    *.egg-info in the checkout);
# 4. from a neutral directory, with AIMS_LIBRARY and PYTHONPATH unset: run
#    `python -m aims --version` and a small train/predict, checking that the
#    *installed* package and the *installed* library were used, then the
#    binding's whole unittest suite against that installed package.
#
# The staging prefix is not on the loader path, so LD_LIBRARY_PATH names its
# libdir -- the one variable a user of a non-standard prefix needs too (an
# install into /usr/local is found through the ld.so cache or pkg-config).
set -eu
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
py=/usr/bin/python3
[ -x "$py" ] || py=python3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/aims-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

meson install -C "$build" --no-rebuild --destdir "$tmp/stage" >"$tmp/install.log" 2>&1 || {
    cat "$tmp/install.log"; echo "FAIL: meson install"; exit 1; }
lib=$(find "$tmp/stage" -name 'libaims.so.0' | head -n 1)
[ -n "$lib" ] || { echo "FAIL: meson install shipped no libaims.so.0"; exit 1; }
libdir=$(dirname "$lib")
echo "installed library: $lib"

# the installed programs run against the installed library
for prog in aims-node aims; do
    exe=$(find "$tmp/stage" -path "*/bin/$prog" | head -n 1)
    [ -n "$exe" ] || { echo "FAIL: meson install shipped no $prog"; exit 1; }
    LD_LIBRARY_PATH="$libdir" "$exe" --version || { echo "FAIL: $prog --version"; exit 1; }
done

for page in aims.1 aims-node.1; do
    [ -n "$(find "$tmp/stage" -path "*/man1/$page")" ] || { echo "FAIL: no man page $page"; exit 1; }
done

"$py" -m venv --system-site-packages "$tmp/venv"
mkdir "$tmp/pkgsrc"
cp -R "$src/bindings/python/aims" "$src/bindings/python/pyproject.toml" \
      "$src/bindings/python/README.md" "$tmp/pkgsrc/"
PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$tmp/venv/bin/python" -m pip install \
    --no-build-isolation --no-index --quiet "$tmp/pkgsrc" >"$tmp/pip.log" 2>&1 || {
    cat "$tmp/pip.log"; echo "FAIL: pip install"; exit 1; }
rm -rf "$tmp/pkgsrc"

cd "$tmp"
run() {
    env -u AIMS_LIBRARY -u PYTHONPATH LD_LIBRARY_PATH="$libdir" "$tmp/venv/bin/python" "$@"
}
out=$(run -m aims --version)
echo "$out"
case "$out" in
    "aims 0.1.0 (libaims "*"$libdir/"*) ;;
    *) echo "FAIL: --version does not name the installed package and library"; exit 1 ;;
esac

run - "$tmp" <<'PY'
import os, sys
import aims
from aims import _lib
venv = sys.argv[1]
assert aims.__file__.startswith(os.path.join(venv, "venv")), aims.__file__
assert _lib.found_how == "loader path", _lib.found_how
x = [[-2.0 + 0.1 * (i % 5), 0.05 * i] for i in range(30)] + \
    [[2.0 - 0.1 * (i % 5), 0.05 * i] for i in range(30)]
y = [0] * 30 + [1] * 30
m = aims.Model("softmax", 2, 2)
m.fit(x, y, epochs=20, batch=10)
ids = m.predict(x).argmax(axis=1).tolist() if aims._np is not None else None
if ids is not None:
    acc = sum(int(a == b) for a, b in zip(ids, y)) / len(y)
    assert acc > 0.95, acc
print("installed package trains and predicts: ok")
PY

# the binding's whole test suite against the installed package and library
env -u AIMS_LIBRARY -u PYTHONPATH LD_LIBRARY_PATH="$libdir" AIMS_SOURCE_DIR="$src" \
    "$tmp/venv/bin/python" -m unittest discover -s "$src/bindings/python/tests" \
    >"$tmp/suite.log" 2>&1 || { tail -n 40 "$tmp/suite.log"; echo "FAIL: suite on the installed package"; exit 1; }
tail -n 3 "$tmp/suite.log"

# without the library on any path, the import error lists what was tried
err=$(env -u AIMS_LIBRARY -u PYTHONPATH -u LD_LIBRARY_PATH PKG_CONFIG_PATH="$tmp/none" \
      "$tmp/venv/bin/python" -c "import aims" 2>&1 || true)
case "$err" in
    *"cannot load the C library; tried:"*"loader path"*) echo "missing library: clear error" ;;
    *"Error"*) echo "$err"; echo "FAIL: unclear import error"; exit 1 ;;
    *) echo "note: a system-wide libaims was found without LD_LIBRARY_PATH" ;;
esac
echo "PASS"
