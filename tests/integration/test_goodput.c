/*
 * test_goodput.c -- goodput under overload (issue 11): one echo instance that
 * spins SLOW_US per call with one worker, a client making idempotent calls
 * with 2 s deadlines, open loop at 1.25x, 2.5x and 5x the capacity the test
 * measured first.
 *
 * Goodput is the number of calls answered with AIMS_OK within their deadline
 * per second. Expected: goodput >= 90 % of capacity at every offered load
 * (counted after the first 2 s of a phase, when the queue has reached its
 * steady state), every failure typed (AIMS_E_OVERLOADED with a "retry after"
 * hint or AIMS_E_TIMEOUT), the node's VmRSS bounded.
 *
 * Capacity. On a shared 2-core CI machine the worker thread is not always on
 * a core, so the capacity measured before a phase (closed loop, printed with
 * the ratio to it) can be far from the capacity during it. The checks use the
 * capacity the instance showed during the phase itself: goodput >= 90 % of
 * the runs it executed ("$stats" batches: at most 10 % of its work was wasted
 * on answers nobody waited for, which is what congestion collapse is), and it
 * was busy running requests >= 70 % of the time ("$stats" busy_ns; a generous
 * detection bound: admission control that left it idle would show far lower,
 * while a 2-core machine at load 30 showed 84-99 %).
 *
 * Before the admission control of service_admit.c the same run served 7-30 %
 * of capacity (congestion collapse: the node kept busy with requests that
 * finished just after their caller gave up). docs/OVERLOAD.md has the figures.
 *
 * Every 10th call (AIMS_GOODPUT_DIRECT_EVERY=N: every Nth; 1 = all, for many
 * samples) goes through a second client that never retries, so the latency
 * of the node's own rejections is seen (count, p50, p90, p99 and max are
 * printed; no timing assertion). Every 10th call is also followed by a
 * "$ping" through that client: the control (on_done says why).
 *
 * Then a second instance joins and the pair is offered 1.25x, 2.5x and 5x
 * the capacity the test measures for the two (OVERLOADED calls retry on the
 * other instance after the hint), with the same checks: the "the
 * same with two nodes behind one client".
 *
 * Environment: AIMS_GOODPUT_SECONDS (phase length, default 6),
 * AIMS_GOODPUT_FACTORS ("1.25,2.5,5"), AIMS_GOODPUT_NOCHECK=1 (measure only:
 * print the figures, assert nothing about goodput), AIMS_GOODPUT_JSON=path
 * (append one JSON line per phase: `make -f bench/bench.mk bench-overload`),
 * AIMS_GOODPUT_PAIR=0 (skip the two-instance phases), AIMS_GOODPUT_PAIR_FACTORS
 * (their factors, default "1.25,2.5,5"), AIMS_GOODPUT_DIRECT_EVERY (above).
 */
#include "itest.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOW_US 10000
#define DEADLINE_MS 2000
#define PAYLOAD 1024u
#define MAX_SECONDS 64
#define RSS_BOUND_KB (64L << 10)

typedef struct gp_stats {
    it_outcomes o;                     /* ok = good: answered within the deadline */
    _Atomic uint64_t win[MAX_SECONDS]; /* good completions per 1 s window */
    uint64_t t0_ms, t0_us;
} gp_stats;

static gp_stats g_st = {.o = IT_OUTCOMES_INIT};
static aims_client *g_direct; /* AIMS_CLIENT_MAX_ATTEMPTS = 1 */
#define REJ_MAX 8192
static uint64_t g_rej_us[REJ_MAX];
static _Atomic size_t g_n_rej;
#define OK_MAX 65536
static uint64_t g_ok_us[OK_MAX]; /* latency of the calls answered OK */
static _Atomic size_t g_n_ok;
static FILE *g_json; /* AIMS_GOODPUT_JSON: one JSON line per phase (bench/run_overload.py) */
static unsigned g_direct_every = 10; /* AIMS_GOODPUT_DIRECT_EVERY: every Nth call via g_direct */

