/*
 * itest.c -- the integration-test harness (see itest.h).
 *
 * Cleanup is the part that matters: every spawned pid is recorded in a fixed
 * array, and one async-signal-safe routine (kill, waitpid, getdents64 +
 * unlinkat, rmdir: no malloc, no stdio) kills and reaps them and empties and
 * removes the socket directory. It runs from atexit(), from it_fail(), and
 * from the handlers of SIGTERM/SIGINT (meson's timeout), SIGALRM (our own
 * watchdog) and the crash signals. The trampoline's PR_SET_PDEATHSIG covers
 * the one case no handler sees: this process being SIGKILLed.
 */
#include "itest.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char *g_node_bin;
static char g_self[4096];
static char g_dir[256];
static const char *g_test = "itest";
static volatile pid_t g_pids[IT_MAX_PIDS];
static volatile sig_atomic_t g_cleaned;

/* ---- cleanup (async-signal-safe) ------------------------------------------ */

static void remove_dir(void)
{
    if (g_dir[0] == '\0') {
        return;
    }
    const int fd = open(g_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        /* One level: the daemons create only socket files here. */
        for (;;) {
            char buf[4096] __attribute__((aligned(8)));
            const long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
            if (n <= 0) {
                break;
            }
            for (long off = 0; off < n;) {
                const struct dirent64 *d = (const struct dirent64 *)(void *)(buf + off);
                if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0) {
                    (void)unlinkat(fd, d->d_name, 0);
                }
                off += d->d_reclen;
            }
        }
        close(fd);
    }
    (void)rmdir(g_dir);
}

static void cleanup_all(void)
{
    if (g_cleaned) {
        return;
    }
    g_cleaned = 1;
    for (int i = 0; i < IT_MAX_PIDS; i++) {
        const pid_t pid = g_pids[i];
        if (pid > 0) {
            (void)kill(pid, SIGKILL);
            (void)waitpid(pid, NULL, 0);
            g_pids[i] = 0;
        }
    }
    remove_dir();
}

static void on_fatal_signal(int sig)
{
    static const char msg[] = "# itest: fatal signal or watchdog: killing children\n";
    (void)write(2, msg, sizeof msg - 1);
    cleanup_all();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void track(pid_t pid)
{
    for (int i = 0; i < IT_MAX_PIDS; i++) {
        if (g_pids[i] == 0) {
            g_pids[i] = pid;
            return;
        }
    }
    (void)kill(pid, SIGKILL);
    it_fail("more than %d children", IT_MAX_PIDS);
}

static void untrack(pid_t pid)
{
    for (int i = 0; i < IT_MAX_PIDS; i++) {
        if (g_pids[i] == pid) {
            g_pids[i] = 0;
        }
    }
}

/* ---- reporting --------------------------------------------------------------- */

void it_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "# %s: ", g_test);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void it_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s: ", g_test);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    cleanup_all();
    exit(1);
}

void it_pass(void)
{
    cleanup_all();
    printf("PASS %s\n", g_test);
    fflush(stdout);
    exit(0);
}

/* ---- start-up ------------------------------------------------------------------ */

/* The trampoline: die with the test process, then become the daemon. */
static void trampoline(char **argv)
{
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != (pid_t)atol(argv[2])) {
        _exit(126); /* the parent is already gone */
    }
    execv(argv[3], argv + 3);
    _exit(127);
}

