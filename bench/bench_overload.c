/*
 * bench_overload.c -- the load generator of R6 and R4b (issue 11,
 * bench/run_overload.py drives it): the same open-loop offer, with 2 s
 * deadlines, through libaims' own client or through HTTP (nginx in front of
 * the nodes' HTTP front doors), counted the same way.
 *
 *   bench_overload bundle PATH [HIDDEN] [LAYERS]
 *       an MLP bundle (scale pipeline, FEAT inputs, LAYERS x HIDDEN relu, 10
 *       classes) fitted one epoch on random rows: its 64-row predict is the
 *       work of one call (the issue's "MLP, 64-row calls")
 *   bench_overload cap-aims REGISTRY SERVICE THREADS SECONDS
 *       closed loop: THREADS threads call back to back; prints calls/s
 *   bench_overload aims REGISTRY SERVICE RATE SECONDS [echo] [nodirect]
 *       open loop at RATE calls/s through one aims_client (idempotent calls,
 *       its retries after the "retry after" hint within its budget; every
 *       10th call through a second client that never retries, unless
 *       "nodirect", for the latency of the node's own rejections); "echo":
 *       method "echo" with a 256-byte payload instead of a 64-row predict
 *   bench_overload http HOST PORT PATH RATE SECONDS
 *       open loop at RATE requests/s of the same 64-row predict as a KServe v2
 *       binary-extension POST, one request per connection at a time
 *       (HTTP/1.1 keep-alive, no pipelining: an idle connection is reused,
 *       else a new one opened); RATE 0 = closed loop on 8 connections
 *
 * Every mode prints one JSON line on stdout: offered and issued, ok (answered
 * OK within the deadline), late, the failures by kind (HTTP status or
 * aims_status), goodput per second over the 1 s windows after the first 2 s
 * and the worst window, p50/p99 of the calls answered OK, p50/p99 of the
 * rejections (answers that were not OK, not timeouts), and the generator's
 * own CPU seconds. The open-loop modes print "start" (flushed) when the offer
 * begins, so the driver can time a SIGSTOP against it.
 *
 * Bounding the generator. One thread sends everything (an epoll loop for
 * HTTP; aims_call_async for libaims, whose completions run on the client's
 * I/O thread); nothing is computed per call but a timestamp and a counter;
 * run_overload.py reports its CPU seconds next to the figures.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <aims/aims.h>

#define FEAT 16
#define ROWS 64
#define CLASSES 10
#define DEADLINE_MS 2000
#define DEADLINE_US (DEADLINE_MS * 1000u)
#define MAX_SECONDS 120
#define LAT_MAX (1u << 20)

/* ---- counting ------------------------------------------------------------------------ */

typedef struct counts {
    _Atomic uint64_t issued, ok, late, timeout, other;
    _Atomic uint64_t by_code[600]; /* HTTP status, or 1 + aims_status for libaims */
    _Atomic uint64_t win[MAX_SECONDS];
    _Atomic size_t n_ok, n_rej;
    uint64_t t0_us;
} counts;

static counts g_c;
static uint64_t *g_ok_us, *g_rej_us;
/* libaims: every 10th call goes through a client that never retries, so the
 * latency of the node's own rejections is seen (the others retry after the
 * hint, so their failures include the wait). */
static uint64_t *g_direct_us;
static _Atomic size_t g_n_direct;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void sleep_until_us(uint64_t t)
{
    const uint64_t n = now_us();
    if (t > n) {
        const uint64_t d = t - n;
        struct timespec ts = {(time_t)(d / 1000000u), (long)(d % 1000000u) * 1000L};
        nanosleep(&ts, NULL);
    }
}

/* One call finished: `code` 200 / AIMS_OK + 1 is success, 0 a timeout (the
 * caller gave up at the deadline). */
static void count_done(int ok, int code, uint64_t issued_us, uint64_t now)
{
    const uint64_t lat = now - issued_us;
    if (code == 0) {
        atomic_fetch_add(&g_c.timeout, 1);
        return;
    }
    if (code > 0 && code < 600) {
        atomic_fetch_add(&g_c.by_code[code], 1);
    }
    if (ok && lat <= DEADLINE_US) {
        atomic_fetch_add(&g_c.ok, 1);
        const uint64_t w = (now - g_c.t0_us) / 1000000u;
        if (w < MAX_SECONDS) {
            atomic_fetch_add(&g_c.win[w], 1);
        }
        const size_t i = atomic_fetch_add(&g_c.n_ok, 1);
        if (i < LAT_MAX) {
            g_ok_us[i] = lat;
        }
    } else if (ok) {
        atomic_fetch_add(&g_c.late, 1);
    } else {
        atomic_fetch_add(&g_c.other, 1);
        const size_t i = atomic_fetch_add(&g_c.n_rej, 1);
        if (i < LAT_MAX) {
            g_rej_us[i] = lat;
        }
    }
}

