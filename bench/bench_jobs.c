/*
 * bench_jobs.c -- durable training jobs (docs/JOBS.md), goals P14a and P14b.
 *
 * P14a, checkpoint overhead: the P1sgd training (MLP 784-256-10 ReLU, batch
 * 128, 5 epochs, SGD lr 0.1 momentum 0.9, Fashion-MNIST's 60,000 rows) run
 * three ways on the same trainer settings, alternating, `reps` times each:
 *   plain     aims_trainer_fit (no store)
 *   epoch     the durable loop (aimsi_jobs_fit) checkpointing to a store
 *             directory at every epoch end (the default)
 *   steps50   the same with a checkpoint every 50 steps (~94 checkpoints)
 *   epoch_sync, steps50_sync  the same two with ckpt_async=0: every checkpoint
 *             written on the training thread (before checkpoints moved to a
 *             writer thread, src/svc/jobs/jobs_ckpt.c)
 * Each durable mode also reports the training thread's time per checkpoint
 * (pause_ms_per_ckpt: snapshot + hand-over, or the whole write when
 * synchronous) and the writer thread's (write_ms_per_ckpt).
 * Reported: median/min/max seconds and the ratio to plain (goal <= 1.05 for
 * `epoch`), and whether the final weights are bit-identical to plain.
 *
 * P14b, kill -> running elsewhere: two train services (A, B) share a store
 * in one process; A runs a job and "dies" (stops renewing its lease and
 * writing, then its job thread stops, as a SIGKILL looks to the store); the
 * time until B reports the job running again under its own name, for lease
 * intervals of 300 and 1000 ms (renewed every lease / 3: the heartbeat). The
 * multi-process figure with real kill -9 is printed by
 * tests/integration/test_jobs_daemon.c. The split of that time (B's
 * aimsi_jobs_times): detection (kill -> B's claim: lease expiry + scan),
 * data (read + CRC, SHA-256 check, decode of the rows), rebuild (the rest of
 * the train service's submit path: copying rows into a dataset, model and
 * trainer), queue (the job thread picking the job up), begin (trainer
 * begin), checkpoint (find + read + restore one checkpoint). Run "warm" (the
 * rows' digest vouched for by the d/<hex>.ok sidecar the submit wrote) and
 * "cold" (sidecar removed before the kill: a store written before it
 * existed, the SHA-256 is checked once) -- both with the row cache off
 * (data_cache_mb=0) -- and "cached": B, a standby, prefetched the job's rows
 * into its row cache before the kill, so the adoption reads no rows
 * (docs/JOBS.md, "Fast adoption").
 *
 * usage: bench_jobs [reps=3] [rows=60000] [p14b|p14b2]   (AIMS_DATA_DIR: the Fashion-MNIST
 * cache; "p14b": only P14b with lease 1000, uncached, cached and cold; "p14b2": uncached and
 * cached only). kill_to_running_ms is kill -> B's status says running (its job thread took
 * the job); kill_to_resumed_ms is kill -> B's fit resumed from the checkpoint.
 * Prints JSON lines.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "bench_util.h"
#include "core/aimsi_core.h"
#include "model/aimsi_model.h"
#include "svc/aimsi_msg.h"
#include "svc/aimsi_svckind.h"
#include "svc/jobs/aimsi_jobs.h"

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "bench_jobs: " __VA_ARGS__);                                       \
            fprintf(stderr, " (%s)\n", aims_errmsg());                                         \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

static const char P1_SPEC[] = "kind=mlp hidden=256 activation=relu epochs=5 batch=128 lr=0.1 "
                              "momentum=0.9 seed=1";

static aims_dataset *g_ds;
static float *g_x;
static const int32_t *g_y;
static size_t g_rows;
static char g_dir[256];

static void load(size_t rows)
{
    const char *dir = getenv("AIMS_DATA_DIR");
    char img[512], lab[512];
    snprintf(img, sizeof img, "%s/fashion-mnist/train-images-idx3-ubyte", dir ? dir : "data-cache");
    snprintf(lab, sizeof lab, "%s/fashion-mnist/train-labels-idx1-ubyte", dir ? dir : "data-cache");
    aims_dataset *raw = NULL;
    CHECK(aims_dataset_load_idx(img, lab, NULL, &raw) == AIMS_OK, "load %s", img);
    g_rows = rows < aims_dataset_rows(raw) ? rows : aims_dataset_rows(raw);
    g_x = malloc(g_rows * 784 * sizeof(float));
    CHECK(g_x != NULL, "malloc");
    const float *f = aims_dataset_features(raw);
    for (size_t i = 0; i < g_rows * 784; i++) {
        g_x[i] = f[i] * (1.0f / 255.0f);
    }
    int32_t *y = malloc(g_rows * sizeof(int32_t));
    CHECK(y != NULL, "malloc");
    memcpy(y, aims_dataset_labels(raw), g_rows * sizeof(int32_t));
    g_y = y;
    CHECK(aims_dataset_create_dense(g_rows, 784, g_x, g_y, &g_ds) == AIMS_OK, "dataset");
    aims_dataset_destroy(raw);
}

static void new_run(aims_model **m, aims_trainer **t)
{
    CHECK(aims_model_create(AIMS_MODEL_KIND_MLP, 784, 10, m) == AIMS_OK, "model");
    CHECK(aims_model_add_dense(*m, 256, AIMS_ACT_RELU) == AIMS_OK, "dense");
    CHECK(aims_trainer_create(*m, t) == AIMS_OK, "trainer");
    CHECK(aims_trainer_set_param_i64(*t, AIMS_TRAIN_EPOCHS, 5) == AIMS_OK &&
              aims_trainer_set_param_i64(*t, AIMS_TRAIN_BATCH, 128) == AIMS_OK &&
              aims_trainer_set_param_f64(*t, AIMS_TRAIN_LR, 0.1) == AIMS_OK &&
              aims_trainer_set_param_f64(*t, AIMS_TRAIN_MOMENTUM, 0.9) == AIMS_OK &&
              aims_trainer_set_param_i64(*t, AIMS_TRAIN_SEED, 1) == AIMS_OK,
          "params");
}

static void *model_bytes(const aims_model *m, size_t *len)
{
    aims_bundle *b = NULL;
    CHECK(aims_bundle_create(NULL, m, &b) == AIMS_OK, "bundle");
    void *p = NULL;
    CHECK(aimsi_bundle_to_bytes(b, &p, len) == AIMS_OK, "bytes");
    aims_bundle_destroy(b);
    return p;
}

static void add_bytes(aims_msg *m, const char *name, const char *s)
{
    const uint64_t n = strlen(s);
    CHECK(aims_msg_add(m, name, AIMS_DT_BYTES, &n, 1, s, 0) == AIMS_OK, "add");
}

static aims_status adopt_none(void *user, const aims_msg *submit, uint64_t token)
{
    (void)user;
    (void)submit;
    (void)token;
    return AIMS_E_UNSUPPORTED;
}

/* One timed run; mode 0 plain, else the durable loop with ckpt_steps. */
static double g_pause_ms, g_write_ms; /* per checkpoint, of the last durable run */

