/*
 * bench_svc.c -- goals P6..P10 (issue 4) through libaims's public service API:
 * nodes, services, clients and the inproc://, ipc://, tcp:// transports.
 *
 * usage: bench_svc MODE ARGS...          (bench/run_svc.py drives it)
 *   rt-thread T [ITERS]        P6: 64-byte echo handler, node in this process
 *   rt-proc T [ITERS]          P6: the same node in a forked process (ipc|tcp)
 *   infer T [ITERS] [DATA] [K=V...]  P7: infer service vs direct predict
 *   lb POLICY [SECONDS] [FAST_US] [SLOW_US]   P8: P2C vs round robin
 *   par N [SECONDS] [DATA] [ROWS] [CLIENTS] [GEN] [DELAY_US] [BATCH_MAX]
 *                              P9: N infer instances; GEN sync (CLIENTS threads,
 *                              closed loop) or async (one thread, CLIENTS calls
 *                              in flight); DELAY_US, BATCH_MAX the instances'
 *                              batch delay and calls per run
 *   seed [DATA]                P10: the seed's example steps through services
 * T is inproc | ipc | tcp; DATA a directory holding fashion-mnist/ (IDX files,
 * decompressed; `make data`), or "-" for synthetic rows.
 *
 * Why this shape. Every measurement mirrors bench/peers/peer_rt.c (the
 * ZeroMQ/NNG harness): same 64-byte payload, 2,000 warm-up calls, each call
 * timed on its own with CLOCK_MONOTONIC, server on another thread (node
 * workers / I/O thread) or another process, one JSON line per measurement, a
 * fresh process per measurement so run_svc.py can alternate contenders. For
 * inproc the library runs a call on the caller's thread when the service has
 * a free slot (AIMS_SERVICE_INLINE, the default): that is the design the
 * P6 inproc goal asks for, so it is measured as shipped.
 *
 * P7 interleaves the two sides call by call (direct predict of one row, then
 * the same row through aims_client_call by name with a local registry) so
 * drift hits both; added = p50(call) - p50(direct).
 *
 * P8 is open loop: two generator threads issue aims_client_call_async at
 * Poisson times (70 % of the 4 instances' capacity in all) and latency counts
 * from the intended send time, so a stalled generator cannot hide queueing
 * (coordinated omission). Handlers sleep their service time (absolute
 * clock_nanosleep, 1 ns timer slack) instead of spinning: four spinning
 * instances at 70 % would need 2.8 cores on this 2-core machine. Each instance
 * runs one request at a time (concurrency 1, inline off), like a single
 * worker; the first 5 % of requests are warm-up.
 *
 * P9: rows served per second through the client with N = 1 or 2 infer
 * instances (one worker each, inline off so the work runs on the instances'
 * threads, not the callers'), the load either CLIENTS closed-loop threads or
 * (the default, run_svc.py) one async generator thread with CLIENTS calls in
 * flight, the same for N = 1 and 2 and within one instance's admission window
 * (rejections are reported apart: capacity is goodput; docs/P9.md).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <aims/aims.h>

#include "bench_proc.h"

#define MSG_BYTES 64
#define WARMUP 2000
#define URL_CAP 256
#define FEAT 784
#define CLASSES 10

/* ------------------------------------------------------------------------ */
/* Helpers                                                                    */

static void fail(const char *what, aims_status rc, const char *why)
{
    fprintf(stderr, "bench_svc: %s: %s (%s)\n", what, aims_strerror(rc),
            why && *why ? why : aims_errmsg());
    exit(1);
}

#define TRY(what, call)                                                                  \
    do {                                                                                 \
        const aims_status rc_ = (call);                                                  \
        if (rc_ != AIMS_OK) {                                                            \
            fail(what, rc_, NULL);                                                       \
        }                                                                                \
    } while (0)

#define TRYN(n, what, call)                                                              \
    do {                                                                                 \
        const aims_status rc_ = (call);                                                  \
        if (rc_ != AIMS_OK) {                                                            \
            fail(what, rc_, aims_node_errmsg(n));                                        \
        }                                                                                \
    } while (0)

#define TRYC(c, what, call)                                                              \
    do {                                                                                 \
        const aims_status rc_ = (call);                                                  \
        if (rc_ != AIMS_OK) {                                                            \
            fail(what, rc_, aims_client_errmsg(c));                                      \
        }                                                                                \
    } while (0)

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench_svc: out of memory\n");
        exit(1);
    }
    return p;
}

static int cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

typedef struct qstat {
    double p50, p99, min, max, mean; /* microseconds */
} qstat;

/* Sorts ns[0..n) in place. */
static qstat quantiles(uint64_t *ns, size_t n)
{
    qstat q = {0, 0, 0, 0, 0};
    if (n == 0) {
        return q;
    }
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        sum += (double)ns[i];
    }
    qsort(ns, n, sizeof *ns, cmp_u64);
    q.p50 = (double)ns[n / 2] / 1e3;
    q.p99 = (double)ns[(size_t)((double)n * 0.99)] / 1e3;
    q.min = (double)ns[0] / 1e3;
    q.max = (double)ns[n - 1] / 1e3;
    q.mean = sum / (double)n / 1e3;
    return q;
}

static char g_dir[64];

static void make_url(const char *transport, const char *tag, char *url, size_t cap)
{
    if (strcmp(transport, "inproc") == 0) {
        snprintf(url, cap, "inproc://bench-%s-%ld", tag, (long)getpid());
    } else if (strcmp(transport, "tcp") == 0) {
        snprintf(url, cap, "tcp://127.0.0.1:0");
    } else if (strcmp(transport, "ipc") == 0) {
        if (!g_dir[0]) {
            snprintf(g_dir, sizeof g_dir, "/tmp/bench-svc-XXXXXX");
            if (!mkdtemp(g_dir)) {
                fprintf(stderr, "bench_svc: mkdtemp: %s\n", strerror(errno));
                exit(1);
            }
        }
        snprintf(url, cap, "ipc://%s/%.32s.sock", g_dir, tag);
    } else {
        fprintf(stderr, "bench_svc: unknown transport %s\n", transport);
        exit(2);
    }
}

static void cleanup_dir(void)
{
    if (g_dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "bench_svc: could not remove %s\n", g_dir);
        }
        g_dir[0] = '\0';
    }
}

static void node_addr(aims_node *n, char *buf, size_t cap)
{
    size_t len = 0;
    TRYN(n, "node address", aims_node_get_address(n, 0, buf, cap, &len));
}

/* ------------------------------------------------------------------------ */
/* P6: echo round trips                                                       */

static aims_status echo_handler(void *user, const char *method, const aims_msg *req,
                                aims_msg *reply, uint64_t deadline_ns)
{
    const char *name = NULL;
    aims_dtype dt;
    size_t ndim = 0;
    const uint64_t *dims = NULL;
    const void *data = NULL;
    aims_status rc = aims_msg_get_tensor(req, 0, &name, &dt, &ndim, &dims, &data, NULL);
    if (rc != AIMS_OK) {
        return rc;
    }
    return aims_msg_add(reply, name, dt, dims, ndim, data, 0);
}

