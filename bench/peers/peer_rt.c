/*
 * peer_rt.c -- the transport peers of goal P6/P7 (issue 4): ZeroMQ 4.3 and
 * NNG 1.5 measured with the same harness libaims's bench_svc.c uses.
 *
 * Built twice: -DPEER_ZMQ -> peer_zmq_rt, -DPEER_NNG -> peer_nng_rt. A thin
 * socket layer (open REQ/REP/PUSH/PULL, bind with the bound address written
 * back, connect, send, recv) hides the two APIs so both run exactly the same
 * loops.
 *
 * usage: peer_{zmq,nng}_rt MODE TRANSPORT [ITERS]
 *   MODE rt-thread  REQ/REP 64-byte round trips; REP server on a second thread
 *   MODE rt-proc    the same with the REP server in a forked process
 *   MODE thr        one-way PUSH/PULL throughput, 64-byte messages, the
 *                   sender on a second thread (ITERS messages)
 *   MODE pipe       reference: 64-byte ping-pong over two OS pipes between two
 *                   processes (TRANSPORT "free", or "pinned" = both on CPU 0),
 *                   the floor the cross-core wake-up sets on this machine
 *   MODE all        every combination, each in a fresh forked process
 *   TRANSPORT       inproc | ipc | tcp  (rt-proc: ipc | tcp)
 *
 * Why a fresh process per measurement: neither library's context survives
 * fork() (ZeroMQ's I/O threads, NNG's task pool), so a measurement that forks a
 * server must start from a process that has not created one yet.
 *
 * Round trips: 2,000 warm-up trips, then ITERS (default 20,000) timed one by
 * one with CLOCK_MONOTONIC; p50/p99/min/max/mean in microseconds. Best
 * configuration on both sides: ZeroMQ's defaults are its fast path; NNG gets
 * socket buffers (NNG_OPT_SENDBUF/RECVBUF = 1024) for the throughput test,
 * without which push0 hands over one message per wake-up.
 *
 * Output: one JSON line per measurement on stdout.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(PEER_ZMQ)
#include <zmq.h>
#elif defined(PEER_NNG)
#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#else
#error "define PEER_ZMQ or PEER_NNG"
#endif

#define MSG_BYTES 64
#define WARMUP 2000
#define URL_CAP 256

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "peer_rt: %s: %s\n", what, why);
    exit(1);
}

/* ------------------------------------------------------------------------ */
/* Socket layer                                                               */

enum kind { K_REQ, K_REP, K_PUSH, K_PULL };

#if defined(PEER_ZMQ)
#define CONTENDER "zeromq"
static void *g_ctx;

typedef struct psock {
    void *s;
} psock;

static const char *peer_version(void)
{
    static char v[32];
    int a, b, c;
    zmq_version(&a, &b, &c);
    snprintf(v, sizeof v, "%d.%d.%d", a, b, c);
    return v;
}

static psock sock_open(enum kind k)
{
    static const int types[] = {ZMQ_REQ, ZMQ_REP, ZMQ_PUSH, ZMQ_PULL};
    if (!g_ctx) {
        g_ctx = zmq_ctx_new();
        if (!g_ctx) {
            die("zmq_ctx_new", zmq_strerror(errno));
        }
    }
    psock p = {zmq_socket(g_ctx, types[k])};
    if (!p.s) {
        die("zmq_socket", zmq_strerror(errno));
    }
    const int linger = 0;
    zmq_setsockopt(p.s, ZMQ_LINGER, &linger, sizeof linger);
    return p;
}

/* url: "tcp://127.0.0.1:0" is rewritten to ZeroMQ's "*" port syntax. */
static void sock_bind(psock p, const char *url, char *bound, size_t cap)
{
    char u[URL_CAP];
    const size_t n = strlen(url);
    if (n > 2 && strcmp(url + n - 2, ":0") == 0) {
        snprintf(u, sizeof u, "%.*s:*", (int)(n - 2), url);
    } else {
        snprintf(u, sizeof u, "%s", url);
    }
    if (zmq_bind(p.s, u) != 0) {
        die(u, zmq_strerror(errno));
    }
    size_t len = cap;
    if (zmq_getsockopt(p.s, ZMQ_LAST_ENDPOINT, bound, &len) != 0) {
        die("ZMQ_LAST_ENDPOINT", zmq_strerror(errno));
    }
}