static int cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(uint64_t *v, size_t n, int p)
{
    if (n == 0) {
        return 0.0;
    }
    return (double)v[n * (size_t)p / 100u >= n ? n - 1 : n * (size_t)p / 100u] * 1e-3;
}

static void report(const char *mode, double rate, int seconds)
{
    size_t nok = atomic_load(&g_c.n_ok), nrej = atomic_load(&g_c.n_rej);
    nok = nok < LAT_MAX ? nok : LAT_MAX;
    nrej = nrej < LAT_MAX ? nrej : LAT_MAX;
    qsort(g_ok_us, nok, sizeof *g_ok_us, cmp_u64);
    qsort(g_rej_us, nrej, sizeof *g_rej_us, cmp_u64);
    size_t ndir = atomic_load(&g_n_direct);
    ndir = ndir < LAT_MAX ? ndir : LAT_MAX;
    qsort(g_direct_us, ndir, sizeof *g_direct_us, cmp_u64);
    uint64_t good = 0, worst = UINT64_MAX;
    char wins[1024] = "";
    size_t wl = 0;
    for (int w = 2; w < seconds && w < MAX_SECONDS; w++) {
        const uint64_t g = atomic_load(&g_c.win[w]);
        good += g;
        worst = g < worst ? g : worst;
        if (wl < sizeof wins) {
            wl += (size_t)snprintf(wins + wl, sizeof wins - wl, "%s%llu", w > 2 ? "," : "",
                                   (unsigned long long)g);
        }
    }
    char codes[1024] = "";
    size_t cl = 0;
    for (int k = 1; k < 600; k++) {
        const uint64_t n = atomic_load(&g_c.by_code[k]);
        if (n > 0 && cl < sizeof codes) {
            cl += (size_t)snprintf(codes + cl, sizeof codes - cl, "%s\"%d\": %llu",
                                   cl > 0 ? ", " : "", k, (unsigned long long)n);
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
                       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
    printf("{\"mode\": \"%s\", \"offered_per_s\": %.1f, \"seconds\": %d, \"issued\": %llu, "
           "\"ok\": %llu, \"late\": %llu, \"timeout\": %llu, \"rejected\": %llu, "
           "\"codes\": {%s}, \"goodput_per_s\": %.1f, \"worst_window\": %llu, "
           "\"windows\": [%s], \"ok_p50_ms\": %.2f, \"ok_p99_ms\": %.2f, \"ok_max_ms\": %.2f, "
           "\"reject_p50_ms\": %.2f, \"reject_p99_ms\": %.2f, \"node_reject_n\": %zu, "
           "\"node_reject_p50_ms\": %.2f, \"node_reject_p99_ms\": %.2f, "
           "\"node_reject_max_ms\": %.2f, \"gen_cpu_s\": %.2f}\n",
           mode, rate, seconds, (unsigned long long)atomic_load(&g_c.issued),
           (unsigned long long)atomic_load(&g_c.ok), (unsigned long long)atomic_load(&g_c.late),
           (unsigned long long)atomic_load(&g_c.timeout),
           (unsigned long long)atomic_load(&g_c.other), codes,
           seconds > 2 ? (double)good / (double)(seconds - 2) : 0.0,
           (unsigned long long)(worst == UINT64_MAX ? 0 : worst), wins, pct_ms(g_ok_us, nok, 50),
           pct_ms(g_ok_us, nok, 99), nok > 0 ? (double)g_ok_us[nok - 1] * 1e-3 : 0.0,
           pct_ms(g_rej_us, nrej, 50), pct_ms(g_rej_us, nrej, 99), ndir,
           pct_ms(g_direct_us, ndir, 50), pct_ms(g_direct_us, ndir, 99),
           ndir > 0 ? (double)g_direct_us[ndir - 1] * 1e-3 : 0.0, cpu);
    fflush(stdout);
}

/* ---- the work of one call ----------------------------------------------------------- */

static float g_x[ROWS * FEAT];

static void fill_rows(void)
{
    uint32_t s = 12345u;
    for (size_t i = 0; i < ROWS * FEAT; i++) {
        s = s * 1664525u + 1013904223u;
        g_x[i] = (float)(s >> 8) / (float)(1u << 24);
    }
}

static int make_bundle(const char *path, size_t hidden, int layers)
{
    enum { N = 512 };
    static float x[N * FEAT];
    static int32_t y[N];
    uint32_t s = 777u;
    for (size_t i = 0; i < N; i++) {
        y[i] = (int32_t)(i % CLASSES);
        for (size_t k = 0; k < FEAT; k++) {
            s = s * 1664525u + 1013904223u;
            x[i * FEAT + k] = (float)(s >> 8) / (float)(1u << 24) + (float)(y[i] == (int32_t)k);
        }
    }
    aims_dataset *ds = NULL, *xt = NULL;
    aims_pipeline *p = NULL;
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    aims_bundle *b = NULL;
    aims_status rc = aims_dataset_create_dense(N, FEAT, x, y, &ds);
    if (rc == AIMS_OK) {
        rc = aims_pipeline_create(&p);
    }
    if (rc == AIMS_OK) {
        rc = aims_pipeline_add(p, AIMS_STEP_KIND_SCALE, NULL);
    }
    if (rc == AIMS_OK) {
        rc = aims_pipeline_fit_transform(p, ds, &xt);
    }
    if (rc == AIMS_OK) {
        rc = aims_model_create(AIMS_MODEL_KIND_MLP, FEAT, CLASSES, &m);
    }
    for (int l = 0; rc == AIMS_OK && l < layers; l++) {
        rc = aims_model_add_dense(m, hidden, AIMS_ACT_RELU);
    }
    if (rc == AIMS_OK) {
        rc = aims_trainer_create(m, &t);
    }
    if (rc == AIMS_OK) {
        rc = aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 1);
    }
    if (rc == AIMS_OK) {
        rc = aims_trainer_fit(t, xt, NULL);
    }
    if (rc == AIMS_OK) {
        rc = aims_bundle_create(p, m, &b);
    }
    if (rc == AIMS_OK) {
        rc = aims_bundle_save(b, path);
    }
    if (rc != AIMS_OK) {
        fprintf(stderr, "bench_overload bundle: %s: %s\n", aims_strerror(rc), aims_errmsg());
    }
    aims_bundle_destroy(b);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_pipeline_destroy(p);
    aims_dataset_destroy(xt);
    aims_dataset_destroy(ds);
    return rc == AIMS_OK ? 0 : 1;
}

/* ---- libaims ------------------------------------------------------------------------- */

static int g_echo;       /* echo service instead of a 64-row predict */
static int g_no_direct;  /* every call through the retrying client (R4b) */
static unsigned char g_payload[256];

static aims_status build_req(aims_msg *req)
{
    if (g_echo) {
        const uint64_t d[1] = {sizeof g_payload};
        return aims_msg_add(req, "x", AIMS_DT_BYTES, d, 1, g_payload, AIMS_MSG_BORROW);
    }
    const uint64_t d[2] = {ROWS, FEAT};
    return aims_msg_add(req, "x", AIMS_DT_F32, d, 2, g_x, AIMS_MSG_BORROW);
}

static const char *method(void)
{
    return g_echo ? "echo" : "predict";
}

static aims_client *join(const char *reg)
{
    aims_client *c = NULL;
    if (aims_client_create(&c) != AIMS_OK ||
        aims_client_set_param_i64(c, AIMS_CLIENT_SYNC_MS, 50) != AIMS_OK ||
        aims_client_set_param_i64(c, AIMS_CLIENT_MAX_PENDING, 1 << 20) != AIMS_OK ||
        aims_client_join(c, reg) != AIMS_OK) {
        fprintf(stderr, "bench_overload: client for %s: %s\n", reg,
                c != NULL ? aims_client_errmsg(c) : aims_errmsg());
        aims_client_destroy(c);
        return NULL;
    }
    return c;
}

/* Calls until 20 succeeded (the client learns the instances and their
 * latency; client_try.c splits deadlines into tries after 8). */
static int warm_up(aims_client *c, const char *svc, const aims_msg *req)
{
    aims_msg *rep = NULL;
    if (aims_msg_create(&rep) != AIMS_OK) {
        return 1;
    }
    int ok = 0;
    const uint64_t t0 = now_us();
    while (ok < 20 && now_us() - t0 < 20000000u) {
        if (aims_client_call(c, svc, method(), req, rep, AIMS_CALL_IDEMPOTENT, 5000) == AIMS_OK) {
            ok++;
        } else {
            sleep_until_us(now_us() + 20000u);
        }
    }
    aims_msg_destroy(rep);
    if (ok < 20) {
        fprintf(stderr, "bench_overload: warm-up of %s failed: %s\n", svc, aims_client_errmsg(c));
    }
    return ok < 20;
}

typedef struct cap_arg {
    aims_client *c;
    const char *svc;
    const aims_msg *req;
    uint64_t until_us, ok;
} cap_arg;

static void *cap_main(void *arg)
{
    cap_arg *a = arg;
    aims_msg *rep = NULL;
    if (aims_msg_create(&rep) != AIMS_OK) {
        return NULL;
    }
    while (now_us() < a->until_us) {
        if (aims_client_call(a->c, a->svc, method(), a->req, rep, AIMS_CALL_IDEMPOTENT,
                             DEADLINE_MS) == AIMS_OK) {
            a->ok++;
        }
    }
    aims_msg_destroy(rep);
    return NULL;
}

static void on_aims_done(void *user, aims_status st, const aims_msg *reply, const char *error)
{
    (void)reply;
    (void)error;
    const uint64_t t = now_us();
    const uint64_t issued = (uint64_t)(uintptr_t)user >> 1;
    if (((uintptr_t)user & 1u) && st == AIMS_E_OVERLOADED) {
        const size_t i = atomic_fetch_add(&g_n_direct, 1);
        if (i < LAT_MAX) {
            g_direct_us[i] = t - issued;
        }
    }
    count_done(st == AIMS_OK, st == AIMS_E_TIMEOUT ? 0 : 1 + (int)st, issued, t);
}

static int run_aims(const char *reg, const char *svc, double rate, int seconds, int threads)
{
    aims_client *c = join(reg);
    aims_client *direct = join(reg);
    aims_msg *req = NULL;
    if (c == NULL || direct == NULL ||
        aims_client_set_param_i64(direct, AIMS_CLIENT_MAX_ATTEMPTS, 1) != AIMS_OK ||
        aims_msg_create(&req) != AIMS_OK || build_req(req) != AIMS_OK ||
        warm_up(c, svc, req) != 0 || warm_up(direct, svc, req) != 0) {
        aims_msg_destroy(req);
        aims_client_destroy(c);
        aims_client_destroy(direct);
        return 1;
    }
    if (threads > 0) { /* closed loop: capacity */
        enum { TMAX = 32 };
        threads = threads > TMAX ? TMAX : threads;
        cap_arg a[TMAX];
        pthread_t tid[TMAX];
        const uint64_t t0 = now_us();
        for (int i = 0; i < threads; i++) {
            a[i] = (cap_arg){c, svc, req, t0 + (uint64_t)seconds * 1000000u, 0};
            pthread_create(&tid[i], NULL, cap_main, &a[i]);
        }
        uint64_t ok = 0;
        for (int i = 0; i < threads; i++) {
            pthread_join(tid[i], NULL);
            ok += a[i].ok;
        }
        printf("{\"mode\": \"cap-aims\", \"threads\": %d, \"capacity_per_s\": %.1f}\n", threads,
               (double)ok * 1e6 / (double)(now_us() - t0));
        aims_msg_destroy(req);
        aims_client_destroy(c);
        aims_client_destroy(direct);
        return 0;
    }
    printf("start\n");
    fflush(stdout);
    const uint64_t period = (uint64_t)(1e6 / rate);
    g_c.t0_us = now_us();
    const uint64_t end = g_c.t0_us + (uint64_t)seconds * 1000000u;
    uint64_t next = g_c.t0_us;
    while (next < end) {
        sleep_until_us(next);
        const uint64_t n = atomic_fetch_add(&g_c.issued, 1);
        const unsigned dir = !g_no_direct && n % 10u == 9u;
        const aims_status st = aims_client_call_async(
            dir ? direct : c, svc, method(), req, AIMS_CALL_IDEMPOTENT, DEADLINE_MS, on_aims_done,
            (void *)(uintptr_t)((now_us() << 1) | dir));
        if (st != AIMS_OK) {
            count_done(0, 1 + (int)st, now_us(), now_us());
        }
        next += period;
    }
    /* Every call ends by its deadline: wait for the last ones. */
    const uint64_t t1 = now_us();
    while (atomic_load(&g_c.ok) + atomic_load(&g_c.late) + atomic_load(&g_c.timeout) +
                   atomic_load(&g_c.other) <
               atomic_load(&g_c.issued) &&
           now_us() - t1 < 2u * DEADLINE_US) {
        sleep_until_us(now_us() + 10000u);
    }
    report("aims", rate, seconds);
    aims_msg_destroy(req);
    aims_client_destroy(c);
    aims_client_destroy(direct);
    return 0;
}

/* ---- HTTP ----------------------------------------------------------------------------- */

enum { C_FREE = 0, C_IDLE, C_CONNECTING, C_SENDING, C_READING };

typedef struct hconn {
    int fd, state;
    size_t woff;
    uint64_t issued_us;
    char rbuf[2048];
    size_t rlen, hdr_end, need; /* need: total response bytes once the header is in */
    size_t got;                 /* response bytes received */
    int code, close_after;
} hconn;

#define HMAX 8192
static hconn *g_conn;
static int g_nconn;
static int g_ep;
static struct sockaddr_in g_addr;
static char g_req[8192];
static size_t g_req_len;
static int g_free[HMAX], g_nfree, g_idle[HMAX], g_nidle;
static int g_out; /* requests outstanding */

static void conn_close(hconn *h)
{
    if (h->fd >= 0) {
        close(h->fd);
    }
    h->fd = -1;
    h->state = C_FREE;
    g_free[g_nfree++] = (int)(h - g_conn);
}

static void conn_arm(hconn *h, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.u32 = (uint32_t)(h - g_conn)};
    (void)epoll_ctl(g_ep, EPOLL_CTL_MOD, h->fd, &e);
}

