/*
 * test_jobs.c -- durable training jobs (docs/JOBS.md, src/svc/jobs/,
 * src/svc/store/): the checkpoint store, and train services sharing one
 * store directory, driven through the train kind's run() as test_services.c
 * does.
 *
 * "Death" of an instance is simulated the way a kill -9 looks to the store:
 * the instance stops renewing its leases and writing (aimsi_jobs_pause, or
 * aimsi_jobs_pause_after: right after its n-th checkpoint), then its job
 * thread is stopped without finishing. The integration test
 * (tests/integration/test_jobs_daemon.c) does it with real processes.
 *
 * Every test compares the adopted job's result with an uninterrupted run of
 * the same spec on a service without a store: the bundle bytes must be equal.
 */
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
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
#include "svc/aimsi_svckind.h"
#include "svc/jobs/aimsi_jobs.h"
#include "svc/store/aimsi_store.h"
#include "svc_blobs.h"
#include "testalloc.h"
#include "tmp_dir.h"

#define ROWS 240
#define COLS 4
#define CLASSES 3
#define LEASE "?lease_ms=300&scan_ms=20"

static float g_x[ROWS * COLS];
static int32_t g_y[ROWS];
static char g_dir[256];
static const char *g_url_extra = ""; /* more store options ("&data_cache_mb=0") */

static void make_data(void)
{
    const blobs_shape sh = {.rows = ROWS, .cols = COLS, .classes = CLASSES, .seed = 42,
                            .hi = 3.0, .lo = -1.0, .spread = 1.5};
    blobs_make(&sh, g_x, g_y);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- calls ---------------------------------------------------------------------------------- */

static void add_bytes(aims_msg *m, const char *name, const char *s)
{
    const uint64_t d = strlen(s);
    assert_int_equal(aims_msg_add(m, name, AIMS_DT_BYTES, &d, 1, s, 0), AIMS_OK);
}

/* One call of the train kind; the reply is moved into reply_out (may be NULL).
 * spec != NULL: a submit with the rows (or with "data" = ref when ref != NULL). */
static aims_status call(void *impl, const char *method, const char *job, const char *spec,
                        const char *ref, aims_msg *reply_out)
{
    aims_msg *req = NULL;
    aims_msg *reply = NULL;
    assert_int_equal(aims_msg_create(&req), AIMS_OK);
    assert_int_equal(aims_msg_create(&reply), AIMS_OK);
    if (job != NULL) {
        add_bytes(req, "job", job);
        char handle[96];
        snprintf(handle, sizeof handle, "test-handle-of-%s", job);
        add_bytes(req, "handle", handle);
    }
    if (spec != NULL && ref != NULL) {
        add_bytes(req, "data", ref);
    } else if (spec != NULL || strcmp(method, "put_data") == 0) {
        const uint64_t dx[2] = {ROWS, COLS};
        const uint64_t dy = ROWS;
        assert_int_equal(aims_msg_add(req, "x", AIMS_DT_F32, dx, 2, g_x, 0), AIMS_OK);
        assert_int_equal(aims_msg_add(req, "y", AIMS_DT_I32, &dy, 1, g_y, 0), AIMS_OK);
    }
    if (spec != NULL) {
        add_bytes(req, "spec", spec);
        add_bytes(req, "publish", "blobs@3");
    }
    aimsi_work w = {.method = method, .req = req, .reply = reply, .status = (aims_status)-1};
    aimsi_work *wp = &w;
    aimsi_kind_train.run(impl, &wp, 1);
    if (reply_out != NULL) {
        aimsi_msg_move(reply_out, reply);
    }
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    return w.status;
}

static int64_t reply_int(const aims_msg *m, const char *name)
{
    int64_t v = 0;
    assert_int_equal(aimsi_msg_int(m, name, &v), AIMS_OK);
    return v;
}

static int32_t state_of(void *impl, const char *job, aims_msg *r)
{
    assert_int_equal(call(impl, "status", job, NULL, NULL, r), AIMS_OK);
    return (int32_t)reply_int(r, "state");
}

/* Poll status until the state is at least `want` (bounded: 120 s). */
static int32_t wait_state(void *impl, const char *job, int32_t want, aims_msg *r)
{
    for (int i = 0; i < 60000; i++) {
        const int32_t s = state_of(impl, job, r);
        if (s >= want) {
            return s;
        }
        sleep_ms(2);
    }
    fail_msg("job %s never reached state %d", job, (int)want);
    return -1;
}

static aims_msg *new_msg(void)
{
    aims_msg *m = NULL;
    assert_int_equal(aims_msg_create(&m), AIMS_OK);
    return m;
}

/* The result bytes of a done job (malloc'd copy). */
static void *result_of(void *impl, const char *job, size_t *len)
{
    aims_msg *r = new_msg();
    assert_int_equal(call(impl, "result", job, NULL, NULL, r), AIMS_OK);
    const char *p = NULL;
    assert_int_equal(aimsi_msg_bytes(r, "bundle", &p, len), AIMS_OK);
    void *copy = malloc(*len);
    assert_non_null(copy);
    memcpy(copy, p, *len);
    aims_msg_destroy(r);
    return copy;
}

/* The job's result on impl is ref (ref_len bytes), byte for byte. */
static void expect_result(void *impl, const char *job, const void *ref, size_t ref_len)
{
    size_t len = 0;
    void *got = result_of(impl, job, &len);
    assert_int_equal(len, ref_len);
    assert_memory_equal(got, ref, len);
    free(got);
}

/* Submit job (spec with the rows, or with data_ref) on impl and poll its
 * status until it is done (state 2); the last reply is left in r. */
static void run_to_end(void *impl, const char *job, const char *spec, const char *data_ref,
                       aims_msg *r)
{
    assert_int_equal(call(impl, "submit", job, spec, data_ref, r), AIMS_OK);
    assert_int_equal(wait_state(impl, job, 2, r), 2);
}

/* put_data of the rows on impl; their reference ("sha256:" and 64 hex
 * digits) into data_ref. */
static void put_rows(void *impl, aims_msg *r, char data_ref[72])
{
    assert_int_equal(call(impl, "put_data", NULL, NULL, NULL, r), AIMS_OK);
    const char *p = NULL;
    size_t n = 0;
    assert_int_equal(aimsi_msg_bytes(r, "data", &p, &n), AIMS_OK);
    assert_int_equal(n, 71);
    memcpy(data_ref, p, n);
    data_ref[n] = '\0';
    assert_memory_equal(data_ref, "sha256:", 7);
}

/* A train impl, with a store when inst != NULL. */
static void *service(const char *inst)
{
    void *impl = NULL;
    assert_int_equal(aimsi_train_create(NULL, &impl), AIMS_OK);
    if (inst != NULL) {
        char url[400];
        snprintf(url, sizeof url, "dir:%s" LEASE "%s", g_dir, g_url_extra);
        assert_int_equal(aimsi_train_set_store(impl, url, inst), AIMS_OK);
    }
    return impl;
}

static void service_end(void *impl)
{
    aimsi_kind_train.stop(impl);
    aimsi_kind_train.destroy(impl);
}

/* The uninterrupted run of spec on a service without a store. */
static void *reference(const char *spec, size_t *len)
{
    void *r = service(NULL);
    aims_msg *m = new_msg();
    run_to_end(r, "ref", spec, NULL, m);
    void *bytes = result_of(r, "ref", len);
    aims_msg_destroy(m);
    service_end(r);
    return bytes;
}

static void wait_paused(void *impl)
{
    for (int i = 0; i < 60000 && !aimsi_jobs_paused(aimsi_train_jobs(impl)); i++) {
        sleep_ms(2);
    }
    assert_true(aimsi_jobs_paused(aimsi_train_jobs(impl)));
}

/* Files of the job's folder whose name starts with prefix. */
static int count_files(const char *job, const char *prefix, char *newest, size_t cap)
{
    char path[512];
    int n = snprintf(path, sizeof path, "%s/j/", g_dir);
    for (const char *p = job; *p != '\0'; p++) {
        n += snprintf(path + n, sizeof path - (size_t)n, "%02x", (unsigned char)*p);
    }
    DIR *d = opendir(path);
    int count = 0;
    if (d == NULL) {
        return 0;
    }
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            count++;
            if (newest != NULL && (newest[0] == '\0' || strcmp(e->d_name, newest + n + 1) > 0)) {
                const int w = snprintf(newest, cap, "%s/%s", path, e->d_name);
                assert_true(w > 0 && (size_t)w < cap);
            }
        }
    }
    closedir(d);
    return count;
}

