/*
 * demo_lifecycle.c -- the model lifecycle of aims_demo, in the seed's terms:
 * preprocess -> train (surviving a node's death) -> optimize -> canary
 * publish -> promote. aims_demo.c runs the cluster and the load; this file
 * holds the steps issue 16 added, so the demo's main file stays small.
 *
 * Train: with --processes two train nodes (aims_node --train train.fmnist
 * --train-store dir:DIR/jobs) share one checkpoint store (docs/JOBS.md). The
 * demo reads the job's status as it polls; once the job has written a
 * checkpoint and finished an epoch, the node named in the status's `owner`
 * ("host/pid/service/random") is killed with SIGKILL. The other node adopts
 * the job when the lease expires and resumes from the newest checkpoint; the
 * job's own record says from where (`resumed_from`) and how much work was
 * redone (`lost_steps`), and those numbers go into the JSON line.
 * In-process there is one train service without a store: no kill.
 *
 * Optimize: the optimize service (docs/OPTIMIZE.md) on the train node(s)
 * takes the published fp32 bundle's bytes, quantizes to int8 (calibrated on
 * raw training rows), evaluates both on the raw test set and answers with
 * accuracy, size and single-row latency of each, and the int8 bundle.
 *
 * Canary: that int8 bundle is deployed to every instance of infer.fmnist as
 * version "2" at 20 % (aims_client_canary_start, docs/LIFECYCLE.md) while
 * the demo's load runs (aims_demo.c's background serve); the state is polled
 * until the rule decides. The demo requires PROMOTED and zero failed calls.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "demo_lifecycle.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LCHECK(call)                                                                       \
    do {                                                                                   \
        const aims_status rc_ = (call);                                                    \
        if (rc_ != AIMS_OK) {                                                              \
            fprintf(stderr, "aims_demo: %s failed: %s: %s\n", #call, aims_strerror(rc_),   \
                    aims_errmsg());                                                        \
            goto fail;                                                                     \
        }                                                                                  \
    } while (0)

enum { CALIB_ROWS = 1024, CANARY_PERCENT = 20, CANARY_WAIT_S = 90 };

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int demo_msg_i64(const aims_msg *m, const char *name, int64_t *out)
{
    size_t i;
    const void *data;
    aims_dtype dt;
    if (aims_msg_find(m, name, &i) != AIMS_OK ||
        aims_msg_get_tensor(m, i, NULL, &dt, NULL, NULL, &data, NULL) != AIMS_OK) {
        return 1;
    }
    if (dt == AIMS_DT_I32) {
        int32_t v;
        memcpy(&v, data, 4);
        *out = v;
    } else if (dt == AIMS_DT_I64) {
        memcpy(out, data, 8);
    } else {
        return 1;
    }
    return 0;
}

static double msg_f32(const aims_msg *m, const char *name)
{
    size_t i;
    const void *data;
    aims_dtype dt;
    float v;
    if (aims_msg_find(m, name, &i) != AIMS_OK ||
        aims_msg_get_tensor(m, i, NULL, &dt, NULL, NULL, &data, NULL) != AIMS_OK ||
        dt != AIMS_DT_F32) {
        return NAN;
    }
    memcpy(&v, data, 4);
    return v;
}

static int msg_str(const aims_msg *m, const char *name, char *buf, size_t cap)
{
    size_t i, n;
    const void *data;
    buf[0] = 0;
    if (aims_msg_find(m, name, &i) != AIMS_OK ||
        aims_msg_get_tensor(m, i, NULL, NULL, NULL, NULL, &data, &n) != AIMS_OK) {
        return 1;
    }
    snprintf(buf, cap, "%.*s", (int)n, (const char *)data);
    return 0;
}

void demo_life_init(demo_life *L)
{
    memset(L, 0, sizeof *L);
    L->resumed_from = L->lost_steps = L->adoptions = L->ckpt_every = L->token = -1;
    L->killed_epoch = L->killed_ckpt_step = -1;
    L->fp32_acc = L->int8_acc = NAN;
    snprintf(L->stable, sizeof L->stable, "1");
    snprintf(L->version, sizeof L->version, "2");
    L->percent = CANARY_PERCENT;
}

void demo_life_free(demo_life *L)
{
    free(L->int8_bundle);
    L->int8_bundle = NULL;
}

void demo_life_store_flag(const char *dir, char *out, size_t cap)
{
    /* a short lease: the survivor adopts ~1 s after the kill */
    snprintf(out, cap, "dir:%s/jobs?lease_ms=1000&scan_ms=100", dir);
}