static double run_once(aimsi_jobs *J, int mode, int64_t ckpt_steps, int rep, void **bytes,
                       size_t *len)
{
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    new_run(&m, &t);
    double secs = 0;
    if (mode == 0) {
        const double t0 = now_s();
        CHECK(aims_trainer_fit(t, g_ds, NULL) == AIMS_OK, "fit");
        secs = now_s() - t0;
    } else {
        char id[32];
        snprintf(id, sizeof id, "p14a-%d-%d-%lld", rep, mode, (long long)ckpt_steps);
        aims_msg *sub = NULL;
        CHECK(aims_msg_create(&sub) == AIMS_OK, "msg");
        add_bytes(sub, "job", id);
        add_bytes(sub, "spec", P1_SPEC);
        const uint64_t xd[2] = {g_rows, 784}, yd = g_rows;
        CHECK(aims_msg_add(sub, "x", AIMS_DT_F32, xd, 2, g_x, AIMS_MSG_BORROW) == AIMS_OK &&
                  aims_msg_add(sub, "y", AIMS_DT_I32, &yd, 1, g_y, AIMS_MSG_BORROW) == AIMS_OK,
              "rows");
        uint64_t token = 0;
        /* recording the job and its rows is the submit's cost, not the training's */
        CHECK(aimsi_jobs_begin(J, sub, "bench-handle-0123456789", 23, &token) == AIMS_OK,
              "begin");
        aims_msg_destroy(sub);
        const double t0 = now_s();
        CHECK(aimsi_jobs_fit(J, id, strlen(id), token, t, g_ds, ckpt_steps, 0) == AIMS_OK,
              "durable fit");
        secs = now_s() - t0;
        aimsi_jobs_times tm;
        aimsi_jobs_get_times(J, &tm);
        const double n = tm.ckpts > 0 ? (double)tm.ckpts : 1.0;
        g_pause_ms = (double)tm.ckpt_pause_ns / 1e6 / n;
        g_write_ms = (double)tm.ckpt_write_ns / 1e6 / n;
        aimsi_jobs_end(J, id, strlen(id), token, 4, "benchmark");
    }
    *bytes = model_bytes(m, len);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    return secs;
}