/* 15 steps per epoch (240 rows, batch 16); a checkpoint every 10 steps. */
static const char SPEC[] = "kind=mlp hidden=16 activation=tanh epochs=12 batch=16 lr=0.01 "
                           "seed=7 checkpoint_every_steps=10 checkpoint_every_ms=0";

/* ---- the store ------------------------------------------------------------------------------ */

static int list_count(void *user, const char *name)
{
    (void)name;
    (*(int *)user)++;
    return 0;
}

static void test_store_blobs(void **state)
{
    (void)state;
    char url[400];
    snprintf(url, sizeof url, "dir:%s/st", g_dir);
    aimsi_store *s = NULL;
    assert_int_equal(aimsi_store_open(url, &s), AIMS_OK);
    assert_int_equal(aimsi_store_put(s, "a/b/one", "hello", 5), AIMS_OK);
    assert_int_equal(aimsi_store_put(s, "a/b/one", "hello!", 6), AIMS_OK); /* replace */
    assert_int_equal(aimsi_store_put_new(s, "a/b/two", "x", 1), AIMS_OK);
    assert_int_equal(aimsi_store_put_new(s, "a/b/two", "y", 1), AIMS_E_EXISTS);
    void *p = NULL;
    size_t n = 0;
    assert_int_equal(aimsi_store_get(s, "a/b/one", &p, &n), AIMS_OK);
    assert_int_equal(n, 6);
    assert_memory_equal(p, "hello!", 6);
    aimsi_free(p);
    assert_int_equal(aimsi_store_get(s, "a/b/two", &p, &n), AIMS_OK);
    assert_memory_equal(p, "x", 1);
    aimsi_free(p);
    int count = 0;
    assert_int_equal(aimsi_store_list(s, "a/b", list_count, &count), AIMS_OK);
    assert_int_equal(count, 2); /* no temp files left behind */
    assert_int_equal(aimsi_store_get(s, "a/b/none", &p, &n), AIMS_E_NOTFOUND);
    /* names that could leave the store */
    assert_int_equal(aimsi_store_put(s, "../x", "z", 1), AIMS_E_INVAL);
    assert_int_equal(aimsi_store_put(s, "/abs", "z", 1), AIMS_E_INVAL);
    assert_int_equal(aimsi_store_put(s, "a//b", "z", 1), AIMS_E_INVAL);
    assert_int_equal(aimsi_store_put(s, "a/.hidden", "z", 1), AIMS_E_INVAL);
    /* damage: one flipped payload byte is told apart from an intact blob */
    char path[512];
    snprintf(path, sizeof path, "%s/st/a/b/one", g_dir);
    const int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    char c = 0;
    assert_int_equal(pread(fd, &c, 1, 26), 1);
    c ^= 0x20;
    assert_int_equal(pwrite(fd, &c, 1, 26), 1);
    close(fd);
    assert_int_equal(aimsi_store_get(s, "a/b/one", &p, &n), AIMS_E_CORRUPT);
    assert_non_null(strstr(aims_errmsg(), "a/b/one"));
    /* truncation too */
    assert_int_equal(truncate(path, 10), 0);
    assert_int_equal(aimsi_store_get(s, "a/b/one", &p, &n), AIMS_E_CORRUPT);
    assert_int_equal(aimsi_store_remove(s, "a/b/one"), AIMS_OK);
    assert_int_equal(aimsi_store_remove(s, "a/b/one"), AIMS_OK); /* absent: fine */
    aimsi_store_close(s);
    /* URLs and options */
    assert_int_equal(aimsi_store_open("s3://bucket", &s), AIMS_E_INVAL);
    assert_int_equal(aimsi_store_open("dir:relative", &s), AIMS_E_INVAL);
    int64_t v = 0;
    assert_int_equal(aimsi_store_option("dir:/x?lease_ms=70&scan_ms=9", "lease_ms", 50, 100, 1,
                                        &v), AIMS_OK);
    assert_int_equal(v, 70);
    assert_int_equal(aimsi_store_option("dir:/x?lease_ms=7", "lease_ms", 50, 100, 1, &v),
                     AIMS_E_INVAL);
    assert_int_equal(aimsi_store_option("dir:/x", "lease_ms", 50, 100, 77, &v), AIMS_OK);
    assert_int_equal(v, 77);
}

