/*
 * bench_orch.c -- balancer pick cost and a simulated P8 (issue 4).
 *
 * usage: bench_orch [picks]        (default 2,000,000 per measurement)
 *
 * 1. Pick cost (goal P8: pick <= 100 ns). For every policy at n = 4 and
 *    n = 100 instances: ns per pick() alone, and per pick()+done() pair (the
 *    real per-request cost: done feeds the latency EWMA and reads the clock),
 *    single thread, CLOCK_MONOTONIC; then P2C pick+done from 2 threads on one
 *    shared balancer (the contended case). Best of 3 runs.
 * 2. Simulated P8: 4 single-worker FIFO servers, one 3x slower (exponential
 *    service, means 1 ms and 3 ms), Poisson arrivals at 70 % of the total
 *    capacity, 200,000 requests on a simulated clock with done() feedback at
 *    each completion. Prints p50/p99 of the response time for P2C, round robin,
 *    least outstanding and random. This is a model of the goal (the real one
 *    runs through the service layer), useful to see the policies' shape.
 *
 * Output: one JSON line per measurement on stdout (goal id "P8").
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <aims/aims_orch.h>

static const struct {
    aims_lb_policy p;
    const char *name;
} policies[] = {
    {AIMS_LB_P2C, "p2c"},
    {AIMS_LB_ROUND_ROBIN, "round_robin"},
    {AIMS_LB_WEIGHTED_RR, "weighted_rr"},
    {AIMS_LB_LEAST_OUTSTANDING, "least_outstanding"},
    {AIMS_LB_MAGLEV, "maglev"},
    {AIMS_LB_RANDOM, "random"},
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, aims_status rc)
{
    fprintf(stderr, "bench_orch: %s: %s (%s)\n", what, aims_strerror(rc), aims_errmsg());
    exit(1);
}

static aims_balancer *make(aims_lb_policy p, size_t n)
{
    aims_balancer *b = NULL;
    aims_status rc = aims_balancer_create(p, 12345, &b);
    if (rc != AIMS_OK) {
        die("create", rc);
    }
    aims_instance *ids = malloc(n * sizeof *ids);
    uint32_t *w = malloc(n * sizeof *w);
    for (size_t i = 0; i < n; i++) {
        ids[i] = (aims_instance)(1000 + i);
        w[i] = (uint32_t)(1 + i % 3);
    }
    rc = aims_balancer_set_instances(b, ids, w, n);
    if (rc != AIMS_OK) {
        die("set_instances", rc);
    }
    free(ids);
    free(w);
    return b;
}

/* ns per pick (with_done = 0) or per pick+done pair (1). */
static double time_picks(aims_lb_policy p, size_t n, long picks, int with_done)
{
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        aims_balancer *b = make(p, n);
        aims_instance id = 0;
        const double t0 = now_s();
        for (long k = 0; k < picks; k++) {
            aims_balancer_pick(b, (uint64_t)k * 0x9e3779b97f4a7c15ull, &id);
            if (with_done) {
                aims_balancer_done(b, id, 1000000 + (uint64_t)(k & 1023) * 1000, 1);
            }
        }
        const double dt = now_s() - t0;
        best = dt < best ? dt : best;
        aims_balancer_destroy(b);
    }
    return best * 1e9 / (double)picks;
}

typedef struct th_arg {
    aims_balancer *b;
    long picks;
} th_arg;

static void *th_run(void *arg)
{
    const th_arg *a = arg;
    aims_instance id = 0;
    for (long k = 0; k < a->picks; k++) {
        aims_balancer_pick(a->b, (uint64_t)k, &id);
        aims_balancer_done(a->b, id, 1000000, 1);
    }
    return NULL;
}

static double time_threads(aims_lb_policy p, size_t n, long picks, int threads)
{
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        aims_balancer *b = make(p, n);
        pthread_t th[8];
        th_arg a = {b, picks / threads};
        const double t0 = now_s();
        for (int t = 0; t < threads; t++) {
            pthread_create(&th[t], NULL, th_run, &a);
        }
        for (int t = 0; t < threads; t++) {
            pthread_join(th[t], NULL);
        }
        const double dt = now_s() - t0;
        best = dt < best ? dt : best;
        aims_balancer_destroy(b);
    }
    /* wall time per pair across all threads (throughput view) */
    return best * 1e9 / (double)(picks / threads * threads);
}

/* ---- simulated P8 ----------------------------------------------------------- */

typedef struct ev {
    uint64_t t;
    uint64_t lat;
    aims_instance id;
} ev;

/* binary min-heap on t */
static void heap_push(ev *h, size_t *n, ev e)
{
    size_t i = (*n)++;
    while (i > 0 && h[(i - 1) / 2].t > e.t) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = e;
}

