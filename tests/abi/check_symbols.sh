#!/bin/sh
# check_symbols.sh LIB SRCROOT -- the three lists of public symbols must agree:
#   1. dynamic symbols libaims.so defines (nm -D --defined-only),
#   2. symbols named in src/libaims.map,
#   3. functions declared with AIMS_API in include/aims/*.h.
# Also: every exported symbol starts with aims_, and every AIMS_API declaration
# is preceded by a doc block carrying @since.
set -eu
lib=$1
root=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRW]$/ {print $3}' | sed 's/@.*//' \
    | grep -v '^AIMS_[0-9]' | sort -u > "$tmp/exported"
sed -n 's/^[[:space:]]*\(aims_[a-z0-9_]*\);$/\1/p' "$root/src/libaims.map" | sort -u > "$tmp/map"
cat "$root"/include/aims/*.h | tr '\n' ' ' | sed 's/;/;\n/g' | grep 'AIMS_API' \
    | grep -o 'aims_[a-z0-9_]*[[:space:]]*(' | sed 's/[[:space:]]*($//' | sort -u > "$tmp/headers"

fail=0
bad=$(grep -v '^aims_' "$tmp/exported" || true)
if [ -n "$bad" ]; then
    echo "exported symbols without the aims_ prefix:"; echo "$bad"; fail=1
fi
for pair in "exported map" "map headers" "exported headers"; do
    set -- $pair
    if ! diff -u "$tmp/$1" "$tmp/$2" > "$tmp/diff"; then
        echo "symbol lists differ: $1 vs $2"; cat "$tmp/diff"; fail=1
    fi
done
# Every AIMS_API declaration needs a doc block with @since before it.
for f in "$root"/include/aims/*.h; do
    awk -v file="$f" '
        /\/\*\*/ { doc = ""; indoc = 1 }
        indoc { doc = doc $0 }
        /\*\// { indoc = 0 }
        /^AIMS_API/ {
            if (doc !~ /@since/) { print file ": undocumented: " $0; bad = 1 }
            doc = ""
        }
        END { exit bad }' "$f" || fail=1
done
n=$(wc -l < "$tmp/exported")
if [ "$fail" -ne 0 ]; then
    echo "abi check FAILED"; exit 1
fi
echo "abi check ok: $n symbols"