static void conn_fail(hconn *h, int code)
{
    g_out--;
    count_done(0, code, h->issued_us, now_us());
    conn_close(h);
}

static void conn_send(hconn *h)
{
    while (h->woff < g_req_len) {
        const ssize_t n = send(h->fd, g_req + h->woff, g_req_len - h->woff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                h->state = C_SENDING;
                conn_arm(h, EPOLLOUT);
                return;
            }
            conn_fail(h, 599); /* connection error */
            return;
        }
        h->woff += (size_t)n;
    }
    h->state = C_READING;
    h->rlen = h->hdr_end = h->need = h->got = 0;
    h->code = 0;
    h->close_after = 0;
    conn_arm(h, EPOLLIN);
}

/* Start one request at time t on an idle connection or a new one. */
static void issue(uint64_t t)
{
    atomic_fetch_add(&g_c.issued, 1);
    hconn *h = NULL;
    if (g_nidle > 0 || g_nfree > 0) {
        g_out++;
    }
    if (g_nidle > 0) {
        h = &g_conn[g_idle[--g_nidle]];
    } else if (g_nfree > 0) {
        h = &g_conn[g_free[--g_nfree]];
        h->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (h->fd < 0) {
            h->issued_us = t;
            conn_fail(h, 599);
            return;
        }
        const int one = 1;
        (void)setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event e = {.events = EPOLLOUT, .data.u32 = (uint32_t)(h - g_conn)};
        (void)epoll_ctl(g_ep, EPOLL_CTL_ADD, h->fd, &e);
        h->issued_us = t;
        h->woff = 0;
        if (connect(h->fd, (const struct sockaddr *)&g_addr, sizeof g_addr) != 0 &&
            errno != EINPROGRESS) {
            conn_fail(h, 599);
            return;
        }
        h->state = C_CONNECTING;
        return;
    } else {
        count_done(0, 598, t, t); /* the generator's own connection cap */
        return;
    }
    h->issued_us = t;
    h->woff = 0;
    conn_send(h);
}

