/*
 * bench_json.c -- goal P12b's second half (issue 12): how fast the HTTP front
 * door decodes a 64-row Open Inference Protocol JSON infer request, in MB of
 * JSON per second (goal >= 200 MB/s).
 *
 * What it times: aimsi_kserve_decode, the function the door runs on every
 * POST .../infer body (src/svc/http/http_kserve.c: the numeric "data" array is
 * lifted out and parsed with the exact float parser, cJSON parses the rest),
 * from the body bytes to the "x" tensor ready for the node's dispatch. Not
 * timed: HTTP parsing and the socket (wrk's P12a/b figures cover those).
 *
 * The body: {"id":"1","inputs":[{"name":"x","shape":[64,784],"datatype":
 * "FP32","data":[...]}]}, 64 x 784 values shaped like Fashion-MNIST pixels
 * scaled to [0,1]: half of them 0 (printed "0"), the rest k/255 printed with
 * "%.9g" (the shortest text that round-trips every float32), from a fixed
 * LCG so every run decodes the same bytes. Short numbers are the harder case
 * for MB/s (more numbers per byte), so this is not flattering.
 *
 * Usage: bench_json [ROUNDS [REPS]] (default 5 rounds of 200 decodes).
 * Prints one JSON line per figure: wall-clock and CPU MB/s, medians of the
 * rounds; "met" compares the wall figure with the goal.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "svc/http/aimsi_http.h"

#define ROWS 64
#define COLS 784

static double now_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The request body (malloc'd; *len its length), or NULL. */
static char *make_body(size_t *len)
{
    const size_t cap = (size_t)ROWS * COLS * 16 + 256;
    char *b = malloc(cap);
    if (b == NULL) {
        return NULL;
    }
    size_t n = (size_t)snprintf(b, cap, "{\"id\":\"1\",\"inputs\":[{\"name\":\"x\",\"shape\":"
                                        "[%d,%d],\"datatype\":\"FP32\",\"data\":[", ROWS, COLS);
    uint32_t s = 12345u;
    for (size_t i = 0; i < (size_t)ROWS * COLS; i++) {
        s = s * 1664525u + 1013904223u;
        const unsigned k = (s >> 24) & 0xffu;
        if (i > 0) {
            b[n++] = ',';
        }
        if ((s >> 16) & 1u) {
            b[n++] = '0';
        } else {
            n += (size_t)snprintf(b + n, cap - n, "%.9g", (double)((float)k / 255.0f));
        }
    }
    n += (size_t)snprintf(b + n, cap - n, "]}]}");
    *len = n;
    return b;
}

int main(int argc, char **argv)
{
    const int rounds = argc > 1 ? atoi(argv[1]) : 5;
    const int reps = argc > 2 ? atoi(argv[2]) : 200;
    if (rounds < 1 || rounds > 100 || reps < 1 || reps > 100000) {
        fprintf(stderr, "usage: bench_json [ROUNDS 1..100 [REPS 1..100000]]\n");
        return 2;
    }
    size_t len = 0;
    char *body = make_body(&len);
    if (body == NULL) {
        fprintf(stderr, "bench_json: out of memory\n");
        return 1;
    }
    aimsi_infer_desc d;
    memset(&d, 0, sizeof(d));
    d.in_cols = COLS;
    d.out_dim = 10;
    d.classifier = 1;
    double wall[100], cpu[100];
    for (int r = 0; r < rounds; r++) {
        const double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
        for (int i = 0; i < reps; i++) {
            aims_msg m;
            aimsi_msg_init(&m);
            aimsi_kserve_req rq;
            char err[256];
            const aims_status st = aimsi_kserve_decode(body, len, len, &d, &m, &rq, err,
                                                       sizeof(err));
            size_t at = 0;
            if (st != AIMS_OK || aims_msg_find(&m, "x", &at) != AIMS_OK) {
                fprintf(stderr, "bench_json: decode failed: %s\n",
                        st != AIMS_OK ? err : "no tensor x");
                aimsi_msg_fini(&m);
                free(body);
                return 1;
            }
            aimsi_msg_fini(&m);
        }
        const double mb = (double)len * reps / 1e6;
        wall[r] = mb / (now_s(CLOCK_MONOTONIC) - w0);
        cpu[r] = mb / (now_s(CLOCK_PROCESS_CPUTIME_ID) - c0);
    }
    qsort(wall, (size_t)rounds, sizeof(double), cmp_d);
    qsort(cpu, (size_t)rounds, sizeof(double), cmp_d);
    const double wmed = wall[rounds / 2], cmed = cpu[rounds / 2];
    printf("{\"goal\": \"P12b\", \"description\": \"64-row KServe v2 JSON infer request "
           "decoded by the HTTP door (aimsi_kserve_decode), MB of JSON per second\", "
           "\"contender\": \"libaims\", \"metric\": \"json_decode_mb_per_s\", \"median\": %.1f, "
           "\"min\": %.1f, \"max\": %.1f, \"cpu_mb_per_s\": %.1f, \"unit\": \"MB/s\", "
           "\"n\": %d, \"reps\": %d, \"rows\": %d, \"cols\": %d, \"body_bytes\": %zu, "
           "\"target\": \">= 200\", \"met\": %s}\n",
           wmed, wall[0], wall[rounds - 1], cmed, rounds, reps, ROWS, COLS, len,
           wmed >= 200.0 ? "true" : "false");
    free(body);
    return 0;
}
