/*
 * test_jobs_cache.c -- fast adoption (docs/JOBS.md, "Fast adoption"): the
 * per-instance row cache (src/svc/jobs/rowcache.c) and the data path through
 * it (src/svc/jobs/jobs_cache.c).
 *
 * The cache must return the same rows as the store (and share them, not
 * copy them), stay within its byte bound evicting the least recently used
 * entry, load a digest once however many threads ask at the same time, never
 * keep rows whose load failed -- above all rows that failed their CRC -- and
 * balance the counting allocator (teardown checks it, and an allocation
 * failure loop runs the whole life of a cache). The adoption itself (a
 * standby instance prefetching the rows of another instance's job and
 * adopting it from the cache) is in test_jobs.c, test_jobs_adopt_from_cache.
 */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "aims/aims.h"
#include "core/aimsi_core.h"
#include "svc/aimsi_msg.h"
#include "svc/jobs/aimsi_jobs.h"
#include "svc/jobs/aimsi_rowcache.h"
#include "svc/jobs/jobs_impl.h"
#include "testalloc.h"
#include "tmp_dir.h"

#define ROWS 100
#define COLS 4
/* bytes of one test dataset as the cache counts them */
#define DS_BYTES (ROWS * COLS * sizeof(float) + ROWS * sizeof(int32_t))

static float g_x[3][ROWS * COLS];
static int32_t g_y[3][ROWS];
static char g_dir[256];
static const char HEX[3][65] = {
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
};

static void make_data(void)
{
    for (int k = 0; k < 3; k++) {
        for (size_t r = 0; r < ROWS; r++) {
            g_y[k][r] = (int32_t)((r + (size_t)k) % 3);
            for (size_t c = 0; c < COLS; c++) {
                g_x[k][r * COLS + c] = (float)(k * 1000) + (float)r + 0.25f * (float)c;
            }
        }
    }
}

/* ---- the cache alone ------------------------------------------------------------------------ */

typedef struct loader {
    int which;              /* dataset 0..2 */
    atomic_int calls;       /* loads run */
    aims_status fail;       /* != AIMS_OK: fail with it */
    int slow_ms;            /* sleep inside the load (concurrency test) */
} loader;