int demo_life_plain_policy(const char *dir, char *path, size_t cap)
{
    static const char k_policy[] =
        "# aims_demo --processes without TLS: callers are 'anonymous' (tcp://) or\n"
        "# uid:N (ipc://); lifecycle requests need a policy that allows them.\n"
        "allow   *   call     *               # predict, $stats, versions\n"
        "allow   *   deploy   infer.fmnist*   # the demo's canary\n";
    snprintf(path, cap, "%s/infer.policy", dir);
    FILE *f = fopen(path, "w");
    const int ok = f != NULL && fputs(k_policy, f) >= 0;
    if (f == NULL || fclose(f) != 0 || !ok) {
        fprintf(stderr, "aims_demo: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

/* Kill the train node whose pid is in owner ("host/pid/..."), reap it. */
static int kill_owner(demo_life *L, const char *owner, int64_t epoch, int64_t ckpt)
{
    const char *slash = strchr(owner, '/');
    const long pid = slash != NULL ? strtol(slash + 1, NULL, 10) : 0;
    for (int i = 0; i < 2; i++) {
        pid_t *p = L->train_pid[i];
        if (p != NULL && *p > 0 && (long)*p == pid) {
            printf("  kill -9 the train node running the job (pid %ld, %s) at epoch %lld, "
                   "newest checkpoint at step %lld\n",
                   pid, owner, (long long)epoch, (long long)ckpt);
            fflush(stdout);
            kill(*p, SIGKILL);
            waitpid(*p, NULL, 0);
            *p = 0;
            L->killed = 1;
            L->killed_pid = pid;
            L->killed_epoch = epoch;
            L->killed_ckpt_step = ckpt;
            return 0;
        }
    }
    fprintf(stderr, "aims_demo: the job's owner '%s' is not one of the train nodes\n", owner);
    return 1;
}

int demo_life_on_status(demo_life *L, const aims_msg *status)
{
    int64_t state = 0, epoch = 0, ckpt = -1, v;
    char owner[sizeof L->owner];
    if (demo_msg_i64(status, "state", &state) != 0 ||
        demo_msg_i64(status, "epoch", &epoch) != 0) {
        return 0;
    }
    const int durable = msg_str(status, "owner", owner, sizeof owner) == 0;
    if (!durable) {
        return 0; /* a train service without a store */
    }
    (void)demo_msg_i64(status, "ckpt_step", &ckpt);
    if (demo_msg_i64(status, "resumed_from", &v) == 0) {
        L->resumed_from = v;
    }
    if (demo_msg_i64(status, "lost_steps", &v) == 0) {
        L->lost_steps = v;
    }
    if (demo_msg_i64(status, "adoptions", &v) == 0) {
        L->adoptions = v;
    }
    if (demo_msg_i64(status, "ckpt_every", &v) == 0) {
        L->ckpt_every = v;
    }
    if (demo_msg_i64(status, "token", &v) == 0) {
        L->token = v;
    }
    memcpy(L->owner, owner, sizeof owner);
    /* Mid-job: an epoch done, a checkpoint written, then ~0.5 s more of
     * training (a lease renewal reports it), so some work is really lost. */
    if (L->train_pid[0] != NULL && !L->killed && state == 1 && epoch >= 1 && ckpt > 0) {
        if (L->eligible_s == 0) {
            L->eligible_s = mono_s();
        } else if (mono_s() - L->eligible_s >= 0.5) {
            return kill_owner(L, owner, epoch, ckpt);
        }
    }
    return 0;
}

static void *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    void *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)n);
        if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    *len = buf != NULL ? (size_t)n : 0;
    return buf;
}

