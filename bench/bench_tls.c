/*
 * bench_tls.c -- issue 10 goals P11a-c: tls:// against tcp:// through the
 * same node, service and client, side by side in one run (same process, same
 * machine load).
 *
 *   P11a  64 B request round trip p50 after the handshake (tls vs tcp;
 *         interleaved ABBA/BAAB blocks, rt_interleaved)
 *   P11b-sync    1 MiB request+reply frames, one call at a time, bytes/s
 *                (tls vs tcp; ABBA order, mb_rates)
 *   P11b-stream  1 MiB request+reply frames, WINDOW async calls in flight on
 *                one connection, bytes/s and process CPU per MiB (tls vs tcp;
 *                interleaved ABBA/BAAB blocks as P11a, mb_stream)
 *   P11c  new connection + handshake + first call p50: tcp, tls with session
 *         resumption, tls without (a fresh config per connection)
 *
 * usage: [AIMS_BENCH_ONLY=tcp|tls] bench_tls [ITERS_RT] [ITERS_MB] [ITERS_CONN]
 *                                           [ITERS_STREAM] [WINDOW]
 *        (defaults 5000 200 200 400 8; 0 skips a part; AIMS_BENCH_ONLY measures
 *        one transport alone, for strace -c and perf record of one of them)
 * Needs AIMS_SOURCE_DIR (or the current directory) to find
 * tests/support/mkcerts.sh, which makes a throw-away PKI with the openssl CLI.
 * Prints one JSON object. The node runs inline handlers in this process: the
 * numbers are transport + framing + TLS cost on loopback, nothing else.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <aims/aims.h>

#include "bench_util.h"

#define TRY(what, call)                                                                   \
    do {                                                                                  \
        const aims_status rc_ = (call);                                                   \
        if (rc_ != AIMS_OK) {                                                             \
            fprintf(stderr, "bench_tls: %s: %s (%s)\n", (what), aims_strerror(rc_),       \
                    aims_errmsg());                                                       \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

static char g_pki[64];

static aims_status echo_fn(void *user, const char *method, const aims_msg *req,
                           aims_msg *reply, uint64_t deadline_ns)
{
    (void)user, (void)method, (void)deadline_ns;
    for (size_t i = 0; i < aims_msg_num_tensors(req); i++) {
        const char *name;
        aims_dtype dt;
        size_t nd, bytes;
        const uint64_t *dims;
        const void *data;
        aims_status rc = aims_msg_get_tensor(req, i, &name, &dt, &nd, &dims, &data, &bytes);
        if (rc == AIMS_OK) {
            rc = aims_msg_add(reply, name, dt, dims, nd, data, 0);
        }
        if (rc != AIMS_OK) {
            return rc;
        }
    }
    return AIMS_OK;
}

static aims_tls_config *cfg_for(const char *who)
{
    aims_tls_config *cfg = NULL;
    char a[160], b[160], c[160];
    TRY("tls config", aims_tls_config_create(&cfg));
    snprintf(a, sizeof a, "%s/ca.pem", g_pki);
    snprintf(b, sizeof b, "%s/%s.pem", g_pki, who);
    snprintf(c, sizeof c, "%s/%s.key", g_pki, who);
    TRY("set_ca", aims_tls_config_set_ca(cfg, a));
    TRY("set_cert", aims_tls_config_set_cert(cfg, b, c));
    return cfg;
}

static aims_msg *payload(size_t bytes)
{
    aims_msg *m = NULL;
    TRY("msg", aims_msg_create(&m));
    uint8_t *buf = calloc(1, bytes);
    if (buf == NULL) {
        exit(1);
    }
    const uint64_t dims[1] = {bytes};
    TRY("msg add", aims_msg_add(m, "x", AIMS_DT_U8, dims, 1, buf, 0));
    free(buf);
    return m;
}

static aims_client *client_for(aims_tls_config *cfg)
{
    aims_client *c = NULL;
    TRY("client", aims_client_create(&c));
    if (cfg != NULL) {
        TRY("client tls", aims_client_set_tls(c, cfg));
    }
    return c;
}

/* P11a: 64 B round trips on tcp:// and tls:// interleaved in blocks.
 *
 * Both clients are connected and warmed up first; then QUADS quads of four
 * blocks run in ABBA order (tcp, tls, tls, tcp), the next quad in BAAB order,
 * and so on, each block iters / (2 * QUADS) calls. A drift of the machine's
 * load during the run (the shared VM's other tenants, a compile starting)
 * then falls on both transports alike instead of on whichever ran second, and
 * each quad gives a ratio of its own (tls p50 / tcp p50 over its calls), so
 * the JSON shows the spread next to the ratio of the overall p50s. Before,
 * all tcp calls ran first, then all tls calls: one quiet run gave rounds of
 * 1.08, 1.31 and 1.17 for the same build. */