/* ---- adoption ------------------------------------------------------------------------------- */

/* Service A runs `job` of SPEC and "dies" right after its n-th checkpoint:
 * it stops renewing and writing, then its job thread stops unfinished. */
static void run_and_die(const char *job, int64_t n, aims_msg *r)
{
    void *a = service("A");
    aimsi_jobs_pause_after(aimsi_train_jobs(a), n);
    assert_int_equal(call(a, "submit", job, SPEC, NULL, r), AIMS_OK);
    wait_paused(a);
    service_end(a); /* no lease is released: a dead process releases nothing */
}

/* Service B adopts `job` and finishes it with the bytes of ref; B's last
 * status reply is left in r. */
static void adopt_and_check(const char *job, const void *ref, size_t ref_len, aims_msg *r)
{
    void *b = service("B");
    assert_int_equal(wait_state(b, job, 2, r), 2);
    expect_result(b, job, ref, ref_len);
    service_end(b);
}

/* A dies after two checkpoints (step 20); B adopts, resumes from step 20 and
 * finishes with the bytes of the uninterrupted run. */
static void test_jobs_adopt_bitexact(void **state)
{
    (void)state;
    size_t ref_len = 0;
    void *ref = reference(SPEC, &ref_len);
    aims_msg *r = new_msg();
    run_and_die("j1", 2, r);
    assert_int_equal(count_files("j1", "ckpt.", NULL, 0), 2);
    adopt_and_check("j1", ref, ref_len, r);
    const char *owner = NULL;
    size_t owner_len = 0;
    assert_int_equal(aimsi_msg_bytes(r, "owner", &owner, &owner_len), AIMS_OK);
    assert_int_equal(owner_len, 1);
    assert_memory_equal(owner, "B", 1);
    assert_int_equal(reply_int(r, "token"), 2);
    assert_int_equal(reply_int(r, "adoptions"), 1);
    assert_int_equal(reply_int(r, "resumed_from"), 20);
    const int64_t lost = reply_int(r, "lost_steps");
    assert_true(lost >= 0 && lost <= 10); /* at most one checkpoint interval */
    assert_int_equal(count_files("j1", "result", NULL, 0), 1);
    /* any instance answers from the store, handle required */
    void *c = service("C");
    assert_int_equal(state_of(c, "j1", r), 2);
    expect_result(c, "j1", ref, ref_len);
    aims_msg *req = NULL;
    assert_int_equal(aims_msg_create(&req), AIMS_OK);
    add_bytes(req, "job", "j1");
    add_bytes(req, "handle", "not-the-handle-of-j1");
    aimsi_work w = {.method = "status", .req = req, .reply = r};
    aimsi_work *wp = &w;
    aimsi_kind_train.run(c, &wp, 1);
    assert_int_equal(w.status, AIMS_E_DENIED);
    aims_msg_destroy(req);
    service_end(c);
    aims_msg_destroy(r);
    free(ref);
}