static uint64_t it_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The control for the rejection latency: "$ping" round trips through the
 * same client and node connection, answered by the node's I/O thread as the
 * frame is read (like a rejection, but never near the queue). When their
 * tail equals the rejections' tail, what delays a rejection is not the
 * admission path but getting the threads on a core. */
#define PING_MAX 8192
static uint64_t g_ping_us[PING_MAX];
static _Atomic size_t g_n_ping;
static _Atomic uint64_t g_pings_out; /* issued, not yet done */

static void on_done(void *user, aims_status st, const aims_msg *reply, const char *error)
{
    const uint64_t now = it_now_us();
    const uint64_t issued = (uint64_t)(uintptr_t)user >> 2;
    if ((uintptr_t)user & 2u) {
        if (st == AIMS_OK) {
            const size_t i = atomic_fetch_add(&g_n_ping, 1);
            if (i < PING_MAX) {
                g_ping_us[i] = now - issued;
            }
        }
        atomic_fetch_sub(&g_pings_out, 1);
        return;
    }
    const int late = now - issued > DEADLINE_MS * 1000u;
    if (st == AIMS_OK && !late) {
        const uint64_t w = (now - g_st.t0_us) / 1000000u;
        if (w < MAX_SECONDS) {
            atomic_fetch_add(&g_st.win[w], 1);
        }
        const size_t i = atomic_fetch_add(&g_n_ok, 1);
        if (i < OK_MAX) {
            g_ok_us[i] = now - issued;
        }
    } else if (st == AIMS_E_OVERLOADED && ((uintptr_t)user & 1u)) {
        /* through g_direct: the node's own rejection */
        const size_t i = atomic_fetch_add(&g_n_rej, 1);
        if (i < REJ_MAX) {
            g_rej_us[i] = now - issued;
        }
    }
    it_outcomes_count(&g_st.o, st, late, reply, error);
}

/* Sort the first n (at most cap) latencies and log their count, p50, p90,
 * p99 and max; returns how many there were. */
static size_t sort_log(uint64_t *v, size_t n, size_t cap, const char *what)
{
    n = n < cap ? n : cap;
    if (n > 0) {
        qsort(v, n, sizeof v[0], cmp_u64);
        it_log("   %s: n %zu, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms", what, n,
               (double)v[n / 2] * 1e-3, (double)v[n * 9 / 10] * 1e-3,
               (double)v[n * 99 / 100] * 1e-3, (double)v[n - 1] * 1e-3);
    }
    return n;
}

/* A counter of the instance at addr ("$stats": batches = runs executed,
 * busy_ns = time spent in runs). */
static double node_stat(aims_client *c, const char *addr, const char *stat)
{
    aims_msg *rep = NULL;
    aims_msg *q = NULL;
    double v = -1.0;
    if (aims_msg_create(&rep) != AIMS_OK || aims_msg_create(&q) != AIMS_OK) {
        aims_msg_destroy(rep);
        return v;
    }
    size_t idx = 0;
    const void *data = NULL;
    const aims_status rc = aims_client_call_addr(c, addr, "echo", "$stats", q, rep, 2000);
    if (rc != AIMS_OK) {
        it_log("$stats of %s: %s: %s", addr, aims_strerror(rc), aims_client_errmsg(c));
    }
    if (rc == AIMS_OK &&
        aims_msg_find(rep, stat, &idx) == AIMS_OK &&
        aims_msg_get_tensor(rep, idx, NULL, NULL, NULL, NULL, &data, NULL) == AIMS_OK) {
        int64_t n = 0;
        memcpy(&n, data, sizeof n);
        v = (double)n;
    }
    aims_msg_destroy(q);
    aims_msg_destroy(rep);
    return v;
}

/* Closed loop from 6 threads for 3 s (the queue never runs dry): calls per
 * second the instance serves. */
typedef struct cap_arg {
    aims_client *c;
    const aims_msg *req;
    uint64_t until;
    uint64_t ok;
} cap_arg;

