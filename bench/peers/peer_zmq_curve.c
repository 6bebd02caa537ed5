/*
 * peer_zmq_curve.c -- the encrypted-transport peer of goal P11a (issue 10):
 * ZeroMQ 4.3 REQ/REP over tcp:// loopback with CURVE security (Curve25519 +
 * XSalsa20-Poly1305 from libsodium), measured the way bench_tls.c measures
 * libaims' tls:// -- 64-byte request, 64-byte reply, server on a second
 * thread of the same process, one round trip at a time, p50 after warm-up.
 *
 * usage: peer_zmq_curve [ITERS] [ITERS_MB]   (defaults 5000 200)
 * Prints one JSON line: p50/p99 of the 64 B round trip with CURVE and without
 * (plain ZeroMQ tcp, for context), and 1 MiB request+reply bytes/s with CURVE.
 * Exits 3 when this libzmq has no CURVE (zmq_has("curve") == 0).
 *
 * Best configuration: ZeroMQ's defaults are its fast path (one I/O thread,
 * no ZAP handler: the server authenticates by key possession only, which
 * costs nothing per message; a ZAP handler adds work at connect time only).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#define WARMUP 1000

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void die(const char *what)
{
    fprintf(stderr, "peer_zmq_curve: %s: %s\n", what, zmq_strerror(zmq_errno()));
    exit(1);
}

static int cmp_d(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct server {
    void *ctx;
    int curve;
    char secret[41];
    char endpoint[128];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready;
} server;

/* REP echo until it receives an empty message. */
static void *server_main(void *arg)
{
    server *s = arg;
    void *rep = zmq_socket(s->ctx, ZMQ_REP);
    if (rep == NULL) {
        die("zmq_socket REP");
    }
    if (s->curve) {
        const int one = 1;
        if (zmq_setsockopt(rep, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
            zmq_setsockopt(rep, ZMQ_CURVE_SECRETKEY, s->secret, 40) != 0) {
            die("curve server options");
        }
    }
    if (zmq_bind(rep, "tcp://127.0.0.1:*") != 0) {
        die("zmq_bind");
    }
    size_t len = sizeof s->endpoint;
    if (zmq_getsockopt(rep, ZMQ_LAST_ENDPOINT, s->endpoint, &len) != 0) {
        die("ZMQ_LAST_ENDPOINT");
    }
    pthread_mutex_lock(&s->mu);
    s->ready = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    zmq_msg_t m;
    zmq_msg_init(&m);
    for (;;) {
        if (zmq_msg_recv(&m, rep, 0) < 0) {
            die("server recv");
        }
        const size_t n = zmq_msg_size(&m);
        if (zmq_msg_send(&m, rep, 0) < 0) {
            die("server send");
        }
        if (n == 0) {
            break;
        }
    }
    zmq_msg_close(&m);
    zmq_close(rep);
    return NULL;
}

typedef struct result {
    double p50, p99, bytes_per_s;
} result;

static result run(int curve, long iters, long iters_mb)
{
    server s;
    memset(&s, 0, sizeof s);
    s.ctx = zmq_ctx_new();
    s.curve = curve;
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    char spub[41], cpub[41], csec[41];
    if (curve && (zmq_curve_keypair(spub, s.secret) != 0 || zmq_curve_keypair(cpub, csec) != 0)) {
        die("zmq_curve_keypair");
    }
    pthread_t th;
    pthread_create(&th, NULL, server_main, &s);
    pthread_mutex_lock(&s.mu);
    while (!s.ready) {
        pthread_cond_wait(&s.cv, &s.mu);
    }
    pthread_mutex_unlock(&s.mu);
    void *req = zmq_socket(s.ctx, ZMQ_REQ);
    if (curve && (zmq_setsockopt(req, ZMQ_CURVE_SERVERKEY, spub, 40) != 0 ||
                  zmq_setsockopt(req, ZMQ_CURVE_PUBLICKEY, cpub, 40) != 0 ||
                  zmq_setsockopt(req, ZMQ_CURVE_SECRETKEY, csec, 40) != 0)) {
        die("curve client options");
    }
    if (zmq_connect(req, s.endpoint) != 0) {
        die("zmq_connect");
    }
    char buf[64], in[64];
    memset(buf, 7, sizeof buf);
    double *lat = malloc(sizeof *lat * (size_t)iters);
    if (lat == NULL) {
        exit(1);
    }
    for (long i = 0; i < WARMUP + iters; i++) {
        const double t0 = now_us();
        if (zmq_send(req, buf, sizeof buf, 0) != (int)sizeof buf ||
            zmq_recv(req, in, sizeof in, 0) != (int)sizeof in) {
            die("round trip");
        }
        if (i >= WARMUP) {
            lat[i - WARMUP] = now_us() - t0;
        }
    }
    qsort(lat, (size_t)iters, sizeof *lat, cmp_d);
    result r = {lat[iters / 2], lat[(size_t)((double)(iters - 1) * 0.99)], 0.0};
    free(lat);
    if (iters_mb > 0) {
        const size_t mb = (size_t)1 << 20;
        char *big = calloc(1, mb), *back = malloc(mb);
        if (big == NULL || back == NULL) {
            exit(1);
        }
        const double t0 = now_us();
        for (long i = 0; i < iters_mb; i++) {
            if (zmq_send(req, big, mb, 0) != (int)mb || zmq_recv(req, back, mb, 0) != (int)mb) {
                die("1 MiB round trip");
            }
        }
        r.bytes_per_s = 2.0 * (double)iters_mb * (double)mb / ((now_us() - t0) / 1e6);
        free(big);
        free(back);
    }
    /* stop the server: an empty message */
    if (zmq_send(req, "", 0, 0) != 0 || zmq_recv(req, in, sizeof in, 0) != 0) {
        die("stop");
    }
    pthread_join(th, NULL);
    zmq_close(req);
    zmq_ctx_term(s.ctx);
    pthread_mutex_destroy(&s.mu);
    pthread_cond_destroy(&s.cv);
    return r;
}

int main(int argc, char **argv)
{
    const long iters = argc > 1 ? atol(argv[1]) : 5000;
    const long iters_mb = argc > 2 ? atol(argv[2]) : 200;
    if (iters < 1 || iters_mb < 0) {
        fprintf(stderr, "usage: peer_zmq_curve [ITERS] [ITERS_MB]\n");
        return 2;
    }
    if (!zmq_has("curve")) {
        printf("{\"peer\": \"zmq_curve\", \"error\": \"libzmq built without CURVE\"}\n");
        return 3;
    }
    int major = 0, minor = 0, patch = 0;
    zmq_version(&major, &minor, &patch);
    const result plain = run(0, iters, 0);
    const result curve = run(1, iters, iters_mb);
    printf("{\"peer\": \"zmq_curve\", \"zmq\": \"%d.%d.%d\", \"iters\": [%ld, %ld], "
           "\"rt64_p50_us\": {\"curve\": %.1f, \"plain\": %.1f}, "
           "\"rt64_p99_us\": {\"curve\": %.1f, \"plain\": %.1f}, "
           "\"curve_1mib_bytes_per_s\": %.4e}\n",
           major, minor, patch, iters, iters_mb, curve.p50, plain.p50, curve.p99, plain.p99,
           curve.bytes_per_s);
    return 0;
}