void it_init(int argc, char **argv, const char *test_name)
{
    if (argc >= 4 && strcmp(argv[1], "--itest-exec") == 0) {
        trampoline(argv);
    }
    g_test = test_name;
    g_node_bin = argc > 1 ? argv[1] : getenv("AIMS_NODE");
    if (g_node_bin == NULL || access(g_node_bin, X_OK) != 0) {
        fprintf(stderr, "usage: %s PATH/TO/aims_node (or $AIMS_NODE)\n", argv[0]);
        exit(2);
    }
    const ssize_t n = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (n <= 0) {
        fprintf(stderr, "cannot read /proc/self/exe\n");
        exit(2);
    }
    g_self[n] = '\0';
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    const int sigs[] = {SIGTERM, SIGINT, SIGALRM, SIGABRT, SIGSEGV, SIGBUS, SIGFPE};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        signal(sigs[i], on_fatal_signal);
    }
    atexit(cleanup_all);
    /* Under ASan freed memory sits in a 256 MiB quarantine, which would read
     * as growth in the daemons' VmRSS: keep it small for the children. */
    char asan[1024];
    const char *prev = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof asan, "%s%squarantine_size_mb=4", prev != NULL ? prev : "",
             prev != NULL && prev[0] != '\0' ? ":" : "");
    setenv("ASAN_OPTIONS", asan, 1);
    /* A fallback: meson's timeout (300 s x multiplier) sends SIGTERM first. */
    const char *wd = getenv("AIMS_ITEST_WATCHDOG_S");
    alarm(wd != NULL ? (unsigned)atoi(wd) : 1200u);
    snprintf(g_dir, sizeof g_dir, "/tmp/aims-itest-XXXXXX");
    if (mkdtemp(g_dir) == NULL) {
        g_dir[0] = '\0';
        it_fail("mkdtemp: %s", strerror(errno));
    }
    it_log("socket dir %s, daemon %s", g_dir, g_node_bin);
}

const char *it_dir(void)
{
    return g_dir;
}

/* ---- time, memory -------------------------------------------------------------- */

uint64_t it_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

void it_sleep_ms(unsigned ms)
{
    struct timespec t = {(time_t)(ms / 1000u), (long)(ms % 1000u) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

long it_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    long kb = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = atol(line + 6);
            break;
        }
    }
    fclose(f);
    return kb;
}

/* ---- processes ---------------------------------------------------------------- */

/* Read one line "<prefix><value>" from fd until end_ms (it_now_ms) into out:
 * 0, -1 timeout, -2 EOF (the daemon exited), -3 another line or too long. */
static int read_line(int fd, const char *prefix, char *out, size_t cap, uint64_t end_ms)
{
    char line[512];
    size_t len = 0;
    const size_t pl = strlen(prefix);
    while (len < sizeof line - 1) {
        const uint64_t now = it_now_ms();
        if (now >= end_ms) {
            return -1;
        }
        struct pollfd pfd = {fd, POLLIN, 0};
        const int r = poll(&pfd, 1, (int)(end_ms - now));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return -1;
        }
        const ssize_t n = read(fd, line + len, 1);
        if (n <= 0) {
            return -2;
        }
        if (line[len] == '\n') {
            line[len] = '\0';
            if (strncmp(line, prefix, pl) != 0 || strlen(line + pl) >= cap) {
                return -3;
            }
            strcpy(out, line + pl);
            return 0;
        }
        len++;
    }
    return -3;
}

/* Read the "ready <addr>" line into p->addr and, when args ask for an HTTP
 * door, the "http <url>" line after it into p->http. The door listens where
 * --http says; tests pass port 0 and take the port from this line, since a
 * port probed free beforehand can be taken (by any socket's ephemeral port)
 * before the daemon binds it. */
static int read_ready(int fd, it_proc *p, const char *const *args, int timeout_ms)
{
    const uint64_t end = it_now_ms() + (uint64_t)timeout_ms;
    int r = read_line(fd, "ready ", p->addr, sizeof p->addr, end);
    for (size_t i = 0; r == 0 && args[i] != NULL; i++) {
        if (strcmp(args[i], "--http") == 0) {
            r = read_line(fd, "http ", p->http, sizeof p->http, end);
            break;
        }
    }
    return r;
}

/* Spawn the daemon through the trampoline, stdout into a pipe; returns the
 * pid and the pipe's read end. */
