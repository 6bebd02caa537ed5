/*
 * test_goodput.c -- goodput under overload (issue 11): one echo instance that
 * spins SLOW_US per call with one worker, a client making idempotent calls
 * with 2 s deadlines, open loop at 1.25x, 2.5x and 5x the capacity the test
 * measured first.
 *
 * Goodput is the number of calls answered with AIMS_OK within their deadline
 * per second. Expected: goodput >= 90 % of the measured capacity at every
 * offered load (counted after the first 2 s of a phase, when the queue has
 * reached its steady state), every failure typed (AIMS_E_OVERLOADED with a
 * "retry after" hint or AIMS_E_TIMEOUT), the node's VmRSS bounded.
 *
 * Before the admission control of service_admit.c the same run served 7-30 %
 * of capacity (congestion collapse: the node kept busy with requests that
 * finished just after their caller gave up). docs/OVERLOAD.md has the figures.
 *
 * Environment: AIMS_GOODPUT_SECONDS (phase length, default 6),
 * AIMS_GOODPUT_FACTORS ("1.25,2.5,5"), AIMS_GOODPUT_NOCHECK=1 (measure only:
 * print the figures, assert nothing about goodput).
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
    _Atomic uint64_t done, good, late, overloaded, timeout, other, no_hint;
    _Atomic uint64_t win[MAX_SECONDS]; /* good completions per 1 s window */
    uint64_t t0_ms;
    pthread_mutex_t mu;
    char other_err[512];
} gp_stats;

static gp_stats g_st = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void on_done(void *user, aims_status st, const aims_msg *reply, const char *error)
{
    (void)reply;
    const uint64_t now = it_now_ms();
    const uint64_t issued = (uint64_t)(uintptr_t)user;
    if (st == AIMS_OK && now - issued <= DEADLINE_MS) {
        atomic_fetch_add(&g_st.good, 1);
        const uint64_t w = (now - g_st.t0_ms) / 1000u;
        if (w < MAX_SECONDS) {
            atomic_fetch_add(&g_st.win[w], 1);
        }
    } else if (st == AIMS_OK) {
        atomic_fetch_add(&g_st.late, 1);
    } else if (st == AIMS_E_OVERLOADED) {
        atomic_fetch_add(&g_st.overloaded, 1);
        if (error == NULL || strstr(error, "retry after") == NULL) {
            atomic_fetch_add(&g_st.no_hint, 1);
        }
    } else if (st == AIMS_E_TIMEOUT) {
        atomic_fetch_add(&g_st.timeout, 1);
    } else {
        atomic_fetch_add(&g_st.other, 1);
        pthread_mutex_lock(&g_st.mu);
        if (g_st.other_err[0] == '\0') {
            snprintf(g_st.other_err, sizeof g_st.other_err, "%s: %s", aims_strerror(st),
                     error != NULL ? error : "(null)");
        }
        pthread_mutex_unlock(&g_st.mu);
    }
    atomic_fetch_add(&g_st.done, 1);
}

typedef struct sampler {
    pid_t pid;
    _Atomic int stop;
    long peak_kb;
    pthread_t tid;
} sampler;

static void *sample_main(void *arg)
{
    sampler *s = arg;
    while (!atomic_load(&s->stop)) {
        const long kb = it_rss_kb(s->pid);
        if (kb > s->peak_kb) {
            s->peak_kb = kb;
        }
        it_sleep_ms(50);
    }
    return NULL;
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

static void add_ns(struct timespec *t, long ns)
{
    t->tv_nsec += ns;
    while (t->tv_nsec >= 1000000000L) {
        t->tv_nsec -= 1000000000L;
        t->tv_sec++;
    }
}

/* One open-loop phase at `rate` calls/s for `seconds`; returns goodput/s. */
static double run_phase(aims_client *c, const aims_msg *req, pid_t pid, double cap,
                        double factor, int seconds, int check)
{
    memset((void *)&g_st, 0, offsetof(gp_stats, mu));
    g_st.other_err[0] = '\0';
    const double rate = cap * factor;
    const long period_ns = (long)(1e9 / rate);
    sampler smp = {.pid = pid, .peak_kb = it_rss_kb(pid)};
    const long rss0 = smp.peak_kb;
    pthread_create(&smp.tid, NULL, sample_main, &smp);
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    g_st.t0_ms = it_now_ms();
    const uint64_t end = g_st.t0_ms + (uint64_t)seconds * 1000u;
    uint64_t issued = 0;
    while (it_now_ms() < end) {
        (void)aims_client_call_async(c, "echo", "echo", req, AIMS_CALL_IDEMPOTENT, DEADLINE_MS,
                                     on_done, (void *)(uintptr_t)it_now_ms());
        issued++;
        add_ns(&next, period_ns);
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) != 0) {
        }
    }
    const uint64_t t1 = it_now_ms();
    while (atomic_load(&g_st.done) < issued && it_now_ms() - t1 < 10000) {
        it_sleep_ms(10);
    }
    atomic_store(&smp.stop, 1);
    pthread_join(smp.tid, NULL);
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
    it_log("%.2fx (%.0f calls/s offered, %llu issued): goodput %.1f/s = %.0f %% of capacity "
           "%.1f/s; worst window %llu; windows:%s",
           factor, rate, (unsigned long long)issued, gp, 100.0 * gp / cap, cap,
           (unsigned long long)worst, wins);
    it_log("   good %llu, late %llu, overloaded %llu (no hint %llu), timeout %llu, other %llu; "
           "node VmRSS %ld -> peak %ld KiB",
           (unsigned long long)atomic_load(&g_st.good), (unsigned long long)atomic_load(&g_st.late),
           (unsigned long long)atomic_load(&g_st.overloaded),
           (unsigned long long)atomic_load(&g_st.no_hint),
           (unsigned long long)atomic_load(&g_st.timeout),
           (unsigned long long)atomic_load(&g_st.other), rss0, smp.peak_kb);
    IT_CHECK(atomic_load(&g_st.done) == issued, "%llu calls never completed",
             (unsigned long long)(issued - atomic_load(&g_st.done)));
    IT_CHECK(atomic_load(&g_st.other) == 0, "untyped failures under overload, first: %s",
             g_st.other_err);
    IT_CHECK(smp.peak_kb - rss0 <= RSS_BOUND_KB, "node memory grew by %ld KiB",
             smp.peak_kb - rss0);
    if (check) {
        IT_CHECK(atomic_load(&g_st.no_hint) == 0, "OVERLOADED without a 'retry after' hint");
        IT_CHECK(gp >= 0.9 * cap, "goodput %.1f/s at %.2fx is below 90 %% of capacity %.1f/s",
                 gp, factor, cap);
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
        (void)run_phase(c, req, node.pid, cap, f, seconds, check);
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
    it_pass();
}
