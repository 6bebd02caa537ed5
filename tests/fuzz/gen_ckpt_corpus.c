/*
 * gen_ckpt_corpus.c -- writes the seed corpus of fuzz_ckpt (corpus/ckpt/).
 *
 * Not built by meson (the corpus is committed). Regenerate after a checkpoint
 * or container format change (the seeds carry the run fingerprint of
 * fuzz_ckpt's fixed trainer, so a change to the fingerprint needs this too):
 *   cc -std=c11 -D_GNU_SOURCE -Iinclude -Iinclude/aims -Ibuild/include/aims -Isrc \
 *      tests/fuzz/gen_ckpt_corpus.c build/src/libaims_internal.a -lopenblas -lzstd -lm \
 *      -lpthread -o /tmp/gen && /tmp/gen tests/fuzz/corpus/ckpt
 * Seeds: the real checkpoint as a raw file (mode 0), truncated and with a
 * flipped payload byte; the real state and a zero optimizer buffer as built
 * input (mode 1), without the second buffer and best weights (modes 3, 5),
 * with a short optimizer buffer and with counters past the end of the run.
 */
#include "fuzz_ckpt.c"

static void put(const char *dir, const char *name, uint8_t mode, const void *a, size_t na,
                const void *b, size_t nb)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(&mode, 1, 1, f) != 1 || fwrite(a, 1, na, f) != na ||
        (nb > 0 && fwrite(b, 1, nb, f) != nb)) {
        fprintf(stderr, "gen: cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    if (argc != 2 || setup() != 1) {
        fprintf(stderr, "usage: gen DIR (setup: %s)\n", aims_errmsg());
        return 1;
    }
    void *file = NULL;
    size_t len = 0;
    if (aimsi_file_read(g_path, 1u << 20, &file, &len) != AIMS_OK) {
        return 1;
    }
    put(argv[1], "raw_valid", 0, file, len, NULL, 0);
    put(argv[1], "raw_truncated", 0, file, len / 2, NULL, 0);
    ((uint8_t *)file)[len - 5] ^= 0x40;
    put(argv[1], "raw_flipped", 0, file, len, NULL, 0);
    aimsi_free(file);
    const uint8_t *st = g_state + STATE_KEPT;
    const size_t sn = STATE_BYTES - STATE_KEPT;
    static const float zeros[12];
    put(argv[1], "built_valid", 1, st, sn, zeros, sizeof zeros);
    put(argv[1], "built_no_top2", 3, st, sn, zeros, sizeof zeros);
    put(argv[1], "built_no_best", 5, st, sn, zeros, sizeof zeros);
    put(argv[1], "built_short_top1", 1, st, sn, zeros, 7);
    uint8_t late[STATE_BYTES - STATE_KEPT];
    memcpy(late, st, sn);
    memset(late, 0x7f, 24); /* epoch, step, pos far past the run */
    put(argv[1], "built_counters", 1, late, sn, zeros, sizeof zeros);
    return 0;
}
