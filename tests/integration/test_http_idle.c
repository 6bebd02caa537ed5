/*
 * test_http_idle.c -- the HTTP front door holds 10,000 idle connections and
 * keeps serving a well-behaved client, with bounded memory (issue 12,
 * "Hostile HTTP: ... 10,000 idle connections").
 *
 * A forked child hosts a node and its front door (aims_http) with room for
 * 10,100 connections and a long idle timeout (so the idle ones are really
 * held, not reaped); the parent raises RLIMIT_NOFILE, opens 10,000 TCP
 * connections that never send a byte, and then, with all of them open:
 *   - a fresh client gets 200 from /v2/health/live and a /metrics scrape that
 *     counts >= 10,000 open connections;
 *   - the child's RSS grew by less than IDLE_KB_PER_CONN per connection
 *     (measured numbers are printed);
 * then closes them, checks the door still answers, and stops the child
 * (exit 0 after aims_http_destroy). Two processes, so each side needs only
 * ~10k descriptors. Bounded: connecting has a 180 s budget, every socket read
 * a 10 s timeout. Exit 77 when built without HTTP.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <aims/aims.h>

#include "itest.h"

#define IDLE_CONNS 10000
#define IDLE_KB_PER_CONN 48 /* generous: MHD's per-connection pool is 32 KiB, lazily touched */

/* The child: a node with its front door; writes the port to wfd, serves until
 * rfd reads EOF. */
static int child_main(int wfd, int rfd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    aims_node *n = NULL;
    aims_http *h = NULL;
    if (aims_node_create("idle-door", &n) != AIMS_OK || aims_http_create(n, &h) != AIMS_OK ||
        aims_http_set_param_i64(h, AIMS_HTTP_MAX_CONNECTIONS, IDLE_CONNS + 100) != AIMS_OK ||
        aims_http_set_param_i64(h, AIMS_HTTP_IDLE_TIMEOUT_S, 600) != AIMS_OK ||
        aims_http_set_listen(h, "127.0.0.1:0") != AIMS_OK || aims_http_start(h) != AIMS_OK) {
        fprintf(stderr, "child: %s\n", aims_errmsg());
        return 1;
    }
    char url[128];
    if (aims_http_url(h, url, sizeof url, NULL) != AIMS_OK) {
        return 1;
    }
    const char *colon = strrchr(url, ':');
    const int port = colon != NULL ? atoi(colon + 1) : 0;
    if (write(wfd, &port, sizeof port) != (ssize_t)sizeof port) {
        return 1;
    }
    char b;
    while (read(rfd, &b, 1) > 0) {
    }
    aims_http_destroy(h);
    aims_node_destroy(n);
    return 0;
}

static int dial(int port)
{
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One GET on a fresh connection; the status code, the body in out (cut to cap). */
static int get(int port, const char *path, char *out, size_t cap)
{
    const int fd = dial(port);
    IT_CHECK(fd >= 0, "the well-behaved client cannot connect: %s", strerror(errno));
    char req[256];
    const int n = snprintf(req, sizeof req,
                           "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                           path);
    IT_CHECK(write(fd, req, (size_t)n) == n, "send: %s", strerror(errno));
    size_t len = 0;
    for (;;) {
        const ssize_t r = read(fd, out + len, cap - 1 - len);
        if (r <= 0) {
            break;
        }
        len += (size_t)r;
        if (len + 1 >= cap) {
            break;
        }
    }
    out[len] = '\0';
    close(fd);
    int code = 0;
    IT_CHECK(sscanf(out, "HTTP/1.1 %d", &code) == 1, "no HTTP reply to GET %s (%zu bytes)", path,
             len);
    return code;
}

int main(int argc, char **argv)
{
    it_init(argc, argv, "test_http_idle");
    {
        aims_http *probe = NULL;
        if (aims_http_create(NULL, &probe) == AIMS_E_UNSUPPORTED) {
            it_log("built without HTTP: skipped");
            return 77;
        }
    }
    struct rlimit rl;
    IT_CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit");
    const rlim_t want = IDLE_CONNS + 512;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
            rl.rlim_max = want; /* needs CAP_SYS_RESOURCE; else the check below says so */
            rl.rlim_cur = want;
        }
        IT_CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0,
                 "cannot raise RLIMIT_NOFILE to %lu (hard limit too low?): %s",
                 (unsigned long)want, strerror(errno));
    }
    int up[2], down[2];
    IT_CHECK(pipe(up) == 0 && pipe(down) == 0, "pipe");
    const pid_t pid = fork();
    IT_CHECK(pid >= 0, "fork");
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        _exit(child_main(up[1], down[0]));
    }
    close(up[1]);
    close(down[0]);
    int port = 0;
    IT_CHECK(read(up[0], &port, sizeof port) == (ssize_t)sizeof port && port > 0,
             "the door did not start");
    char buf[65536];
    IT_CHECK(get(port, "/v2/health/live", buf, sizeof buf) == 200, "live before: %.200s", buf);
    const long rss0 = it_rss_kb(pid);

    int *fds = malloc(sizeof(int) * IDLE_CONNS);
    IT_CHECK(fds != NULL, "malloc");
    const uint64_t t0 = it_now_ms();
    for (int i = 0; i < IDLE_CONNS; i++) {
        fds[i] = dial(port);
        IT_CHECK(fds[i] >= 0, "idle connection %d: %s", i, strerror(errno));
        IT_CHECK(it_now_ms() - t0 < 180000, "10,000 connections took over 180 s (at %d)", i);
    }
    const uint64_t t_conn = it_now_ms() - t0;
    it_log("%d idle connections open in %llu ms", IDLE_CONNS, (unsigned long long)t_conn);

    /* the door has accepted them all (the gauge), and still serves */
    long open = 0;
    for (int tries = 0; tries < 200 && open < IDLE_CONNS; tries++) {
        IT_CHECK(get(port, "/metrics", buf, sizeof buf) == 200, "metrics: %.200s", buf);
        const char *g = strstr(buf, "\naims_http_open_connections ");
        IT_CHECK(g != NULL, "no aims_http_open_connections in the scrape");
        open = atol(g + strlen("\naims_http_open_connections "));
        if (open < IDLE_CONNS) {
            it_sleep_ms(50);
        }
    }
    IT_CHECK(open >= IDLE_CONNS, "the door reports %ld open connections", open);
    IT_CHECK(get(port, "/v2/health/live", buf, sizeof buf) == 200, "live with 10k idle: %.200s",
             buf);
    IT_CHECK(get(port, "/v2", buf, sizeof buf) == 200, "/v2 with 10k idle: %.200s", buf);
    const long rss1 = it_rss_kb(pid);
    const double per_conn = (double)(rss1 - rss0) / IDLE_CONNS;
    it_log("door RSS %ld KiB -> %ld KiB with %ld connections open: %.2f KiB per connection",
           rss0, rss1, open, per_conn);
    IT_CHECK(rss0 > 0 && rss1 > 0, "cannot read the door's RSS");
    IT_CHECK(per_conn < IDLE_KB_PER_CONN, "%.2f KiB per idle connection (bound %d)", per_conn,
             IDLE_KB_PER_CONN);

    for (int i = 0; i < IDLE_CONNS; i++) {
        close(fds[i]);
    }
    free(fds);
    IT_CHECK(get(port, "/v2/health/live", buf, sizeof buf) == 200, "live after: %.200s", buf);
    close(down[1]); /* the child stops its door and exits */
    int st = 0;
    IT_CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
    IT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "door process status %d", st);
    close(up[0]);
    it_pass();
}