/* The newest checkpoint is damaged: B falls back to the one before it and the
 * result is still the uninterrupted run's. */
static void test_jobs_damaged_checkpoint(void **state)
{
    (void)state;
    size_t ref_len = 0;
    void *ref = reference(SPEC, &ref_len);
    aims_msg *r = new_msg();
    run_and_die("j2", 3, r);
    char newest[512] = "";
    assert_int_equal(count_files("j2", "ckpt.", newest, sizeof newest), 2);
    assert_non_null(strstr(newest, "ckpt.0000000000000030"));
    const int fd = open(newest, O_RDWR);
    assert_true(fd >= 0);
    char junk[64];
    memset(junk, 0x5a, sizeof junk);
    assert_int_equal(pwrite(fd, junk, sizeof junk, 100), (ssize_t)sizeof junk);
    close(fd);
    adopt_and_check("j2", ref, ref_len, r);
    assert_int_equal(reply_int(r, "resumed_from"), 20); /* the older intact one */
    aims_msg_destroy(r);
    free(ref);
}

/* ---- fencing -------------------------------------------------------------------------------- */

static char g_fenced[512];
static pthread_mutex_t g_fenced_mu = PTHREAD_MUTEX_INITIALIZER;

static void log_fn(void *user, aims_log_level level, const char *msg)
{
    (void)user;
    (void)level;
    pthread_mutex_lock(&g_fenced_mu);
    if (strstr(msg, "fenced") != NULL && g_fenced[0] == '\0') {
        snprintf(g_fenced, sizeof g_fenced, "%s", msg);
    }
    pthread_mutex_unlock(&g_fenced_mu);
}

/* The first logged line about fencing, copied into out ("" until then). */
static void fenced_line(char *out, size_t cap)
{
    pthread_mutex_lock(&g_fenced_mu);
    snprintf(out, cap, "%s", g_fenced);
    pthread_mutex_unlock(&g_fenced_mu);
}

/* A is paused (its lease runs out) with its job running; B adopts and
 * finishes; A comes back: its commit is fenced, the one result is B's. */
static void test_jobs_zombie_fenced(void **state)
{
    (void)state;
    static const char spec[] = "kind=mlp hidden=16 activation=tanh epochs=12 batch=16 lr=0.01 "
                               "seed=7 checkpoint_every_steps=1000000 checkpoint_every_ms=0";
    g_fenced[0] = '\0';
    /* before any thread runs: the log hook is process-wide start-up state */
    assert_int_equal(aims_set_log(log_fn, NULL, AIMS_LOG_WARN), AIMS_OK);
    size_t ref_len = 0;
    void *ref = reference(spec, &ref_len);
    aims_msg *r = new_msg();
    void *a = service("A");
    aimsi_jobs *ja = aimsi_train_jobs(a);
    aimsi_jobs_pause(ja, 1); /* a paused process: no renewals; blocks before its commit */
    assert_int_equal(call(a, "submit", "z1", spec, NULL, r), AIMS_OK);
    void *b = service("B");
    assert_int_equal(wait_state(b, "z1", 2, r), 2);
    expect_result(b, "z1", ref, ref_len);
    /* the zombie comes back */
    aimsi_jobs_pause(ja, 0);
    char line[512] = "";
    for (int i = 0; i < 60000 && line[0] == '\0'; i++) {
        sleep_ms(2);
        fenced_line(line, sizeof line);
    }
    assert_non_null(strstr(line, "fenced"));
    assert_non_null(strstr(line, "instance B holds it now (token 2)"));
    /* A's job ends (handed over); A answers from the store then: done, by B */
    assert_int_equal(wait_state(a, "z1", 2, r), 2);
    const char *owner = NULL;
    size_t owner_len = 0;
    assert_int_equal(aimsi_msg_bytes(r, "owner", &owner, &owner_len), AIMS_OK);
    assert_memory_equal(owner, "B", 1);
    /* a direct commit with the old token is refused with a clear message */
    assert_int_equal(aimsi_jobs_commit(ja, "z1", 2, 1, "other", 5), AIMS_E_STATE);
    assert_non_null(strstr(aims_errmsg(), "fenced"));
    assert_int_equal(count_files("z1", "result", NULL, 0), 1);
    expect_result(a, "z1", ref, ref_len);
    service_end(a);
    service_end(b);
    assert_int_equal(aims_set_log(NULL, NULL, AIMS_LOG_WARN), AIMS_OK); /* threads joined */
    aims_msg_destroy(r);
    free(ref);
}