static ev heap_pop(ev *h, size_t *n)
{
    const ev top = h[0];
    const ev last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) {
            break;
        }
        if (c + 1 < *n && h[c + 1].t < h[c].t) {
            c++;
        }
        if (h[c].t >= last.t) {
            break;
        }
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

static uint64_t g_sim_clock;

static uint64_t sim_now(void *user)
{
    (void)user;
    return g_sim_clock;
}

static uint64_t g_x = 0x243f6a8885a308d3ull;

static double urand(void)
{
    g_x ^= g_x << 13;
    g_x ^= g_x >> 7;
    g_x ^= g_x << 17;
    return ((double)(g_x >> 11) + 0.5) / 9007199254740992.0;
}

static int cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void simulate(aims_lb_policy p, const char *name)
{
    enum { N = 4, REQS = 200000 };
    const double mean_ns[N] = {3e6, 1e6, 1e6, 1e6}; /* instance 1 is 3x slower */
    double cap = 0;
    for (int i = 0; i < N; i++) {
        cap += 1e9 / mean_ns[i];
    }
    const double lambda = 0.7 * cap; /* requests per second */
    aims_balancer *b = NULL;
    aims_status rc = aims_balancer_create(p, 7, &b);
    if (rc != AIMS_OK) {
        die("create", rc);
    }
    aims_balancer_set_clock(b, sim_now, NULL);
    const aims_instance ids[N] = {1, 2, 3, 4};
    aims_balancer_set_instances(b, ids, NULL, N);
    uint64_t busy_until[N] = {0};
    ev *heap = malloc(REQS * sizeof *heap);
    uint64_t *resp = malloc(REQS * sizeof *resp);
    size_t hn = 0;
    g_x = 0x243f6a8885a308d3ull;
    g_sim_clock = 1000000000ull;
    int to_slow = 0;
    for (int k = 0; k < REQS; k++) {
        g_sim_clock += (uint64_t)(-log(urand()) / lambda * 1e9);
        while (hn > 0 && heap[0].t <= g_sim_clock) {
            const uint64_t saved = g_sim_clock;
            const ev e = heap_pop(heap, &hn);
            g_sim_clock = e.t;
            aims_balancer_done(b, e.id, e.lat, 1);
            g_sim_clock = saved;
        }
        aims_instance id = 0;
        aims_balancer_pick(b, (uint64_t)k, &id);
        const size_t s = (size_t)(id - 1);
        to_slow += s == 0;
        const uint64_t svc = (uint64_t)(-log(urand()) * mean_ns[s]);
        const uint64_t start = busy_until[s] > g_sim_clock ? busy_until[s] : g_sim_clock;
        busy_until[s] = start + svc;
        const ev e = {busy_until[s], busy_until[s] - g_sim_clock, id};
        resp[k] = e.lat;
        heap_push(heap, &hn, e);
    }
    qsort(resp, REQS, sizeof *resp, cmp_u64);
    printf("{\"goal\":\"P8\",\"what\":\"sim_70pct_one_3x_slow\",\"policy\":\"%s\","
           "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"slow_share\":%.4f}\n",
           name, (double)resp[REQS / 2] / 1e6, (double)resp[REQS * 99 / 100] / 1e6,
           (double)to_slow / REQS);
    free(heap);
    free(resp);
    aims_balancer_destroy(b);
}

int main(int argc, char **argv)
{
    const long picks = argc > 1 ? atol(argv[1]) : 2000000;
    const size_t sizes[] = {4, 100};
    for (size_t s = 0; s < 2; s++) {
        for (size_t i = 0; i < sizeof policies / sizeof policies[0]; i++) {
            const double pick = time_picks(policies[i].p, sizes[s], picks, 0);
            const double pair = time_picks(policies[i].p, sizes[s], picks, 1);
            printf("{\"goal\":\"P8\",\"what\":\"pick_ns\",\"policy\":\"%s\",\"n\":%zu,"
                   "\"pick_ns\":%.1f,\"pick_done_ns\":%.1f,\"threads\":1}\n",
                   policies[i].name, sizes[s], pick, pair);
        }
        const double mt = time_threads(AIMS_LB_P2C, sizes[s], picks, 2);
        printf("{\"goal\":\"P8\",\"what\":\"pick_done_wall_ns\",\"policy\":\"p2c\",\"n\":%zu,"
               "\"ns\":%.1f,\"threads\":2}\n",
               sizes[s], mt);
    }
    simulate(AIMS_LB_P2C, "p2c");
    simulate(AIMS_LB_ROUND_ROBIN, "round_robin");
    simulate(AIMS_LB_LEAST_OUTSTANDING, "least_outstanding");
    simulate(AIMS_LB_RANDOM, "random");
    return 0;
}