int demo_life_optimize(aims_client *cl, const char *bundle_path, const aims_dataset *test,
                       const aims_dataset *train, demo_life *L)
{
    aims_msg *req = NULL, *reply = NULL;
    size_t blen = 0;
    void *bytes = read_file(bundle_path, &blen);
    if (bytes == NULL) {
        fprintf(stderr, "aims_demo: cannot read %s\n", bundle_path);
        return 1;
    }
    const size_t rows = aims_dataset_rows(test), cols = aims_dataset_cols(test);
    const uint64_t bd[1] = {blen}, xd[2] = {rows, cols}, yd[1] = {rows},
                   cd[2] = {CALIB_ROWS, cols}, vd[1] = {strlen(L->version)};
    const float max_drop = 0.02f;
    LCHECK(aims_msg_create(&req));
    LCHECK(aims_msg_create(&reply));
    LCHECK(aims_msg_add(req, "bundle", AIMS_DT_BYTES, bd, 1, bytes, AIMS_MSG_BORROW));
    LCHECK(aims_msg_add(req, "x", AIMS_DT_F32, xd, 2, aims_dataset_features(test),
                        AIMS_MSG_BORROW));
    LCHECK(aims_msg_add(req, "y", AIMS_DT_I32, yd, 1, aims_dataset_labels(test),
                        AIMS_MSG_BORROW));
    LCHECK(aims_msg_add(req, "calib_x", AIMS_DT_F32, cd, 2, aims_dataset_features(train),
                        AIMS_MSG_BORROW));
    LCHECK(aims_msg_add(req, "max_drop", AIMS_DT_F32, NULL, 0, &max_drop, 0));
    LCHECK(aims_msg_add(req, "version", AIMS_DT_BYTES, vd, 1, L->version, 0));
    const double t0 = mono_s();
    const aims_status rc = aims_client_call(cl, "optimize.fmnist", "optimize", req, reply,
                                            AIMS_CALL_IDEMPOTENT, 300000);
    L->t_optimize = mono_s() - t0;
    if (rc != AIMS_OK) {
        fprintf(stderr, "aims_demo: optimize.fmnist refused: %s: %s\n", aims_strerror(rc),
                aims_client_errmsg(cl));
        goto fail;
    }
    L->fp32_acc = msg_f32(reply, "fp32_accuracy");
    L->int8_acc = msg_f32(reply, "int8_accuracy");
    L->fp32_lat_us = msg_f32(reply, "fp32_latency_us");
    L->int8_lat_us = msg_f32(reply, "int8_latency_us");
    int64_t fc = 0, ic = 0;
    if (demo_msg_i64(reply, "fp32_bytes", &L->fp32_bytes) != 0 ||
        demo_msg_i64(reply, "int8_bytes", &L->int8_bytes) != 0 ||
        demo_msg_i64(reply, "rows", &L->rows) != 0 ||
        demo_msg_i64(reply, "fp32_correct", &fc) != 0 ||
        demo_msg_i64(reply, "int8_correct", &ic) != 0 || L->rows <= 0) {
        fprintf(stderr, "aims_demo: malformed optimize reply\n");
        goto fail;
    }
    L->fp32_acc = (double)fc / (double)L->rows; /* exact, from the counts */
    L->int8_acc = (double)ic / (double)L->rows;
    size_t i;
    const void *data;
    size_t n;
    LCHECK(aims_msg_find(reply, "bundle", &i));
    LCHECK(aims_msg_get_tensor(reply, i, NULL, NULL, NULL, NULL, &data, &n));
    L->int8_bundle = malloc(n);
    if (L->int8_bundle == NULL) {
        goto fail;
    }
    memcpy(L->int8_bundle, data, n);
    L->int8_len = n;
    printf("optimized through optimize.fmnist in %.2f s: int8 accuracy %.4f vs fp32 %.4f on "
           "%lld test rows, %lld vs %lld bytes, single-row %.1f us vs %.1f us\n",
           L->t_optimize, L->int8_acc, L->fp32_acc, (long long)L->rows,
           (long long)L->int8_bytes, (long long)L->fp32_bytes, L->int8_lat_us, L->fp32_lat_us);
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    free(bytes);
    return 0;
fail:
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    free(bytes);
    return 1;
}