/* ---- data by reference, retries, cancel ----------------------------------------------------- */

static void test_jobs_data_ref(void **state)
{
    (void)state;
    size_t ref_len = 0;
    void *ref = reference(SPEC, &ref_len);
    aims_msg *r = new_msg();
    void *a = service("A");
    char data_ref[72];
    put_rows(a, r, data_ref);
    /* the same rows again: the same reference */
    char again[72];
    put_rows(a, r, again);
    assert_string_equal(again, data_ref);
    run_to_end(a, "d1", SPEC, data_ref, r);
    expect_result(a, "d1", ref, ref_len);
    /* a retried submit of the same id on another instance: no second job */
    void *b = service("B");
    assert_int_equal(call(b, "submit", "d1", SPEC, data_ref, r), AIMS_OK);
    assert_int_equal(reply_int(r, "state"), 2);
    /* an unknown or malformed reference is a clear error */
    char bad[72];
    memcpy(bad, data_ref, sizeof bad);
    bad[7] = bad[7] == 'a' ? 'b' : 'a';
    assert_int_equal(call(b, "submit", "d2", SPEC, bad, r), AIMS_E_NOTFOUND);
    assert_non_null(strstr(aims_msg_error(r), "put_data"));
    assert_int_equal(call(b, "submit", "d3", SPEC, "sha256:xyz", r), AIMS_E_INVAL);
    /* without a store "data" and put_data are refused */
    void *plain = service(NULL);
    assert_int_equal(call(plain, "submit", "d4", SPEC, data_ref, r), AIMS_E_STATE);
    assert_int_equal(call(plain, "put_data", NULL, NULL, NULL, r), AIMS_E_STATE);
    service_end(plain);
    service_end(b);
    service_end(a);
    aims_msg_destroy(r);
    free(ref);
}

/* A caller's cancel is recorded: no other instance adopts the job. A stopped
 * service hands its job over instead (released lease, adopted at once). */
static void test_jobs_cancel_and_handover(void **state)
{
    (void)state;
    static const char long_spec[] = "kind=mlp hidden=16 activation=tanh epochs=1000000 batch=16 "
                                    "lr=0.001 seed=3 checkpoint_every_steps=50";
    aims_msg *r = new_msg();
    void *a = service("A");
    assert_int_equal(call(a, "submit", "c1", long_spec, NULL, r), AIMS_OK);
    assert_int_equal(wait_state(a, "c1", 1, r), 1);
    assert_int_equal(call(a, "cancel", "c1", NULL, NULL, r), AIMS_OK);
    assert_int_equal(wait_state(a, "c1", 4, r), 4);
    /* handover: a stopped service releases its lease; B adopts without waiting */
    assert_int_equal(call(a, "submit", "h1", long_spec, NULL, r), AIMS_OK);
    assert_int_equal(wait_state(a, "h1", 1, r), 1);
    while (count_files("h1", "ckpt.", NULL, 0) == 0) {
        sleep_ms(2);
    }
    aimsi_kind_train.stop(a);
    void *b = service("B");
    for (int i = 0; i < 60000; i++) {
        (void)state_of(b, "h1", r);
        const char *owner = NULL;
        size_t ol = 0;
        /* running on B, and its fit has restored (resumed_from is written then) */
        if (aimsi_msg_bytes(r, "owner", &owner, &ol) == AIMS_OK && ol == 1 && owner[0] == 'B' &&
            reply_int(r, "state") == 1 && reply_int(r, "resumed_from") >= 0) {
            break;
        }
        sleep_ms(2);
    }
    assert_int_equal(reply_int(r, "state"), 1);
    assert_true(reply_int(r, "resumed_from") >= 50);
    /* the cancelled job was never adopted */
    assert_int_equal(state_of(b, "c1", r), 4);
    assert_int_equal(reply_int(r, "adoptions"), 0);
    /* cancel through another instance reaches the owner (A answers from the store) */
    assert_int_equal(call(a, "cancel", "h1", NULL, NULL, r), AIMS_OK);
    assert_int_equal(wait_state(b, "h1", 4, r), 4);
    service_end(b);
    service_end(a);
    aims_msg_destroy(r);
}

/* ---- leftovers of this morning: cancel bound, full adopter, retention, text, digest sidecar ---- */

/* A train impl with a store URL of LEASE plus `extra` ("&k=v"), on pipeline p. */
static void *service_with(const char *inst, const char *extra, const aims_pipeline *p)
{
    void *impl = NULL;
    assert_int_equal(aimsi_train_create(p, &impl), AIMS_OK);
    char url[400];
    snprintf(url, sizeof url, "dir:%s" LEASE "%s", g_dir, extra);
    assert_int_equal(aimsi_train_set_store(impl, url, inst), AIMS_OK);
    return impl;
}

/* A cancel reaching another instance stops the owner within a lease renewal,
 * not at its next checkpoint: here there is none for 10^6 steps. */
