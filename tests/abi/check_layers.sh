#!/bin/sh
# check_layers.sh CC SRCBUILDDIR [SANITIZE] -- proves the layer check of src/meson.build
# (docs/LAYERS.md) catches a call the wrong way. For each case it adds a tiny
# probe object to a layer (meson's archives are thin, so the probe is linked
# next to the archive rather than copied into it) and links it exactly as the
# build's aims_layercheck_<layer> module is linked: the whole layer, the layers
# below it only, the outside libraries, -Wl,--no-undefined. A probe calling
# upward (data -> model) or sideways (orch -> data, orch -> codec) must fail
# with "undefined reference" to the called symbol; a probe calling downward
# (data -> codec/core, svc -> model + orch) must link.
set -eu
cc=$1
lib=$2
# A sanitizer build's archives call into the sanitizer runtimes: link as the
# build links (meson's b_sanitize, "none" when off).
san=""
if [ "${3:-none}" != none ]; then
    san="-fsanitize=$3"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Outside libraries: whatever of them pkg-config knows (the optional ones may
# be absent when the build turned them off).
ext="-pthread -lm"
for p in openblas libzstd openssl libmicrohttpd libcjson libcurl ompi-c gnutls; do
    ext="$ext $(pkg-config --libs "$p" 2>/dev/null || true)"
done

# below LAYER -> the archives a layer may link with, nearest first.
below() {
    case $1 in
        core) echo "" ;;
        codec) echo "core" ;;
        data) echo "codec core" ;;
        model) echo "data codec core" ;;
        orch) echo "core" ;;
        svc) echo "model data codec orch core" ;;
    esac
}

# link LAYER CALLEE -> links a probe calling CALLEE into LAYER; output in $tmp/log
n=0
link() {
    n=$((n + 1))
    printf 'void %s(void);\nvoid aimsi_layer_probe_%d(void);\nvoid aimsi_layer_probe_%d(void) { %s(); }\n' \
        "$2" "$n" "$n" "$2" > "$tmp/probe$n.c"
    "$cc" $san -c -fPIC -o "$tmp/probe$n.o" "$tmp/probe$n.c"
    lower=""
    for b in $(below "$1"); do lower="$lower $lib/libaims_$b.a"; done
    # shellcheck disable=SC2086
    "$cc" $san -shared -fPIC -o "$tmp/check$n.so" -Wl,--start-group \
        "$tmp/probe$n.o" \
        -Wl,--whole-archive "$lib/libaims_$1.a" -Wl,--no-whole-archive $lower $ext \
        -Wl,--end-group -Wl,--no-undefined > "$tmp/log" 2>&1
}

fail=0
must_fail() {
    if link "$1" "$2"; then
        echo "FAIL: $1 calling $2 linked, the layer check would not catch it"; fail=1
    elif ! grep -q "undefined reference to \`$2'" "$tmp/log"; then
        echo "FAIL: $1 calling $2 failed for another reason:"; cat "$tmp/log"; fail=1
    else
        echo "ok: $1 -> $2 fails to link (undefined reference)"
    fi
}
must_link() {
    if link "$1" "$2"; then
        echo "ok: $1 -> $2 links"
    else
        echo "FAIL: $1 calling $2 did not link:"; cat "$tmp/log"; fail=1
    fi
}

# Downward calls link (and each layer links alone with its lower layers).
must_link core aims_free
must_link codec aimsi_malloc
must_link data aimsi_crc32c
must_link model aims_dataset_destroy
must_link orch aims_strerror
must_link svc aims_model_destroy
must_link svc aims_registry_create
# Upward and sideways calls do not.
must_fail core aims_dataset_destroy
must_fail codec aims_dataset_destroy
must_fail data aims_model_destroy
must_fail model aims_node_create
must_fail orch aims_dataset_destroy
must_fail orch aimsi_crc32c
exit $fail
