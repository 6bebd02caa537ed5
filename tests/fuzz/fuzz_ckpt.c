/*
 * fuzz_ckpt.c -- fuzz target for checkpoint restore (src/model/train_ckpt.c).
 *
 * Every input restores into a fresh run of the same tiny trainer (softmax
 * 3 -> 3, Adam, 8 rows, batch 4, one thread, patience 1 so the best-weights
 * section exists): aims_trainer_begin, aims_trainer_restore, then a step, so a restore
 * that accepted inconsistent counters would be caught using them. Hostile
 * bytes must give a status, never a crash, and leave no libaims block live.
 *
 * The first input byte picks how the rest becomes a checkpoint file:
 *   bit 0 clear: the rest IS the file, with the container CRC-32C recomputed
 *                when the header and table are whole, so mutations reach the
 *                section checks and the model reader instead of dying at the
 *                checksum (every section under 64 bytes is stored raw);
 *   bit 0 set:   a well-formed checkpoint is written around hostile content:
 *                the model sections of the real model, then the training
 *                state with its version and run fingerprint kept and the
 *                other 104 bytes from the input, then the rest of the input as
 *                the first optimizer buffer; bits 1-2 drop the second buffer
 *                and the best weights. This drives the counter and size checks
 *                past zstd's own checksum.
 * The checkpoint goes through a temporary file (restore takes a path).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/aimsi_model.h"

#define TAG_TSTA AIMSI_TAG('T', 'S', 'T', 'A')
#define TAG_TOP1 AIMSI_TAG('T', 'O', 'P', '1')
#define TAG_TOP2 AIMSI_TAG('T', 'O', 'P', '2')
#define TAG_TBST AIMSI_TAG('T', 'B', 'S', 'T')
#define STATE_BYTES 120u /* sizeof(ckpt_state) in train_ckpt.c */
#define STATE_KEPT 16u   /* version + fingerprint */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_path[64];
static uint8_t g_state[STATE_BYTES]; /* the real run's state section */
static int g_ready;                  /* 1 ok, -1 setup failed */

static const float g_x[8 * 3] = {0, 0, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0,
                                 0, 1, 1, 1, 0, 1, 1, 1, 1, .5f, .5f, .5f};
static const int32_t g_y[8] = {0, 1, 2, 0, 1, 2, 0, 1};

static void drop_file(void)
{
    unlink(g_path);
}

/* The fixed run every input restores into; *t is begun (no step taken). */
static aims_status run_create(aims_dataset **ds, aims_model **m, aims_trainer **t)
{
    *ds = NULL;
    *m = NULL;
    *t = NULL;
    aims_status rc = aims_dataset_create_dense(8, 3, g_x, g_y, ds);
    if (rc == AIMS_OK) {
        rc = aims_model_create(AIMS_MODEL_KIND_SOFTMAX, 3, 3, m);
    }
    if (rc == AIMS_OK) {
        rc = aims_trainer_create(*m, t);
    }
    const struct {
        aims_param p;
        int64_t v;
    } ints[] = {{AIMS_TRAIN_OPTIMIZER, 1}, {AIMS_TRAIN_BATCH, 4}, {AIMS_TRAIN_EPOCHS, 3},
                {AIMS_TRAIN_PATIENCE, 1}, {AIMS_TRAIN_THREADS, 1}};
    for (size_t i = 0; rc == AIMS_OK && i < sizeof ints / sizeof ints[0]; i++) {
        rc = aims_trainer_set_param_i64(*t, ints[i].p, ints[i].v);
    }
    if (rc == AIMS_OK) {
        rc = aims_trainer_set_param_f64(*t, AIMS_TRAIN_VAL_FRACTION, 0.25);
    }
    if (rc == AIMS_OK) {
        rc = aims_trainer_begin(*t, *ds, NULL);
    }
    return rc;
}

static void run_destroy(aims_dataset *ds, aims_model *m, aims_trainer *t)
{
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
}

/* Once per process: the temp path and the real state section (version and
 * fingerprint of this run), taken from a real checkpoint. */