static pid_t spawn_raw(const char *name, const char *const *args, int *out_fd)
{
    const char *argv[64];
    size_t n = 0;
    char ppid[32];
    snprintf(ppid, sizeof ppid, "%ld", (long)getpid());
    argv[n++] = g_self;
    argv[n++] = "--itest-exec";
    argv[n++] = ppid;
    argv[n++] = g_node_bin;
    for (size_t i = 0; args[i] != NULL && n < 63; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;

    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        it_fail("pipe: %s", strerror(errno));
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGTERM);
    sigaddset(&dfl, SIGINT);
    sigaddset(&dfl, SIGPIPE);
    sigaddset(&dfl, SIGALRM);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &dfl);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, g_self, &fa, &at, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(pfd[1]);
    if (rc != 0) {
        close(pfd[0]);
        it_fail("posix_spawn %s: %s", name, strerror(rc));
    }
    track(pid);
    *out_fd = pfd[0];
    return pid;
}

int it_run(const char *const *args, int timeout_ms)
{
    int fd = -1;
    it_proc p;
    memset(&p, 0, sizeof p);
    p.pid = spawn_raw("aims_node", args, &fd);
    close(fd);
    const int st = it_wait_exit(&p, timeout_ms);
    if (st == -1) {
        it_fail("aims_node did not exit within %d ms", timeout_ms);
    }
    return st;
}

void it_spawn(it_proc *p, const char *name, const char *const *args, int timeout_ms)
{
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    int fd = -1;
    const pid_t pid = spawn_raw(name, args, &fd);
    p->pid = pid;
    const int r = read_ready(fd, p, args, timeout_ms);
    close(fd);
    if (r != 0) {
        int st = 0;
        const int exited = waitpid(pid, &st, WNOHANG) == pid;
        if (exited) {
            untrack(pid);
            p->pid = 0;
        }
        it_fail("daemon %s not ready (%s; %s status %d)", name,
                r == -1 ? "timeout" : r == -2 ? "exited" : "bad ready/http line",
                exited ? "exit" : "running", exited ? st : 0);
    }
    it_log("spawned %s pid %ld at %s", name, (long)pid, p->addr);
}

void it_spawnl(it_proc *p, const char *name, int timeout_ms, ...)
{
    const char *args[56];
    size_t n = 0;
    va_list ap;
    va_start(ap, timeout_ms);
    for (const char *a = va_arg(ap, const char *); a != NULL && n < 55;
         a = va_arg(ap, const char *)) {
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    it_spawn(p, name, args, timeout_ms);
}

void it_spawn_registry(it_proc *p, int heartbeat_ms)
{
    char hb[16];
    snprintf(hb, sizeof hb, "%d", heartbeat_ms);
    it_spawnl(p, "registry", 20000, "--name", "reg", "--listen", "tcp://127.0.0.1:0",
              "--host-registry", "--heartbeat-ms", hb, (char *)NULL);
}

void it_signal(it_proc *p, int sig)
{
    if (p->pid > 0) {
        (void)kill(p->pid, sig);
    }
}

int it_wait_exit(it_proc *p, int timeout_ms)
{
    if (p->pid <= 0) {
        return 0;
    }
    const uint64_t end = it_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        int st = 0;
        const pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            untrack(p->pid);
            p->pid = 0;
            return st;
        }
        if (it_now_ms() >= end) {
            return -1;
        }
        it_sleep_ms(5);
    }
}

/* ---- registry and metrics ---------------------------------------------------- */

/* Line k of a '\n'-separated list (pointer and length), or NULL. */
static const char *nth_line(const char *p, size_t len, size_t k, size_t *out_len)
{
    const char *const end = p + len;
    for (; p < end; k--) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        if (k == 0) {
            *out_len = n;
            return p;
        }
        p += n + 1;
    }
    return NULL;
}