static void *cap_main(void *arg)
{
    cap_arg *a = arg;
    aims_msg *rep = NULL;
    if (aims_msg_create(&rep) != AIMS_OK) {
        return NULL;
    }
    while (it_now_ms() < a->until) {
        if (aims_client_call(a->c, "echo", "echo", a->req, rep, AIMS_CALL_IDEMPOTENT,
                             DEADLINE_MS) == AIMS_OK) {
            a->ok++;
        }
    }
    aims_msg_destroy(rep);
    return NULL;
}

static double measure_capacity(aims_client *c, const aims_msg *req)
{
    enum { T = 6 };
    cap_arg a[T];
    pthread_t tid[T];
    const uint64_t t0 = it_now_ms();
    for (int i = 0; i < T; i++) {
        a[i] = (cap_arg){c, req, t0 + 3000, 0};
        pthread_create(&tid[i], NULL, cap_main, &a[i]);
    }
    uint64_t ok = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(tid[i], NULL);
        ok += a[i].ok;
    }
    return (double)ok * 1000.0 / (double)(it_now_ms() - t0);
}

/* One open-loop phase at `rate` calls/s for `seconds`; returns goodput/s. */
static double run_phase(aims_client *c, const aims_msg *req, const it_proc *const *nodes,
                        double cap, double factor, int seconds, int check)
{
    const pid_t pid = nodes[0]->pid;
    it_outcomes_reset(&g_st.o);
    for (size_t w = 0; w < MAX_SECONDS; w++) {
        atomic_store(&g_st.win[w], 0);
    }
    g_st.t0_ms = g_st.t0_us = 0;
    atomic_store(&g_n_rej, 0);
    atomic_store(&g_n_ok, 0);
    atomic_store(&g_n_ping, 0);
    const double rate = cap * factor;
    const long period_ns = (long)(1e9 / rate);
    it_sampler smp;
    it_sampler_start(&smp, pid, 50);
    const long rss0 = smp.peak_kb;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    g_st.t0_ms = it_now_ms();
    g_st.t0_us = it_now_us();
    double runs_at2 = 0.0, runs_end = 0.0, busy_at2 = 0.0, busy_end = 0.0;
    uint64_t t_at2 = 0, t_end = 0;
    int runs_read = 0;
    const uint64_t end = g_st.t0_ms + (uint64_t)seconds * 1000u;
    uint64_t issued = 0;
    while (it_now_ms() < end) {
        const uint64_t el = it_now_ms() - g_st.t0_ms;
        if (runs_read == 0 && el >= 2000) {
            double sum = 0.0, busy = 0.0;
            for (size_t k = 0; nodes[k] != NULL; k++) {
                sum += node_stat(c, nodes[k]->addr, "batches");
                busy += node_stat(c, nodes[k]->addr, "busy_ns");
            }
            runs_at2 = sum;
            busy_at2 = busy;
            t_at2 = it_now_ms();
            runs_read++;
        }
        const int direct = issued % g_direct_every == g_direct_every - 1u;
        (void)aims_client_call_async(direct ? g_direct : c, "echo", "echo", req,
                                     AIMS_CALL_IDEMPOTENT, DEADLINE_MS, on_done,
                                     (void *)(uintptr_t)((it_now_us() << 2) | (unsigned)direct));
        if (issued % 10u == 4u) {
            atomic_fetch_add(&g_pings_out, 1);
            (void)aims_client_call_async(g_direct, "echo", "$ping", req, AIMS_CALL_IDEMPOTENT,
                                         DEADLINE_MS, on_done,
                                         (void *)(uintptr_t)((it_now_us() << 2) | 2u));
        }
        issued++;
        it_pace(&next, period_ns);
    }
    if (runs_read == 1) {
        for (size_t k = 0; nodes[k] != NULL; k++) {
            runs_end += node_stat(c, nodes[k]->addr, "batches");
            busy_end += node_stat(c, nodes[k]->addr, "busy_ns");
        }
        t_end = it_now_ms();
        runs_read++;
    }
    const uint64_t t1 = it_now_ms();
    while ((atomic_load(&g_st.o.done) < issued || atomic_load(&g_pings_out) > 0) &&
           it_now_ms() - t1 < 10000) {
        it_sleep_ms(10);
    }
    (void)it_sampler_stop(&smp);
    /* Goodput over the windows after the first 2 s, up to the end of the offer. */
    uint64_t good = 0;
    uint64_t worst = UINT64_MAX;
    char wins[256] = "";
    size_t wl = 0;
    for (int w = 2; w < seconds && w < MAX_SECONDS; w++) {
        const uint64_t g = atomic_load(&g_st.win[w]);
        good += g;
        worst = g < worst ? g : worst;
        wl += (size_t)snprintf(wins + wl, wl < sizeof wins ? sizeof wins - wl : 0, " %llu",
                               (unsigned long long)g);
    }
    const double gp = seconds > 2 ? (double)good / (double)(seconds - 2) : 0.0;
    const double span_s = runs_read == 2 ? (double)(t_end - t_at2) * 1e-3 : 0.0;
    const double cap_in = span_s > 0.5 ? (runs_end - runs_at2) / span_s : 0.0;
    size_t n_nodes = 0;
    while (nodes[n_nodes] != NULL) {
        n_nodes++;
    }
    const double util = span_s > 0.5 ? (busy_end - busy_at2) * 1e-9 / span_s / (double)n_nodes
                                     : 0.0;
    it_log("%.2fx (%.0f calls/s offered, %llu issued): goodput %.1f/s = %.0f %% of capacity "
           "%.1f/s; worst window %llu; windows:%s",
           factor, rate, (unsigned long long)issued, gp, 100.0 * gp / cap, cap,
           (unsigned long long)worst, wins);
    it_log("   during the phase: %.1f runs/s executed (%.0f %% of the capacity measured first), "
           "instances busy %.0f %% of the time; goodput = %.0f %% of the runs",
           cap_in, 100.0 * cap_in / cap, 100.0 * util, cap_in > 0 ? 100.0 * gp / cap_in : 0.0);
    it_log("   good %llu, late %llu, overloaded %llu (no hint %llu), timeout %llu, other %llu; "
           "node VmRSS %ld -> peak %ld KiB",
           (unsigned long long)atomic_load(&g_st.o.ok), (unsigned long long)atomic_load(&g_st.o.late),
           (unsigned long long)atomic_load(&g_st.o.overloaded),
           (unsigned long long)atomic_load(&g_st.o.no_hint),
           (unsigned long long)atomic_load(&g_st.o.timeout),
           (unsigned long long)atomic_load(&g_st.o.other), rss0, smp.peak_kb);
    const size_t nr = sort_log(g_rej_us, atomic_load(&g_n_rej), REJ_MAX,
                               "the node's rejections (no client retry)");
    const size_t np = sort_log(g_ping_us, atomic_load(&g_n_ping), PING_MAX,
                               "$ping through the same client meanwhile (the control)");
    size_t nok = atomic_load(&g_n_ok);
    nok = nok < OK_MAX ? nok : OK_MAX;
    if (nok > 0) {
        qsort(g_ok_us, nok, sizeof g_ok_us[0], cmp_u64);
    }
    if (g_json != NULL) {
        fprintf(g_json,
                "{\"instances\": %zu, \"factor\": %.2f, \"seconds\": %d, \"offered_per_s\": %.1f, "
                "\"capacity_measured_per_s\": %.1f, \"runs_per_s_during\": %.1f, "
                "\"goodput_per_s\": %.1f, \"goodput_pct_of_capacity\": %.1f, "
                "\"goodput_pct_of_runs\": %.1f, \"worst_window\": %llu, \"busy_pct\": %.1f, "
                "\"ok\": %llu, \"late\": %llu, \"overloaded\": %llu, \"timeout\": %llu, "
                "\"other\": %llu, \"ok_p50_ms\": %.2f, \"ok_p99_ms\": %.2f, "
                "\"rejections_seen\": %zu, \"reject_p50_ms\": %.2f, \"reject_p90_ms\": %.2f, "
                "\"reject_p99_ms\": %.2f, \"reject_max_ms\": %.2f, \"direct_every\": %u, "
                "\"ping_n\": %zu, \"ping_p50_ms\": %.2f, \"ping_p99_ms\": %.2f, "
                "\"ping_max_ms\": %.2f, \"rss_growth_kib\": %ld}\n",
                n_nodes, factor, seconds, rate, cap, cap_in, gp, 100.0 * gp / cap,
                cap_in > 0 ? 100.0 * gp / cap_in : 0.0, (unsigned long long)worst, 100.0 * util,
                (unsigned long long)atomic_load(&g_st.o.ok),
                (unsigned long long)atomic_load(&g_st.o.late),
                (unsigned long long)atomic_load(&g_st.o.overloaded),
                (unsigned long long)atomic_load(&g_st.o.timeout),
                (unsigned long long)atomic_load(&g_st.o.other),
                nok > 0 ? (double)g_ok_us[nok / 2] * 1e-3 : 0.0,
                nok > 0 ? (double)g_ok_us[nok * 99 / 100] * 1e-3 : 0.0, nr,
                nr > 0 ? (double)g_rej_us[nr / 2] * 1e-3 : 0.0,
                nr > 0 ? (double)g_rej_us[nr * 9 / 10] * 1e-3 : 0.0,
                nr > 0 ? (double)g_rej_us[nr * 99 / 100] * 1e-3 : 0.0,
                nr > 0 ? (double)g_rej_us[nr - 1] * 1e-3 : 0.0, g_direct_every, np,
                np > 0 ? (double)g_ping_us[np / 2] * 1e-3 : 0.0,
                np > 0 ? (double)g_ping_us[np * 99 / 100] * 1e-3 : 0.0,
                np > 0 ? (double)g_ping_us[np - 1] * 1e-3 : 0.0, smp.peak_kb - rss0);
        fflush(g_json);
    }
    IT_CHECK(atomic_load(&g_st.o.done) == issued, "%llu calls never completed",
             (unsigned long long)(issued - atomic_load(&g_st.o.done)));
    IT_CHECK(atomic_load(&g_st.o.other) == 0, "untyped failures under overload, first: %s",
             g_st.o.other_err);
    IT_CHECK(smp.peak_kb - rss0 <= RSS_BOUND_KB, "node memory grew by %ld KiB",
             smp.peak_kb - rss0);
    if (check) {
        IT_CHECK(atomic_load(&g_st.o.no_hint) == 0, "OVERLOADED without a 'retry after' hint");
        IT_CHECK(cap_in > 0.0, "could not read the node's run counters");
        IT_CHECK(gp >= 0.9 * cap_in,
                 "goodput %.1f/s at %.2fx is below 90 %% of the %.1f runs/s the node executed",
                 gp, factor, cap_in);
        IT_CHECK(util >= 0.7, "at %.2fx the instances were busy only %.0f %% of the time",
                 factor, 100.0 * util);
    }
    it_sleep_ms(500);
    return gp;
}