static int setup(void)
{
    if (g_ready != 0) {
        return g_ready;
    }
    g_ready = -1;
    const char *dir = getenv("TMPDIR");
    snprintf(g_path, sizeof g_path, "%s/aims_fuzz_ckpt_%ld", dir != NULL && strlen(dir) < 32 ? dir
                                                              : "/tmp", (long)getpid());
    atexit(drop_file);
    aims_dataset *ds;
    aims_model *m;
    aims_trainer *t;
    int done = 0;
    aims_status rc = run_create(&ds, &m, &t);
    if (rc == AIMS_OK) {
        rc = aims_trainer_step(t, &done);
    }
    if (rc == AIMS_OK) {
        rc = aims_trainer_checkpoint(t, g_path);
    }
    run_destroy(ds, m, t);
    aimsi_creader *r = NULL;
    void *sec = NULL;
    size_t len = 0;
    if (rc == AIMS_OK && aimsi_cr_open_file(g_path, 1u << 20, AIMSI_KIND_CHECKPOINT, &r) == AIMS_OK &&
        aimsi_cr_section(r, TAG_TSTA, STATE_BYTES, &sec, &len) == AIMS_OK && len == STATE_BYTES) {
        memcpy(g_state, sec, STATE_BYTES);
        g_ready = 1;
    }
    aimsi_free(sec);
    aimsi_cr_destroy(r);
    return g_ready;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

/* Recompute the container CRC (layout in src/codec/aimsi_codec.h) in place
 * when the header, the table and every raw section lie inside the bytes. */
static void fix_crc(uint8_t *f, size_t size)
{
    if (size < 24) {
        return;
    }
    const uint64_t n = rd32(f + 16);
    if (n > 64 || 24 + 32 * n > size) {
        return;
    }
    const size_t table_end = 24 + 32 * (size_t)n;
    uint32_t crc = aimsi_crc32c(0, f, 20);
    crc = aimsi_crc32c(crc, f + 24, table_end - 24);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *e = f + 24 + 32 * i;
        const uint64_t off = rd64(e + 8);
        const uint64_t stored = rd64(e + 16);
        if ((rd32(e + 4) & 1u) == 0 && stored > 0) {
            if (off > size || stored > size - off) {
                return;
            }
            crc = aimsi_crc32c(crc, f + off, (size_t)stored);
        }
    }
    aimsi_store_u32le(f + 20, crc);
}

/* Plain write (no fsync: aimsi_file_write_atomic's fsyncs cost more than a
 * whole restore and would cut the fuzzer to a few dozen runs a second). */
static aims_status put_file(const void *bytes, size_t n)
{
    FILE *f = fopen(g_path, "wb");
    if (f == NULL) {
        return AIMS_E_IO;
    }
    const int ok = fwrite(bytes, 1, n, f) == n;
    return fclose(f) == 0 && ok ? AIMS_OK : AIMS_E_IO;
}

/* Bit 0 set: a well-formed file around hostile state and optimizer bytes. */
static aims_status write_built(uint8_t mode, const uint8_t *in, size_t n)
{
    uint8_t state[STATE_BYTES];
    memcpy(state, g_state, STATE_BYTES);
    const size_t take = n < STATE_BYTES - STATE_KEPT ? n : STATE_BYTES - STATE_KEPT;
    memcpy(state + STATE_KEPT, in, take);
    aims_dataset *ds;
    aims_model *m;
    aims_trainer *t;
    aimsi_cwriter *w = NULL;
    aims_status rc = run_create(&ds, &m, &t); /* a begun run: the model has its layers */
    if (rc == AIMS_OK) {
        rc = aimsi_cw_create(AIMSI_KIND_CHECKPOINT, 1, &w);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_model_write(m, w);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_cw_add(w, TAG_TSTA, state, STATE_BYTES);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_cw_add(w, TAG_TOP1, in + take, n - take);
    }
    static const float zeros[12];
    if (rc == AIMS_OK && (mode & 2u) == 0) {
        rc = aimsi_cw_add(w, TAG_TOP2, zeros, sizeof zeros);
    }
    if (rc == AIMS_OK && (mode & 4u) == 0) {
        rc = aimsi_cw_add(w, TAG_TBST, zeros, sizeof zeros);
    }
    void *bytes = NULL;
    size_t len = 0;
    if (rc == AIMS_OK) {
        rc = aimsi_cw_finish(w, &bytes, &len);
    }
    if (rc == AIMS_OK) {
        rc = put_file(bytes, len);
    }
    aimsi_free(bytes);
    aimsi_cw_destroy(w);
    run_destroy(ds, m, t);
    return rc;
}

static aims_status write_raw(const uint8_t *in, size_t n)
{
    uint8_t *f = aimsi_malloc(n ? n : 1);
    if (f == NULL) {
        return AIMS_E_NOMEM;
    }
    memcpy(f, in, n);
    fix_crc(f, n);
    const aims_status rc = put_file(f, n);
    aimsi_free(f);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || setup() != 1) {
        return 0;
    }
    const uint8_t mode = data[0];
    const aims_status wrote = (mode & 1u) != 0 ? write_built(mode, data + 1, size - 1)
                                               : write_raw(data + 1, size - 1);
    if (wrote == AIMS_OK) {
        aims_dataset *ds;
        aims_model *m;
        aims_trainer *t;
        if (run_create(&ds, &m, &t) == AIMS_OK && aims_trainer_restore(t, g_path) == AIMS_OK) {
            int done = 0;
            for (int i = 0; i < 3 && !done; i++) {
                if (aims_trainer_step(t, &done) != AIMS_OK) {
                    break;
                }
            }
        }
        run_destroy(ds, m, t);
    }
    if (aims_alloc_live() != 0) {
        __builtin_trap();
    }
    return 0;
}