static void sock_connect(psock p, const char *url)
{
    if (zmq_connect(p.s, url) != 0) {
        die(url, zmq_strerror(errno));
    }
}

static void sock_send(psock p, const void *buf, size_t len)
{
    if (zmq_send(p.s, buf, len, 0) < 0) {
        die("zmq_send", zmq_strerror(errno));
    }
}

static size_t sock_recv(psock p, void *buf, size_t cap)
{
    const int n = zmq_recv(p.s, buf, cap, 0);
    if (n < 0) {
        die("zmq_recv", zmq_strerror(errno));
    }
    return (size_t)n;
}

static void sock_close(psock p)
{
    zmq_close(p.s);
}

static void peer_fini(void)
{
    if (g_ctx) {
        zmq_ctx_term(g_ctx);
        g_ctx = NULL;
    }
}

#else /* PEER_NNG */
#define CONTENDER "nng"

typedef struct psock {
    nng_socket s;
} psock;

static const char *peer_version(void)
{
    return nng_version();
}

static void nng_check(int rv, const char *what)
{
    if (rv != 0) {
        die(what, nng_strerror(rv));
    }
}

static psock sock_open(enum kind k)
{
    psock p;
    switch (k) {
    case K_REQ:
        nng_check(nng_req0_open(&p.s), "nng_req0_open");
        break;
    case K_REP:
        nng_check(nng_rep0_open(&p.s), "nng_rep0_open");
        break;
    case K_PUSH:
        nng_check(nng_push0_open(&p.s), "nng_push0_open");
        nng_check(nng_socket_set_int(p.s, NNG_OPT_SENDBUF, 1024), "SENDBUF");
        break;
    default:
        nng_check(nng_pull0_open(&p.s), "nng_pull0_open");
        nng_check(nng_socket_set_int(p.s, NNG_OPT_RECVBUF, 1024), "RECVBUF");
        break;
    }
    return p;
}

static void sock_bind(psock p, const char *url, char *bound, size_t cap)
{
    nng_listener l;
    nng_check(nng_listen(p.s, url, &l, 0), url);
    const size_t n = strlen(url);
    if (strncmp(url, "tcp://", 6) == 0 && n > 2 && strcmp(url + n - 2, ":0") == 0) {
        int port = 0;
        nng_check(nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port), "BOUND_PORT");
        snprintf(bound, cap, "%.*s:%d", (int)(n - 2), url, port);
    } else {
        snprintf(bound, cap, "%s", url);
    }
}

static void sock_connect(psock p, const char *url)
{
    nng_check(nng_dial(p.s, url, NULL, 0), url);
}

static void sock_send(psock p, const void *buf, size_t len)
{
    nng_check(nng_send(p.s, (void *)buf, len, 0), "nng_send");
}

static size_t sock_recv(psock p, void *buf, size_t cap)
{
    size_t n = cap;
    nng_check(nng_recv(p.s, buf, &n, 0), "nng_recv");
    return n;
}

static void sock_close(psock p)
{
    nng_close(p.s);
}

static void peer_fini(void)
{
}
#endif

/* ------------------------------------------------------------------------ */
/* Measurements                                                               */

static char g_dir[64];

static void make_url(const char *transport, const char *tag, char *url, size_t cap)
{
    if (strcmp(transport, "inproc") == 0) {
        snprintf(url, cap, "inproc://peer-rt-%s", tag);
    } else if (strcmp(transport, "tcp") == 0) {
        snprintf(url, cap, "tcp://127.0.0.1:0");
    } else if (strcmp(transport, "ipc") == 0) {
        if (!g_dir[0]) {
            snprintf(g_dir, sizeof g_dir, "/tmp/peer-rt-XXXXXX");
            if (!mkdtemp(g_dir)) {
                die("mkdtemp", strerror(errno));
            }
        }
        snprintf(url, cap, "ipc://%s/%s.sock", g_dir, tag);
    } else {
        die("transport", transport);
    }
}