static aims_node *echo_node(const char *url)
{
    aims_node *n = NULL;
    aims_service *s = NULL;
    TRY("node create", aims_node_create("bench-echo", &n));
    TRYN(n, "listen", aims_node_listen(n, url));
    TRYN(n, "add echo", aims_service_add_handler(n, "echo", echo_handler, NULL, &s));
    TRYN(n, "start echo", aims_service_start(s));
    return n;
}

static void emit_rt(const char *goal, const char *contender, const char *metric,
                    const char *transport, const char *layout, qstat q, size_t n,
                    const char *extra)
{
    printf("{\"goal\": \"%s\", \"contender\": \"%s\", \"version\": \"%s\", \"metric\": "
           "\"%s\", \"transport\": \"%s\", \"layout\": \"%s\", \"p50\": %.3f, \"p99\": %.3f, "
           "\"min\": %.3f, \"max\": %.3f, \"mean\": %.3f, \"unit\": \"us\", \"n\": %zu, "
           "\"loadavg_1m\": %.2f%s}\n",
           goal, contender, aims_version_string(), metric, transport, layout, q.p50, q.p99,
           q.min, q.max, q.mean, n, load1(), extra ? extra : "");
    fflush(stdout);
}

static void echo_client(const char *addr, const char *transport, const char *layout,
                        long iters)
{
    aims_client *c = NULL;
    aims_msg *req = NULL, *reply = NULL;
    TRY("client", aims_client_create(&c));
    TRY("msg", aims_msg_create(&req));
    TRY("msg", aims_msg_create(&reply));
    static unsigned char payload[MSG_BYTES];
    memset(payload, 'a', sizeof payload);
    const uint64_t dims[1] = {MSG_BYTES};
    TRY("msg add", aims_msg_add(req, "b", AIMS_DT_BYTES, dims, 1, payload, AIMS_MSG_BORROW));
    uint64_t *ns = xmalloc((size_t)iters * sizeof *ns);
    for (long i = 0; i < WARMUP + iters; i++) {
        const uint64_t t0 = now_ns();
        TRYC(c, "echo call", aims_client_call_addr(c, addr, "echo", "echo", req, reply, 0));
        const uint64_t dt = now_ns() - t0;
        if (i >= WARMUP) {
            ns[i - WARMUP] = dt;
        }
    }
    size_t bytes = 0;
    TRY("reply", aims_msg_get_tensor(reply, 0, NULL, NULL, NULL, NULL, NULL, &bytes));
    if (bytes != MSG_BYTES) {
        fprintf(stderr, "bench_svc: echo reply has %zu bytes\n", bytes);
        exit(1);
    }
    emit_rt("P6", "libaims", "rt_us", transport, layout, quantiles(ns, (size_t)iters),
            (size_t)iters, ", \"bytes\": 64");
    free(ns);
    aims_msg_destroy(reply);
    aims_msg_destroy(req);
    aims_client_destroy(c);
}

static void rt_thread(const char *transport, long iters)
{
    char url[URL_CAP], addr[URL_CAP];
    make_url(transport, "echo", url, sizeof url);
    aims_node *n = echo_node(url);
    node_addr(n, addr, sizeof addr);
    echo_client(addr, transport, "threads", iters);
    aims_node_destroy(n);
}

/* The node lives in a child process: it writes its bound address into one pipe
 * and serves until the parent closes the other. */
static void rt_proc(const char *transport, long iters)
{
    if (strcmp(transport, "inproc") == 0) {
        fprintf(stderr, "bench_svc: rt-proc needs ipc or tcp\n");
        exit(2);
    }
    char url[URL_CAP], addr[URL_CAP] = {0};
    make_url(transport, "echo", url, sizeof url);
    int up[2], down[2];
    if (pipe(up) != 0 || pipe(down) != 0) {
        fprintf(stderr, "bench_svc: pipe: %s\n", strerror(errno));
        exit(1);
    }
    const pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "bench_svc: fork: %s\n", strerror(errno));
        exit(1);
    }
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        aims_node *n = echo_node(url);
        node_addr(n, addr, sizeof addr);
        if (write(up[1], addr, sizeof addr) != (ssize_t)sizeof addr) {
            _exit(1);
        }
        char b;
        while (read(down[0], &b, 1) > 0) {
        }
        aims_node_destroy(n);
        _exit(0);
    }
    close(up[1]);
    close(down[0]);
    size_t got = 0;
    while (got < sizeof addr) {
        const ssize_t r = read(up[0], addr + got, sizeof addr - got);
        if (r <= 0) {
            fprintf(stderr, "bench_svc: server process did not start\n");
            exit(1);
        }
        got += (size_t)r;
    }
    addr[sizeof addr - 1] = '\0';
    echo_client(addr, transport, "processes", iters);
    close(down[1]);
    int st = 0;
    waitpid(pid, &st, 0);
    close(up[0]);
}

/* ------------------------------------------------------------------------ */
/* Model: a 784-256-10 MLP bundle over Fashion-MNIST (or synthetic rows)      */

typedef struct fixture {
    aims_dataset *train_raw, *test_raw, *train;
    aims_pipeline *p;
    aims_bundle *b;
    int real;
} fixture;

static int have_data(const char *dir)
{
    char path[512];
    struct stat st;
    if (!dir || strcmp(dir, "-") == 0) {
        return 0;
    }
    snprintf(path, sizeof path, "%s/fashion-mnist/train-images-idx3-ubyte", dir);
    return stat(path, &st) == 0 && st.st_size > 0;
}

/* Synthetic stand-in when the data cache is missing: pixel-like rows whose
 * label is the argmax of a fixed random projection (learnable). */
static aims_dataset *synthetic(size_t rows, uint64_t seed)
{
    float *x = xmalloc(rows * FEAT * sizeof *x);
    int32_t *y = xmalloc(rows * sizeof *y);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    static float w[CLASSES][FEAT];
    uint64_t ws = 42;
    for (size_t k = 0; k < CLASSES; k++) {
        for (size_t j = 0; j < FEAT; j++) {
            ws = ws * 6364136223846793005ull + 1442695040888963407ull;
            w[k][j] = (float)((double)(ws >> 11) / 9007199254740992.0 - 0.5);
        }
    }
    for (size_t i = 0; i < rows; i++) {
        float best = -1e30f;
        int32_t arg = 0;
        for (size_t j = 0; j < FEAT; j++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            x[i * FEAT + j] = (float)(s % 256);
        }
        for (int32_t k = 0; k < CLASSES; k++) {
            float d = 0;
            for (size_t j = 0; j < FEAT; j++) {
                d += w[k][j] * x[i * FEAT + j];
            }
            if (d > best) {
                best = d;
                arg = k;
            }
        }
        y[i] = arg;
    }
    aims_dataset *ds = NULL;
    TRY("synthetic", aims_dataset_create_dense(rows, FEAT, x, y, &ds));
    free(x);
    free(y);
    return ds;
}