/* Parse what the header says once it is complete; 0 when it is not yet. */
static int parse_header(hconn *h)
{
    h->rbuf[h->rlen < sizeof h->rbuf ? h->rlen : sizeof h->rbuf - 1] = '\0';
    const char *end = strstr(h->rbuf, "\r\n\r\n");
    if (end == NULL) {
        return 0;
    }
    h->hdr_end = (size_t)(end - h->rbuf) + 4u;
    h->code = atoi(h->rbuf + 9);
    size_t cl = 0;
    for (const char *p = strstr(h->rbuf, "\r\n"); p != NULL && p < end;
         p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, "Content-Length:", 15) == 0) {
            cl = (size_t)strtoull(p + 17, NULL, 10);
        } else if (strncasecmp(p + 2, "Connection: close", 17) == 0) {
            h->close_after = 1;
        }
    }
    h->need = h->hdr_end + cl;
    return 1;
}

static void conn_readable(hconn *h)
{
    for (;;) {
        char tmp[4096];
        char *dst = h->hdr_end == 0 ? h->rbuf + h->rlen : tmp;
        const size_t room = h->hdr_end == 0 ? sizeof h->rbuf - 1 - h->rlen : sizeof tmp;
        if (room == 0) {
            conn_fail(h, 597); /* header too long */
            return;
        }
        const ssize_t n = recv(h->fd, dst, room, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n <= 0) {
            conn_fail(h, 599);
            return;
        }
        h->got += (size_t)n;
        if (h->hdr_end == 0) {
            h->rlen += (size_t)n;
            if (!parse_header(h)) {
                continue;
            }
        }
        if (h->got >= h->need) {
            g_out--;
            count_done(h->code == 200, h->code > 0 ? h->code : 596, h->issued_us, now_us());
            if (h->close_after) {
                conn_close(h);
            } else {
                h->state = C_IDLE;
                conn_arm(h, EPOLLIN); /* a close by the server shows as readable */
                g_idle[g_nidle++] = (int)(h - g_conn);
            }
            return;
        }
    }
}