int main(int argc, char **argv)
{
    it_init(argc, argv, "goodput");
    const char *env_s = getenv("AIMS_GOODPUT_SECONDS");
    const char *env_f = getenv("AIMS_GOODPUT_FACTORS");
    const int check = getenv("AIMS_GOODPUT_NOCHECK") == NULL;
    const char *env_j = getenv("AIMS_GOODPUT_JSON");
    if (env_j != NULL && env_j[0] != '\0') {
        g_json = fopen(env_j, "a");
        IT_CHECK(g_json != NULL, "cannot open %s", env_j);
    }
    const char *env_d = getenv("AIMS_GOODPUT_DIRECT_EVERY");
    if (env_d != NULL && atoi(env_d) >= 1) {
        g_direct_every = (unsigned)atoi(env_d);
    }
    int seconds = env_s != NULL ? atoi(env_s) : 6;
    seconds = seconds < 3 ? 3 : (seconds > MAX_SECONDS ? MAX_SECONDS : seconds);
    char factors[128];
    snprintf(factors, sizeof factors, "%s", env_f != NULL ? env_f : "1.25,2.5,5");

    it_proc reg;
    it_spawn_registry(&reg, 1000);
    it_proc node;
    char slow_us[32];
    snprintf(slow_us, sizeof slow_us, "%d", SLOW_US);
    it_spawnl(&node, "echo", 20000, "--name", "echo", "--listen", "tcp://127.0.0.1:0", "--join",
              reg.addr, "--echo", "echo", "--slow-us", slow_us, "--concurrency", "1",
              "--workers", "1", "--heartbeat-ms", "1000", (char *)NULL);
    aims_client *c = it_client(reg.addr, 50);
    g_direct = it_client(reg.addr, 50);
    IT_CHECK(aims_client_set_param_i64(g_direct, AIMS_CLIENT_MAX_ATTEMPTS, 1) == AIMS_OK,
             "max_attempts");
    IT_CHECK(aims_client_set_param_i64(c, AIMS_CLIENT_MAX_PENDING, 1 << 16) == AIMS_OK,
             "max_pending");
    static unsigned char payload[PAYLOAD];
    aims_msg *req = NULL;
    aims_msg *rep = NULL;
    const uint64_t dims[1] = {PAYLOAD};
    IT_CHECK(aims_msg_create(&req) == AIMS_OK && aims_msg_create(&rep) == AIMS_OK, "msg");
    IT_CHECK(aims_msg_add(req, "x", AIMS_DT_BYTES, dims, 1, payload, AIMS_MSG_BORROW) == AIMS_OK,
             "msg add");
    const uint64_t tw = it_now_ms();
    int warm = 0;
    while (warm < 20 && it_now_ms() - tw < 20000) {
        const aims_status rc = aims_client_call(c, "echo", "echo", req, rep, 0, 5000);
        if (rc == AIMS_OK) {
            warm++;
        } else {
            it_sleep_ms(20);
        }
    }
    IT_CHECK(warm == 20, "warm-up did not finish");
    const double cap = measure_capacity(c, req);
    it_log("measured capacity: %.1f calls/s (spin %d us, one worker)", cap, SLOW_US);
    IT_CHECK(cap > 10.0, "capacity %.1f/s: the node is not serving", cap);

    for (char *save = NULL, *tok = strtok_r(factors, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        const double f = atof(tok);
        IT_CHECK(f > 0.0 && f <= 20.0, "bad factor '%s'", tok);
        const it_proc *const one[2] = {&node, NULL};
        (void)run_phase(c, req, one, cap, f, seconds, check);
    }
    /* Two instances behind one client (AIMS_GOODPUT_PAIR=0: skipped). */
    const char *env_p = getenv("AIMS_GOODPUT_PAIR");
    if (env_p == NULL || strcmp(env_p, "0") != 0) {
        it_proc node2;
        it_spawnl(&node2, "echo2", 20000, "--name", "echo2", "--listen", "tcp://127.0.0.1:0",
                  "--join", reg.addr, "--echo", "echo", "--slow-us", slow_us, "--concurrency",
                  "1", "--workers", "1", "--heartbeat-ms", "1000", (char *)NULL);
        it_sleep_ms(500); /* the client's view syncs every 50 ms */
        const double cap2 = measure_capacity(c, req);
        it_log("measured capacity of two instances: %.1f calls/s", cap2);
        const it_proc *const two[3] = {&node, &node2, NULL};
        const char *env_pf = getenv("AIMS_GOODPUT_PAIR_FACTORS");
        snprintf(factors, sizeof factors, "%s", env_pf != NULL ? env_pf : "1.25,2.5,5");
        for (char *save = NULL, *tok = strtok_r(factors, ",", &save); tok != NULL;
             tok = strtok_r(NULL, ",", &save)) {
            const double f = atof(tok);
            IT_CHECK(f > 0.0 && f <= 20.0, "bad factor '%s'", tok);
            (void)run_phase(c, req, two, cap2, f, seconds, check);
        }
    }
    /* Afterwards: normal service. */
    for (int i = 0; i < 20; i++) {
        const aims_status rc =
            aims_client_call(c, "echo", "echo", req, rep, AIMS_CALL_IDEMPOTENT, 5000);
        IT_CHECK(rc == AIMS_OK, "call %d after the overload: %s: %s", i, aims_strerror(rc),
                 aims_client_errmsg(c));
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    aims_client_destroy(g_direct);
    if (g_json != NULL) {
        fclose(g_json);
    }
    it_pass();
}
