/*
 * fuzz_kv.c -- fuzz target for the codec's text readers (src/codec/kv.c):
 * key=value tokens, '\n'-terminated field lists and line splitting, the
 * byte-level half of the train spec and of the registry messages.
 *
 * The first input byte picks the buffer size the fields are copied into
 * (1..64), so the "does not fit" edges are reached; the rest is read three
 * ways. Every slice handed back must lie inside the input, every copied
 * field must be NUL-terminated within its buffer, and the readers must end
 * (the loops are bounded by the input length).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec/aimsi_kv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void inside(const char *s, size_t n, const char *lo, const char *hi)
{
    if (n > 0 && (s < lo || s + n > hi)) {
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    const size_t cap = 1 + data[0] % 64;
    const char *b = (const char *)data + 1;
    const size_t n = size - 1;
    const char *const end = b + n;

    aimsi_kv r;
    aimsi_kv_init(&r, b, n);
    aimsi_kv_pair kv;
    int more;
    size_t tokens = 0;
    while ((more = aimsi_kv_next(&r, &kv)) != AIMSI_KV_END) {
        inside(kv.tok, kv.tok_len, b, end);
        if (more == AIMSI_KV_PAIR) {
            inside(kv.key, kv.key_len, b, end);
            inside(kv.val, kv.val_len, b, end);
            if (kv.key_len == 0 || kv.key_len + 1 + kv.val_len != kv.tok_len) {
                __builtin_trap();
            }
        }
        if (++tokens > n) {
            __builtin_trap(); /* every token consumes at least one byte */
        }
    }

    char buf[65];
    const char *p = b;
    size_t fields = 0;
    while (aimsi_kv_field_next(&p, end, buf, cap)) {
        if (strlen(buf) >= cap || p > end || ++fields > n) {
            __builtin_trap();
        }
    }
    if (aimsi_kv_field_copy(b, n, buf, cap) && strlen(buf) != n) {
        __builtin_trap();
    }

    const char *starts[8];
    size_t lens[8];
    const size_t want = data[0] % 8;
    const size_t got = aimsi_kv_lines(b, n, want, starts, lens);
    for (size_t i = 0; i < got && i < want; i++) {
        inside(starts[i], lens[i], b, end);
    }
    if (got > want + 1) {
        __builtin_trap();
    }
    return 0;
}