static void fixture_data(fixture *f, const char *dir)
{
    memset(f, 0, sizeof *f);
    if (have_data(dir)) {
        char ti[512], tl[512], vi[512], vl[512];
        snprintf(ti, sizeof ti, "%s/fashion-mnist/train-images-idx3-ubyte", dir);
        snprintf(tl, sizeof tl, "%s/fashion-mnist/train-labels-idx1-ubyte", dir);
        snprintf(vi, sizeof vi, "%s/fashion-mnist/t10k-images-idx3-ubyte", dir);
        snprintf(vl, sizeof vl, "%s/fashion-mnist/t10k-labels-idx1-ubyte", dir);
        TRY("load train", aims_dataset_load_idx(ti, tl, NULL, &f->train_raw));
        TRY("load test", aims_dataset_load_idx(vi, vl, NULL, &f->test_raw));
        f->real = 1;
    } else {
        f->train_raw = synthetic(6000, 1);
        f->test_raw = synthetic(1000, 2);
    }
    TRY("pipeline", aims_pipeline_create(&f->p));
    TRY("pipeline", aims_pipeline_add(f->p, AIMS_STEP_KIND_SCALE, NULL));
    TRY("fit", aims_pipeline_fit_transform(f->p, f->train_raw, &f->train));
}

/* One epoch is plenty for latency and throughput goals. */
static void fixture_bundle(fixture *f, int64_t epochs)
{
    aims_model *m = NULL;
    aims_trainer *tr = NULL;
    TRY("model", aims_model_create(AIMS_MODEL_KIND_MLP, FEAT, CLASSES, &m));
    TRY("model", aims_model_add_dense(m, 256, AIMS_ACT_RELU));
    TRY("trainer", aims_trainer_create(m, &tr));
    TRY("epochs", aims_trainer_set_param_i64(tr, AIMS_TRAIN_EPOCHS, epochs));
    TRY("threads", aims_trainer_set_param_i64(tr, AIMS_TRAIN_THREADS, 2));
    TRY("fit", aims_trainer_fit(tr, f->train, NULL));
    aims_trainer_destroy(tr);
    TRY("bundle", aims_bundle_create(f->p, m, &f->b));
    aims_model_destroy(m);
}

static void fixture_fini(fixture *f)
{
    aims_bundle_destroy(f->b);
    aims_pipeline_destroy(f->p);
    aims_dataset_destroy(f->train);
    aims_dataset_destroy(f->test_raw);
    aims_dataset_destroy(f->train_raw);
}

static size_t argmax(const float *v, size_t n)
{
    size_t a = 0;
    for (size_t i = 1; i < n; i++) {
        if (v[i] > v[a]) {
            a = i;
        }
    }
    return a;
}

/* ------------------------------------------------------------------------ */
/* P7: infer service vs direct predict                                        */

typedef struct kv_opts {
    int64_t batch_delay_us; /* < 0: library default */
    int64_t inline_run;     /* < 0: library default */
} kv_opts;

static void parse_kv(int argc, char **argv, kv_opts *o)
{
    o->batch_delay_us = -1;
    o->inline_run = -1;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "batch_delay_us=", 15) == 0) {
            o->batch_delay_us = atol(argv[i] + 15);
        } else if (strncmp(argv[i], "inline=", 7) == 0) {
            o->inline_run = atol(argv[i] + 7);
        }
    }
}