static void cleanup_dir(void)
{
    if (g_dir[0]) {
        char p[128];
        snprintf(p, sizeof p, "%s/rt.sock", g_dir);
        unlink(p);
        snprintf(p, sizeof p, "%s/thr.sock", g_dir);
        unlink(p);
        rmdir(g_dir);
    }
}

typedef struct server_arg {
    psock s;
    long n;
} server_arg;

static void serve(psock s, long n)
{
    char buf[MSG_BYTES * 2];
    for (long i = 0; i < n; i++) {
        const size_t len = sock_recv(s, buf, sizeof buf);
        sock_send(s, buf, len);
    }
}

static void *server_thread(void *arg)
{
    const server_arg *a = arg;
    serve(a->s, a->n);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void emit_rt(const char *layout, const char *transport, uint64_t *ns, long n)
{
    double sum = 0;
    for (long i = 0; i < n; i++) {
        sum += (double)ns[i];
    }
    qsort(ns, (size_t)n, sizeof *ns, cmp_u64);
    const double p50 = (double)ns[n / 2] / 1e3;
    const double p99 = (double)ns[(size_t)((double)n * 0.99)] / 1e3;
    printf("{\"goal\": \"P6\", \"contender\": \"%s\", \"version\": \"%s\", \"metric\": "
           "\"rt_us\", \"transport\": \"%s\", \"layout\": \"%s\", \"bytes\": %d, "
           "\"p50\": %.3f, \"p99\": %.3f, \"min\": %.3f, \"max\": %.3f, \"mean\": %.3f, "
           "\"unit\": \"us\", \"n\": %ld}\n",
           CONTENDER, peer_version(), transport, layout, MSG_BYTES, p50, p99,
           (double)ns[0] / 1e3, (double)ns[n - 1] / 1e3, sum / (double)n / 1e3, n);
    fflush(stdout);
}

static void client_loop(psock c, const char *layout, const char *transport, long iters)
{
    char msg[MSG_BYTES], buf[MSG_BYTES * 2];
    memset(msg, 'a', sizeof msg);
    uint64_t *ns = malloc((size_t)iters * sizeof *ns);
    if (!ns) {
        die("malloc", "out of memory");
    }
    for (long i = 0; i < WARMUP; i++) {
        sock_send(c, msg, sizeof msg);
        if (sock_recv(c, buf, sizeof buf) != MSG_BYTES) {
            die("recv", "short reply");
        }
    }
    for (long i = 0; i < iters; i++) {
        const uint64_t t0 = now_ns();
        sock_send(c, msg, sizeof msg);
        if (sock_recv(c, buf, sizeof buf) != MSG_BYTES) {
            die("recv", "short reply");
        }
        ns[i] = now_ns() - t0;
    }
    emit_rt(layout, transport, ns, iters);
    free(ns);
}

static void rt_thread(const char *transport, long iters)
{
    char url[URL_CAP], bound[URL_CAP];
    make_url(transport, "rt", url, sizeof url);
    server_arg a = {sock_open(K_REP), WARMUP + iters};
    sock_bind(a.s, url, bound, sizeof bound);
    pthread_t th;
    if (pthread_create(&th, NULL, server_thread, &a) != 0) {
        die("pthread_create", "failed");
    }
    psock c = sock_open(K_REQ);
    sock_connect(c, bound);
    client_loop(c, "threads", transport, iters);
    pthread_join(th, NULL);
    sock_close(c);
    sock_close(a.s);
    peer_fini();
}

/* The server process binds first and writes the bound URL into a pipe. */
static void rt_proc(const char *transport, long iters)
{
    if (strcmp(transport, "inproc") == 0) {
        die("rt-proc", "inproc is in-process only");
    }
    char url[URL_CAP], bound[URL_CAP] = {0};
    make_url(transport, "rt", url, sizeof url);
    int fds[2];
    if (pipe(fds) != 0) {
        die("pipe", strerror(errno));
    }
    const pid_t pid = fork();
    if (pid < 0) {
        die("fork", strerror(errno));
    }
    if (pid == 0) {
        close(fds[0]);
        psock s = sock_open(K_REP);
        sock_bind(s, url, bound, sizeof bound);
        if (write(fds[1], bound, sizeof bound) != (ssize_t)sizeof bound) {
            _exit(1);
        }
        close(fds[1]);
        serve(s, WARMUP + iters);
        sock_close(s);
        peer_fini();
        _exit(0);
    }
    close(fds[1]);
    size_t got = 0;
    while (got < sizeof bound) {
        const ssize_t r = read(fds[0], bound + got, sizeof bound - got);
        if (r <= 0) {
            die("server process", "did not start");
        }
        got += (size_t)r;
    }
    close(fds[0]);
    bound[sizeof bound - 1] = '\0';
    psock c = sock_open(K_REQ);
    sock_connect(c, bound);
    client_loop(c, "processes", transport, iters);
    int st = 0;
    waitpid(pid, &st, 0);
    sock_close(c);
    peer_fini();
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        die("server process", "failed");
    }
}