int it_registry_addrs(aims_client *c, const char *reg_url, const char *service, char *buf,
                      size_t cap)
{
    aims_msg *req = NULL, *rep = NULL;
    int count = -1;
    const int64_t since = -1, epoch = 0;
    if (aims_msg_create(&req) != AIMS_OK || aims_msg_create(&rep) != AIMS_OK ||
        aims_msg_add(req, "since", AIMS_DT_I64, NULL, 0, &since, 0) != AIMS_OK ||
        aims_msg_add(req, "epoch", AIMS_DT_I64, NULL, 0, &epoch, 0) != AIMS_OK) {
        it_fail("registry request: %s", aims_errmsg());
    }
    size_t ia = 0, is = 0, alen = 0, slen = 0;
    const void *adata = NULL, *sdata = NULL;
    if (aims_client_call_addr(c, reg_url, "aims.registry", "changes", req, rep, 2000) == AIMS_OK &&
        aims_msg_find(rep, "addresses", &ia) == AIMS_OK &&
        aims_msg_find(rep, "services", &is) == AIMS_OK &&
        aims_msg_get_tensor(rep, ia, NULL, NULL, NULL, NULL, &adata, &alen) == AIMS_OK &&
        aims_msg_get_tensor(rep, is, NULL, NULL, NULL, NULL, &sdata, &slen) == AIMS_OK) {
        count = 0;
        size_t used = 0;
        buf[0] = '\0';
        for (size_t k = 0;; k++) {
            size_t an = 0, sn = 0;
            const char *a = nth_line(adata, alen, k, &an);
            const char *sv = nth_line(sdata, slen, k, &sn);
            if (a == NULL || sv == NULL) {
                break;
            }
            if (service != NULL && (sn != strlen(service) || memcmp(sv, service, sn) != 0)) {
                continue;
            }
            if (used + an + 2 <= cap) {
                memcpy(buf + used, a, an);
                used += an;
                buf[used++] = '\n';
                buf[used] = '\0';
            }
            count++;
        }
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return count;
}

int it_list_has(const char *list, const char *addr)
{
    const size_t n = strlen(addr);
    for (const char *p = list; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        const size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
        if (len == n && memcmp(p, addr, n) == 0) {
            return 1;
        }
        if (nl == NULL) {
            break;
        }
        p = nl + 1;
    }
    return 0;
}

double it_metric_sum(aims_metrics *mx, const char *name)
{
    char *text = NULL;
    size_t len = 0;
    if (mx == NULL || aims_metrics_prometheus(mx, &text, &len) != AIMS_OK) {
        return 0.0;
    }
    double sum = 0.0;
    const size_t n = strlen(name);
    for (char *line = text; line != NULL && *line != '\0';) {
        char *nl = strchr(line, '\n');
        if (nl != NULL) {
            *nl = '\0';
        }
        if (strncmp(line, name, n) == 0 && (line[n] == ' ' || line[n] == '{')) {
            const char *sp = strrchr(line, ' ');
            if (sp != NULL) {
                sum += strtod(sp + 1, NULL);
            }
        }
        line = nl != NULL ? nl + 1 : NULL;
    }
    aims_free(text);
    return sum;
}

aims_client *it_client(const char *reg_url, int64_t sync_ms)
{
    aims_client *c = NULL;
    if (aims_client_create(&c) != AIMS_OK) {
        it_fail("client create: %s", aims_errmsg());
    }
    if (aims_client_set_param_i64(c, AIMS_CLIENT_SYNC_MS, sync_ms) != AIMS_OK ||
        (reg_url != NULL && aims_client_join(c, reg_url) != AIMS_OK)) {
        it_fail("client join %s: %s", reg_url, aims_client_errmsg(c));
    }
    return c;
}

/* ---- a small model --------------------------------------------------------------- */

#define ROWS 64
#define COLS IT_BUNDLE_COLS

/* A fitted pipeline and a trained 2-class softmax model, saved under dir. */
void it_make_bundle(const char *bundle_path, const char *pipeline_path)
{
    static float x[ROWS * COLS];
    static int32_t y[ROWS];
    for (int r = 0; r < ROWS; r++) {
        y[r] = r % 2;
        for (int k = 0; k < COLS; k++) {
            x[r * COLS + k] = (float)(y[r] ? 200 + r + k : 10 + r - k);
        }
    }
    aims_dataset *ds = NULL, *xt = NULL;
    aims_pipeline *p = NULL;
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    aims_bundle *b = NULL;
    IT_CHECK(aims_dataset_create_dense(ROWS, COLS, x, y, &ds) == AIMS_OK, "dataset: %s",
             aims_errmsg());
    IT_CHECK(aims_pipeline_create(&p) == AIMS_OK &&
                 aims_pipeline_add(p, AIMS_STEP_KIND_SCALE, NULL) == AIMS_OK &&
                 aims_pipeline_fit_transform(p, ds, &xt) == AIMS_OK,
             "pipeline: %s", aims_errmsg());
    IT_CHECK(aims_model_create(AIMS_MODEL_KIND_SOFTMAX, COLS, 2, &m) == AIMS_OK &&
                 aims_trainer_create(m, &t) == AIMS_OK &&
                 aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 3) == AIMS_OK &&
                 aims_trainer_fit(t, xt, NULL) == AIMS_OK,
             "training: %s", aims_errmsg());
    IT_CHECK(aims_bundle_create(p, m, &b) == AIMS_OK && aims_bundle_save(b, bundle_path) == AIMS_OK &&
                 aims_pipeline_save(p, pipeline_path) == AIMS_OK,
             "bundle: %s", aims_errmsg());
    aims_bundle_destroy(b);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_pipeline_destroy(p);
    aims_dataset_destroy(xt);
    aims_dataset_destroy(ds);
}