static void p14a(int reps)
{
    char url[400];
    snprintf(url, sizeof url, "dir:%s/p14a", g_dir);
    aimsi_jobs *J = NULL;
    CHECK(aimsi_jobs_create(url, "bench", &J) == AIMS_OK, "jobs");
    CHECK(aimsi_jobs_start(J, adopt_none, NULL) == AIMS_OK, "start");
    char url_sync[440];
    snprintf(url_sync, sizeof url_sync, "dir:%s/p14a-sync?ckpt_async=0", g_dir);
    aimsi_jobs *Js = NULL;
    CHECK(aimsi_jobs_create(url_sync, "bench-sync", &Js) == AIMS_OK, "jobs");
    CHECK(aimsi_jobs_start(Js, adopt_none, NULL) == AIMS_OK, "start");
    enum { NM = 5 };
    static const char *const names[NM] = {"plain", "epoch", "steps50", "epoch_sync",
                                          "steps50_sync"};
    const int64_t steps[NM] = {0, 0, 50, 0, 50};
    double t[NM][16], pause[NM][16], wr[NM][16];
    int identical[NM] = {1, 1, 1, 1, 1};
    void *ref = NULL;
    size_t ref_len = 0;
    for (int r = 0; r < reps; r++) {
        for (int k = 0; k < NM; k++) {
            void *b = NULL;
            size_t len = 0;
            g_pause_ms = g_write_ms = 0;
            t[k][r] = run_once(k >= 3 ? Js : J, k, steps[k], r, &b, &len);
            pause[k][r] = g_pause_ms;
            wr[k][r] = g_write_ms;
            if (ref == NULL) {
                ref = b;
                ref_len = len;
                continue;
            }
            identical[k] &= len == ref_len && memcmp(b, ref, len) == 0;
            aims_free(b);
        }
    }
    double med[NM];
    for (int k = 0; k < NM; k++) {
        double v[16];
        memcpy(v, t[k], sizeof v);
        med[k] = median_sort(v, (size_t)reps);
        const double pm = median_sort(pause[k], (size_t)reps);
        const double wm = median_sort(wr[k], (size_t)reps);
        printf("{\"goal\": \"P14a\", \"contender\": \"libaims-%s\", \"metric\": \"train_s\", "
               "\"unit\": \"s\", \"median\": %.4f, \"mode\": \"%s\", \"rows\": %zu, \"reps\": %d, "
               "\"median_s\": %.4f, \"min_s\": %.4f, \"max_s\": %.4f, \"ratio_to_plain\": %.4f, "
               "\"weights_identical_to_plain\": %s, ",
               names[k], med[k], names[k], g_rows, reps, med[k], v[0], v[reps - 1], med[k] / med[0],
               identical[k] ? "true" : "false");
        printf("\"pause_ms_per_ckpt\": %.3f, \"write_ms_per_ckpt\": %.3f, \"spec\": ", pm, wm);
        json_str(P1_SPEC);
        printf("}\n");
        fflush(stdout);
    }
    aims_free(ref);
    aimsi_jobs_destroy(J);
    aimsi_jobs_destroy(Js);
}

/* ---- P14b ----------------------------------------------------------------------------------- */

static aims_status call(void *impl, const char *method, const char *job, const char *spec,
                        aims_msg *reply)
{
    aims_msg *req = NULL;
    CHECK(aims_msg_create(&req) == AIMS_OK, "msg");
    add_bytes(req, "job", job);
    add_bytes(req, "handle", "bench-handle-0123456789");
    if (spec != NULL) {
        add_bytes(req, "spec", spec);
        const uint64_t xd[2] = {g_rows, 784}, yd = g_rows;
        CHECK(aims_msg_add(req, "x", AIMS_DT_F32, xd, 2, g_x, AIMS_MSG_BORROW) == AIMS_OK &&
                  aims_msg_add(req, "y", AIMS_DT_I32, &yd, 1, g_y, AIMS_MSG_BORROW) == AIMS_OK,
              "rows");
    }
    aims_msg_clear(reply);
    aimsi_work w = {.method = method, .req = req, .reply = reply};
    aimsi_work *wp = &w;
    aimsi_kind_train.run(impl, &wp, 1);
    aims_msg_destroy(req);
    return w.status;
}

