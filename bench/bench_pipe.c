/*
 * bench_pipe.c -- goal P14 (issue 15 item 5): pipelined throughput of one
 * client connection, many calls in flight, through libaims's public API.
 *
 * usage: bench_pipe echo T WINDOW SECONDS
 *          64-byte echo calls, WINDOW in flight, over T = ipc | tcp; the node
 *          runs in a forked process (as peer_zmq_pipe's ROUTER does).
 *        bench_pipe infer T WINDOW SECONDS ROWS [DATA]
 *          the same with a 784-256-10 MLP infer service; ROWS rows per call
 *          (Fashion-MNIST test rows from DATA, or synthetic) -> rows/s
 *          through one tcp connection with pipelining.
 *
 * Why this shape. One light generator thread keeps WINDOW asynchronous calls
 * (aims_client_call_async) in flight on the client's single connection to the
 * node: it sends until the window is full, then sleeps until a completion
 * frees a slot and refills every freed slot at once. Completions run on the
 * client's I/O thread and only signal the generator when it sleeps, so the
 * generator wakes at most once per burst of replies, not once per reply. The
 * ZeroMQ peer (bench/peers/peer_zmq_pipe.c) runs the same loop with a DEALER
 * socket against a ROUTER echo server in a forked process: same payload, same
 * window, same timing (0.3 s warm-up, then SECONDS timed; calls/s = replies
 * received in the timed window / its length). The registry is a local object
 * in this process holding the child's address, so every call goes through
 * the full by-name path (resolve, balance, send, await).
 *
 * Output: one JSON line per measurement on stdout.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <aims/aims.h>

#include "bench_proc.h"

#define MSG_BYTES 64
#define URL_CAP 256
#define FEAT 784

static void fail(const char *what, aims_status rc, const char *why)
{
    fprintf(stderr, "bench_pipe: %s: %s (%s)\n", what, aims_strerror(rc),
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

/* ---- the server process ---------------------------------------------------- */

static aims_status echo_handler(void *user, const char *method, const aims_msg *req,
                                aims_msg *reply, uint64_t deadline_ns)
{
    (void)user;
    (void)method;
    (void)deadline_ns;
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

/* A 784-256-10 MLP bundle (scale 1/255) trained one epoch on the given rows. */
static aims_bundle *make_bundle(const aims_dataset *train)
{
    aims_pipeline *p = NULL;
    aims_dataset *tx = NULL;
    aims_model *m = NULL;
    aims_trainer *tr = NULL;
    aims_bundle *b = NULL;
    size_t step = 0;
    TRY("pipeline", aims_pipeline_create(&p));
    TRY("scale", aims_pipeline_add(p, AIMS_STEP_KIND_SCALE, &step));
    TRY("factor", aims_pipeline_set_step_param_f64(p, step, AIMS_STEP_FACTOR, 1.0 / 255.0));
    TRY("fit", aims_pipeline_fit_transform(p, train, &tx));
    TRY("model", aims_model_create(AIMS_MODEL_KIND_MLP, FEAT, 10, &m));
    TRY("model", aims_model_add_dense(m, 256, AIMS_ACT_RELU));
    TRY("trainer", aims_trainer_create(m, &tr));
    TRY("epochs", aims_trainer_set_param_i64(tr, AIMS_TRAIN_EPOCHS, 1));
    TRY("fit", aims_trainer_fit(tr, tx, NULL));
    TRY("bundle", aims_bundle_create(p, m, &b));
    aims_trainer_destroy(tr);
    aims_dataset_destroy(tx);
    aims_model_destroy(m);
    aims_pipeline_destroy(p);
    return b;
}

static aims_dataset *load_rows(const char *dir)
{
    aims_dataset *d = NULL;
    if (dir != NULL && strcmp(dir, "-") != 0) {
        char img[512], lab[512];
        struct stat st;
        snprintf(img, sizeof img, "%s/fashion-mnist/t10k-images-idx3-ubyte", dir);
        snprintf(lab, sizeof lab, "%s/fashion-mnist/t10k-labels-idx1-ubyte", dir);
        if (stat(img, &st) == 0 && aims_dataset_load_idx(img, lab, NULL, &d) == AIMS_OK) {
            return d;
        }
    }
    enum { N = 10000 };
    float *x = malloc((size_t)N * FEAT * sizeof *x);
    int32_t *y = malloc((size_t)N * sizeof *y);
    if (x == NULL || y == NULL) {
        exit(1);
    }
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < (size_t)N * FEAT; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = (float)(s >> 56);
    }
    for (size_t i = 0; i < N; i++) {
        y[i] = (int32_t)(i % 10);
    }
    TRY("dataset", aims_dataset_create_dense(N, FEAT, x, y, &d));
    free(x);
    free(y);
    return d;
}

/* Fork the node: it writes its bound address to a pipe and serves until the
 * parent closes the other pipe. Returns the child's pid. */