typedef struct push_arg {
    psock s;
    long n;
} push_arg;

static void *push_thread(void *arg)
{
    const push_arg *a = arg;
    char msg[MSG_BYTES];
    memset(msg, 'b', sizeof msg);
    for (long i = 0; i < a->n; i++) {
        sock_send(a->s, msg, sizeof msg);
    }
    return NULL;
}

/* Like ZeroMQ's local_thr: the clock runs from the first message received to
 * the last, so connection set-up is not counted. */
static void thr(const char *transport, long n)
{
    char url[URL_CAP], bound[URL_CAP], buf[MSG_BYTES * 2];
    make_url(transport, "thr", url, sizeof url);
    psock pull = sock_open(K_PULL);
    sock_bind(pull, url, bound, sizeof bound);
    push_arg a = {sock_open(K_PUSH), n + 1};
    sock_connect(a.s, bound);
    pthread_t th;
    if (pthread_create(&th, NULL, push_thread, &a) != 0) {
        die("pthread_create", "failed");
    }
    sock_recv(pull, buf, sizeof buf);
    const uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        if (sock_recv(pull, buf, sizeof buf) != MSG_BYTES) {
            die("recv", "short message");
        }
    }
    const double s = (double)(now_ns() - t0) / 1e9;
    pthread_join(th, NULL);
    printf("{\"goal\": \"P6\", \"contender\": \"%s\", \"version\": \"%s\", \"metric\": "
           "\"push_pull_msgs_per_s\", \"transport\": \"%s\", \"layout\": \"threads\", "
           "\"bytes\": %d, \"median\": %.0f, \"unit\": \"msg/s\", \"n\": %ld}\n",
           CONTENDER, peer_version(), transport, MSG_BYTES, (double)n / s, n);
    fflush(stdout);
    sock_close(a.s);
    sock_close(pull);
    peer_fini();
}

static void pin_cpu0(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        die("sched_setaffinity", strerror(errno));
    }
}

static void full_write(int fd, const void *buf, size_t len)
{
    if (write(fd, buf, len) != (ssize_t)len) {
        die("write", strerror(errno));
    }
}

static void full_read(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        const ssize_t r = read(fd, (char *)buf + got, len - got);
        if (r <= 0) {
            die("read", r == 0 ? "EOF" : strerror(errno));
        }
        got += (size_t)r;
    }
}

