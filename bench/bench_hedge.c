/*
 * bench_hedge.c -- goal P14c (issue 16): the p99 latency of idempotent calls
 * when one of 4 instances is 10x slow, hedged vs unhedged.
 *
 * usage: bench_hedge [T] [CALLS] [FAST_US] [THREADS] [API]
 *   T        inproc | tcp (default tcp)
 *   CALLS    measured calls per mode and thread (default 400)
 *   FAST_US  handler time of the fast instances (default 2000; the slow one 10x)
 *   THREADS  client threads calling at once (default 2)
 *   API      sync (aims_client_call, default) | async (aims_client_call_async,
 *            each thread waiting for its call's done callback; the latency is
 *            start to callback)
 * Prints one JSON line: p50/p99 of each mode, the ratio hedged p99 / unhedged
 * p99 (the goal: <= 0.3), and the hedge counters.
 *
 * Shape. Four nodes in this process, one handler service each, listening on
 * T; handlers sleep their service time in 1 ms steps and stop early when the
 * request is cancelled (aims_msg_is_cancelled), as a long handler should. The
 * client balances round robin, so the slow instance gets its 25 % of first
 * copies whatever its latency: a latency-aware balancer (P2C, the default)
 * hides a steadily slow instance by itself, and hedging is for the slowness a
 * balancer cannot see coming. Unhedged: AIMS_CLIENT_HEDGE_MS = -1. Hedged:
 * 0 (the service's recent p95 in this client) with a retry budget of 0.5
 * (a quarter of the calls need a hedge; the default 0.2 would deny some).
 * A third run hedges after a set delay (2 x FAST_US) for comparison
 * ("set_*" fields). Each mode gets a fresh client and 200 warm-up calls per thread (the p95
 * needs samples). Each call is timed on its own with CLOCK_MONOTONIC.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <aims/aims.h>

#include "bench_util.h"

#define N_INST 4
#define WARMUP 200

typedef struct inst {
    long us;
} inst;

static aims_status sleepy(void *user, const char *method, const aims_msg *req, aims_msg *reply,
                          uint64_t deadline_ns)
{
    (void)method;
    (void)deadline_ns;
    const inst *in = user;
    long left = in->us;
    while (left > 0 && !aims_msg_is_cancelled(req)) {
        const long step = left > 1000 ? 1000 : left;
        struct timespec ts = {0, step * 1000L};
        nanosleep(&ts, NULL);
        left -= step;
    }
    const int32_t one = 1;
    return aims_msg_add(reply, "ok", AIMS_DT_I32, NULL, 0, &one, 0);
}

typedef struct worker {
    pthread_t th;
    aims_client *c;
    long calls;
    double *lat;
    int failed;
    int async;
    pthread_mutex_t mu; /* async: the done callback's hand-off */
    pthread_cond_t cv;
    int done;
    aims_status st;
} worker;

static int g_async; /* API = async */