static void test_jobs_cancel_between_checkpoints(void **state)
{
    (void)state;
    static const char spec[] = "kind=mlp hidden=16 activation=tanh epochs=1000000 batch=16 "
                               "lr=0.001 seed=5 checkpoint_every_steps=1000000 "
                               "checkpoint_every_ms=0";
    aims_msg *r = new_msg();
    void *a = service("A");
    void *b = service("B");
    assert_int_equal(call(a, "submit", "k1", spec, NULL, r), AIMS_OK);
    assert_int_equal(wait_state(a, "k1", 1, r), 1);
    assert_int_equal(call(b, "cancel", "k1", NULL, NULL, r), AIMS_OK); /* B: a marker */
    assert_int_equal(wait_state(a, "k1", 3, r), 4);
    assert_int_equal(count_files("k1", "ckpt.", NULL, 0), 0); /* not seen at a checkpoint */
    assert_int_equal(wait_state(b, "k1", 3, r), 4); /* the store says so too */
    service_end(b);
    service_end(a);
    aims_msg_destroy(r);
}

static _Atomic int g_room;
static _Atomic int g_room_asked;
static _Atomic int g_adopted;

static int room_fn(void *user)
{
    (void)user;
    atomic_fetch_add(&g_room_asked, 1);
    return atomic_load(&g_room);
}

static aims_status adopt_fn(void *user, const aims_msg *submit, uint64_t token)
{
    (void)user;
    (void)submit;
    assert_int_equal(token, 2);
    atomic_fetch_add(&g_adopted, 1);
    return AIMS_OK;
}

/* An adopter without room claims nothing (no token file per scan); with room
 * it adopts once. */
static void test_jobs_full_adopter_claims_nothing(void **state)
{
    (void)state;
    char url[400];
    snprintf(url, sizeof url, "dir:%s" LEASE, g_dir);
    aimsi_jobs *a = NULL;
    assert_int_equal(aimsi_jobs_create(url, "A", &a), AIMS_OK);
    aims_msg *sub = NULL;
    assert_int_equal(aims_msg_create(&sub), AIMS_OK);
    add_bytes(sub, "job", "f1");
    add_bytes(sub, "spec", SPEC);
    const uint64_t dx[2] = {ROWS, COLS};
    const uint64_t dy = ROWS;
    assert_int_equal(aims_msg_add(sub, "x", AIMS_DT_F32, dx, 2, g_x, 0), AIMS_OK);
    assert_int_equal(aims_msg_add(sub, "y", AIMS_DT_I32, &dy, 1, g_y, 0), AIMS_OK);
    uint64_t token = 0;
    assert_int_equal(aimsi_jobs_begin(a, sub, "test-handle-of-f1", 17, &token), AIMS_OK);
    assert_int_equal(token, 1);
    aims_msg_destroy(sub);
    aimsi_jobs_pause(a, 1); /* dies: its lease is never renewed nor released */
    aimsi_jobs_destroy(a);
    atomic_store(&g_room, 0);
    atomic_store(&g_room_asked, 0);
    atomic_store(&g_adopted, 0);
    aimsi_jobs *b = NULL;
    assert_int_equal(aimsi_jobs_create(url, "B", &b), AIMS_OK);
    aimsi_jobs_set_room(b, room_fn);
    assert_int_equal(aimsi_jobs_start(b, adopt_fn, NULL), AIMS_OK);
    /* B sees the expired job on several scans and has no room each time */
    for (int i = 0; i < 60000 && atomic_load(&g_room_asked) < 5; i++) {
        sleep_ms(2);
    }
    assert_true(atomic_load(&g_room_asked) >= 5);
    assert_int_equal(count_files("f1", "tok.", NULL, 0), 1);
    assert_int_equal(atomic_load(&g_adopted), 0);
    atomic_store(&g_room, 1);
    for (int i = 0; i < 60000 && atomic_load(&g_adopted) == 0; i++) {
        sleep_ms(2);
    }
    assert_int_equal(atomic_load(&g_adopted), 1);
    assert_int_equal(count_files("f1", "tok.", NULL, 0), 2);
    aimsi_jobs_destroy(b);
}

static int count_jobs(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/j", g_dir);
    DIR *d = opendir(path);
    int n = 0;
    if (d == NULL) {
        return 0;
    }
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n;
}

/* keep_done=1: of two finished jobs the older one's folder goes (by one
 * instance, whole), the newer stays readable everywhere. */