static void *service(const char *url, const char *inst)
{
    void *impl = NULL;
    CHECK(aimsi_train_create(NULL, &impl) == AIMS_OK, "train");
    CHECK(aimsi_train_set_store(impl, url, inst) == AIMS_OK, "store");
    return impl;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int rm_sidecar(void *user, const char *name)
{
    const char *root = user;
    const size_t n = strlen(name);
    if (n > 3 && strcmp(name + n - 3, ".ok") == 0) {
        char path[700];
        snprintf(path, sizeof path, "%s/d/%s", root, name);
        (void)unlink(path);
    }
    return 0;
}

static int list_names(const char *dir, int (*fn)(void *, const char *), void *user)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return 0;
    }
    char root[600];
    snprintf(root, sizeof root, "%s", (const char *)user);
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        if (e->d_name[0] != '.') {
            (void)fn(root, e->d_name);
        }
    }
    closedir(d);
    return 0;
}

/* P14b modes: CACHED = B prefetched the rows into its row cache before the
 * kill (the default since fast adoption); UNCACHED = data_cache_mb=0, B
 * reads the rows at adoption, digest vouched for by the sidecar (the figure
 * before fast adoption); COLD = UNCACHED without the sidecar (SHA-256). */
enum { P14B_CACHED = 0, P14B_UNCACHED = 1, P14B_COLD = 2 };

