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
 * put->watch p50.
 *
 * Goal P13b, same run: client call latency with the etcd backend against the
 * in-process registry. Two identical nodes serve an empty handler "p13b" on
 * tcp://127.0.0.1: one registered in an in-process aims_registry that its
 * client resolves through (aims_client_set_registry), one joined to the etcd
 * above and called by a client joined to it (aims_client_join). Calls
 * alternate between the two in ROUNDS rounds of CALLS calls each (so drift
 * hits both alike); p50/p90 of each and the ratio etcd/in-process p50
 * (goal: within 5 %: discovery is off the call path).
 *
 * Usage: bench_etcd [N [CALLS [ROUNDS]]]   (defaults 100 2000 5)
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

/* ---- P13b ------------------------------------------------------------------------ */

static aims_status empty_fn(void *user, const char *method, const aims_msg *req,
                            aims_msg *reply, uint64_t deadline_ns)
{
    (void)user, (void)method, (void)req, (void)reply, (void)deadline_ns;
    return AIMS_OK;
}

/* A node serving "p13b" on tcp://127.0.0.1, in registry r or joined to url. */
static aims_node *p13b_node(const char *name, aims_registry *r, const char *url)
{
    aims_node *n = NULL;
    aims_service *s = NULL;
    if (aims_node_create(name, &n) != AIMS_OK ||
        aims_node_listen(n, "tcp://127.0.0.1:0") != AIMS_OK ||
        (r != NULL ? aims_node_set_registry(n, r) : aims_node_join(n, url)) != AIMS_OK ||
        aims_service_add_handler(n, "p13b", empty_fn, NULL, &s) != AIMS_OK ||
        aims_service_start(s) != AIMS_OK) {
        fprintf(stderr, "bench_etcd: node %s: %s\n", name, aims_errmsg());
        aims_node_destroy(n);
        return NULL;
    }
    return n;
}

/* Calls until one succeeds (the instance reached the client's view), <= 10 s. */
static int p13b_ready(aims_client *c, aims_msg *req, aims_msg *rep)
{
    for (int t = 0; t < 1000; t++) {
        if (aims_client_call(c, "p13b", "m", req, rep, AIMS_CALL_IDEMPOTENT, 1000) == AIMS_OK) {
            return 1;
        }
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "bench_etcd: p13b never answered: %s\n", aims_errmsg());
    return 0;
}

static int p13b(const char *url, int calls, int rounds)
{
    aims_registry *lr = NULL;
    aims_client *cl = NULL, *ce = NULL;
    aims_msg *req = NULL, *rep = NULL;
    aims_node *nl = NULL, *ne = NULL;
    int ok = aims_registry_create(&lr) == AIMS_OK && aims_client_create(&cl) == AIMS_OK &&
             aims_client_create(&ce) == AIMS_OK && aims_msg_create(&req) == AIMS_OK &&
             aims_msg_create(&rep) == AIMS_OK;
    ok = ok && (nl = p13b_node("p13b-local", lr, NULL)) != NULL &&
         (ne = p13b_node("p13b-etcd", NULL, url)) != NULL &&
         aims_client_set_registry(cl, lr) == AIMS_OK && aims_client_join(ce, url) == AIMS_OK;
    const float x = 1.0f;
    const uint64_t dims[1] = {1};
    ok = ok && aims_msg_add(req, "x", AIMS_DT_F32, dims, 1, &x, 0) == AIMS_OK &&
         p13b_ready(cl, req, rep) && p13b_ready(ce, req, rep);
    const size_t total = (size_t)calls * (size_t)rounds;
    double *lat[4] = {calloc(total, sizeof(double)), calloc(total, sizeof(double)),
                      calloc(total, sizeof(double)), calloc(total, sizeof(double))};
    aims_client *who[4] = {cl, ce, cl, cl};
    char addr[2][256] = {"", ""};
    size_t got[4] = {0, 0, 0, 0};
    ok = ok && lat[0] != NULL && lat[1] != NULL && lat[2] != NULL && lat[3] != NULL &&
         aims_node_get_address(nl, 0, addr[0], sizeof(addr[0]), NULL) == AIMS_OK &&
         aims_node_get_address(ne, 0, addr[1], sizeof(addr[1]), NULL) == AIMS_OK;
    /* modes 0, 1: by name through each client's registry; 2, 3: the same two
     * nodes by address (aims_client_call_addr), no registry at all, so a
     * difference that is the nodes' and not discovery's shows there too */
    for (int r = 0; ok && r < rounds; r++) {
        for (int m = 0; ok && m < 4; m++) {
            for (int i = 0; i < calls; i++) {
                const double t0 = now_us();
                const aims_status crc =
                    m < 2 ? aims_client_call(who[m], "p13b", "m", req, rep, AIMS_CALL_IDEMPOTENT,
                                             2000)
                          : aims_client_call_addr(who[m], addr[m - 2], "p13b", "m", req, rep,
                                                  2000);
                if (crc != AIMS_OK) {
                    fprintf(stderr, "bench_etcd: p13b call: %s\n", aims_errmsg());
                    ok = 0;
                    break;
                }
                lat[m][got[m]++] = now_us() - t0;
            }
        }
    }
    if (ok) {
        const double l50 = pct(lat[0], (int)got[0], 0.5), e50 = pct(lat[1], (int)got[1], 0.5);
        printf("P13b client call, tcp://127.0.0.1, %d rounds x %d calls each, alternating\n",
               rounds, calls);
        printf("  in-process registry                 p50 %8.1f us  p90 %8.1f us\n", l50,
               pct(lat[0], (int)got[0], 0.9));
        printf("  etcd backend (joined view)          p50 %8.1f us  p90 %8.1f us\n", e50,
               pct(lat[1], (int)got[1], 0.9));
        printf("  ratio etcd/in-process (p50)         %.3f (goal P13b: within 5 %%, "
               "0.95..1.05)\n", e50 / l50);
        const double a50 = pct(lat[2], (int)got[2], 0.5), b50 = pct(lat[3], (int)got[3], 0.5);
        printf("  by address: in-process node         p50 %8.1f us;  etcd-joined node p50 "
               "%8.1f us (ratio %.3f)\n", a50, b50, b50 / a50);
    }
    for (int m = 0; m < 4; m++) {
        free(lat[m]);
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(cl);
    aims_client_destroy(ce);
    aims_node_destroy(nl);
    aims_node_destroy(ne);
    aims_registry_destroy(lr);
    return ok ? 0 : 1;
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
    const int calls = argc > 2 ? atoi(argv[2]) : 2000;
    const int rounds = argc > 3 ? atoi(argv[3]) : 5;
    if (n < 2 || n > 10000 || calls < 10 || calls > 1000000 || rounds < 1 || rounds > 100 ||
        !etcd_available()) {
        fprintf(stderr, "usage: bench_etcd [N >= 2 [CALLS >= 10 [ROUNDS >= 1]]] (needs etcd)\n");
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
    fflush(stdout);
    const int rc = p13b(url, calls, rounds);
    etcd_cluster_stop(&c);
    return rc;
}