static aims_status load_fn(void *user, aims_dataset **root, size_t *bytes, int32_t *ymax)
{
    loader *l = user;
    atomic_fetch_add(&l->calls, 1);
    if (l->slow_ms > 0) {
        struct timespec ts = {0, (long)l->slow_ms * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (l->fail != AIMS_OK) {
        return aimsi_err(NULL, l->fail, "test loader: rows %d refused", l->which);
    }
    AIMSI_TRY(aims_dataset_create_dense(ROWS, COLS, g_x[l->which], g_y[l->which], root));
    *bytes = DS_BYTES;
    *ymax = 2;
    return AIMS_OK;
}

static void check_rows(const aims_dataset *ds, int which)
{
    assert_int_equal(aims_dataset_rows(ds), ROWS);
    assert_int_equal(aims_dataset_cols(ds), COLS);
    assert_memory_equal(aims_dataset_features(ds), g_x[which], sizeof g_x[which]);
    assert_memory_equal(aims_dataset_labels(ds), g_y[which], sizeof g_y[which]);
}

static aims_dataset *get(aimsi_rowcache *c, int which, loader *l, int want_hit)
{
    aims_dataset *v = NULL;
    int32_t ymax = -1;
    int hit = -1;
    assert_int_equal(aimsi_rowcache_get(c, HEX[which], load_fn, l, &v, &ymax, &hit), AIMS_OK);
    assert_int_equal(hit, want_hit);
    assert_int_equal(ymax, 2);
    check_rows(v, which);
    return v;
}

/* Same rows (shared, not copied), bounded, LRU. */
static void test_rowcache_same_rows_bounded_lru(void **state)
{
    (void)state;
    aimsi_rowcache *c = NULL;
    assert_int_equal(aimsi_rowcache_create(2 * DS_BYTES + DS_BYTES / 2, &c), AIMS_OK);
    loader l0 = {.which = 0}, l1 = {.which = 1}, l2 = {.which = 2};
    aims_dataset *a1 = get(c, 0, &l0, 0);
    aims_dataset *a2 = get(c, 0, &l0, 1);
    assert_int_equal(atomic_load(&l0.calls), 1);
    /* a hit shares the cached rows: the same arrays, no copy */
    assert_ptr_equal(aims_dataset_features(a1), aims_dataset_features(a2));
    aims_dataset *b = get(c, 1, &l1, 0);
    aims_dataset *a3 = get(c, 0, &l0, 1); /* 0 is now more recent than 1 */
    aims_dataset *d = get(c, 2, &l2, 0);  /* over the bound: 1 (least recent) goes */
    aimsi_rowcache_stats st;
    aimsi_rowcache_get_stats(c, &st);
    assert_int_equal(st.entries, 2);
    assert_true(st.bytes <= st.cap);
    assert_int_equal(st.bytes, 2 * DS_BYTES);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 3);
    assert_true(aimsi_rowcache_has(c, HEX[0]));
    assert_false(aimsi_rowcache_has(c, HEX[1]));
    assert_true(aimsi_rowcache_has(c, HEX[2]));
    check_rows(b, 1); /* an evicted entry's view stays valid: the job holds its rows */
    aims_dataset *b2 = get(c, 1, &l1, 0); /* loaded again */
    assert_int_equal(atomic_load(&l1.calls), 2);
    aimsi_rowcache_get_stats(c, &st);
    assert_true(st.bytes <= st.cap);
    assert_int_equal(st.entries, 2);
    /* destroy the cache before the views: they keep their rows */
    aimsi_rowcache_destroy(c);
    check_rows(a1, 0);
    check_rows(d, 2);
    aims_dataset_destroy(a1);
    aims_dataset_destroy(a2);
    aims_dataset_destroy(a3);
    aims_dataset_destroy(b);
    aims_dataset_destroy(b2);
    aims_dataset_destroy(d);
}

/* A value bigger than the bound is handed out, not kept. */
static void test_rowcache_too_big_not_kept(void **state)
{
    (void)state;
    aimsi_rowcache *c = NULL;
    assert_int_equal(aimsi_rowcache_create(DS_BYTES / 2, &c), AIMS_OK);
    loader l0 = {.which = 0};
    aims_dataset *a = get(c, 0, &l0, 0);
    aimsi_rowcache_stats st;
    aimsi_rowcache_get_stats(c, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    assert_false(aimsi_rowcache_has(c, HEX[0]));
    aimsi_rowcache_destroy(c);
    check_rows(a, 0);
    aims_dataset_destroy(a);
}

/* A failed load keeps nothing and reports the loader's status and message. */
static void test_rowcache_failed_load_not_kept(void **state)
{
    (void)state;
    aimsi_rowcache *c = NULL;
    assert_int_equal(aimsi_rowcache_create(4 * DS_BYTES, &c), AIMS_OK);
    loader bad = {.which = 0, .fail = AIMS_E_CORRUPT};
    aims_dataset *v = NULL;
    int32_t ymax = -1;
    int hit = -1;
    assert_int_equal(aimsi_rowcache_get(c, HEX[0], load_fn, &bad, &v, &ymax, &hit),
                     AIMS_E_CORRUPT);
    assert_null(v);
    assert_non_null(strstr(aims_errmsg(), "rows 0 refused"));
    assert_false(aimsi_rowcache_has(c, HEX[0]));
    /* no loader: a miss is "not found" */
    assert_int_equal(aimsi_rowcache_get(c, HEX[0], NULL, NULL, &v, &ymax, &hit), AIMS_E_NOTFOUND);
    loader good = {.which = 0};
    aims_dataset *a = get(c, 0, &good, 0);
    aims_dataset_destroy(a);
    aimsi_rowcache_destroy(c);
}

/* Many threads ask for the same digest at once: one load. */
typedef struct racer {
    aimsi_rowcache *c;
    loader *l;
    aims_dataset *v;
    aims_status rc;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    int32_t ymax = 0;
    int hit = 0;
    r->rc = aimsi_rowcache_get(r->c, HEX[1], load_fn, r->l, &r->v, &ymax, &hit);
    return NULL;
}

static void test_rowcache_one_load_per_digest(void **state)
{
    (void)state;
    aimsi_rowcache *c = NULL;
    assert_int_equal(aimsi_rowcache_create(4 * DS_BYTES, &c), AIMS_OK);
    loader l1 = {.which = 1, .slow_ms = 100};
    racer r[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (racer){.c = c, .l = &l1};
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(r[i].rc, AIMS_OK);
        check_rows(r[i].v, 1);
    }
    assert_int_equal(atomic_load(&l1.calls), 1);
    for (int i = 1; i < 4; i++) {
        assert_ptr_equal(aims_dataset_features(r[i].v), aims_dataset_features(r[0].v));
    }
    for (int i = 0; i < 4; i++) {
        aims_dataset_destroy(r[i].v);
    }
    aimsi_rowcache_destroy(c);
}

/* Allocation failures anywhere in a cache's life leak nothing. */
static aims_status life_op(void *ctx)
{
    (void)ctx;
    aimsi_rowcache *c = NULL;
    AIMSI_TRY(aimsi_rowcache_create(DS_BYTES + DS_BYTES / 2, &c));
    loader l0 = {.which = 0}, l1 = {.which = 1};
    aims_dataset *v[3] = {NULL, NULL, NULL};
    int32_t ymax = 0;
    int hit = 0;
    aims_status rc = aimsi_rowcache_get(c, HEX[0], load_fn, &l0, &v[0], &ymax, &hit);
    if (rc == AIMS_OK) {
        rc = aimsi_rowcache_get(c, HEX[0], load_fn, &l0, &v[1], &ymax, &hit);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_rowcache_get(c, HEX[1], load_fn, &l1, &v[2], &ymax, &hit); /* evicts 0 */
    }
    for (int i = 0; i < 3; i++) {
        aims_dataset_destroy(v[i]);
    }
    aimsi_rowcache_destroy(c);
    return rc;
}

static void test_rowcache_nomem(void **state)
{
    (void)state;
    ta_fail_loop("rowcache life", life_op, NULL);
}

/* ---- through the jobs store ----------------------------------------------------------------- */

static aimsi_jobs *open_jobs(const char *opts)
{
    char url[400];
    snprintf(url, sizeof url, "dir:%s/st%s", g_dir, opts);
    aimsi_jobs *J = NULL;
    assert_int_equal(aimsi_jobs_create(url, "T", &J), AIMS_OK);
    return J;
}

/* Dataset 0's rows stored once in a jobs store opened with `opts`, and the
 * request that names them by reference -- what every case below reads. */
typedef struct stored {
    aimsi_jobs *J;
    char ref[72]; /* "sha256:<hex>" */
    aims_msg *req; /* tensor "data" = ref */
} stored;

static void stored_open(stored *s, const char *opts)
{
    s->J = open_jobs(opts);
    aims_msg *m = NULL;
    assert_int_equal(aims_msg_create(&m), AIMS_OK);
    const uint64_t dx[2] = {ROWS, COLS};
    const uint64_t dy = ROWS;
    assert_int_equal(aims_msg_add(m, "x", AIMS_DT_F32, dx, 2, g_x[0], 0), AIMS_OK);
    assert_int_equal(aims_msg_add(m, "y", AIMS_DT_I32, &dy, 1, g_y[0], 0), AIMS_OK);
    assert_int_equal(aimsi_jobs_data_store(s->J, m, s->ref), AIMS_OK);
    aims_msg_destroy(m);
    s->req = NULL;
    assert_int_equal(aims_msg_create(&s->req), AIMS_OK);
    const uint64_t d = strlen(s->ref);
    assert_int_equal(aims_msg_add(s->req, "data", AIMS_DT_BYTES, &d, 1, s->ref, 0), AIMS_OK);
}

/* Read the rows by reference: aimsi_jobs_data_get's status, its outputs in
 * rows / ds (either may be NULL on return) and ymax. */
static aims_status stored_get(stored *s, aims_msg **rows, aims_dataset **ds, int32_t *ymax)
{
    *rows = NULL;
    *ds = NULL;
    *ymax = -1;
    return aimsi_jobs_data_get(s->J, s->req, rows, ds, ymax);
}

static void stored_close(stored *s)
{
    aims_msg_destroy(s->req);
    aimsi_jobs_destroy(s->J);
}

/* The rows through the cache are the stored rows; the second read is a hit
 * that reads nothing and shares the first one's arrays. */
static void test_jobs_cache_same_rows(void **state)
{
    (void)state;
    stored s;
    stored_open(&s, "?data_cache_mb=1");
    aims_msg *rows = NULL;
    aims_dataset *ds1 = NULL;
    aims_dataset *ds2 = NULL;
    int32_t ymax = -1;
    assert_int_equal(stored_get(&s, &rows, &ds1, &ymax), AIMS_OK);
    assert_null(rows);
    assert_non_null(ds1);
    assert_int_equal(ymax, 2);
    check_rows(ds1, 0);
    aimsi_jobs_times tm;
    aimsi_jobs_get_times(s.J, &tm);
    assert_int_equal(tm.data_cached, 0);
    assert_true(tm.data_read_ns > 0);
    assert_int_equal(stored_get(&s, &rows, &ds2, &ymax), AIMS_OK);
    check_rows(ds2, 0);
    assert_ptr_equal(aims_dataset_features(ds1), aims_dataset_features(ds2));
    aimsi_jobs_get_times(s.J, &tm);
    assert_int_equal(tm.data_cached, 1);
    assert_int_equal(tm.data_read_ns, 0);
    aimsi_rowcache_stats st;
    aimsi_jobs_cache_stats(s.J, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.bytes, DS_BYTES);
    assert_int_equal(st.cap, 1u << 20);
    aims_dataset_destroy(ds1);
    aims_dataset_destroy(ds2);
    stored_close(&s);
}

/* data_cache_mb=0: no cache, the decoded rows as before. */
static void test_jobs_cache_off(void **state)
{
    (void)state;
    stored s;
    stored_open(&s, "?data_cache_mb=0");
    aims_msg *rows = NULL;
    aims_dataset *ds = NULL;
    int32_t ymax = -1;
    assert_int_equal(stored_get(&s, &rows, &ds, &ymax), AIMS_OK);
    assert_null(ds);
    assert_non_null(rows);
    size_t idx = 0;
    assert_int_equal(aims_msg_find(rows, "x", &idx), AIMS_OK);
    aimsi_rowcache_stats st;
    aimsi_jobs_cache_stats(s.J, &st);
    assert_int_equal(st.cap, 0);
    aims_msg_destroy(rows);
    stored_close(&s);
}

/* Flip one byte of the stored rows: refused with the store's CRC message,
 * nothing cached, and still refused on the next try. */
static void test_jobs_cache_corrupt_refused(void **state)
{
    (void)state;
    stored s;
    stored_open(&s, "?data_cache_mb=1");
    char path[600];
    snprintf(path, sizeof path, "%s/st/d/%s", g_dir, s.ref + 7);
    const int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    const off_t at = sb.st_size / 2;
    unsigned char byte = 0;
    assert_int_equal(pread(fd, &byte, 1, at), 1);
    byte ^= 0x40;
    assert_int_equal(pwrite(fd, &byte, 1, at), 1);
    close(fd);
    for (int i = 0; i < 2; i++) {
        aims_msg *rows = NULL;
        aims_dataset *ds = NULL;
        int32_t ymax = -1;
        assert_int_equal(stored_get(&s, &rows, &ds, &ymax), AIMS_E_CORRUPT);
        assert_null(rows);
        assert_null(ds);
        assert_non_null(strstr(aims_errmsg(), "checksum"));
        assert_non_null(strstr(aims_errmsg(), s.ref + 7));
    }
    aimsi_rowcache_stats st;
    aimsi_jobs_cache_stats(s.J, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.loads, 0);
    stored_close(&s);
}

/* Rows a submit would refuse (a negative label) are refused, not cached. */
static void test_jobs_cache_bad_rows_refused(void **state)
{
    (void)state;
    const int32_t keep = g_y[0][7];
    g_y[0][7] = -1;
    stored s;
    stored_open(&s, "?data_cache_mb=1");
    g_y[0][7] = keep;
    aims_msg *rows = NULL;
    aims_dataset *ds = NULL;
    int32_t ymax = -1;
    assert_int_equal(stored_get(&s, &rows, &ds, &ymax), AIMS_E_INVAL);
    assert_non_null(strstr(aims_errmsg(), "row 7"));
    aimsi_rowcache_stats st;
    aimsi_jobs_cache_stats(s.J, &st);
    assert_int_equal(st.entries, 0);
    stored_close(&s);
}

/* ---- setup ---------------------------------------------------------------------------------- */

static int cache_setup(void **state)
{
    tmp_dir_make(g_dir, sizeof g_dir, "jobs-cache");
    return ta_setup(state);
}

static int cache_teardown(void **state)
{
    tmp_dir_remove(g_dir);
    return ta_teardown(state);
}

int main(void)
{
    ta_install();
    make_data();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rowcache_same_rows_bounded_lru, cache_setup,
                                        cache_teardown),
        cmocka_unit_test_setup_teardown(test_rowcache_too_big_not_kept, cache_setup,
                                        cache_teardown),
        cmocka_unit_test_setup_teardown(test_rowcache_failed_load_not_kept, cache_setup,
                                        cache_teardown),
        cmocka_unit_test_setup_teardown(test_rowcache_one_load_per_digest, cache_setup,
                                        cache_teardown),
        cmocka_unit_test_setup_teardown(test_rowcache_nomem, cache_setup, cache_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_cache_same_rows, cache_setup, cache_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_cache_off, cache_setup, cache_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_cache_corrupt_refused, cache_setup,
                                        cache_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_cache_bad_rows_refused, cache_setup,
                                        cache_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
