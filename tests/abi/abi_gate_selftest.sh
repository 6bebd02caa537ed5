#!/bin/sh
# abi_gate_selftest.sh LIB SRCROOT -- the ABI gate can fail.
#
# Why: a gate that never fails proves nothing. This runs abi_gate.sh against
# two deliberately broken copies of the 0.1 baseline and expects it to fail
# both times: (1) the baseline exports aims_model_predict under another name,
# so LIB looks like it REMOVED a function (abidiff exit 12, incompatible);
# (2) the baseline gives AIMS_E_NOMEM another value, so LIB looks like it
# RENUMBERED a status code (abidiff exit 4, ABI change).
set -u
lib=$1
root=$2
base=$root/tests/abi/libaims-0.1.abi
here=$(dirname "$0")
if ! command -v abidiff >/dev/null 2>&1; then
    echo "abidiff not found (Debian package abigail-tools): skipped"; exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s/aims_model_predict\([@']\)/aims_model_predict_gone\1/g" "$base" > "$tmp/removed.abi"
sed "s/enumerator name='AIMS_E_NOMEM' value='[0-9]*'/enumerator name='AIMS_E_NOMEM' value='99'/" \
    "$base" > "$tmp/renumbered.abi"
fail=0
for case in removed renumbered; do
    if cmp -s "$base" "$tmp/$case.abi"; then
        echo "$case: the mutation did not apply (baseline format changed?)"; fail=1; continue
    fi
    sh "$here/abi_gate.sh" "$lib" "$root" "$tmp/$case.abi" > "$tmp/$case.log" 2>&1
    rc=$?
    if [ "$rc" -eq 77 ]; then
        cat "$tmp/$case.log"; exit 77
    fi
    if [ "$rc" -eq 0 ] || ! grep -q 'ABI BREAK' "$tmp/$case.log"; then
        echo "$case: the gate PASSED a broken ABI:"; cat "$tmp/$case.log"; fail=1
    else
        echo "$case: the gate failed as it should:"; sed -n '1,12p' "$tmp/$case.log"
    fi
done
[ "$fail" -eq 0 ] || { echo "abi gate selftest FAILED"; exit 1; }
echo "abi gate selftest ok"