static void test_jobs_retention(void **state)
{
    (void)state;
    static const char spec[] = "kind=mlp hidden=8 epochs=2 batch=16 lr=0.01 seed=9";
    aims_msg *r = new_msg();
    void *a = service_with("A", "&keep_done=1", NULL);
    void *b = service_with("B", "&keep_done=1", NULL);
    run_to_end(a, "old", spec, NULL, r);
    run_to_end(a, "new", spec, NULL, r);
    for (int i = 0; i < 60000 && count_jobs() > 1; i++) {
        sleep_ms(2);
    }
    assert_int_equal(count_jobs(), 1);
    assert_int_equal(count_files("new", "result", NULL, 0), 1);
    assert_int_equal(call(b, "status", "old", NULL, NULL, r), AIMS_E_NOTFOUND);
    assert_int_equal(state_of(b, "new", r), 2);
    size_t len = 0;
    free(result_of(b, "new", &len));
    assert_true(len > 0);
    service_end(b);
    service_end(a);
    /* a bad retention option is a clear error */
    void *c = NULL;
    assert_int_equal(aimsi_train_create(NULL, &c), AIMS_OK);
    char url[400];
    snprintf(url, sizeof url, "dir:%s?keep_done=-1", g_dir);
    assert_int_equal(aimsi_train_set_store(c, url, "C"), AIMS_E_INVAL);
    assert_non_null(strstr(aims_errmsg(), "keep_done"));
    service_end(c);
    aims_msg_destroy(r);
}

static const char *const g_docs[] = {
    "the cat sat on the mat",          "a dog barked at the cat",
    "stocks fell as markets slid",     "the market rallied on earnings",
    "my cat chased the little mouse",  "investors sold shares of the bank",
    "the puppy and the kitten played", "bond yields rose while stocks fell",
};
#define NDOCS (sizeof g_docs / sizeof g_docs[0])
/* 4 steps per epoch (8 documents, batch 2), a checkpoint every 5 steps */
static const char TEXT_SPEC[] = "kind=text epochs=30 batch=2 lr=0.5 seed=3 "
                                "checkpoint_every_steps=5 checkpoint_every_ms=0";

static void text_submit(void *impl, const char *job, aims_msg *r)
{
    char text[1024] = "";
    int32_t labels[NDOCS];
    for (size_t i = 0; i < NDOCS; i++) {
        strcat(text, g_docs[i]);
        strcat(text, "\n");
        labels[i] = (int32_t)(i % 2);
    }
    aims_msg *req = NULL;
    assert_int_equal(aims_msg_create(&req), AIMS_OK);
    add_bytes(req, "job", job);
    char handle[96];
    snprintf(handle, sizeof handle, "test-handle-of-%s", job);
    add_bytes(req, "handle", handle);
    add_bytes(req, "spec", TEXT_SPEC);
    add_bytes(req, "text", text);
    const uint64_t d = NDOCS;
    assert_int_equal(aims_msg_add(req, "y", AIMS_DT_I32, &d, 1, labels, 0), AIMS_OK);
    aimsi_work w = {.method = "submit", .req = req, .reply = r, .status = (aims_status)-1};
    aimsi_work *wp = &w;
    aimsi_kind_train.run(impl, &wp, 1);
    assert_int_equal(w.status, AIMS_OK);
    aims_msg_destroy(req);
}

/* kind=text on the durable path: a job adopted mid-run ends in the bytes of
 * the uninterrupted run. */
static void test_jobs_text_adopted_bitexact(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    assert_int_equal(aims_dataset_create_texts(NDOCS, g_docs, NULL, NULL, &ds), AIMS_OK);
    aims_pipeline *p = NULL;
    size_t hs = 0;
    assert_int_equal(aims_pipeline_create(&p), AIMS_OK);
    assert_int_equal(aims_pipeline_add(p, AIMS_STEP_KIND_TOKENIZE, NULL), AIMS_OK);
    assert_int_equal(aims_pipeline_add(p, AIMS_STEP_KIND_HASH, &hs), AIMS_OK);
    assert_int_equal(aims_pipeline_set_step_param_i64(p, hs, AIMS_STEP_BUCKETS, 256), AIMS_OK);
    assert_int_equal(aims_pipeline_fit(p, ds), AIMS_OK);
    aims_dataset_destroy(ds);
    aims_msg *r = new_msg();
    void *plain = NULL;
    assert_int_equal(aimsi_train_create(p, &plain), AIMS_OK);
    text_submit(plain, "tref", r);
    assert_int_equal(wait_state(plain, "tref", 2, r), 2);
    size_t ref_len = 0;
    void *ref = result_of(plain, "tref", &ref_len);
    service_end(plain);
    void *a = service_with("A", "", p);
    aimsi_jobs_pause_after(aimsi_train_jobs(a), 3); /* dies at step 15 */
    text_submit(a, "t1", r);
    wait_paused(a);
    service_end(a);
    void *b = service_with("B", "", p);
    assert_int_equal(wait_state(b, "t1", 2, r), 2);
    assert_int_equal(reply_int(r, "resumed_from"), 15);
    assert_int_equal(reply_int(r, "adoptions"), 1);
    expect_result(b, "t1", ref, ref_len);
    free(ref);
    service_end(b);
    aims_msg_destroy(r);
    aims_pipeline_destroy(p);
}

/* The rows' digest is checked once: put_data records d/<hex>.ok and readers
 * trust length + CRC; without the sidecar a reader hashes and records it. */