static const char *state_name(aims_canary_state s)
{
    switch (s) {
    case AIMS_CANARY_STATE_RUNNING:
        return "RUNNING";
    case AIMS_CANARY_STATE_PROMOTED:
        return "PROMOTED";
    case AIMS_CANARY_STATE_ROLLED_BACK:
        return "ROLLED_BACK";
    default:
        return "NONE";
    }
}

int demo_life_canary(aims_client *cl, demo_life *L)
{
    static const char rule[] = "window_ms=1500 min_calls=50";
    if (L->int8_bundle == NULL) {
        return 1;
    }
    const double t0 = mono_s();
    const aims_status rc =
        aims_client_canary_start(cl, "infer.fmnist", L->version, L->int8_bundle, L->int8_len,
                                 NULL, (uint32_t)L->percent, rule, 30000);
    if (rc != AIMS_OK) {
        fprintf(stderr, "aims_demo: canary of infer.fmnist version %s: %s: %s\n", L->version,
                aims_strerror(rc), aims_client_errmsg(cl));
        return 1;
    }
    printf("canary: int8 bundle deployed as infer.fmnist version %s at %d %% next to version "
           "%s on every instance (rule: %s), under load\n",
           L->version, L->percent, L->stable, rule);
    L->state = AIMS_CANARY_STATE_RUNNING;
    while (L->state == AIMS_CANARY_STATE_RUNNING && mono_s() - t0 < CANARY_WAIT_S) {
        usleep(200000);
        aims_canary_state st = AIMS_CANARY_STATE_NONE;
        const aims_status rs = aims_client_canary_state(cl, "infer.fmnist", &st, 10000);
        if (rs != AIMS_OK) {
            fprintf(stderr, "aims_demo: canary state: %s: %s\n", aims_strerror(rs),
                    aims_client_errmsg(cl));
            return 1;
        }
        L->state = st;
    }
    L->t_canary = mono_s() - t0;
    printf("canary: %s after %.2f s\n", state_name(L->state), L->t_canary);
    return L->state == AIMS_CANARY_STATE_PROMOTED ? 0 : 1;
}

static double finite_or(double v, double dflt)
{
    return isfinite(v) ? v : dflt;
}

void demo_life_json(FILE *f, const demo_life *L, int processes)
{
    fprintf(f,
            "\"lifecycle\":{\"steps\":[\"preprocess\",\"train\",\"optimize\",\"canary\","
            "\"promote\"],\"train\":{\"nodes\":%d,\"store\":%s,\"killed\":%s,\"killed_pid\":%ld,"
            "\"killed_epoch\":%lld,\"killed_ckpt_step\":%lld,\"resumed\":%s,"
            "\"resumed_from\":%lld,\"lost_steps\":%lld,\"ckpt_every\":%lld,\"adoptions\":%lld,"
            "\"token\":%lld,\"finished_by\":\"%s\"},"
            "\"optimize\":{\"service\":\"optimize.fmnist\",\"s\":%.3f,\"rows\":%lld,"
            "\"fp32_accuracy\":%.4f,\"int8_accuracy\":%.4f,\"fp32_bytes\":%lld,"
            "\"int8_bytes\":%lld,\"fp32_latency_us\":%.2f,\"int8_latency_us\":%.2f},"
            "\"canary\":{\"service\":\"infer.fmnist\",\"stable\":\"%s\",\"version\":\"%s\","
            "\"percent\":%d,\"state\":\"%s\",\"s\":%.3f,\"calls\":%zu,\"failed\":%zu}}",
            processes ? 2 : 1, processes ? "true" : "false", L->killed ? "true" : "false",
            L->killed_pid, (long long)L->killed_epoch, (long long)L->killed_ckpt_step,
            L->adoptions > 0 ? "true" : "false", (long long)L->resumed_from,
            (long long)L->lost_steps, (long long)L->ckpt_every, (long long)L->adoptions,
            (long long)L->token, L->owner, L->t_optimize, (long long)L->rows,
            finite_or(L->fp32_acc, -1), finite_or(L->int8_acc, -1), (long long)L->fp32_bytes,
            (long long)L->int8_bytes, finite_or(L->fp32_lat_us, -1),
            finite_or(L->int8_lat_us, -1), L->stable, L->version, L->percent,
            state_name(L->state), L->t_canary, L->canary_calls, L->canary_failed);
}
