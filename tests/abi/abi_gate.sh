#!/bin/sh
# abi_gate.sh LIB SRCROOT [BASELINE] -- LIB must be ABI compatible with the 0.1
# baseline (docs/ABI.md).
#
# Why: libaims.so.0 promises that a program built against 0.1 runs against every
# later libaims.so.0. abidiff (libabigail) compares the committed abidw XML of
# 0.1 (tests/abi/libaims-0.1.abi, public types only) with the library just
# built, from its DWARF, and this fails on any change it reports:
# exit bit 4 (ABIDIFF_ABI_CHANGE: a changed type, enumerator value, parameter)
# or 8 (ABIDIFF_ABI_INCOMPATIBLE_CHANGE: a removed function or variable).
# Added functions are allowed (--no-added-syms), and so are the changes
# libabigail classes as harmless (a new enumerator at the end, a typedef name).
# Exit 77 (skip) only when abidiff is not installed or LIB was built without
# debug info (-g; every meson buildtype but "release"/"minsize" has it).
set -u
lib=$1
root=$2
base=${3:-$root/tests/abi/libaims-0.1.abi}
if ! command -v abidiff >/dev/null 2>&1; then
    echo "abidiff not found (Debian package abigail-tools): ABI gate skipped"; exit 77
fi
if [ ! -f "$base" ]; then
    echo "no ABI baseline $base (cut one with: make abi-baseline)"; exit 1
fi
if ! readelf -S "$lib" 2>/dev/null | grep -q '\.debug_info'; then
    echo "$lib has no debug info (build with -g): ABI gate skipped"; exit 77
fi
out=$(abidiff --no-added-syms --headers-dir2 "$root/include/aims" "$base" "$lib" 2>&1)
rc=$?
echo "$out"
if [ $((rc & 3)) -ne 0 ]; then
    echo "abidiff failed to run (exit $rc)"; exit 1
fi
if [ $((rc & 12)) -ne 0 ]; then
    echo "ABI BREAK against 0.1 (abidiff exit $rc): a program built against 0.1 would"
    echo "misbehave with this libaims.so.0. Restore the old declaration (add a _v2"
    echo "function instead), or read docs/ABI.md on bumping the soname."
    exit 1
fi
echo "abi gate ok: $(basename "$lib") is compatible with $(basename "$base")"