static void test_jobs_data_sidecar(void **state)
{
    (void)state;
    aims_msg *r = new_msg();
    g_url_extra = "&data_cache_mb=0"; /* every submit reads the blob (no row cache) */
    void *a = service("A");
    g_url_extra = "";
    char data_ref[72];
    put_rows(a, r, data_ref);
    char side[600];
    snprintf(side, sizeof side, "%s/d/%s.ok", g_dir, data_ref + 7);
    struct stat sb;
    assert_int_equal(stat(side, &sb), 0);
    aimsi_jobs_times tm;
    assert_int_equal(call(a, "submit", "s1", SPEC, data_ref, r), AIMS_OK);
    aimsi_jobs_get_times(aimsi_train_jobs(a), &tm);
    assert_int_equal(tm.data_sidecar, 1);
    assert_int_equal(tm.data_verify_ns, 0);
    assert_int_equal(unlink(side), 0); /* a store written before sidecars existed */
    assert_int_equal(call(a, "submit", "s2", SPEC, data_ref, r), AIMS_OK);
    aimsi_jobs_get_times(aimsi_train_jobs(a), &tm);
    assert_int_equal(tm.data_sidecar, 0);
    assert_int_equal(stat(side, &sb), 0); /* recorded again */
    /* a damaged sidecar vouches for nothing: the digest is checked */
    const int fd = open(side, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "junk", 4), 4);
    close(fd);
    assert_int_equal(call(a, "submit", "s3", SPEC, data_ref, r), AIMS_OK);
    aimsi_jobs_get_times(aimsi_train_jobs(a), &tm);
    assert_int_equal(tm.data_sidecar, 0);
    assert_int_equal(wait_state(a, "s3", 2, r), 2);
    service_end(a);
    aims_msg_destroy(r);
}

/* ---- fast adoption: rows prefetched into the row cache ------------------------------------- */

static atomic_int g_room;

static int room_when_told(void *user)
{
    (void)user;
    return atomic_load(&g_room);
}

/* B is up while A runs the job: B's warm thread loads the job's rows into its
 * row cache. A dies; B adopts with nothing to read (data_cached) and ends in
 * the uninterrupted run's bytes. B claims nothing until it has prefetched
 * (its room hook says no), so the test does not depend on timing. */
static void test_jobs_adopt_from_cache(void **state)
{
    (void)state;
    size_t ref_len = 0;
    void *ref = reference(SPEC, &ref_len);
    aims_msg *r = NULL;
    assert_int_equal(aims_msg_create(&r), AIMS_OK);
    atomic_store(&g_room, 0);
    void *b = service("B");
    aimsi_jobs *JB = aimsi_train_jobs(b);
    aimsi_jobs_set_room(JB, room_when_told);
    run_and_die("j9", 2, r);
    for (int i = 0; i < 60000 && aimsi_jobs_prefetched(JB) < 1; i++) {
        sleep_ms(2);
    }
    assert_int_equal(aimsi_jobs_prefetched(JB), 1);
    aimsi_rowcache_stats st;
    aimsi_jobs_cache_stats(JB, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.bytes, ROWS * COLS * sizeof(float) + ROWS * sizeof(int32_t));
    atomic_store(&g_room, 1);
    assert_int_equal(wait_state(b, "j9", 2, r), 2);
    assert_int_equal(reply_int(r, "adoptions"), 1);
    assert_int_equal(reply_int(r, "resumed_from"), 20);
    size_t len = 0;
    void *got = result_of(b, "j9", &len);
    assert_int_equal(len, ref_len);
    assert_memory_equal(got, ref, len);
    free(got);
    aimsi_jobs_times tm;
    aimsi_jobs_get_times(JB, &tm);
    assert_int_equal(tm.data_cached, 1); /* the adoption read no rows */
    assert_int_equal(tm.data_read_ns, 0);
    aimsi_jobs_cache_stats(JB, &st);
    assert_true(st.hits >= 1);
    assert_int_equal(st.loads, 1);
    service_end(b);
    aims_msg_destroy(r);
    free(ref);
}

/* ---- setup ---------------------------------------------------------------------------------- */

static int jobs_setup(void **state)
{
    tmp_dir_make(g_dir, sizeof g_dir, "jobs");
    return ta_setup(state);
}

static int jobs_teardown(void **state)
{
    tmp_dir_remove(g_dir);
    return ta_teardown(state);
}

int main(void)
{
    ta_install();
    make_data();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_store_blobs, jobs_setup, jobs_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_adopt_bitexact, jobs_setup, jobs_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_damaged_checkpoint, jobs_setup, jobs_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_zombie_fenced, jobs_setup, jobs_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_data_ref, jobs_setup, jobs_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_cancel_and_handover, jobs_setup,
                                        jobs_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_cancel_between_checkpoints, jobs_setup,
                                        jobs_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_full_adopter_claims_nothing, jobs_setup,
                                        jobs_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_retention, jobs_setup, jobs_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_text_adopted_bitexact, jobs_setup,
                                        jobs_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_data_sidecar, jobs_setup, jobs_teardown),
        cmocka_unit_test_setup_teardown(test_jobs_adopt_from_cache, jobs_setup, jobs_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