static pid_t spawn_node(const char *transport, const aims_bundle *b, char *addr,
                        int *down_w, char *dir)
{
    char url[URL_CAP];
    if (strcmp(transport, "tcp") == 0) {
        snprintf(url, sizeof url, "tcp://127.0.0.1:0");
    } else if (strcmp(transport, "ipc") == 0) {
        snprintf(dir, 64, "/tmp/bench-pipe-XXXXXX");
        if (!mkdtemp(dir)) {
            fprintf(stderr, "bench_pipe: mkdtemp: %s\n", strerror(errno));
            exit(1);
        }
        snprintf(url, sizeof url, "ipc://%s/node.sock", dir);
    } else {
        fprintf(stderr, "bench_pipe: transport ipc | tcp\n");
        exit(2);
    }
    int up[2], down[2];
    if (pipe(up) != 0 || pipe(down) != 0) {
        exit(1);
    }
    const pid_t pid = fork();
    if (pid < 0) {
        exit(1);
    }
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        aims_node *n = NULL;
        aims_service *s = NULL;
        TRY("node", aims_node_create("bench-pipe", &n));
        TRY("listen", aims_node_listen(n, url));
        if (b != NULL) {
            TRY("infer", aims_service_add_infer(n, "svc", b, &s));
        } else {
            TRY("echo", aims_service_add_handler(n, "svc", echo_handler, NULL, &s));
        }
        TRY("queue", aims_service_set_param_i64(s, AIMS_SERVICE_QUEUE_CAP, 1 << 16));
        TRY("start", aims_service_start(s));
        char a[URL_CAP] = {0};
        size_t len = 0;
        TRY("address", aims_node_get_address(n, 0, a, sizeof a, &len));
        if (write(up[1], a, sizeof a) != (ssize_t)sizeof a) {
            _exit(1);
        }
        char c;
        while (read(down[0], &c, 1) > 0) {
        }
        aims_node_destroy(n);
        _exit(0);
    }
    close(up[1]);
    close(down[0]);
    size_t got = 0;
    while (got < URL_CAP) {
        const ssize_t r = read(up[0], addr + got, URL_CAP - got);
        if (r <= 0) {
            fprintf(stderr, "bench_pipe: server process did not start\n");
            exit(1);
        }
        got += (size_t)r;
    }
    addr[URL_CAP - 1] = '\0';
    close(up[0]);
    *down_w = down[1];
    return pid;
}

/* ---- the generator ----------------------------------------------------------- */

typedef struct gen {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_size_t inflight;
    atomic_size_t done, failed;
    atomic_int sleeping;
    size_t window;
} gen;

static void on_done(void *user, aims_status status, const aims_msg *reply, const char *error)
{
    (void)reply;
    (void)error;
    gen *g = user;
    if (status != AIMS_OK) {
        atomic_fetch_add(&g->failed, 1);
    }
    atomic_fetch_add(&g->done, 1);
    atomic_fetch_sub(&g->inflight, 1);
    /* Only the first completion after the generator went to sleep wakes it
     * (one signal per burst of replies, as ZeroMQ's mailbox): the later ones
     * would only meet it on g->mu while it wakes. */
    if (atomic_load(&g->sleeping) && atomic_exchange(&g->sleeping, 0)) {
        pthread_mutex_lock(&g->mu);
        pthread_cond_signal(&g->cv);
        pthread_mutex_unlock(&g->mu);
    }
}

/* Keep g->window calls in flight until `until`; returns calls started. */
static size_t drive(aims_client *c, gen *g, const aims_msg *req, uint64_t until)
{
    size_t started = 0;
    while (now_ns() < until) {
        while (atomic_load(&g->inflight) < g->window) {
            atomic_fetch_add(&g->inflight, 1);
            started++;
            /* done runs exactly once, also when the call cannot start; req
             * outlives every call, so the client borrows it */
            (void)aims_client_call_async(c, "svc", "predict", req,
                                         AIMS_CALL_IDEMPOTENT | AIMS_CALL_KEEP_REQUEST, 10000,
                                         on_done, g);
        }
        pthread_mutex_lock(&g->mu);
        for (;;) {
            atomic_store(&g->sleeping, 1); /* before the check: on_done's Dekker pair */
            if (atomic_load(&g->inflight) < g->window) {
                break;
            }
            pthread_cond_wait(&g->cv, &g->mu);
        }
        atomic_store(&g->sleeping, 0);
        pthread_mutex_unlock(&g->mu);
    }
    return started;
}

