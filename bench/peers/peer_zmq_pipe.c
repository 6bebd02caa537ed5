/*
 * peer_zmq_pipe.c -- the ZeroMQ peer of goal P14 (issue 15 item 5):
 * pipelined 64-byte echo calls, WINDOW in flight on one DEALER socket,
 * against a ROUTER echo server in a forked process.
 *
 * usage: peer_zmq_pipe ipc|tcp WINDOW SECONDS
 *
 * Why this shape. It is bench/bench_pipe.c's loop in ZeroMQ's terms, at
 * ZeroMQ's best: defaults (one I/O thread per context, which is its fast
 * path for one connection), high-water marks raised above the window so
 * nothing is dropped or blocked, the server a plain zmq_recv/zmq_send loop
 * that echoes [identity, payload]. The client sends until WINDOW calls are in
 * flight, then blocks for one reply and drains every reply already there
 * (ZMQ_DONTWAIT) before refilling -- the same "refill what came back" policy
 * as bench_pipe's generator. A fresh process per measurement: a ZeroMQ
 * context does not survive fork(), so the server is forked before the
 * client's context exists. 0.3 s warm-up, then SECONDS timed.
 *
 * Output: one JSON line on stdout.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "../bench_proc.h"

#define MSG_BYTES 64

static void die(const char *what)
{
    fprintf(stderr, "peer_zmq_pipe: %s: %s\n", what, zmq_strerror(zmq_errno()));
    exit(1);
}

static void set_hwm(void *s)
{
    const int hwm = 1 << 20;
    if (zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0) {
        die("hwm");
    }
}

/* The ROUTER echo server; writes its bound endpoint to fd, serves until killed. */
static void server(const char *url, int fd)
{
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_ROUTER);
    set_hwm(s);
    if (zmq_bind(s, url) != 0) {
        die("bind");
    }
    char ep[256] = {0};
    size_t len = sizeof ep;
    if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &len) != 0) {
        die("endpoint");
    }
    if (write(fd, ep, sizeof ep) != (ssize_t)sizeof ep) {
        _exit(1);
    }
    close(fd);
    unsigned char id[256], buf[1024];
    for (;;) {
        const int il = zmq_recv(s, id, sizeof id, 0);
        if (il < 0) {
            break;
        }
        const int bl = zmq_recv(s, buf, sizeof buf, 0);
        if (bl < 0) {
            break;
        }
        if (zmq_send(s, id, (size_t)il, ZMQ_SNDMORE) < 0 || zmq_send(s, buf, (size_t)bl, 0) < 0) {
            break;
        }
    }
    zmq_close(s);
    zmq_ctx_term(ctx);
}

/* Keep `window` requests in flight until `until`; returns replies received. */
static size_t drive(void *s, size_t window, size_t *inflight, uint64_t until)
{
    static unsigned char payload[MSG_BYTES], buf[1024];
    memset(payload, 'a', sizeof payload);
    size_t got = 0;
    while (now_ns() < until) {
        while (*inflight < window) {
            if (zmq_send(s, payload, sizeof payload, 0) < 0) {
                die("send");
            }
            (*inflight)++;
        }
        if (zmq_recv(s, buf, sizeof buf, 0) < 0) {
            die("recv");
        }
        (*inflight)--;
        got++;
        while (zmq_recv(s, buf, sizeof buf, ZMQ_DONTWAIT) >= 0) {
            (*inflight)--;
            got++;
        }
    }
    return got;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: peer_zmq_pipe ipc|tcp WINDOW SECONDS\n");
        return 2;
    }
    const char *transport = argv[1];
    const long window = strtol(argv[2], NULL, 10);
    const double seconds = strtod(argv[3], NULL);
    if (window < 1 || window > 65536 || seconds <= 0) {
        fprintf(stderr, "peer_zmq_pipe: WINDOW 1..65536, SECONDS > 0\n");
        return 2;
    }
    char url[256], dir[64] = {0};
    if (strcmp(transport, "tcp") == 0) {
        snprintf(url, sizeof url, "tcp://127.0.0.1:*");
    } else if (strcmp(transport, "ipc") == 0) {
        snprintf(dir, sizeof dir, "/tmp/peer-pipe-XXXXXX");
        if (!mkdtemp(dir)) {
            fprintf(stderr, "peer_zmq_pipe: mkdtemp: %s\n", strerror(errno));
            return 1;
        }
        snprintf(url, sizeof url, "ipc://%s/router.sock", dir);
    } else {
        fprintf(stderr, "peer_zmq_pipe: transport ipc | tcp\n");
        return 2;
    }
    int up[2];
    if (pipe(up) != 0) {
        return 1;
    }
    const pid_t pid = fork();
    if (pid < 0) {
        return 1;
    }
    if (pid == 0) {
        close(up[0]);
        server(url, up[1]);
        _exit(0);
    }
    close(up[1]);
    char ep[256] = {0};
    size_t got = 0;
    while (got < sizeof ep) {
        const ssize_t r = read(up[0], ep + got, sizeof ep - got);
        if (r <= 0) {
            fprintf(stderr, "peer_zmq_pipe: server did not start\n");
            return 1;
        }
        got += (size_t)r;
    }
    ep[sizeof ep - 1] = '\0';
    close(up[0]);

    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    set_hwm(s);
    if (zmq_connect(s, ep) != 0) {
        die("connect");
    }
    size_t inflight = 0;
    (void)drive(s, (size_t)window, &inflight, now_ns() + 300000000u);
    const double cpu0 = proc_cpu_s(getpid()) + proc_cpu_s(pid);
    const uint64_t t0 = now_ns();
    const size_t calls = drive(s, (size_t)window, &inflight, t0 + (uint64_t)(seconds * 1e9));
    const double wall = (double)(now_ns() - t0) / 1e9;
    const double cpu = proc_cpu_s(getpid()) + proc_cpu_s(pid) - cpu0;
    int major = 0, minor = 0, patch = 0;
    zmq_version(&major, &minor, &patch);
    printf("{\"goal\": \"P14\", \"contender\": \"zeromq\", \"version\": \"%d.%d.%d\", "
           "\"metric\": \"calls_per_s\", \"transport\": \"%s\", \"window\": %ld, "
           "\"bytes\": %d, \"value\": %.1f, \"unit\": \"calls/s\", \"calls\": %zu, "
           "\"seconds\": %.2f, \"config\": \"DEALER -> ROUTER echo in a forked process, "
           "1 I/O thread per context (default), SNDHWM/RCVHWM 1M\", \"cpu_us_per_call\": %.2f, "
           "\"loadavg_1m\": %.2f}\n",
           major, minor, patch, transport, window, MSG_BYTES, (double)calls / wall, calls, wall,
           calls ? cpu * 1e6 / (double)calls : 0.0, load1());
    fflush(stdout);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(s);
    zmq_ctx_term(ctx);
    kill(pid, SIGTERM);
    int st = 0;
    waitpid(pid, &st, 0);
    if (dir[0]) {
        char sock[128];
        snprintf(sock, sizeof sock, "%s/router.sock", dir);
        unlink(sock);
        rmdir(dir);
    }
    return 0;
}