/* ---- load ------------------------------------------------------------------------- */

typedef struct load_arg {
    it_load *L;
    unsigned index;
} load_arg;

static void load_count(it_load *L, pid_t pid)
{
    pthread_mutex_lock(&L->mu);
    size_t i = 0;
    while (i < L->n_pid && L->pid[i] != pid) {
        i++;
    }
    if (i == L->n_pid && L->n_pid < IT_MAX_PIDS) {
        L->pid[L->n_pid++] = pid;
    }
    if (i < L->n_pid) {
        L->pid_ok[i]++;
    }
    pthread_mutex_unlock(&L->mu);
}

static void load_error(it_load *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void load_error(it_load *L, const char *fmt, ...)
{
    atomic_fetch_add(&L->failed, 1);
    pthread_mutex_lock(&L->mu);
    if (L->first_error[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(L->first_error, sizeof L->first_error, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&L->mu);
}

/* Check an echo reply: "x" equal to what was sent, "pid" an i64 scalar. */
static int echo_ok(const aims_msg *rep, const unsigned char *sent, size_t n, pid_t *out_pid)
{
    size_t ix = 0, ip = 0, bytes = 0, pbytes = 0;
    const void *data = NULL, *pdata = NULL;
    aims_dtype dt = 0;
    if (aims_msg_find(rep, "x", &ix) != AIMS_OK || aims_msg_find(rep, "pid", &ip) != AIMS_OK ||
        aims_msg_get_tensor(rep, ix, NULL, NULL, NULL, NULL, &data, &bytes) != AIMS_OK ||
        aims_msg_get_tensor(rep, ip, NULL, &dt, NULL, NULL, &pdata, &pbytes) != AIMS_OK ||
        bytes != n || memcmp(data, sent, n) != 0 || dt != AIMS_DT_I64 || pbytes != 8) {
        return 0;
    }
    int64_t pid;
    memcpy(&pid, pdata, sizeof pid);
    *out_pid = (pid_t)pid;
    return 1;
}

static void *load_main(void *arg)
{
    load_arg *la = arg;
    it_load *L = la->L;
    aims_msg *req = NULL, *rep = NULL;
    unsigned char *buf = calloc(1, L->payload + 8);
    if (buf == NULL || aims_msg_create(&req) != AIMS_OK || aims_msg_create(&rep) != AIMS_OK) {
        load_error(L, "load thread setup failed");
        free(buf);
        aims_msg_destroy(req);
        free(la);
        return NULL;
    }
    uint64_t seq = (uint64_t)la->index << 40;
    const uint64_t dims[1] = {L->payload};
    const uint64_t xdims[2] = {1, IT_BUNDLE_COLS};
    float x[IT_BUNDLE_COLS] = {10, 9, 8, 7};
    while (!atomic_load(&L->stop)) {
        seq++;
        if (L->infer) {
            aims_msg_clear(req);
            aims_status rc = aims_msg_add(req, "x", AIMS_DT_F32, xdims, 2, x, AIMS_MSG_BORROW);
            if (rc == AIMS_OK) {
                rc = aims_client_call(L->client, L->service, L->method, req, rep,
                                      AIMS_CALL_IDEMPOTENT, L->timeout_ms);
            }
            size_t iy = 0, ndim = 0;
            const uint64_t *ydims = NULL;
            if (rc != AIMS_OK) {
                load_error(L, "call %s/%s: %s: %s (reply error '%s')", L->service, L->method,
                           aims_strerror(rc), aims_client_errmsg(L->client), aims_msg_error(rep));
            } else if (aims_msg_find(rep, "y", &iy) != AIMS_OK ||
                       aims_msg_get_tensor(rep, iy, NULL, NULL, &ndim, &ydims, NULL, NULL) != AIMS_OK ||
                       ndim < 1 || ydims[0] != 1) {
                load_error(L, "call %s/%s: reply without a 1-row 'y'", L->service, L->method);
            } else {
                atomic_fetch_add(&L->ok, 1);
            }
            continue;
        }
        for (size_t i = 0; i < L->payload; i++) {
            buf[i] = (unsigned char)(seq >> (8 * (i % 8)));
        }
        aims_msg_clear(req);
        aims_status rc = aims_msg_add(req, "x", AIMS_DT_BYTES, dims, 1, buf, AIMS_MSG_BORROW);
        if (rc == AIMS_OK) {
            rc = aims_client_call(L->client, L->service, L->method, req, rep,
                                  AIMS_CALL_IDEMPOTENT, L->timeout_ms);
        }
        pid_t pid = 0;
        if (rc != AIMS_OK) {
            load_error(L, "call %s/%s: %s: %s (reply error '%s')", L->service, L->method,
                       aims_strerror(rc), aims_client_errmsg(L->client), aims_msg_error(rep));
        } else if (!echo_ok(rep, buf, L->payload, &pid)) {
            load_error(L, "call %s/%s: reply does not echo the request", L->service, L->method);
        } else {
            atomic_fetch_add(&L->ok, 1);
            load_count(L, pid);
        }
        if (L->pause_us > 0) {
            struct timespec t = {0, (long)L->pause_us * 1000L};
            nanosleep(&t, NULL);
        }
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    free(buf);
    free(la);
    return NULL;
}

void it_load_start(it_load *L)
{
    pthread_mutex_init(&L->mu, NULL);
    atomic_store(&L->stop, 0);
    if (L->threads > 16) {
        L->threads = 16;
    }
    for (int i = 0; i < L->threads; i++) {
        load_arg *la = malloc(sizeof *la);
        if (la == NULL) {
            it_fail("out of memory");
        }
        la->L = L;
        la->index = (unsigned)i + 1;
        if (pthread_create(&L->tid[i], NULL, load_main, la) != 0) {
            it_fail("pthread_create failed");
        }
    }
}

void it_load_stop(it_load *L)
{
    atomic_store(&L->stop, 1);
    for (int i = 0; i < L->threads; i++) {
        pthread_join(L->tid[i], NULL);
    }
    L->threads = 0;
}

uint64_t it_load_pid_ok(it_load *L, pid_t pid)
{
    uint64_t n = 0;
    pthread_mutex_lock(&L->mu);
    for (size_t i = 0; i < L->n_pid; i++) {
        if (L->pid[i] == pid) {
            n = L->pid_ok[i];
        }
    }
    pthread_mutex_unlock(&L->mu);
    return n;
}

int it_load_wait_pid(it_load *L, pid_t pid, uint64_t base, int timeout_ms)
{
    const uint64_t end = it_now_ms() + (uint64_t)timeout_ms;
    while (it_now_ms() < end) {
        if (it_load_pid_ok(L, pid) > base) {
            return 1;
        }
        it_sleep_ms(10);
    }
    return 0;
}

/* ---- memory sampling ------------------------------------------------------------- */

static void *sampler_main(void *arg)
{
    it_sampler *s = arg;
    while (!atomic_load(&s->stop)) {
        const long kb = it_rss_kb(s->pid);
        if (kb > s->peak_kb) {
            s->peak_kb = kb;
        }
        it_sleep_ms(s->period_ms);
    }
    return NULL;
}

void it_sampler_start(it_sampler *s, pid_t pid, unsigned period_ms)
{
    s->pid = pid;
    s->period_ms = period_ms;
    atomic_init(&s->stop, 0);
    s->peak_kb = it_rss_kb(pid);
    if (pthread_create(&s->tid, NULL, sampler_main, s) != 0) {
        it_fail("pthread_create failed");
    }
}

long it_sampler_stop(it_sampler *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->tid, NULL);
    return s->peak_kb;
}

void it_pace(struct timespec *next, long period_ns)
{
    next->tv_nsec += period_ns;
    while (next->tv_nsec >= 1000000000L) {
        next->tv_nsec -= 1000000000L;
        next->tv_sec++;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, next, NULL) != 0) {
    }
}

/* ---- outcome counters ---------------------------------------------------------------------- */

void it_outcomes_reset(it_outcomes *o)
{
    atomic_store(&o->done, 0);
    atomic_store(&o->ok, 0);
    atomic_store(&o->late, 0);
    atomic_store(&o->overloaded, 0);
    atomic_store(&o->no_hint, 0);
    atomic_store(&o->timeout, 0);
    atomic_store(&o->other, 0);
    pthread_mutex_lock(&o->mu);
    o->other_err[0] = o->hint_err[0] = '\0';
    pthread_mutex_unlock(&o->mu);
}

static void keep_first(it_outcomes *o, char *slot, size_t cap, const char *text)
{
    pthread_mutex_lock(&o->mu);
    if (slot[0] == '\0') {
        snprintf(slot, cap, "%s", text);
    }
    pthread_mutex_unlock(&o->mu);
}

void it_outcomes_count(it_outcomes *o, aims_status st, int late, const aims_msg *reply,
                       const char *error)
{
    if (st == AIMS_OK) {
        atomic_fetch_add(late ? &o->late : &o->ok, 1);
    } else if (st == AIMS_E_OVERLOADED) {
        atomic_fetch_add(&o->overloaded, 1);
        if (error == NULL || strcasestr(error, "retry after") == NULL) {
            atomic_fetch_add(&o->no_hint, 1);
            char text[sizeof o->hint_err];
            snprintf(text, sizeof text, "'%s' (reply error '%s')", error != NULL ? error : "(null)",
                     reply != NULL ? aims_msg_error(reply) : "(no reply)");
            keep_first(o, o->hint_err, sizeof o->hint_err, text);
        }
    } else if (st == AIMS_E_TIMEOUT) {
        atomic_fetch_add(&o->timeout, 1);
    } else {
        atomic_fetch_add(&o->other, 1);
        char text[sizeof o->other_err];
        snprintf(text, sizeof text, "%s: %s", aims_strerror(st), error != NULL ? error : "(null)");
        keep_first(o, o->other_err, sizeof o->other_err, text);
    }
    atomic_fetch_add(&o->done, 1);
}