static void run(const char *mode, const char *transport, size_t window, double seconds,
                size_t rows, const char *dir)
{
    const int infer = strcmp(mode, "infer") == 0;
    aims_dataset *d = NULL;
    aims_bundle *b = NULL;
    if (infer) {
        d = load_rows(dir);
        b = make_bundle(d);
    }
    char addr[URL_CAP] = {0}, tmpdir[64] = {0};
    int down_w = -1;
    const pid_t pid = spawn_node(transport, b, addr, &down_w, tmpdir);

    aims_registry *r = NULL;
    aims_instance id;
    aims_client *c = NULL;
    aims_msg *req = NULL;
    TRY("registry", aims_registry_create(&r));
    TRY("register", aims_registry_register(r, "svc", addr, 1, 3600000, &id));
    TRY("client", aims_client_create(&c));
    TRY("use registry", aims_client_set_registry(c, r));
    TRY("pending", aims_client_set_param_i64(c, AIMS_CLIENT_MAX_PENDING, 1 << 16));
    TRY("msg", aims_msg_create(&req));
    static unsigned char payload[MSG_BYTES];
    memset(payload, 'a', sizeof payload);
    if (infer) {
        const uint64_t dims[2] = {rows, FEAT};
        TRY("add", aims_msg_add(req, "x", AIMS_DT_F32, dims, 2, aims_dataset_features(d),
                                AIMS_MSG_BORROW));
    } else {
        const uint64_t dims[1] = {MSG_BYTES};
        TRY("add", aims_msg_add(req, "b", AIMS_DT_BYTES, dims, 1, payload, AIMS_MSG_BORROW));
    }
    gen g;
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    atomic_init(&g.inflight, 0);
    atomic_init(&g.done, 0);
    atomic_init(&g.failed, 0);
    atomic_init(&g.sleeping, 0);
    g.window = window;
    (void)drive(c, &g, req, now_ns() + 300000000u); /* warm-up */
    const size_t d0 = atomic_load(&g.done);
    const double cpu0 = proc_cpu_s(getpid()) + proc_cpu_s(pid);
    const uint64_t t0 = now_ns();
    (void)drive(c, &g, req, t0 + (uint64_t)(seconds * 1e9));
    const uint64_t t1 = now_ns();
    const size_t calls = atomic_load(&g.done) - d0;
    const double cpu = proc_cpu_s(getpid()) + proc_cpu_s(pid) - cpu0;
    const double cpu_us = calls ? cpu * 1e6 / (double)calls : 0;
    /* Let the last window finish before tearing down. */
    while (atomic_load(&g.inflight) > 0) {
        usleep(1000);
    }
    const double wall = (double)(t1 - t0) / 1e9;
    const double cps = (double)calls / wall;
    if (infer) {
        printf("{\"goal\": \"P14\", \"contender\": \"libaims\", \"version\": \"%s\", "
               "\"metric\": \"rows_per_s\", \"transport\": \"%s\", \"window\": %zu, "
               "\"rows_per_call\": %zu, \"value\": %.1f, \"calls_per_s\": %.1f, "
               "\"unit\": \"rows/s\", \"calls\": %zu, \"failed\": %zu, \"seconds\": %.2f, "
               "\"cpu_us_per_call\": %.2f, \"loadavg_1m\": %.2f}\n",
               aims_version_string(), transport, window, rows, cps * (double)rows, cps, calls,
               atomic_load(&g.failed), wall, cpu_us, load1());
    } else {
        printf("{\"goal\": \"P14\", \"contender\": \"libaims\", \"version\": \"%s\", "
               "\"metric\": \"calls_per_s\", \"transport\": \"%s\", \"window\": %zu, "
               "\"bytes\": %d, \"value\": %.1f, \"unit\": \"calls/s\", \"calls\": %zu, "
               "\"failed\": %zu, \"seconds\": %.2f, \"cpu_us_per_call\": %.2f, "
               "\"loadavg_1m\": %.2f}\n",
               aims_version_string(), transport, window, MSG_BYTES, cps, calls,
               atomic_load(&g.failed), wall, cpu_us, load1());
    }
    fflush(stdout);
    aims_client_destroy(c);
    aims_registry_destroy(r);
    aims_msg_destroy(req);
    close(down_w);
    int st = 0;
    waitpid(pid, &st, 0);
    if (tmpdir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) {
            fprintf(stderr, "bench_pipe: could not remove %s\n", tmpdir);
        }
    }
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
    aims_bundle_destroy(b);
    aims_dataset_destroy(d);
}

int main(int argc, char **argv)
{
    if (argc < 5 || (strcmp(argv[1], "echo") != 0 && strcmp(argv[1], "infer") != 0)) {
        fprintf(stderr, "usage: bench_pipe echo ipc|tcp WINDOW SECONDS\n"
                        "       bench_pipe infer ipc|tcp WINDOW SECONDS ROWS [DATA]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    const long window = strtol(argv[3], NULL, 10);
    const double seconds = strtod(argv[4], NULL);
    const long rows = argc > 5 ? strtol(argv[5], NULL, 10) : 1;
    if (window < 1 || window > 65536 || seconds <= 0 || rows < 1 || rows > 1000) {
        fprintf(stderr, "bench_pipe: WINDOW 1..65536, SECONDS > 0, ROWS 1..1000\n");
        return 2;
    }
    run(argv[1], argv[2], (size_t)window, seconds, (size_t)rows, argc > 6 ? argv[6] : NULL);
    return 0;
}