static void p14b(int lease_ms, int reps, int mode)
{
    const int cold = mode == P14B_COLD;
    static const char *const mode_names[3] = {"cached", "uncached", "cold"};
    static const char spec[] = "kind=mlp hidden=64 epochs=1000 batch=128 lr=0.05 seed=2 "
                               "checkpoint_every_steps=20";
    double ms[16];
    int cached[16];
    double part[9][16]; /* detect, data_read, data_verify, data_decode, rebuild, queue, begin,
                           ckpt, total (from the parts) */
    for (int r = 0; r < reps; r++) {
        char url[600];
        char root[400];
        snprintf(root, sizeof root, "%s/p14b-%d-%d-%d", g_dir, lease_ms, mode, r);
        snprintf(url, sizeof url, "dir:%s?lease_ms=%d&scan_ms=%d%s", root, lease_ms,
                 lease_ms / 10, mode == P14B_CACHED ? "" : "&data_cache_mb=0");
        aims_msg *rep = NULL;
        CHECK(aims_msg_create(&rep) == AIMS_OK, "msg");
        void *a = service(url, "A");
        void *b = service(url, "B");
        CHECK(call(a, "submit", "victim", spec, rep) == AIMS_OK, "submit: %s", aims_msg_error(rep));
        int64_t ck = -1;
        while (ck < 40) { /* a few checkpoints in */
            CHECK(call(a, "status", "victim", NULL, rep) == AIMS_OK, "status");
            (void)aimsi_msg_int(rep, "ckpt_step", &ck);
            usleep(2000);
        }
        for (int i = 0; mode == P14B_CACHED && i < 120000; i++) { /* B is a warm standby */
            if (aimsi_jobs_prefetched(aimsi_train_jobs(b)) >= 1) {
                break;
            }
            usleep(1000);
        }
        if (cold) {
            char d[700];
            snprintf(d, sizeof d, "%s/d", root);
            list_names(d, rm_sidecar, root);
        }
        const double t0 = now_s();
        const int64_t kill_wall = wall_ms();
        aimsi_jobs_pause(aimsi_train_jobs(a), 1); /* "dies": no renewals, no writes */
        aimsi_kind_train.stop(a);
        for (;;) {
            CHECK(call(b, "status", "victim", NULL, rep) == AIMS_OK, "status B");
            const char *owner = NULL;
            size_t n = 0;
            int64_t st = 0;
            (void)aimsi_msg_int(rep, "state", &st);
            if (aimsi_msg_bytes(rep, "owner", &owner, &n) == AIMS_OK && n == 1 &&
                owner[0] == 'B' && st == 1) {
                break;
            }
            usleep(1000);
        }
        ms[r] = (now_s() - t0) * 1000.0;
        aimsi_jobs_times tm;
        for (int i = 0; i < 100000; i++) { /* the adoption's bookkeeping ends after "running" */
            aimsi_jobs_get_times(aimsi_train_jobs(b), &tm);
            if (tm.adopt_ns > 0 && tm.running_wall_ms > 0) {
                break;
            }
            usleep(1000);
        }
        const double data = (double)(tm.data_read_ns + tm.data_verify_ns + tm.data_decode_ns);
        part[0][r] = (double)(tm.claim_wall_ms - kill_wall);
        part[1][r] = (double)tm.data_read_ns / 1e6;
        part[2][r] = (double)tm.data_verify_ns / 1e6;
        part[3][r] = (double)tm.data_decode_ns / 1e6;
        part[4][r] = ((double)tm.adopt_ns - data) / 1e6;
        part[6][r] = (double)tm.begin_ns / 1e6;
        part[7][r] = (double)tm.ckpt_ns / 1e6;
        part[8][r] = (double)(tm.running_wall_ms - kill_wall);
        cached[r] = tm.data_cached;
        part[5][r] = part[8][r] - part[0][r] - (double)tm.adopt_ns / 1e6 - part[6][r] - part[7][r];
        CHECK(call(b, "cancel", "victim", NULL, rep) == AIMS_OK, "cancel");
        aimsi_kind_train.stop(b);
        aimsi_kind_train.destroy(b);
        aimsi_kind_train.destroy(a);
        aims_msg_destroy(rep);
    }
    static const char *const names[9] = {"detect_ms", "data_read_ms", "data_verify_ms",
                                         "data_decode_ms", "rebuild_ms", "queue_ms", "begin_ms",
                                         "ckpt_load_ms", "claim_to_running_ms"};
    double med_part[9];
    for (int k = 0; k < 9; k++) {
        med_part[k] = median_sort(part[k], (size_t)reps);
    }
    const double resumed = med_part[8]; /* kill -> the fit runs again (checkpoint restored) */
    med_part[8] -= med_part[0]; /* kill->running minus detection: the adoption itself */
    const double med = median_sort(ms, (size_t)reps);
    /* the goal: <= 3 heartbeats (lease_ms) + the time to load one checkpoint */
    const double goal = 3.0 * (lease_ms / 3.0) + med_part[7];
    printf("{\"goal\": \"P14b\", \"contender\": \"libaims-%s\", \"metric\": \"kill_to_running_ms\", "
           "\"unit\": \"ms\", \"median\": %.1f, \"lease_ms\": %d, \"heartbeat_ms\": %d, \"reps\": %d, "
           "\"median_ms\": %.1f, \"min_ms\": %.1f, \"max_ms\": %.1f, "
           "\"median_in_heartbeats\": %.2f, \"goal_ms\": %.1f, \"within_goal\": %s, \"rows\": %zu",
           mode_names[mode], med, lease_ms, lease_ms / 3, reps, med, ms[0], ms[reps - 1],
           med / (lease_ms / 3.0), goal, med <= goal ? "true" : "false", g_rows);
    for (int k = 0; k < 9; k++) {
        printf(", \"%s\": %.1f", names[k], med_part[k]);
    }
    int n_cached = 0;
    for (int r = 0; r < reps; r++) {
        n_cached += cached[r];
    }
    printf(", \"adoptions_from_cache\": %d, \"kill_to_resumed_ms\": %.1f", n_cached, resumed);
    printf("}\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 3;
    reps = reps < 1 ? 1 : reps > 16 ? 16 : reps;
    const size_t rows = argc > 2 ? (size_t)atoll(argv[2]) : 60000;
    load(rows);
    snprintf(g_dir, sizeof g_dir, "%s/aims-bench-jobs-XXXXXX",
             getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
    CHECK(mkdtemp(g_dir) != NULL, "mkdtemp");
    const int only_b = argc > 3 && strncmp(argv[3], "p14b", 4) == 0;
    const int no_cold = argc > 3 && strcmp(argv[3], "p14b2") == 0; /* uncached vs cached only */
    if (!only_b) {
        p14a(reps);
        p14b(300, reps, P14B_CACHED);
    }
    p14b(1000, reps, P14B_UNCACHED); /* before fast adoption and after, in one run */
    p14b(1000, reps, P14B_CACHED);
    if (!no_cold) {
        p14b(1000, reps, P14B_COLD);
    }
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_jobs: could not remove %s\n", g_dir);
    }
    aims_dataset_destroy(g_ds);
    free(g_x);
    free((void *)g_y);
    return 0;
}