static void on_done(void *user, aims_status st, const aims_msg *reply, const char *error)
{
    (void)reply;
    (void)error;
    worker *w = user;
    pthread_mutex_lock(&w->mu);
    w->st = st;
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static aims_status call_once(worker *w, const aims_msg *req, aims_msg *rep)
{
    if (!w->async) {
        return aims_client_call(w->c, "svc", "m", req, rep, AIMS_CALL_IDEMPOTENT, 10000);
    }
    w->done = 0;
    (void)aims_client_call_async(w->c, "svc", "m", req, AIMS_CALL_IDEMPOTENT, 10000, on_done, w);
    pthread_mutex_lock(&w->mu);
    while (!w->done) {
        pthread_cond_wait(&w->cv, &w->mu);
    }
    const aims_status st = w->st;
    pthread_mutex_unlock(&w->mu);
    return st;
}

static void *run(void *p)
{
    worker *w = p;
    aims_msg *req = NULL, *rep = NULL;
    aims_msg_create(&req);
    aims_msg_create(&rep);
    const float x = 1.0f;
    const uint64_t dims[1] = {1};
    aims_msg_add(req, "x", AIMS_DT_F32, dims, 1, &x, 0);
    for (long i = 0; i < WARMUP + w->calls; i++) {
        const double t0 = now_s();
        const aims_status st = call_once(w, req, rep);
        const double t1 = now_s();
        w->failed += st != AIMS_OK;
        if (i >= WARMUP) {
            w->lat[i - WARMUP] = t1 - t0;
        }
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return NULL;
}

static double counter(aims_client *c, const char *name)
{
    char *text = NULL;
    size_t len = 0;
    if (aims_metrics_prometheus(aims_client_metrics(c), &text, &len) != AIMS_OK) {
        return 0;
    }
    double sum = 0;
    const size_t nl = strlen(name);
    for (const char *p = text; (p = strstr(p, name)) != NULL; p += nl) {
        if ((p == text || p[-1] == '\n') && (p[nl] == '{' || p[nl] == ' ')) {
            const char *sp = strchr(p, ' ');
            sum += sp != NULL ? strtod(sp + 1, NULL) : 0;
        }
    }
    aims_free(text);
    return sum;
}

typedef struct result {
    double p50, p99;
    int failed;
    double hedges, won, cancelled, denied;
} result;

static result measure(aims_registry *reg, int64_t hedge_ms, long calls, int threads)
{
    aims_client *c = NULL;
    aims_client_create(&c);
    aims_client_set_registry(c, reg);
    aims_client_set_param_i64(c, AIMS_CLIENT_LB_POLICY, AIMS_LB_ROUND_ROBIN);
    aims_client_set_param_i64(c, AIMS_CLIENT_HEDGE_MS, hedge_ms);
    aims_client_set_param_f64(c, AIMS_CLIENT_RETRY_BUDGET, 0.5);
    worker w[16];
    double *all = calloc((size_t)(calls * threads), sizeof(double));
    for (int i = 0; i < threads; i++) {
        w[i].c = c;
        w[i].calls = calls;
        w[i].lat = all + (size_t)i * (size_t)calls;
        w[i].failed = 0;
        w[i].async = g_async;
        pthread_mutex_init(&w[i].mu, NULL);
        pthread_cond_init(&w[i].cv, NULL);
        pthread_create(&w[i].th, NULL, run, &w[i]);
    }
    result r;
    memset(&r, 0, sizeof r);
    for (int i = 0; i < threads; i++) {
        pthread_join(w[i].th, NULL);
        r.failed += w[i].failed;
        pthread_mutex_destroy(&w[i].mu);
        pthread_cond_destroy(&w[i].cv);
    }
    const size_t n = (size_t)(calls * threads);
    qsort(all, n, sizeof *all, cmp_double);
    r.p50 = all[n / 2] * 1e3;
    r.p99 = all[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] * 1e3;
    r.hedges = counter(c, "aims_client_hedges_total");
    r.won = counter(c, "aims_client_hedges_won_total");
    r.cancelled = counter(c, "aims_client_hedges_cancelled_total");
    r.denied = counter(c, "aims_client_hedges_denied_total");
    free(all);
    aims_client_destroy(c);
    return r;
}

int main(int argc, char **argv)
{
    const char *tr = argc > 1 ? argv[1] : "tcp";
    const long calls = argc > 2 ? atol(argv[2]) : 400;
    const long fast_us = argc > 3 ? atol(argv[3]) : 2000;
    int threads = argc > 4 ? atoi(argv[4]) : 2;
    threads = threads < 1 ? 1 : threads > 16 ? 16 : threads;
    const char *api = argc > 5 ? argv[5] : "sync";
    g_async = strcmp(api, "async") == 0;
    if ((strcmp(tr, "tcp") != 0 && strcmp(tr, "inproc") != 0) || calls < 10 || fast_us < 1 ||
        (!g_async && strcmp(api, "sync") != 0)) {
        fprintf(stderr, "usage: %s [inproc|tcp] [CALLS>=10] [FAST_US] [THREADS] [sync|async]\n",
                argv[0]);
        return 2;
    }
    aims_registry *reg = NULL;
    aims_registry_create(&reg);
    aims_node *nodes[N_INST];
    inst in[N_INST];
    for (int i = 0; i < N_INST; i++) {
        char name[32], url[64];
        snprintf(name, sizeof name, "hedge%d", i);
        if (strcmp(tr, "tcp") == 0) {
            snprintf(url, sizeof url, "tcp://127.0.0.1:0");
        } else {
            snprintf(url, sizeof url, "inproc://%s", name);
        }
        in[i].us = i == N_INST - 1 ? 10 * fast_us : fast_us;
        aims_service *s = NULL;
        if (aims_node_create(name, &nodes[i]) != AIMS_OK ||
            aims_node_set_param_i64(nodes[i], AIMS_NODE_WORKERS, 8) != AIMS_OK ||
            aims_node_listen(nodes[i], url) != AIMS_OK ||
            aims_node_set_registry(nodes[i], reg) != AIMS_OK ||
            aims_service_add_handler(nodes[i], "svc", sleepy, &in[i], &s) != AIMS_OK ||
            aims_service_set_param_i64(s, AIMS_SERVICE_INLINE, 0) != AIMS_OK ||
            aims_service_start(s) != AIMS_OK) {
            fprintf(stderr, "setup failed: %s\n", aims_errmsg());
            return 1;
        }
    }
    const result u = measure(reg, -1, calls, threads);
    const result h = measure(reg, 0, calls, threads);
    /* A set delay of twice the fast handler time, for comparison. */
    const int64_t set_ms = (2 * fast_us + 999) / 1000;
    const result f = measure(reg, set_ms, calls, threads);
    printf("{\"goal\":\"P14c\",\"api\":\"%s\",\"transport\":\"%s\",\"instances\":%d,\"fast_ms\":%.3f,"
           "\"slow_ms\":%.3f,\"threads\":%d,\"calls\":%ld,\"balancer\":\"round_robin\","
           "\"unhedged_p50_ms\":%.3f,\"unhedged_p99_ms\":%.3f,\"hedged_p50_ms\":%.3f,"
           "\"hedged_p99_ms\":%.3f,\"ratio_p99\":%.3f,\"goal_ratio\":0.3,"
           "\"hedges\":%.0f,\"hedges_won\":%.0f,\"hedges_cancelled\":%.0f,"
           "\"hedges_denied\":%.0f,\"set_delay_ms\":%lld,\"set_p50_ms\":%.3f,"
           "\"set_p99_ms\":%.3f,\"set_ratio_p99\":%.3f,\"set_hedges\":%.0f,\"failed\":%d}\n",
           api, tr, N_INST, fast_us / 1e3, 10 * fast_us / 1e3, threads, calls * threads, u.p50,
           u.p99, h.p50, h.p99, u.p99 > 0 ? h.p99 / u.p99 : 0.0, h.hedges, h.won, h.cancelled,
           h.denied, (long long)set_ms, f.p50, f.p99, u.p99 > 0 ? f.p99 / u.p99 : 0.0, f.hedges,
           u.failed + h.failed + f.failed);
    /* The same figures as the bench harness's records (goal, contender, metric,
     * median), so `aims plot` and the results tables read them like the others. */
    const struct { const char *who; double p99; } rows[] = {
        {"unhedged", u.p99}, {"hedged (p95 delay)", h.p99}, {"hedged (set delay)", f.p99}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        printf("{\"goal\":\"P14c\",\"description\":\"p99 of idempotent calls, one of %d "
               "instances 10x slow\",\"contender\":\"%s%s\",\"metric\":\"p99_ms\","
               "\"transport\":\"%s\",\"median\":%.3f,\"unit\":\"ms\",\"n\":1}\n",
               N_INST, rows[i].who, g_async ? ", async" : "", tr, rows[i].p99);
    }
    for (int i = 0; i < N_INST; i++) {
        aims_node_destroy(nodes[i]);
    }
    aims_registry_destroy(reg);
    return u.failed + h.failed + f.failed == 0 ? 0 : 1;
}
