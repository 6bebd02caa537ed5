#!/bin/sh
# check_rules.sh SRCROOT -- the house rules a grep can prove (DESIGN.md §1, §4):
#   - only src/core/alloc.c calls malloc/calloc/realloc/free;
#   - the library never prints, aborts or exits;
#   - only src/model includes <cblas.h>, only src/codec <zstd.h>, only the tls
#     files of src/svc/transport <openssl/...>;
#   - no public header includes either;
#   - orch depends on core only; core depends on nothing else in src/.
set -u
root=$1
fail=0
# Every library source, also in sub-folders (src/svc/transport).
srcs=$(find "$root/src" -name '*.c' | sort)
hdrs=$(find "$root/src" -name '*.h' | sort)
say() { echo "$1"; fail=1; }

hits=$(grep -nE '(^|[^_a-zA-Z0-9])(malloc|calloc|realloc|free)\(' $srcs \
       | grep -v '^'"$root"'/src/core/alloc.c:' | grep -v 'aimsi_\|aims_free')
[ -n "$hits" ] && say "direct allocation outside src/core/alloc.c:
$hits"
hits=$(grep -nE '(^|[^_a-zA-Z0-9])(printf|fprintf|puts|perror|abort|exit)\(' $srcs)
[ -n "$hits" ] && say "the library must not print, abort or exit:
$hits"
hits=$(grep -ln 'include <cblas.h>' $srcs $hdrs 2>/dev/null | grep -v '/src/model/')
[ -n "$hits" ] && say "cblas.h outside src/model: $hits"
hits=$(grep -ln 'include <zstd.h>\|include <zstd_errors.h>' $srcs $hdrs 2>/dev/null \
       | grep -v '/src/codec/')
[ -n "$hits" ] && say "zstd.h outside src/codec: $hits"
hits=$(grep -ln 'include <openssl/' $srcs $hdrs 2>/dev/null \
       | grep -v '/src/svc/transport/tls[a-z_]*\.c$\|/src/svc/transport/aimsi_tls.h$\|/src/svc/authz/jwt.c$\|/src/svc/store/store_sha256.c$')
[ -n "$hits" ] && say "OpenSSL outside src/svc/transport/tls*.c, aimsi_tls.h, src/svc/authz/jwt.c, src/svc/store/store_sha256.c: $hits"
hits=$(grep -ln 'cblas.h\|zstd.h\|openssl/' "$root"/include/aims/*.h)
[ -n "$hits" ] && say "public header includes a dependency header: $hits"
hits=$(grep -n 'include "\.\./\(codec\|data\|model\|svc\)/' "$root"/src/orch/*.c "$root"/src/orch/*.h 2>/dev/null)
[ -n "$hits" ] && say "src/orch may depend on src/core only:
$hits"
hits=$(grep -n 'include "\.\./' "$root"/src/core/*.c "$root"/src/core/*.h 2>/dev/null)
[ -n "$hits" ] && say "src/core may not include other modules:
$hits"
hits=$(grep -n 'include "\.\./svc/\|include "svc/' "$root"/src/core/* "$root"/src/codec/* "$root"/src/data/* \
       "$root"/src/model/* "$root"/src/orch/* 2>/dev/null)
[ -n "$hits" ] && say "nothing below src/svc may know services exist:
$hits"
if [ "$fail" -ne 0 ]; then
    echo "house rules FAILED"; exit 1
fi
echo "house rules ok"
