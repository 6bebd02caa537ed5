/*
 * itest.h -- a tiny harness for the multi-process integration tests.
 *
 * Each test program is one scenario (DESIGN.md §7: several aims_node daemons
 * on 127.0.0.1 and Unix sockets, a registry daemon, clients in the test
 * process). The harness spawns daemons, waits for their "ready" line, keeps
 * a steady load on a service from several client threads, reads the registry's
 * view and a process's memory, and -- whatever happens, failure, crash signal
 * or timeout -- kills every child and removes the socket directory.
 *
 * Children are spawned through this same program re-executed as a trampoline
 * ("--itest-exec"): it sets PR_SET_PDEATHSIG(SIGKILL) and then execs the
 * daemon, so even a test killed by SIGKILL leaves no daemon behind.
 *
 * Timing assertions are only ever generous detection bounds.
 */
#ifndef ITEST_H
#define ITEST_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <aims/aims_svc.h>

#define IT_MAX_PIDS 64

/* One spawned daemon. */
typedef struct it_proc {
    pid_t pid;        /* 0 once reaped */
    char addr[256];   /* first address from its "ready" line */
    char http[256];   /* with --http: the door's URL from its "http" line (port 0 resolved) */
    char name[64];
} it_proc;

/* Start-up: argv[1] (or $AIMS_NODE) is the aims_node executable. Makes the
 * socket directory, installs the cleanup handlers and a watchdog alarm. Call
 * first in main(); it also runs the trampoline when argv says so. */
void it_init(int argc, char **argv, const char *test_name);
/* Socket directory (mkdtemp; removed at exit). */
const char *it_dir(void);
/* Print "# ..." progress. */
void it_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Report, clean up and exit(1). */
void it_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#define IT_CHECK(cond, ...)                                                         \
    do {                                                                            \
        if (!(cond)) {                                                              \
            it_log("check failed at %s:%d: %s", __FILE__, __LINE__, #cond);         \
            it_fail(__VA_ARGS__);                                                   \
        }                                                                           \
    } while (0)
/* Finish: clean up, print the verdict, exit 0. */
void it_pass(void) __attribute__((noreturn));

/* Spawn aims_node with the NULL-terminated args (after argv[0]) and wait up to
 * timeout_ms for "ready <addr>". Fails the test when it does not come. */
void it_spawn(it_proc *p, const char *name, const char *const *args, int timeout_ms);
/* it_spawn with the args as a NULL-terminated variadic list. */
void it_spawnl(it_proc *p, const char *name, int timeout_ms, ...);
/* Spawn the registry node ("reg", tcp on 127.0.0.1, --host-registry) with
 * the given heartbeat period. */
void it_spawn_registry(it_proc *p, int heartbeat_ms);
/* Run aims_node with args to completion (no ready line expected); returns
 * the wait status, failing the test after timeout_ms. */
int it_run(const char *const *args, int timeout_ms);
/* Send a signal. */
void it_signal(it_proc *p, int sig);
/* Wait up to timeout_ms for exit; returns the wait status, or -1 on timeout. */
int it_wait_exit(it_proc *p, int timeout_ms);

/* Monotonic milliseconds. */
uint64_t it_now_ms(void);
void it_sleep_ms(unsigned ms);
/* VmRSS of a process in KiB (-1 if unreadable). */
long it_rss_kb(pid_t pid);

/* Open-loop pacing: advance *next (CLOCK_MONOTONIC) by period_ns and sleep
 * until then. */
void it_pace(struct timespec *next, long period_ns);

/* Peak VmRSS of a process, sampled every period_ms on a thread of its own
 * between start and stop. */
typedef struct it_sampler {
    pid_t pid;
    unsigned period_ms;
    _Atomic int stop;
    long peak_kb;
    pthread_t tid;
} it_sampler;
void it_sampler_start(it_sampler *s, pid_t pid, unsigned period_ms);
/* Stop sampling; returns the peak (KiB; at least the first sample). */
long it_sampler_stop(it_sampler *s);

/* Live instance addresses of `service` (NULL: all) in the registry hosted at
 * reg_url ('\n'-separated into buf), via the registry's "changes" method
 * (since = -1: a snapshot). Returns the count, or -1 when the registry cannot
 * be reached. */
int it_registry_addrs(aims_client *c, const char *reg_url, const char *service, char *buf,
                      size_t cap);
/* 1 when addr is one of the '\n'-separated lines of list. */
int it_list_has(const char *list, const char *addr);
/* Sum of a counter in a metrics object's Prometheus text (all label sets). */
double it_metric_sum(aims_metrics *mx, const char *name);

/* Train a tiny 2-class softmax model on IT_BUNDLE_COLS features (with a
 * scaling pipeline) and save the bundle and the pipeline. */
#define IT_BUNDLE_COLS 4
void it_make_bundle(const char *bundle_path, const char *pipeline_path);

/* A client joined to the registry at reg_url (sync every sync_ms). */
aims_client *it_client(const char *reg_url, int64_t sync_ms);

/* Steady load: `threads` client threads calling `method` of `service` in a loop
 * with an "x" BYTES tensor of payload bytes (echoed back and checked), idempotent,
 * each call bounded by timeout_ms. Counts successes per answering pid. */
typedef struct it_load {
    aims_client *client;
    const char *service;
    const char *method;
    int threads;
    size_t payload;
    int64_t timeout_ms;
    unsigned pause_us;          /* between calls of one thread (0: none) */
    int infer;                  /* 1: infer "predict" with a 1-row "x" (no pid counts) */
    /* results */
    _Atomic uint64_t ok, failed;
    pthread_mutex_t mu;
    pid_t pid[IT_MAX_PIDS];
    uint64_t pid_ok[IT_MAX_PIDS];
    size_t n_pid;
    char first_error[512];
    /* private */
    _Atomic int stop;
    pthread_t tid[16];
} it_load;

void it_load_start(it_load *L);
void it_load_stop(it_load *L);
/* Successful calls answered by pid so far. */
uint64_t it_load_pid_ok(it_load *L, pid_t pid);
/* Wait until pid answered at least once more than `base` calls (<= timeout_ms);
 * 1 if it did. */
int it_load_wait_pid(it_load *L, pid_t pid, uint64_t base, int timeout_ms);

/* Outcome counters of a run of async calls (test_goodput, test_overload):
 * several client threads complete calls at once, so the counters are atomic
 * and the first unexpected error text is kept under mu. */
typedef struct it_outcomes {
    _Atomic uint64_t done, ok, late, overloaded, no_hint, timeout, other;
    pthread_mutex_t mu;
    char other_err[512]; /* first failure that is not OVERLOADED or TIMEOUT */
    char hint_err[512];  /* first OVERLOADED whose text lacks "retry after" */
} it_outcomes;

#define IT_OUTCOMES_INIT {.mu = PTHREAD_MUTEX_INITIALIZER}

/* Zero the counters and texts (the mutex is kept). Not while calls run. */
void it_outcomes_reset(it_outcomes *o);
/* Count one completion: ok (or late when `late`), OVERLOADED (and no_hint when
 * error lacks "retry after"), TIMEOUT, or other; then done. */
void it_outcomes_count(it_outcomes *o, aims_status st, int late, const aims_msg *reply,
                       const char *error);

#endif /* ITEST_H */