/* No messaging library at all: what the kernel's wake-up costs. */
static void pipe_rt(const char *how, long iters)
{
    const int pinned = strcmp(how, "pinned") == 0;
    int ping[2], pong[2];
    if (pipe(ping) != 0 || pipe(pong) != 0) {
        die("pipe", strerror(errno));
    }
    if (pinned) {
        pin_cpu0();
    }
    const pid_t pid = fork();
    if (pid < 0) {
        die("fork", strerror(errno));
    }
    char buf[MSG_BYTES];
    memset(buf, 'p', sizeof buf);
    if (pid == 0) {
        for (long i = 0; i < WARMUP + iters; i++) {
            full_read(ping[0], buf, sizeof buf);
            full_write(pong[1], buf, sizeof buf);
        }
        _exit(0);
    }
    uint64_t *ns = malloc((size_t)iters * sizeof *ns);
    if (!ns) {
        die("malloc", "out of memory");
    }
    for (long i = 0; i < WARMUP + iters; i++) {
        const uint64_t t0 = now_ns();
        full_write(ping[1], buf, sizeof buf);
        full_read(pong[0], buf, sizeof buf);
        if (i >= WARMUP) {
            ns[i - WARMUP] = now_ns() - t0;
        }
    }
    waitpid(pid, NULL, 0);
    double sum = 0;
    for (long i = 0; i < iters; i++) {
        sum += (double)ns[i];
    }
    qsort(ns, (size_t)iters, sizeof *ns, cmp_u64);
    printf("{\"goal\": \"P6\", \"contender\": \"os-pipe%s\", \"metric\": \"rt_us\", "
           "\"transport\": \"pipe\", \"layout\": \"processes\", \"bytes\": %d, \"p50\": %.3f, "
           "\"p99\": %.3f, \"min\": %.3f, \"max\": %.3f, \"mean\": %.3f, \"unit\": \"us\", "
           "\"n\": %ld}\n",
           pinned ? "-pinned" : "", MSG_BYTES, (double)ns[iters / 2] / 1e3,
           (double)ns[(size_t)((double)iters * 0.99)] / 1e3, (double)ns[0] / 1e3,
           (double)ns[iters - 1] / 1e3, sum / (double)iters / 1e3, iters);
    fflush(stdout);
    free(ns);
}

static void run_one(const char *mode, const char *transport, long iters)
{
    if (strcmp(mode, "rt-thread") == 0) {
        rt_thread(transport, iters);
    } else if (strcmp(mode, "rt-proc") == 0) {
        rt_proc(transport, iters);
    } else if (strcmp(mode, "thr") == 0) {
        thr(transport, iters);
    } else if (strcmp(mode, "pipe") == 0) {
        pipe_rt(transport, iters);
    } else {
        die("mode", mode);
    }
    cleanup_dir();
}

/* Every measurement in a fresh child (see the top comment). */
static void run_all(long iters, long msgs)
{
    static const char *const modes[][2] = {
        {"rt-thread", "inproc"}, {"rt-thread", "ipc"}, {"rt-thread", "tcp"},
        {"rt-proc", "ipc"},      {"rt-proc", "tcp"},   {"thr", "inproc"},
        {"thr", "ipc"},          {"thr", "tcp"},
    };
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        fflush(stdout);
        const pid_t pid = fork();
        if (pid == 0) {
            run_one(modes[i][0], modes[i][1], strcmp(modes[i][0], "thr") == 0 ? msgs : iters);
            _exit(0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "peer_rt: %s %s failed\n", modes[i][0], modes[i][1]);
        }
    }
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        fprintf(stderr, "usage: %s rt-thread|rt-proc|thr|all [inproc|ipc|tcp] [ITERS]\n",
                argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "all") == 0) {
        const long iters = argc > 2 ? atol(argv[2]) : 20000;
        run_all(iters, argc > 3 ? atol(argv[3]) : 1000000);
        return 0;
    }
    if (argc < 3) {
        fprintf(stderr, "%s: transport missing\n", argv[0]);
        return 2;
    }
    const int is_thr = strcmp(argv[1], "thr") == 0;
    const long iters = argc > 3 ? atol(argv[3]) : (is_thr ? 1000000 : 20000);
    if (iters < 1) {
        die("iters", "must be >= 1");
    }
    run_one(argv[1], argv[2], iters);
    return 0;
}