/* A server close of an idle keep-alive connection: forget it. */
static void idle_closed(hconn *h)
{
    for (int i = 0; i < g_nidle; i++) {
        if (g_idle[i] == (int)(h - g_conn)) {
            g_idle[i] = g_idle[--g_nidle];
            break;
        }
    }
    conn_close(h);
}

static void expire(uint64_t t)
{
    for (int i = 0; i < g_nconn; i++) {
        hconn *h = &g_conn[i];
        if (h->state >= C_CONNECTING && t - h->issued_us > DEADLINE_US) {
            conn_fail(h, 0); /* the caller gives up: a timeout */
        }
    }
}

static int run_http(const char *host, int port, const char *path, double rate, int seconds)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        g_nconn = rl.rlim_cur > HMAX + 64 ? HMAX : (int)rl.rlim_cur - 64;
    } else {
        g_nconn = 960;
    }
    g_conn = calloc((size_t)g_nconn, sizeof *g_conn);
    if (g_conn == NULL) {
        return 1;
    }
    for (int i = g_nconn - 1; i >= 0; i--) {
        g_conn[i].fd = -1;
        g_free[g_nfree++] = i;
    }
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &g_addr.sin_addr) != 1) {
        fprintf(stderr, "bench_overload: bad host %s\n", host);
        return 2;
    }
    char json[512];
    const int nj = snprintf(json, sizeof json,
                            "{\"inputs\":[{\"name\":\"x\",\"shape\":[%d,%d],\"datatype\":\"FP32\","
                            "\"parameters\":{\"binary_data_size\":%zu}}]}",
                            ROWS, FEAT, sizeof g_x);
    const int nh = snprintf(g_req, sizeof g_req,
                            "POST %s HTTP/1.1\r\nHost: %s:%d\r\n"
                            "Content-Type: application/octet-stream\r\n"
                            "Inference-Header-Content-Length: %d\r\nContent-Length: %zu\r\n\r\n%s",
                            path, host, port, nj, (size_t)nj + sizeof g_x, json);
    if (nh <= 0 || (size_t)nh + sizeof g_x > sizeof g_req) {
        return 1;
    }
    memcpy(g_req + nh, g_x, sizeof g_x);
    g_req_len = (size_t)nh + sizeof g_x;
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    const int closed_loop = rate <= 0.0;
    if (!closed_loop) {
        printf("start\n");
        fflush(stdout);
    }
    g_c.t0_us = now_us();
    const uint64_t end = g_c.t0_us + (uint64_t)seconds * 1000000u;
    const uint64_t period = closed_loop ? 0 : (uint64_t)(1e6 / rate);
    uint64_t next = g_c.t0_us, last_expire = 0;
    for (;;) {
        uint64_t t = now_us();
        while (!closed_loop && next <= t && next < end) {
            issue(t);
            next += period;
        }
        while (closed_loop && t < end && g_out < 8) {
            issue(t);
        }
        if (t >= end && (g_out == 0 || closed_loop || t > end + DEADLINE_US + 500000u)) {
            break;
        }
        int wait_ms = 10;
        if (!closed_loop && next < end) {
            const uint64_t d = next > t ? next - t : 0;
            wait_ms = (int)((d + 999u) / 1000u); /* late by < 1 ms, never a busy poll */
        }
        struct epoll_event ev[256];
        const int n = epoll_wait(g_ep, ev, 256, wait_ms);
        for (int i = 0; i < n; i++) {
            hconn *h = &g_conn[ev[i].data.u32];
            if (h->state == C_CONNECTING || h->state == C_SENDING) {
                int err = 0;
                socklen_t el = sizeof err;
                if (h->state == C_CONNECTING &&
                    (getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0)) {
                    conn_fail(h, 599);
                    continue;
                }
                conn_send(h);
            } else if (h->state == C_READING) {
                conn_readable(h);
            } else if (h->state == C_IDLE) {
                idle_closed(h);
            }
        }
        t = now_us();
        if (t - last_expire >= 10000u) {
            expire(t);
            last_expire = t;
        }
    }
    if (closed_loop) {
        printf("{\"mode\": \"cap-http\", \"connections\": 8, \"capacity_per_s\": %.1f}\n",
               (double)atomic_load(&g_c.ok) * 1e6 / (double)(now_us() - g_c.t0_us));
    } else {
        expire(UINT64_MAX / 2);
        report("http", rate, seconds);
    }
    for (int i = 0; i < g_nconn; i++) {
        if (g_conn[i].fd >= 0) {
            close(g_conn[i].fd);
        }
    }
    close(g_ep);
    free(g_conn);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_overload bundle PATH [HIDDEN] [LAYERS]\n"
                    "       bench_overload cap-aims REGISTRY SERVICE THREADS SECONDS\n"
                    "       bench_overload aims REGISTRY SERVICE RATE SECONDS [echo] [nodirect]\n"
                    "       bench_overload http HOST PORT PATH RATE SECONDS\n");
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        usage();
        return 2;
    }
    fill_rows();
    g_ok_us = calloc(LAT_MAX, sizeof *g_ok_us);
    g_rej_us = calloc(LAT_MAX, sizeof *g_rej_us);
    g_direct_us = calloc(LAT_MAX, sizeof *g_direct_us);
    if (g_ok_us == NULL || g_rej_us == NULL || g_direct_us == NULL) {
        return 1;
    }
    int rc = 2;
    if (strcmp(argv[1], "bundle") == 0) {
        rc = make_bundle(argv[2], argc > 3 ? (size_t)atol(argv[3]) : 1024,
                         argc > 4 ? atoi(argv[4]) : 2);
    } else if (strcmp(argv[1], "cap-aims") == 0 && argc >= 6) {
        g_echo = argc > 6 && strcmp(argv[6], "echo") == 0;
        rc = run_aims(argv[2], argv[3], 0.0, atoi(argv[5]), atoi(argv[4]) > 0 ? atoi(argv[4]) : 1);
    } else if (strcmp(argv[1], "aims") == 0 && argc >= 6 && atof(argv[4]) > 0.0) {
        for (int i = 6; i < argc; i++) {
            g_echo |= strcmp(argv[i], "echo") == 0;
            g_no_direct |= strcmp(argv[i], "nodirect") == 0;
        }
        const int s = atoi(argv[5]);
        rc = run_aims(argv[2], argv[3], atof(argv[4]), s < 3 ? 3 : (s > MAX_SECONDS ? MAX_SECONDS : s),
                      0);
    } else if (strcmp(argv[1], "http") == 0 && argc >= 7) {
        const int s = atoi(argv[6]);
        rc = run_http(argv[2], atoi(argv[3]), argv[4], atof(argv[5]),
                      s < 1 ? 1 : (s > MAX_SECONDS ? MAX_SECONDS : s));
    } else {
        usage();
    }
    free(g_ok_us);
    free(g_rej_us);
    free(g_direct_us);
    return rc;
}
