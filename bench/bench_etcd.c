/*
 * bench_etcd.c -- goal P13a, one short run: registry operations through the
 * etcd backend next to etcd's own client doing the same, on a fresh 1-member
 * etcd on loopback (tests/support/etcd_proc.c).
 *
 *   ours      register (lease grant + put) and register -> visible in a
 *             client's view (the view's watch delivers it), N times
 *   etcdctl   `etcdctl put` -> the line printed by a running `etcdctl watch`,
 *             N times (etcdctl is a process per put: what an operator or a
 *             script doing the same would pay)
 *
 * Prints p50/p90 in microseconds and the ratio ours/etcdctl of the
 * put->watch p50. Usage: bench_etcd [N]
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "etcd_proc.h"
#include "svc/registry/aimsi_regbk.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
    qsort(v, (size_t)n, sizeof(*v), cmp);
    return v[(int)(p * (n - 1))];
}

static size_t count(aims_registry *view)
{
    size_t n = 0;
    (void)aims_registry_lookup(view, "bench", NULL, 0, &n);
    return n;
}

int main(int argc, char **argv)
{
    const int n = argc > 1 ? atoi(argv[1]) : 100;
    if (n < 2 || n > 10000 || !etcd_available()) {
        fprintf(stderr, "usage: bench_etcd [N >= 2] (needs etcd)\n");
        return 2;
    }
    etcd_cluster c;
    if (etcd_cluster_start(&c, 1) != 0) {
        return 1;
    }
    char url[300];
    snprintf(url, sizeof(url), "etcd://%s/bench", c.endpoints);
    const aimsi_regbk *b = NULL;
    const aimsi_reg_ops *ops = NULL;
    void *ctx = NULL, *vctx = NULL;
    aims_registry *view = NULL;
    if (aimsi_regbk_find(url, &b) != AIMS_OK || b->node_open(url, NULL, &ops, &ctx) != AIMS_OK ||
        aims_registry_create(&view) != AIMS_OK || b->view_open(url, view, 50, NULL, &vctx) != AIMS_OK) {
        fprintf(stderr, "bench_etcd: %s\n", aims_errmsg());
        etcd_cluster_stop(&c);
        return 1;
    }
    double *reg = calloc((size_t)n, sizeof(double)), *vis = calloc((size_t)n, sizeof(double));
    double *ctl = calloc((size_t)n, sizeof(double));
    for (int i = 0; i < n; i++) {
        uint64_t id = 0;
        const double t0 = now_us();
        if (ops->reg(ctx, "bench", "tcp://127.0.0.1:9", 1, 60000, &id) != AIMS_OK) {
            fprintf(stderr, "bench_etcd: register: %s\n", aims_errmsg());
            return 1;
        }
        const double t1 = now_us();
        while (count(view) != 1) {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
        const double t2 = now_us();
        reg[i] = t1 - t0;
        vis[i] = t2 - t0;
        ops->dereg(ctx, id);
        while (count(view) != 0) {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
    /* etcdctl: a watcher process, then one put process per sample. */
    char cmd[600];
    /* The shell prints its pid, then becomes the watcher (killed at the end:
     * etcdctl watch retries forever once etcd is gone). */
    snprintf(cmd, sizeof(cmd), "echo $$; ETCDCTL_API=3 exec etcdctl --endpoints=%s watch "
             "/ctl/k", c.endpoints);
    FILE *w = popen(cmd, "r");
    char pidline[32];
    const long wpid = w != NULL && fgets(pidline, sizeof(pidline), w) != NULL
                          ? strtol(pidline, NULL, 10) : 0;
    sleep(1); /* the watch is created */
    int got = 0;
    for (int i = 0; w != NULL && i < n; i++) {
        snprintf(cmd, sizeof(cmd), "ETCDCTL_API=3 etcdctl --endpoints=%s put /ctl/k v%d "
                 ">/dev/null", c.endpoints, i);
        const double t0 = now_us();
        if (system(cmd) != 0) {
            break;
        }
        char line[256];
        /* Each event prints 3 lines: PUT, key, value. */
        int lines = 0;
        while (lines < 3 && fgets(line, sizeof(line), w) != NULL) {
            lines++;
        }
        ctl[got++] = now_us() - t0;
    }
    printf("bench_etcd N=%d (1-member etcd %s, loopback)\n", n, c.endpoints);
    printf("  ours register (lease grant + put)   p50 %8.0f us  p90 %8.0f us\n",
           pct(reg, n, 0.5), pct(reg, n, 0.9));
    printf("  ours register -> visible in a view  p50 %8.0f us  p90 %8.0f us\n",
           pct(vis, n, 0.5), pct(vis, n, 0.9));
    if (got > 1) {
        const double c50 = pct(ctl, got, 0.5);
        printf("  etcdctl put -> etcdctl watch line   p50 %8.0f us  p90 %8.0f us\n", c50,
               pct(ctl, got, 0.9));
        printf("  ratio ours/etcdctl (p50)            %.2f (goal P13a: <= 1.5)\n",
               pct(vis, n, 0.5) / c50);
    }
    b->view_close(vctx);
    aims_registry_destroy(view);
    ops->release(ctx);
    free(reg);
    free(vis);
    free(ctl);
    if (wpid > 0) {
        kill((pid_t)wpid, SIGKILL);
    }
    if (w != NULL) {
        pclose(w);
    }
    etcd_cluster_stop(&c);
    return 0;
}