#define QUADS 4

typedef struct rt_side {
    aims_client *c;
    const char *addr;
    double *all;  /* every timed call, microseconds */
    size_t n_all;
} rt_side;

static void rt_block(rt_side *s, aims_msg *req, aims_msg *rep, long calls, double *quad,
                     size_t *n_quad)
{
    for (long i = 0; i < calls; i++) {
        const double t0 = now_s();
        TRY("call", aims_client_call_addr(s->c, s->addr, "echo", "m", req, rep, 0));
        const double us = (now_s() - t0) * 1e6;
        s->all[s->n_all++] = us;
        quad[(*n_quad)++] = us;
    }
}

/* only: -1 both transports, 0 tcp only, 1 tls only (profiling one transport). */
static void rt_interleaved(const char *tcp, const char *tls, aims_tls_config *cfg, long iters,
                           int only, double *p50, double *quad_ratio)
{
    const long per = iters / (2 * QUADS) > 0 ? iters / (2 * QUADS) : 1;
    rt_side side[2] = {{NULL, tcp, NULL, 0}, {NULL, tls, NULL, 0}};
    aims_msg *req = payload(64), *rep = NULL;
    TRY("msg", aims_msg_create(&rep));
    double *quad[2];
    for (int t = 0; t < 2; t++) {
        side[t].c = client_for(t == 1 ? cfg : NULL);
        side[t].all = malloc(sizeof(double) * (size_t)(per * 2 * QUADS));
        quad[t] = malloc(sizeof(double) * (size_t)(per * 2));
        if (side[t].all == NULL || quad[t] == NULL) {
            exit(1);
        }
    }
    for (long i = 0; i < iters / 10 + 10; i++) { /* connect + warm up, both alike */
        for (int t = 0; t < 2; t++) {
            if (only < 0 || only == t) {
                TRY("warm-up call", aims_client_call_addr(side[t].c, side[t].addr, "echo", "m",
                                                          req, rep, 0));
            }
        }
    }
    static const int abba[2][4] = {{0, 1, 1, 0}, {1, 0, 0, 1}};
    for (int q = 0; q < QUADS; q++) {
        size_t nq[2] = {0, 0};
        for (int b = 0; b < 4; b++) {
            const int t = abba[q % 2][b];
            if (only < 0 || only == t) {
                rt_block(&side[t], req, rep, per, quad[t], &nq[t]);
            }
        }
        quad_ratio[q] = (only < 0) ? median_sort(quad[1], nq[1]) / median_sort(quad[0], nq[0])
                                   : 0.0;
    }
    for (int t = 0; t < 2; t++) {
        p50[t] = side[t].n_all > 0 ? median_sort(side[t].all, side[t].n_all) : 0.0;
        free(side[t].all);
        free(quad[t]);
        aims_client_destroy(side[t].c);
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
}

/* CPU seconds of this process (node and clients alike). */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Request + reply bytes per second with 1 MiB frames. Seconds of `iters`
 * calls (after one warm-up call); *cpu += the process CPU seconds they took. */
static double mb_secs(const char *addr, aims_tls_config *cfg, long iters, double *cpu)
{
    aims_client *c = client_for(cfg);
    aims_msg *req = payload((size_t)1 << 20), *rep = NULL;
    TRY("msg", aims_msg_create(&rep));
    TRY("warm-up call", aims_client_call_addr(c, addr, "echo", "m", req, rep, 0));
    const double t0 = now_s(), c0 = cpu_s();
    for (long i = 0; i < iters; i++) {
        TRY("call", aims_client_call_addr(c, addr, "echo", "m", req, rep, 0));
    }
    const double dt = now_s() - t0;
    *cpu += cpu_s() - c0;
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    return dt;
}

/* P11b-sync in ABBA order (tcp, tls, tls, tcp; half the calls each time), so
 * both transports get the same share of early and late calls; halves[] keeps
 * the four timings (seconds, in run order) for the JSON. only: as for P11a. */
static void mb_rates(const char *tcp, const char *tls, aims_tls_config *cfg, long iters, int only,
                     double *tcp_bps, double *tls_bps, double halves[4], double cpu_ms_mib[2])
{
    const long h1 = iters / 2 > 0 ? iters / 2 : 1, h2 = iters - h1 > 0 ? iters - h1 : 1;
    double cpu[2] = {0.0, 0.0};
    halves[0] = only != 1 ? mb_secs(tcp, NULL, h1, &cpu[0]) : 0.0;
    halves[1] = only != 0 ? mb_secs(tls, cfg, h1, &cpu[1]) : 0.0;
    halves[2] = only != 0 ? mb_secs(tls, cfg, h2, &cpu[1]) : 0.0;
    halves[3] = only != 1 ? mb_secs(tcp, NULL, h2, &cpu[0]) : 0.0;
    const double mib = 2.0 * (double)(h1 + h2);
    const double bytes = mib * (double)(1u << 20);
    *tcp_bps = only != 1 ? bytes / (halves[0] + halves[3]) : 0.0;
    *tls_bps = only != 0 ? bytes / (halves[1] + halves[2]) : 0.0;
    cpu_ms_mib[0] = cpu[0] * 1e3 / mib;
    cpu_ms_mib[1] = cpu[1] * 1e3 / mib;
}

/* P11b-stream: the throughput figure. One connection per transport carries
 * `window` async 1 MiB echo calls at a time (a new call starts as soon as one
 * ends), so the two ends work at once: while the node decrypts one request
 * the client encrypts the next and decrypts an earlier reply -- what "bytes/s"
 * means for a pipe, where P11b-sync (one call at a time) adds every pass of
 * both ends up. Blocks of `per` calls run in the ABBA/BAAB quads of P11a, each
 * quad giving its own ratio; the process CPU (node and client are both in this
 * process) is taken around every block. */
typedef struct st_gen {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long inflight, done, failed;
} st_gen;

static void st_done(void *user, aims_status status, const aims_msg *reply, const char *error)
{
    (void)reply, (void)error;
    st_gen *g = user;
    pthread_mutex_lock(&g->mu);
    g->inflight--;
    g->done++;
    if (status != AIMS_OK) {
        g->failed++;
    }
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* `calls` calls with at most `window` in flight; wall seconds (*cpu: CPU seconds). */
static double st_block(aims_client *c, st_gen *g, const aims_msg *req, long calls, long window,
                       double *cpu)
{
    const double t0 = now_s(), c0 = cpu_s();
    long started = 0;
    pthread_mutex_lock(&g->mu);
    const long done0 = g->done;
    while (g->done - done0 < calls) {
        while (started < calls && g->inflight < window) {
            g->inflight++;
            started++;
            pthread_mutex_unlock(&g->mu);
            /* st_done runs exactly once, also when the call cannot start */
            (void)aims_client_call_async(c, "echo", "m", req, 0, 60000, st_done, g);
            pthread_mutex_lock(&g->mu);
        }
        if (g->done - done0 < calls) {
            pthread_cond_wait(&g->cv, &g->mu);
        }
    }
    pthread_mutex_unlock(&g->mu);
    *cpu = cpu_s() - c0;
    return now_s() - t0;
}

typedef struct st_out {
    double bps[2];        /* bytes/s: tcp, tls */
    double cpu_ms_mib[2]; /* process CPU per MiB moved (request + reply bytes) */
    double quad[QUADS];   /* per-quad tls/tcp bytes/s */
    long failed;
} st_out;

static void mb_stream(const char *tcp, const char *tls, aims_tls_config *cfg, long iters,
                      long window, int only, st_out *out)
{
    const long per = iters / (2 * QUADS) > window ? iters / (2 * QUADS) : window;
    const char *addr[2] = {tcp, tls};
    aims_registry *r[2] = {NULL, NULL};
    aims_client *c[2] = {NULL, NULL};
    st_gen g[2];
    aims_msg *req = payload((size_t)1 << 20);
    for (int t = 0; t < 2; t++) {
        aims_instance id;
        TRY("registry", aims_registry_create(&r[t]));
        TRY("register", aims_registry_register(r[t], "echo", addr[t], 1, 3600000, &id));
        c[t] = client_for(t == 1 ? cfg : NULL);
        TRY("use registry", aims_client_set_registry(c[t], r[t]));
        pthread_mutex_init(&g[t].mu, NULL);
        pthread_cond_init(&g[t].cv, NULL);
        g[t].inflight = g[t].done = g[t].failed = 0;
    }
    double secs[2] = {0.0, 0.0}, cpu[2] = {0.0, 0.0}, cpu_b = 0.0;
    long calls[2] = {0, 0};
    for (int t = 0; t < 2; t++) { /* connect + warm up, both alike */
        if (only < 0 || only == t) {
            (void)st_block(c[t], &g[t], req, 2 * window, window, &cpu_b);
        }
    }
    static const int abba[2][4] = {{0, 1, 1, 0}, {1, 0, 0, 1}};
    for (int q = 0; q < QUADS; q++) {
        double qs[2] = {0.0, 0.0};
        for (int b = 0; b < 4; b++) {
            const int t = abba[q % 2][b];
            if (only < 0 || only == t) {
                qs[t] += st_block(c[t], &g[t], req, per, window, &cpu_b);
                cpu[t] += cpu_b;
                calls[t] += per;
            }
        }
        secs[0] += qs[0];
        secs[1] += qs[1];
        out->quad[q] = only < 0 ? qs[0] / qs[1] : 0.0; /* same calls each side: time ratio */
    }
    for (int t = 0; t < 2; t++) {
        const double mib = 2.0 * (double)calls[t];
        out->bps[t] = secs[t] > 0.0 ? mib * (double)(1u << 20) / secs[t] : 0.0;
        out->cpu_ms_mib[t] = mib > 0.0 ? cpu[t] * 1e3 / mib : 0.0;
        aims_client_destroy(c[t]);
        aims_registry_destroy(r[t]);
        out->failed += g[t].failed;
        pthread_mutex_destroy(&g[t].mu);
        pthread_cond_destroy(&g[t].cv);
    }
    aims_msg_destroy(req);
}

/* p50 of connect + handshake + first call, microseconds. mode: 0 tcp, 1 tls
 * resuming (one config), 2 tls full handshakes (a fresh config each time).
 * A first call that fails (on a loaded machine the client's 2 s connect bound
 * can pass before a starved handshake ends) is counted in *failed, not timed. */
static long g_conn_failed[3];

static double conn_p50(const char *addr, int mode, long iters)
{
    aims_msg *req = payload(64), *rep = NULL;
    TRY("msg", aims_msg_create(&rep));
    aims_tls_config *shared = mode == 1 ? cfg_for("client") : NULL;
    double *v = malloc(sizeof *v * (size_t)iters);
    size_t n = 0;
    for (long i = 0; i < iters + 1; i++) {
        aims_tls_config *cfg = mode == 2 ? cfg_for("client") : shared;
        aims_client *c = client_for(cfg);
        const double t0 = now_s();
        const aims_status rc = aims_client_call_addr(c, addr, "echo", "m", req, rep, 0);
        const double us = (now_s() - t0) * 1e6;
        if (rc != AIMS_OK) {
            g_conn_failed[mode]++;
        } else if (i > 0) { /* the first one fills the session cache */
            v[n++] = us;
        }
        aims_client_destroy(c);
        if (mode == 2) {
            aims_tls_config_destroy(cfg);
        }
    }
    const double p50 = n > 0 ? median_sort(v, n) : -1.0;
    free(v);
    aims_tls_config_destroy(shared);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return p50;
}

/* a / b as JSON, null when either side was not measured. */
static void json_ratio(double a, double b)
{
    if (a > 0.0 && b > 0.0) {
        printf("%.3f", a / b);
    } else {
        printf("null");
    }
}

int main(int argc, char **argv)
{
    const long it_rt = argc > 1 ? atol(argv[1]) : 5000;
    const long it_mb = argc > 2 ? atol(argv[2]) : 200;
    const long it_conn = argc > 3 ? atol(argv[3]) : 200;
    const long it_st = argc > 4 ? atol(argv[4]) : 400;
    const long window = argc > 5 ? atol(argv[5]) : 8;
    /* AIMS_BENCH_ONLY=tcp|tls measures one transport (strace -c, perf record). */
    const char *only_s = getenv("AIMS_BENCH_ONLY");
    const int only = only_s == NULL || only_s[0] == '\0' ? -1 : strcmp(only_s, "tls") == 0;
    if (it_rt < 0 || it_mb < 0 || it_conn < 0 || it_st < 0 || window < 1 || window > 64 ||
        (only_s != NULL && only_s[0] != '\0' && strcmp(only_s, "tcp") != 0 &&
         strcmp(only_s, "tls") != 0)) {
        fprintf(stderr, "usage: [AIMS_BENCH_ONLY=tcp|tls] bench_tls [ITERS_RT] [ITERS_MB] "
                        "[ITERS_CONN] [ITERS_STREAM] [WINDOW 1..64]   (0 skips a part)\n");
        return 2;
    }
    snprintf(g_pki, sizeof g_pki, "/tmp/bench-tls-XXXXXX");
    if (mkdtemp(g_pki) == NULL) {
        fprintf(stderr, "bench_tls: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    const char *src = getenv("AIMS_SOURCE_DIR");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "sh '%s/tests/support/mkcerts.sh' '%s'", src ? src : ".", g_pki);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_tls: mkcerts.sh failed (set AIMS_SOURCE_DIR)\n");
        return 1;
    }
    aims_node *n = NULL;
    aims_service *s = NULL;
    TRY("node", aims_node_create("bench-tls", &n));
    aims_tls_config *ncfg = cfg_for("node");
    TRY("node tls", aims_node_set_tls(n, ncfg));
    TRY("listen tcp", aims_node_listen(n, "tcp://127.0.0.1:0"));
    TRY("listen tls", aims_node_listen(n, "tls://127.0.0.1:0"));
    TRY("service", aims_service_add_handler(n, "echo", echo_fn, NULL, &s));
    TRY("inline", aims_service_set_param_i64(s, AIMS_SERVICE_INLINE, 1));
    TRY("start", aims_service_start(s));
    char tcp[128], tls[128];
    size_t len = 0;
    TRY("address", aims_node_get_address(n, 0, tcp, sizeof tcp, &len));
    TRY("address", aims_node_get_address(n, 1, tls, sizeof tls, &len));
    aims_tls_config *ccfg = cfg_for("client");

    double rt[2] = {0.0, 0.0}, quad[QUADS] = {0.0};
    if (it_rt > 0) {
        rt_interleaved(tcp, tls, ccfg, it_rt, only, rt, quad);
    }
    double mb_tcp = 0.0, mb_tls = 0.0, halves[4] = {0.0}, mb_cpu[2] = {0.0, 0.0};
    if (it_mb > 0) {
        mb_rates(tcp, tls, ccfg, it_mb, only, &mb_tcp, &mb_tls, halves, mb_cpu);
    }
    st_out st;
    memset(&st, 0, sizeof st);
    if (it_st > 0) {
        mb_stream(tcp, tls, ccfg, it_st, window, only, &st);
    }
    const int conn = it_conn > 0;
    const double c_tcp = conn && only != 1 ? conn_p50(tcp, 0, it_conn) : 0.0;
    const double c_res = conn && only != 0 ? conn_p50(tls, 1, it_conn) : 0.0;
    const double c_full = conn && only != 0 ? conn_p50(tls, 2, it_conn) : 0.0;
    printf("{\"bench\": \"tls\", \"iters\": [%ld, %ld, %ld, %ld], \"window\": %ld,\n", it_rt,
           it_mb, it_conn, it_st, window);
    printf(" \"P11a_rt64_p50_us\": {\"tcp\": %.1f, \"tls\": %.1f, \"tls_over_tcp\": ", rt[0],
           rt[1]);
    json_ratio(rt[1], rt[0]);
    printf("},\n \"P11a_order\": \"%d quads of 4 blocks, ABBA then BAAB, %ld calls a block\",\n",
           QUADS, it_rt / (2 * QUADS) > 0 ? it_rt / (2 * QUADS) : 1);
    printf(" \"P11a_quad_ratios\": [");
    for (int q = 0; q < QUADS; q++) {
        printf(q > 0 ? ", %.3f" : "%.3f", quad[q]);
    }
    printf("],\n \"P11b_sync_1mib_bytes_per_s\": {\"tcp\": %.3e, \"tls\": %.3e, \"tls_over_tcp\": ",
           mb_tcp, mb_tls);
    json_ratio(mb_tls, mb_tcp);
    printf("},\n \"P11b_sync_abba_s\": [%.4f, %.4f, %.4f, %.4f],\n", halves[0], halves[1],
           halves[2], halves[3]);
    printf(" \"P11b_sync_cpu_ms_per_mib\": {\"tcp\": %.3f, \"tls\": %.3f},\n", mb_cpu[0],
           mb_cpu[1]);
    printf(" \"P11b_stream_1mib_bytes_per_s\": {\"tcp\": %.3e, \"tls\": %.3e, \"tls_over_tcp\": ",
           st.bps[0], st.bps[1]);
    json_ratio(st.bps[1], st.bps[0]);
    printf("},\n \"P11b_stream_cpu_ms_per_mib\": {\"tcp\": %.3f, \"tls\": %.3f},\n",
           st.cpu_ms_mib[0], st.cpu_ms_mib[1]);
    printf(" \"P11b_stream_quad_ratios\": [");
    for (int q = 0; q < QUADS; q++) {
        printf(q > 0 ? ", %.3f" : "%.3f", st.quad[q]);
    }
    printf("],\n \"P11b_stream_failed_calls\": %ld,\n", st.failed);
    printf(" \"P11c_connect_first_call_p50_us\": {\"tcp\": %.1f, \"tls_resumed\": %.1f, "
           "\"tls_full\": %.1f},\n", c_tcp, c_res, c_full);
    printf(" \"P11c_failed_first_calls\": {\"tcp\": %ld, \"tls_resumed\": %ld, "
           "\"tls_full\": %ld}}\n", g_conn_failed[0], g_conn_failed[1], g_conn_failed[2]);
    aims_tls_config_destroy(ccfg);
    aims_node_destroy(n);
    aims_tls_config_destroy(ncfg);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_pki);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_tls: could not remove %s\n", g_pki);
    }
    return 0;
}