static void infer(const char *transport, long iters, const char *dir, const kv_opts *o)
{
    fixture f;
    fixture_data(&f, dir);
    fixture_bundle(&f, 1);

    char url[URL_CAP];
    make_url(transport, "infer", url, sizeof url);
    aims_registry *r = NULL;
    aims_node *n = NULL;
    aims_service *s = NULL;
    aims_client *c = NULL;
    TRY("registry", aims_registry_create(&r));
    TRY("node", aims_node_create("bench-infer", &n));
    TRYN(n, "listen", aims_node_listen(n, url));
    TRYN(n, "registry", aims_node_set_registry(n, r));
    TRYN(n, "infer", aims_service_add_infer(n, "fmnist", f.b, &s));
    if (o->batch_delay_us >= 0) {
        TRYN(n, "batch delay",
             aims_service_set_param_i64(s, AIMS_SERVICE_BATCH_DELAY_US, o->batch_delay_us));
    }
    if (o->inline_run >= 0) {
        TRYN(n, "inline", aims_service_set_param_i64(s, AIMS_SERVICE_INLINE, o->inline_run));
    }
    TRYN(n, "start", aims_service_start(s));
    TRY("client", aims_client_create(&c));
    TRYC(c, "use registry", aims_client_set_registry(c, r));

    aims_msg *req = NULL, *reply = NULL;
    TRY("msg", aims_msg_create(&req));
    TRY("msg", aims_msg_create(&reply));
    const size_t rows = aims_dataset_rows(f.test_raw) < 1000 ? aims_dataset_rows(f.test_raw)
                                                              : 1000;
    const float *x = aims_dataset_features(f.test_raw);
    uint64_t *dn = xmalloc((size_t)iters * sizeof *dn);
    uint64_t *cn = xmalloc((size_t)iters * sizeof *cn);
    float scores[CLASSES];
    size_t agree = 0;
    for (long i = 0; i < WARMUP + iters; i++) {
        const float *row = x + (size_t)i % rows * FEAT;
        const uint64_t t0 = now_ns();
        TRY("predict", aims_bundle_predict_rows(f.b, AIMS_OUT_SCORES, row, 1, FEAT, scores,
                                                CLASSES));
        const size_t direct = argmax(scores, CLASSES);
        const uint64_t t1 = now_ns();
        const uint64_t dims[2] = {1, FEAT};
        aims_msg_clear(req);
        TRY("msg add", aims_msg_add(req, "x", AIMS_DT_F32, dims, 2, row, AIMS_MSG_BORROW));
        TRYC(c, "infer call",
             aims_client_call(c, "fmnist", "predict", req, reply, AIMS_CALL_IDEMPOTENT, 0));
        const uint64_t t2 = now_ns();
        size_t yi = 0;
        const void *yd = NULL;
        TRY("reply y", aims_msg_find(reply, "y", &yi));
        TRY("reply y", aims_msg_get_tensor(reply, yi, NULL, NULL, NULL, NULL, &yd, NULL));
        float cls;
        memcpy(&cls, yd, sizeof cls);
        agree += (size_t)cls == direct;
        if (i >= WARMUP) {
            dn[i - WARMUP] = t1 - t0;
            cn[i - WARMUP] = t2 - t1;
        }
    }
    const qstat qd = quantiles(dn, (size_t)iters);
    const qstat qc = quantiles(cn, (size_t)iters);
    char extra[256];
    snprintf(extra, sizeof extra,
             ", \"batch_delay_us\": %lld, \"inline\": %lld, \"data\": \"%s\", "
             "\"same_class_share\": %.4f",
             (long long)o->batch_delay_us, (long long)o->inline_run,
             f.real ? "fashion-mnist" : "synthetic",
             (double)agree / (double)(WARMUP + iters));
    emit_rt("P7", "direct-predict", "predict_us", transport, "same-thread", qd, (size_t)iters,
            extra);
    emit_rt("P7", "libaims", "call_us", transport, "threads", qc, (size_t)iters, extra);
    printf("{\"goal\": \"P7\", \"contender\": \"libaims\", \"metric\": \"added_p50_us\", "
           "\"transport\": \"%s\", \"median\": %.3f, \"unit\": \"us\", \"p50_call\": %.3f, "
           "\"p50_direct\": %.3f, \"n\": %ld, \"loadavg_1m\": %.2f%s}\n",
           transport, qc.p50 - qd.p50, qc.p50, qd.p50, iters, load1(), extra);
    fflush(stdout);
    free(dn);
    free(cn);
    aims_msg_destroy(reply);
    aims_msg_destroy(req);
    aims_client_destroy(c);
    aims_node_destroy(n);
    aims_registry_destroy(r);
    fixture_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* P8: one slow instance of four, open loop at 70 %                           */

typedef struct lb_req {
    uint64_t intended;
    uint64_t lag; /* call_async returned this long after the intended time */
    uint64_t lat;
    int status;
    atomic_int done;
} lb_req;

typedef struct lb_gen {
    aims_client *c;
    lb_req *reqs;
    size_t first, count; /* this generator's slots */
    double rate;         /* per second */
    uint64_t start;
    uint64_t seed;
    atomic_size_t *completed;
    size_t start_failures;
} lb_gen;

static _Thread_local int t_slack_set;

static aims_status sleep_handler(void *user, const char *method, const aims_msg *req,
                                 aims_msg *reply, uint64_t deadline_ns)
{
    const uint64_t svc_ns = *(const uint64_t *)user;
    if (!t_slack_set) {
        prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
        t_slack_set = 1;
    }
    const uint64_t until = now_ns() + svc_ns;
    const struct timespec ts = {(time_t)(until / 1000000000u), (long)(until % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
    return AIMS_OK;
}

static void lb_done(void *user, aims_status status, const aims_msg *reply, const char *error)
{
    lb_req *r = user;
    r->lat = now_ns() - r->intended;
    r->status = (int)status;
    atomic_store(&r->done, 1);
}

static double exp_draw(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    const double u = ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
    return -log(u);
}

static void *lb_generator(void *arg)
{
    lb_gen *g = arg;
    aims_msg *req = NULL;
    TRY("msg", aims_msg_create(&req));
    static const unsigned char payload[MSG_BYTES];
    const uint64_t dims[1] = {MSG_BYTES};
    TRY("msg add", aims_msg_add(req, "b", AIMS_DT_BYTES, dims, 1, payload, AIMS_MSG_BORROW));
    double t = 0;
    for (size_t i = 0; i < g->count; i++) {
        t += exp_draw(&g->seed) / g->rate;
        lb_req *r = &g->reqs[g->first + i];
        r->intended = g->start + (uint64_t)(t * 1e9);
        const struct timespec ts = {(time_t)(r->intended / 1000000000u),
                                    (long)(r->intended % 1000000000u)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
        }
        /* On failure to start, done already ran (the header's contract). */
        if (aims_client_call_async(g->c, "work", "run", req, 0, 0, lb_done, r) != AIMS_OK) {
            g->start_failures++;
        }
        r->lag = now_ns() - r->intended;
    }
    aims_msg_destroy(req);
    return NULL;
}

static void lb(const char *policy, double seconds, double fast_us, double slow_us)
{
    int64_t pol;
    if (strcmp(policy, "p2c") == 0) {
        pol = AIMS_LB_P2C;
    } else if (strcmp(policy, "rr") == 0) {
        pol = AIMS_LB_ROUND_ROBIN;
    } else if (strcmp(policy, "lor") == 0) {
        pol = AIMS_LB_LEAST_OUTSTANDING;
    } else if (strcmp(policy, "random") == 0) {
        pol = AIMS_LB_RANDOM;
    } else {
        fprintf(stderr, "bench_svc: policy p2c|rr|lor|random\n");
        exit(2);
    }
    enum { NI = 4 };
    static uint64_t svc_ns[NI];
    aims_registry *r = NULL;
    aims_node *nodes[NI];
    aims_service *svcs[NI];
    TRY("registry", aims_registry_create(&r));
    double capacity = 0;
    for (int i = 0; i < NI; i++) {
        const double us = i == NI - 1 ? slow_us : fast_us;
        svc_ns[i] = (uint64_t)(us * 1e3);
        capacity += 1e6 / us;
        char name[32], url[URL_CAP];
        snprintf(name, sizeof name, "bench-lb%d", i);
        snprintf(url, sizeof url, "inproc://bench-lb%d-%ld", i, (long)getpid());
        TRY("node", aims_node_create(name, &nodes[i]));
        TRYN(nodes[i], "workers", aims_node_set_param_i64(nodes[i], AIMS_NODE_WORKERS, 1));
        TRYN(nodes[i], "listen", aims_node_listen(nodes[i], url));
        TRYN(nodes[i], "registry", aims_node_set_registry(nodes[i], r));
        TRYN(nodes[i], "add", aims_service_add_handler(nodes[i], "work", sleep_handler,
                                                       &svc_ns[i], &svcs[i]));
        TRYN(nodes[i], "conc", aims_service_set_param_i64(svcs[i], AIMS_SERVICE_CONCURRENCY, 1));
        TRYN(nodes[i], "inline", aims_service_set_param_i64(svcs[i], AIMS_SERVICE_INLINE, 0));
        TRYN(nodes[i], "queue", aims_service_set_param_i64(svcs[i], AIMS_SERVICE_QUEUE_CAP,
                                                           1 << 20));
        TRYN(nodes[i], "start", aims_service_start(svcs[i]));
    }
    aims_client *c = NULL;
    TRY("client", aims_client_create(&c));
    TRYC(c, "registry", aims_client_set_registry(c, r));
    TRYC(c, "policy", aims_client_set_param_i64(c, AIMS_CLIENT_LB_POLICY, pol));
    TRYC(c, "pending", aims_client_set_param_i64(c, AIMS_CLIENT_MAX_PENDING, 1 << 20));
    TRYC(c, "timeout", aims_client_set_param_i64(c, AIMS_CLIENT_TIMEOUT_MS, 120000));

    const double rate = 0.7 * capacity;
    const size_t total = (size_t)(rate * seconds);
    lb_req *reqs = calloc(total, sizeof *reqs);
    if (!reqs) {
        exit(1);
    }
    atomic_size_t completed = 0;
    enum { NG = 2 };
    lb_gen gens[NG];
    pthread_t th[NG];
    const uint64_t start = now_ns() + 20000000u;
    for (int g = 0; g < NG; g++) {
        gens[g] = (lb_gen){c, reqs, total / NG * (size_t)g,
                           g == NG - 1 ? total - total / NG * (NG - 1) : total / NG,
                           rate / NG, start, 0x1234567ull + (uint64_t)g * 7919u, &completed, 0};
        if (pthread_create(&th[g], NULL, lb_generator, &gens[g]) != 0) {
            exit(1);
        }
    }
    for (int g = 0; g < NG; g++) {
        pthread_join(th[g], NULL);
    }
    const uint64_t gen_end = now_ns();
    /* Wait for every completion (bounded by the call timeout). */
    for (;;) {
        size_t d = 0;
        for (size_t i = 0; i < total; i++) {
            d += (size_t)atomic_load(&reqs[i].done);
        }
        if (d == total || now_ns() - gen_end > 150000000000ull) {
            break;
        }
        usleep(20000);
    }
    const double wall = (double)(now_ns() - start) / 1e9;
    const size_t skip = total / 20;
    uint64_t *lat = xmalloc(total * sizeof *lat);
    size_t n = 0, failed = 0;
    for (size_t g = 0; g < NG; g++) {
        const size_t first = gens[g].first, cnt = gens[g].count, sk = skip / NG;
        for (size_t i = first + sk; i < first + cnt; i++) {
            if (!atomic_load(&reqs[i].done) || reqs[i].status != AIMS_OK) {
                failed++;
                lat[n++] = UINT64_MAX / 2; /* a failure counts as the worst latency */
            } else {
                lat[n++] = reqs[i].lat;
            }
        }
    }
    const qstat q = quantiles(lat, n);
    /* Generator lag: if the sender falls behind, the load was not open loop. */
    for (size_t i = 0; i < total; i++) {
        lat[i] = reqs[i].lag;
    }
    const qstat lag = quantiles(lat, total);
    double per[NI];
    for (int i = 0; i < NI; i++) {
        per[i] = 0;
        aims_service_get_stat(svcs[i], AIMS_SERVICE_STAT_REQUESTS, &per[i]);
    }
    printf("{\"goal\": \"P8\", \"contender\": \"libaims-%s\", \"version\": \"%s\", "
           "\"metric\": \"latency_us\", \"policy\": \"%s\", \"p50\": %.1f, \"p99\": %.1f, "
           "\"min\": %.1f, \"max\": %.1f, \"unit\": \"us\", \"n\": %zu, \"failed\": %zu, "
           "\"load\": 0.7, \"rate_per_s\": %.1f, \"fast_us\": %.0f, \"slow_us\": %.0f, "
           "\"requests_per_instance\": [%.0f, %.0f, %.0f, %.0f], \"wall_s\": %.2f, "
           "\"send_lag_p50_us\": %.1f, \"send_lag_p99_us\": %.1f, \"loadavg_1m\": %.2f}\n",
           policy, aims_version_string(), policy, q.p50, q.p99, q.min,
           q.max > 1e12 ? -1.0 : q.max, n, failed, rate, fast_us, slow_us, per[0], per[1],
           per[2], per[3], wall, lag.p50, lag.p99, load1());
    fflush(stdout);
    free(lat);
    aims_client_destroy(c);
    for (int i = 0; i < NI; i++) {
        aims_node_destroy(nodes[i]);
    }
    aims_registry_destroy(r);
    free(reqs);
}

/* ------------------------------------------------------------------------ */
/* P9: N infer instances, closed loop                                         */

typedef struct par_arg {
    aims_client *c;
    const float *x;
    size_t rows_avail, rows_per_call;
    uint64_t until;
    size_t rows_done, calls, errors, rejected;
    unsigned seed;
    double gen_cpu_s; /* async: the generator thread's CPU over the window */
} par_arg;

static void *par_client(void *arg)
{
    par_arg *a = arg;
    aims_msg *req = NULL, *reply = NULL;
    TRY("msg", aims_msg_create(&req));
    TRY("msg", aims_msg_create(&reply));
    size_t off = (size_t)a->seed * 97 % (a->rows_avail - a->rows_per_call);
    while (now_ns() < a->until) {
        const uint64_t dims[2] = {a->rows_per_call, FEAT};
        aims_msg_clear(req);
        TRY("msg add", aims_msg_add(req, "x", AIMS_DT_F32, dims, 2, a->x + off * FEAT,
                                    AIMS_MSG_BORROW));
        const aims_status st =
            aims_client_call(a->c, "fmnist", "predict", req, reply, AIMS_CALL_IDEMPOTENT, 0);
        if (st == AIMS_OK) {
            a->rows_done += a->rows_per_call;
            a->calls++;
        } else if (st == AIMS_E_OVERLOADED) {
            a->rejected++;
        } else {
            a->errors++;
        }
        off = (off + a->rows_per_call) % (a->rows_avail - a->rows_per_call);
    }
    aims_msg_destroy(reply);
    aims_msg_destroy(req);
    return NULL;
}

static double cpu_s(void);

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The async generator: one thread keeps up to `window` calls in flight. It
 * refills the window, then sleeps until half of it has completed (low water),
 * and refills again: completions (on the instances' worker threads) signal it
 * only when it sleeps and the low water is reached, so it wakes once per
 * window/2 calls, not once per call -- each wake-up is a context switch on a
 * core the instances need (docs/P9.md). window/2 calls still queued keep every
 * instance busy while it refills. Rejections (AIMS_E_OVERLOADED, after the
 * client's own retries) are counted apart from other errors: capacity is
 * goodput, and a load within the instances' admission window has none. */
typedef struct par_gen {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_size_t inflight, calls, errors, rejected;
    atomic_int sleeping;
    size_t low;
} par_gen;

static void par_done(void *user, aims_status status, const aims_msg *reply, const char *error)
{
    (void)reply;
    (void)error;
    par_gen *g = user;
    atomic_fetch_add(status == AIMS_OK            ? &g->calls
                     : status == AIMS_E_OVERLOADED ? &g->rejected
                                                   : &g->errors,
                     1);
    const size_t left = atomic_fetch_sub(&g->inflight, 1) - 1;
    if (left <= g->low && atomic_load(&g->sleeping)) {
        pthread_mutex_lock(&g->mu);
        pthread_cond_signal(&g->cv);
        pthread_mutex_unlock(&g->mu);
    }
}

static void par_async(par_arg *a, size_t window)
{
    static par_gen g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0};
    g.low = window / 2;
    enum { NREQ = 64 };
    aims_msg *req[NREQ];
    for (size_t i = 0; i < NREQ; i++) {
        const size_t off = (i * 131 * a->rows_per_call) % (a->rows_avail - a->rows_per_call);
        const uint64_t dims[2] = {a->rows_per_call, FEAT};
        TRY("msg", aims_msg_create(&req[i]));
        TRY("msg add", aims_msg_add(req[i], "x", AIMS_DT_F32, dims, 2, a->x + off * FEAT,
                                    AIMS_MSG_BORROW));
    }
    const size_t c0 = atomic_load(&g.calls), e0 = atomic_load(&g.errors);
    const size_t r0 = atomic_load(&g.rejected);
    const double cpu0 = thread_cpu_s();
    size_t k = 0;
    while (now_ns() < a->until) {
        while (atomic_load(&g.inflight) < window) {
            atomic_fetch_add(&g.inflight, 1);
            /* req[] outlive every call (destroyed after the last done): the
             * client borrows them instead of copying 200 KB per call. */
            (void)aims_client_call_async(a->c, "fmnist", "predict", req[k++ % NREQ],
                                         AIMS_CALL_IDEMPOTENT | AIMS_CALL_KEEP_REQUEST, 0,
                                         par_done, &g);
        }
        pthread_mutex_lock(&g.mu);
        atomic_store(&g.sleeping, 1);
        while (atomic_load(&g.inflight) > g.low) {
            pthread_cond_wait(&g.cv, &g.mu);
        }
        atomic_store(&g.sleeping, 0);
        pthread_mutex_unlock(&g.mu);
    }
    /* Count what completed inside the window only. */
    a->calls = atomic_load(&g.calls) - c0;
    a->errors = atomic_load(&g.errors) - e0;
    a->rejected = atomic_load(&g.rejected) - r0;
    a->rows_done = a->calls * a->rows_per_call;
    a->gen_cpu_s = thread_cpu_s() - cpu0;
    while (atomic_load(&g.inflight) > 0) {
        usleep(200);
    }
    for (size_t i = 0; i < NREQ; i++) {
        aims_msg_destroy(req[i]);
    }
}

/* gen "sync": CLIENTS threads each call synchronously (closed loop);
 * gen "async": one thread keeps CLIENTS async calls in flight (par_async).
 * delay_us >= 0 sets AIMS_SERVICE_BATCH_DELAY_US on the instances, batch_max
 * > 0 AIMS_SERVICE_BATCH_MAX (ROWS per run; 0 keeps the default, 64 rows:
 * one 64-row call per run). Reported beside rows/s: rejections apart from
 * errors, the CPU outside the instances' runs per call (the client's hot path
 * and the node's queueing, on a machine whose cores the instances need) and
 * the generator thread's own share of it. */
static void par(int ninst, double seconds, const char *dir, size_t rows_per_call, int nclients,
                const char *gen, long delay_us, long batch_max)
{
    const int async = strcmp(gen, "async") == 0;
    fixture f;
    fixture_data(&f, dir);
    fixture_bundle(&f, 1);
    enum { MAXI = 8, MAXC = 16 };
    if (ninst < 1 || ninst > MAXI || nclients < 1 || nclients > (async ? 4096 : MAXC)) {
        fprintf(stderr, "bench_svc: 1..8 instances, 1..16 clients (async: 1..4096 calls)\n");
        exit(2);
    }
    aims_registry *r = NULL;
    aims_node *nodes[MAXI];
    aims_service *svcs[MAXI];
    TRY("registry", aims_registry_create(&r));
    for (int i = 0; i < ninst; i++) {
        char name[32], url[URL_CAP];
        aims_service *s = NULL;
        snprintf(name, sizeof name, "bench-par%d", i);
        snprintf(url, sizeof url, "inproc://bench-par%d-%ld", i, (long)getpid());
        TRY("node", aims_node_create(name, &nodes[i]));
        TRYN(nodes[i], "workers", aims_node_set_param_i64(nodes[i], AIMS_NODE_WORKERS, 1));
        TRYN(nodes[i], "listen", aims_node_listen(nodes[i], url));
        TRYN(nodes[i], "registry", aims_node_set_registry(nodes[i], r));
        TRYN(nodes[i], "infer", aims_service_add_infer(nodes[i], "fmnist", f.b, &s));
        TRYN(nodes[i], "conc", aims_service_set_param_i64(s, AIMS_SERVICE_CONCURRENCY, 1));
        TRYN(nodes[i], "inline", aims_service_set_param_i64(s, AIMS_SERVICE_INLINE, 0));
        if (delay_us >= 0) {
            TRYN(nodes[i], "delay",
                 aims_service_set_param_i64(s, AIMS_SERVICE_BATCH_DELAY_US, delay_us));
        }
        if (batch_max > 0) {
            TRYN(nodes[i], "batch", aims_service_set_param_i64(s, AIMS_SERVICE_BATCH_MAX,
                                                               batch_max));
        }
        TRYN(nodes[i], "start", aims_service_start(s));
        svcs[i] = s;
    }
    aims_client *c = NULL;
    TRY("client", aims_client_create(&c));
    TRYC(c, "registry", aims_client_set_registry(c, r));
    const size_t avail = aims_dataset_rows(f.test_raw);
    par_arg args[MAXC];
    pthread_t th[MAXC];
    /* 0.3 s warm-up, then the timed window. */
    for (int pass = 0; pass < 2; pass++) {
        double busy0 = 0;
        for (int i = 0; i < ninst; i++) {
            double b = 0;
            aims_service_get_stat(svcs[i], AIMS_SERVICE_STAT_BUSY_NS, &b);
            busy0 += b;
        }
        const double cpu0 = cpu_s();
        const uint64_t t0 = now_ns();
        const uint64_t until = t0 + (uint64_t)((pass ? seconds : 0.3) * 1e9);
        const int nthreads = async ? 1 : nclients;
        for (int i = 0; i < nthreads; i++) {
            args[i] = (par_arg){.c = c, .x = aims_dataset_features(f.test_raw),
                                .rows_avail = avail, .rows_per_call = rows_per_call,
                                .until = until, .seed = (unsigned)i + 1};
            if (async) {
                par_async(&args[i], (size_t)nclients);
            } else if (pthread_create(&th[i], NULL, par_client, &args[i]) != 0) {
                exit(1);
            }
        }
        size_t rows = 0, calls = 0, errors = 0, rejected = 0;
        double gen_cpu = 0;
        for (int i = 0; i < nthreads; i++) {
            if (!async) {
                pthread_join(th[i], NULL);
            }
            rows += args[i].rows_done;
            calls += args[i].calls;
            errors += args[i].errors;
            rejected += args[i].rejected;
            gen_cpu += args[i].gen_cpu_s;
        }
        const double wall = (double)(now_ns() - t0) / 1e9;
        const double cpu = cpu_s() - cpu0;
        double busy = -busy0;
        for (int i = 0; i < ninst; i++) {
            double b = 0;
            aims_service_get_stat(svcs[i], AIMS_SERVICE_STAT_BUSY_NS, &b);
            busy += b;
        }
        if (pass == 1) {
            printf("{\"goal\": \"P9\", \"contender\": \"libaims\", \"version\": \"%s\", "
                   "\"metric\": \"rows_per_s\", \"instances\": %d, \"median\": %.1f, "
                   "\"unit\": \"rows/s\", \"calls_per_s\": %.1f, \"rows_per_call\": %zu, "
                   "\"clients\": %d, \"gen\": \"%s\", \"batch_delay_us\": %ld, \"batch_max\": %ld, "
                   "\"errors\": %zu, \"rejected\": %zu, \"seconds\": %.2f, \"data\": \"%s\", "
                   "\"busy_instances\": %.3f, \"rows_per_busy_s\": %.1f, \"cpu_s\": %.3f, "
                   "\"overhead_us_per_call\": %.2f, \"gen_cpu_us_per_call\": %.2f, "
                   "\"loadavg_1m\": %.2f}\n",
                   aims_version_string(), ninst, (double)rows / wall, (double)calls / wall,
                   rows_per_call, nclients, gen, delay_us, batch_max, errors, rejected, wall,
                   f.real ? "fashion-mnist" : "synthetic",
                   busy / 1e9 / wall, busy > 0 ? (double)rows / (busy / 1e9) : 0.0, cpu,
                   calls > 0 ? (cpu - busy / 1e9) * 1e6 / (double)calls : 0.0,
                   calls > 0 && async ? gen_cpu * 1e6 / (double)calls : 0.0, load1());
            fflush(stdout);
        }
    }
    aims_client_destroy(c);
    for (int i = 0; i < ninst; i++) {
        aims_node_destroy(nodes[i]);
    }
    aims_registry_destroy(r);
    fixture_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* P10: the seed's example through the services                               */

/* The seed's own figures (issue 4, P10). */
#define SEED_PRE_S 5.0
#define SEED_INFER_S 3.0
#define SEED_TRAIN_S 600.0

/* CPU seconds of this process so far: next to a wall time on a shared 2-core
 * machine, it shows how much of the wall time was waiting for a core. */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static double g_cpu0;

static void emit_seed(const char *step, double s, double seed_s, const char *extra)
{
    const double cpu = cpu_s();
    printf("{\"goal\": \"P10\", \"contender\": \"libaims\", \"version\": \"%s\", \"metric\": "
           "\"%s_s\", \"median\": %.6f, \"unit\": \"s\", \"seed_s\": %.1f, \"ratio\": %.3g, "
           "\"peer\": \"seed-example\", \"target\": \"show the ratio\", \"loadavg_1m\": "
           "%.2f, \"process_cpu_s\": %.3f%s}\n",
           aims_version_string(), step, s, seed_s, s / seed_s, load1(), cpu - g_cpu0, extra);
    g_cpu0 = cpu;
    fflush(stdout);
}

static int32_t seed_state(aims_msg *reply)
{
    size_t i = 0;
    const void *d = NULL;
    int32_t st = -1;
    if (aims_msg_find(reply, "state", &i) == AIMS_OK &&
        aims_msg_get_tensor(reply, i, NULL, NULL, NULL, NULL, &d, NULL) == AIMS_OK && d) {
        memcpy(&st, d, sizeof st);
    }
    return st;
}

static void seed(const char *dir)
{
    fixture f;
    fixture_data(&f, dir);
    aims_registry *r = NULL;
    aims_node *n = NULL;
    aims_service *spre = NULL, *strain = NULL, *sinf = NULL;
    char url[URL_CAP];
    make_url("inproc", "seed", url, sizeof url);
    TRY("registry", aims_registry_create(&r));
    TRY("node", aims_node_create("bench-seed", &n));
    TRYN(n, "listen", aims_node_listen(n, url));
    TRYN(n, "registry", aims_node_set_registry(n, r));
    TRYN(n, "pre", aims_service_add_preprocess(n, "preprocess", f.p, &spre));
    TRYN(n, "train", aims_service_add_train(n, "train", f.p, &strain));
    TRYN(n, "start", aims_service_start(spre));
    TRYN(n, "start", aims_service_start(strain));
    aims_client *c = NULL;
    TRY("client", aims_client_create(&c));
    TRYC(c, "registry", aims_client_set_registry(c, r));
    aims_msg *req = NULL, *reply = NULL;
    TRY("msg", aims_msg_create(&req));
    TRY("msg", aims_msg_create(&reply));
    const float *tx = aims_dataset_features(f.test_raw);
    const int32_t *ty = aims_dataset_labels(f.test_raw);
    char extra[256];
    const char *data = f.real ? "fashion-mnist" : "synthetic";

    /* 1. preprocess 100 records, one call each. */
    g_cpu0 = cpu_s();
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < 100; i++) {
        const uint64_t dims[2] = {1, FEAT};
        aims_msg_clear(req);
        TRY("msg", aims_msg_add(req, "x", AIMS_DT_F32, dims, 2, tx + i * FEAT, AIMS_MSG_BORROW));
        TRYC(c, "transform", aims_client_call(c, "preprocess", "transform", req, reply,
                                              AIMS_CALL_IDEMPOTENT, 0));
    }
    snprintf(extra, sizeof extra, ", \"records\": 100, \"calls\": 100, \"data\": \"%s\"", data);
    emit_seed("preprocess_100", (double)(now_ns() - t0) / 1e9, SEED_PRE_S, extra);

    /* 2. train through the train service: submit, poll status, fetch result. */
    const size_t rows = aims_dataset_rows(f.train);
    const uint64_t xd[2] = {rows, FEAT}, yd[1] = {rows};
    static const char spec[] = "kind=mlp\nhidden=256\nactivation=relu\nclasses=10\n"
                               "epochs=5\nlr=0.1\nmomentum=0.9\nbatch=128\ntrain_threads=2\n";
    static const char job[] = "bench-seed-job-1";
    const uint64_t jd[1] = {sizeof job - 1}, sd[1] = {sizeof spec - 1};
    t0 = now_ns();
    aims_msg_clear(req);
    TRY("msg", aims_msg_add(req, "job", AIMS_DT_BYTES, jd, 1, job, AIMS_MSG_BORROW));
    TRY("msg", aims_msg_add(req, "x", AIMS_DT_F32, xd, 2, aims_dataset_features(f.train),
                            AIMS_MSG_BORROW));
    TRY("msg", aims_msg_add(req, "y", AIMS_DT_I32, yd, 1, aims_dataset_labels(f.train),
                            AIMS_MSG_BORROW));
    TRY("msg", aims_msg_add(req, "spec", AIMS_DT_BYTES, sd, 1, spec, AIMS_MSG_BORROW));
    TRYC(c, "submit", aims_client_call(c, "train", "submit", req, reply, 0, 600000));
    int32_t st = seed_state(reply);
    aims_msg_clear(req);
    TRY("msg", aims_msg_add(req, "job", AIMS_DT_BYTES, jd, 1, job, AIMS_MSG_BORROW));
    size_t hi = 0, hn = 0; /* status/result need the secret handle submit returned */
    const void *hp = NULL;
    TRY("msg", aims_msg_find(reply, "handle", &hi));
    TRY("msg", aims_msg_get_tensor(reply, hi, NULL, NULL, NULL, NULL, &hp, &hn));
    const uint64_t hd[1] = {hn};
    TRY("msg", aims_msg_add(req, "handle", AIMS_DT_BYTES, hd, 1, hp, 0));
    while (st == 0 || st == 1) {
        usleep(20000);
        TRYC(c, "status", aims_client_call(c, "train", "status", req, reply, 0, 0));
        st = seed_state(reply);
    }
    if (st != 2) {
        fprintf(stderr, "bench_svc: train job ended in state %d: %s\n", (int)st,
                aims_msg_error(reply));
        exit(1);
    }
    TRYC(c, "result", aims_client_call(c, "train", "result", req, reply, 0, 0));
    const double train_s = (double)(now_ns() - t0) / 1e9;
    size_t bi = 0, blen = 0;
    const void *bdata = NULL;
    TRY("bundle", aims_msg_find(reply, "bundle", &bi));
    TRY("bundle", aims_msg_get_tensor(reply, bi, NULL, NULL, NULL, NULL, &bdata, &blen));
    aims_bundle *b = NULL;
    TRY("bundle parse", aims_bundle_parse(bdata, blen, &b));
    /* Test accuracy of the bundle the service produced (raw test rows). */
    const size_t trows = aims_dataset_rows(f.test_raw);
    float *scores = xmalloc(trows * CLASSES * sizeof *scores);
    TRY("predict", aims_bundle_predict_rows(b, AIMS_OUT_SCORES, tx, trows, FEAT, scores,
                                            trows * CLASSES));
    size_t hit = 0;
    for (size_t i = 0; i < trows; i++) {
        hit += argmax(scores + i * CLASSES, CLASSES) == (size_t)ty[i];
    }
    free(scores);
    snprintf(extra, sizeof extra,
             ", \"accuracy\": %.4f, \"train_rows\": %zu, \"spec\": \"mlp 784-256-10 relu, "
             "5 epochs, SGD lr 0.1 m 0.9, batch 128, 2 threads\", \"data\": \"%s\"",
             (double)hit / (double)trows, rows, data);
    emit_seed("train", train_s, SEED_TRAIN_S, extra);

    /* 3. infer 100 records through an infer service over that bundle. */
    TRYN(n, "infer", aims_service_add_infer(n, "infer", b, &sinf));
    TRYN(n, "start", aims_service_start(sinf));
    g_cpu0 = cpu_s();
    size_t ok = 0;
    t0 = now_ns();
    for (size_t i = 0; i < 100; i++) {
        const uint64_t dims[2] = {1, FEAT};
        aims_msg_clear(req);
        TRY("msg", aims_msg_add(req, "x", AIMS_DT_F32, dims, 2, tx + i * FEAT, AIMS_MSG_BORROW));
        TRYC(c, "predict", aims_client_call(c, "infer", "predict", req, reply,
                                            AIMS_CALL_IDEMPOTENT, 0));
        size_t yi = 0;
        const void *y = NULL;
        float cls;
        TRY("y", aims_msg_find(reply, "y", &yi));
        TRY("y", aims_msg_get_tensor(reply, yi, NULL, NULL, NULL, NULL, &y, NULL));
        memcpy(&cls, y, sizeof cls);
        ok += (int32_t)cls == ty[i];
    }
    const double infer_s = (double)(now_ns() - t0) / 1e9;
    snprintf(extra, sizeof extra,
             ", \"records\": 100, \"calls\": 100, \"accuracy\": %.4f, \"data\": \"%s\"",
             (double)ok / 100.0, data);
    emit_seed("infer_100", infer_s, SEED_INFER_S, extra);

    aims_msg_destroy(reply);
    aims_msg_destroy(req);
    aims_client_destroy(c);
    aims_node_destroy(n);
    aims_bundle_destroy(b);
    aims_registry_destroy(r);
    fixture_fini(&f);
}

/* ------------------------------------------------------------------------ */

static long arg_long(int argc, char **argv, int i, long def)
{
    return argc > i ? atol(argv[i]) : def;
}

static double arg_f64(int argc, char **argv, int i, double def)
{
    return argc > i ? atof(argv[i]) : def;
}

static const char *arg_str(int argc, char **argv, int i, const char *def)
{
    return argc > i ? argv[i] : def;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    atexit(cleanup_dir); /* also on the exit(1) of a failed call */
    if (argc < 2) {
        fprintf(stderr, "usage: bench_svc rt-thread|rt-proc|infer|lb|par|seed ... "
                        "(see the comment at the top of bench/bench_svc.c)\n");
        return 2;
    }
    const char *mode = argv[1];
    if (strcmp(mode, "rt-thread") == 0 && argc > 2) {
        rt_thread(argv[2], arg_long(argc, argv, 3, 20000));
    } else if (strcmp(mode, "rt-proc") == 0 && argc > 2) {
        rt_proc(argv[2], arg_long(argc, argv, 3, 20000));
    } else if (strcmp(mode, "infer") == 0 && argc > 2) {
        kv_opts o;
        parse_kv(argc - 5 > 0 ? argc - 5 : 0, argv + 5, &o);
        infer(argv[2], arg_long(argc, argv, 3, 20000), arg_str(argc, argv, 4, "-"), &o);
    } else if (strcmp(mode, "lb") == 0 && argc > 2) {
        lb(argv[2], arg_f64(argc, argv, 3, 5.0), arg_f64(argc, argv, 4, 1000.0),
           arg_f64(argc, argv, 5, 3000.0));
    } else if (strcmp(mode, "par") == 0 && argc > 2) {
        par(atoi(argv[2]), arg_f64(argc, argv, 3, 3.0), arg_str(argc, argv, 4, "-"),
            (size_t)arg_long(argc, argv, 5, 64), (int)arg_long(argc, argv, 6, 8),
            arg_str(argc, argv, 7, "sync"), arg_long(argc, argv, 8, -1),
            arg_long(argc, argv, 9, 0));
    } else if (strcmp(mode, "seed") == 0) {
        seed(arg_str(argc, argv, 2, "-"));
    } else {
        fprintf(stderr, "bench_svc: bad arguments (see bench/bench_svc.c)\n");
        return 2;
    }
    cleanup_dir();
    return 0;
}
