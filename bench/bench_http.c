/*
 * bench_http.c -- issue 12 goals P12a-c: the HTTP front door under load.
 *
 * Why a program of its own: wrk (the load tool for every contender, driven
 * by bench/run_http.py) needs a server to hit, and P12c needs one process
 * timing an HTTP binary call next to a native client call to the same model,
 * so the difference is the front door and nothing else.
 *
 *   bench_http serve DIR   a 784-256-10 MLP (trained one epoch on synthetic
 *                          pixel rows) as infer service "mlp@1" on a node
 *                          (tcp loopback) with the HTTP front door on
 *                          127.0.0.1:0; writes DIR/req.bin (KServe v2 binary
 *                          request, binary output asked), DIR/req.bin.hdr
 *                          (its Inference-Header-Content-Length) and
 *                          DIR/req.json (the same row as JSON); prints
 *                          "ready <url>" and serves until stdin closes.
 *   bench_http p12c N      the same model and front door in this process;
 *                          N calls alternating (a) aims_client_call_addr over
 *                          tcp:// and (b) one HTTP binary infer on a
 *                          keep-alive loopback connection (a minimal client:
 *                          one write, headers then Content-Length bytes);
 *                          prints one JSON line with both p50s and the
 *                          added p50 (b - a).
 * Exit 0 ok, 1 failure, 2 usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <aims/aims.h>

#define FEAT 784
#define CLASSES 10

#define TRY(what, call)                                                                    \
    do {                                                                                   \
        const aims_status rc_ = (call);                                                    \
        if (rc_ != AIMS_OK) {                                                              \
            fprintf(stderr, "bench_http: %s: %s: %s\n", what, aims_strerror(rc_),          \
                    aims_errmsg());                                                        \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Pixel-like rows, label = argmax of a fixed random projection (learnable). */
static aims_dataset *synthetic(size_t rows)
{
    float *x = malloc(rows * FEAT * sizeof *x);
    int32_t *y = malloc(rows * sizeof *y);
    float *w = malloc((size_t)CLASSES * FEAT * sizeof *w);
    if (x == NULL || y == NULL || w == NULL) {
        exit(1);
    }
    uint64_t s = 88172645463325252ull, ws = 42;
    for (size_t k = 0; k < (size_t)CLASSES * FEAT; k++) {
        ws = ws * 6364136223846793005ull + 1442695040888963407ull;
        w[k] = (float)((double)(ws >> 11) / 9007199254740992.0 - 0.5);
    }
    for (size_t i = 0; i < rows; i++) {
        for (size_t j = 0; j < FEAT; j++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            x[i * FEAT + j] = (float)(s % 256);
        }
        float best = -1e30f;
        for (int32_t k = 0; k < CLASSES; k++) {
            float d = 0;
            for (size_t j = 0; j < FEAT; j++) {
                d += w[(size_t)k * FEAT + j] * x[i * FEAT + j];
            }
            if (d > best) {
                best = d;
                y[i] = k;
            }
        }
    }
    aims_dataset *ds = NULL;
    TRY("synthetic", aims_dataset_create_dense(rows, FEAT, x, y, &ds));
    free(x);
    free(y);
    free(w);
    return ds;
}

typedef struct server {
    aims_dataset *raw;
    aims_bundle *b;
    aims_node *node;
    aims_service *svc;
    aims_http *http;
    char addr[256];
    char url[128];
} server;

static void server_up(server *sv)
{
    memset(sv, 0, sizeof *sv);
    sv->raw = synthetic(2000);
    aims_pipeline *p = NULL;
    aims_dataset *train = NULL;
    TRY("pipeline", aims_pipeline_create(&p));
    TRY("pipeline", aims_pipeline_add(p, AIMS_STEP_KIND_SCALE, NULL));
    TRY("fit", aims_pipeline_fit_transform(p, sv->raw, &train));
    aims_model *m = NULL;
    aims_trainer *tr = NULL;
    TRY("model", aims_model_create(AIMS_MODEL_KIND_MLP, FEAT, CLASSES, &m));
    TRY("model", aims_model_add_dense(m, 256, AIMS_ACT_RELU));
    TRY("trainer", aims_trainer_create(m, &tr));
    TRY("epochs", aims_trainer_set_param_i64(tr, AIMS_TRAIN_EPOCHS, 1));
    TRY("fit", aims_trainer_fit(tr, train, NULL));
    aims_trainer_destroy(tr);
    TRY("bundle", aims_bundle_create(p, m, &sv->b));
    aims_model_destroy(m);
    aims_dataset_destroy(train);
    aims_pipeline_destroy(p);
    TRY("node", aims_node_create("bench-http", &sv->node));
    TRY("listen", aims_node_listen(sv->node, "tcp://127.0.0.1:0"));
    TRY("address", aims_node_get_address(sv->node, 0, sv->addr, sizeof sv->addr, NULL));
    TRY("infer", aims_service_add_infer(sv->node, "mlp@1", sv->b, &sv->svc));
    TRY("start", aims_service_start(sv->svc));
    TRY("http", aims_http_create(sv->node, &sv->http));
    TRY("http", aims_http_set_listen(sv->http, "127.0.0.1:0"));
    TRY("http", aims_http_start(sv->http));
    TRY("http", aims_http_url(sv->http, sv->url, sizeof sv->url, NULL));
}

static void server_down(server *sv)
{
    aims_http_destroy(sv->http);
    aims_service_stop(sv->svc, 2000);
    aims_node_destroy(sv->node);
    aims_bundle_destroy(sv->b);
    aims_dataset_destroy(sv->raw);
}

/* The KServe v2 binary request for one row: JSON header then f32 bytes. */
static size_t binary_request(const float *row, char *buf, size_t cap, size_t *hdr_len)
{
    const int n = snprintf(buf, cap,
                           "{\"inputs\":[{\"name\":\"x\",\"shape\":[1,%d],\"datatype\":\"FP32\","
                           "\"parameters\":{\"binary_data_size\":%zu}}],"
                           "\"outputs\":[{\"name\":\"y\",\"parameters\":{\"binary_data\":true}}]}",
                           FEAT, (size_t)FEAT * 4);
    *hdr_len = (size_t)n;
    memcpy(buf + n, row, (size_t)FEAT * 4);
    return (size_t)n + (size_t)FEAT * 4;
}

static int write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len) {
        if (f != NULL) {
            fclose(f);
        }
        return 1;
    }
    return fclose(f) != 0;
}

static int serve(const char *dir)
{
    server sv;
    server_up(&sv);
    const float *row = aims_dataset_features(sv.raw);
    static char bin[8192], json[32768];
    size_t hdr;
    const size_t nb = binary_request(row, bin, sizeof bin, &hdr);
    size_t nj = (size_t)snprintf(json, sizeof json,
                                 "{\"inputs\":[{\"name\":\"x\",\"shape\":[1,%d],"
                                 "\"datatype\":\"FP32\",\"data\":[",
                                 FEAT);
    for (size_t j = 0; j < FEAT; j++) {
        nj += (size_t)snprintf(json + nj, sizeof json - nj, "%s%.9g", j ? "," : "",
                               (double)row[j]);
    }
    nj += (size_t)snprintf(json + nj, sizeof json - nj, "]}]}");
    char hs[32];
    const int nh = snprintf(hs, sizeof hs, "%zu", hdr);
    if (write_file(dir, "req.bin", bin, nb) || write_file(dir, "req.json", json, nj) ||
        write_file(dir, "req.bin.hdr", hs, (size_t)nh)) {
        fprintf(stderr, "bench_http: cannot write the requests to %s\n", dir);
        server_down(&sv);
        return 1;
    }
    printf("ready %s\n", sv.url);
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin) != NULL) {
    }
    server_down(&sv);
    return 0;
}

/* One request on a keep-alive connection; reads the whole answer. */
static int http_call(int fd, const char *req, size_t len, char *buf, size_t cap)
{
    if (send(fd, req, len, MSG_NOSIGNAL) != (ssize_t)len) {
        return 1;
    }
    size_t got = 0;
    char *end = NULL;
    while (end == NULL) {
        const ssize_t n = recv(fd, buf + got, cap - 1 - got, 0);
        if (n <= 0) {
            return 1;
        }
        got += (size_t)n;
        buf[got] = 0;
        end = strstr(buf, "\r\n\r\n");
    }
    if (strncmp(buf, "HTTP/1.1 200", 12) != 0) {
        return 1;
    }
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    const size_t body = cl != NULL ? strtoul(cl + 17, NULL, 10) : 0;
    const size_t total = (size_t)(end + 4 - buf) + body;
    while (got < total) {
        const ssize_t n = recv(fd, buf + got, cap - 1 - got, 0);
        if (n <= 0) {
            return 1;
        }
        got += (size_t)n;
    }
    return 0;
}

static int p12c(long iters)
{
    server sv;
    server_up(&sv);
    const float *row = aims_dataset_features(sv.raw);
    aims_client *cl = NULL;
    aims_msg *req = NULL, *reply = NULL;
    TRY("client", aims_client_create(&cl));
    TRY("msg", aims_msg_create(&req));
    TRY("msg", aims_msg_create(&reply));
    const uint64_t dims[2] = {1, FEAT};
    TRY("msg", aims_msg_add(req, "x", AIMS_DT_F32, dims, 2, row, AIMS_MSG_BORROW));

    static char body[8192], wire[16384], buf[65536];
    size_t hdr;
    const size_t nb = binary_request(row, body, sizeof body, &hdr);
    const char *port = strrchr(sv.url, ':') + 1;
    int n = snprintf(wire, sizeof wire,
                     "POST /v2/models/mlp/versions/1/infer HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n"
                     "Content-Type: application/octet-stream\r\n"
                     "Inference-Header-Content-Length: %zu\r\nContent-Length: %zu\r\n\r\n",
                     port, hdr, nb);
    memcpy(wire + n, body, nb);
    const size_t wlen = (size_t)n + nb;
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(port));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "bench_http: cannot connect to %s\n", sv.url);
        return 1;
    }
    uint64_t *tn = malloc((size_t)iters * sizeof *tn), *th = malloc((size_t)iters * sizeof *th);
    if (tn == NULL || th == NULL) {
        return 1;
    }
    for (long w = 0; w < 200; w++) { /* warm both paths */
        if (aims_client_call_addr(cl, sv.addr, "mlp@1", "predict", req, reply, 5000) !=
                AIMS_OK ||
            http_call(fd, wire, wlen, buf, sizeof buf) != 0) {
            fprintf(stderr, "bench_http: warm-up call failed: %s\n", buf);
            return 1;
        }
    }
    for (long i = 0; i < iters; i++) {
        uint64_t t0 = now_ns();
        TRY("native call",
            aims_client_call_addr(cl, sv.addr, "mlp@1", "predict", req, reply, 5000));
        tn[i] = now_ns() - t0;
        t0 = now_ns();
        if (http_call(fd, wire, wlen, buf, sizeof buf) != 0) {
            fprintf(stderr, "bench_http: HTTP call failed\n");
            return 1;
        }
        th[i] = now_ns() - t0;
    }
    close(fd);
    qsort(tn, (size_t)iters, sizeof *tn, cmp_u64);
    qsort(th, (size_t)iters, sizeof *th, cmp_u64);
    const double pn = (double)tn[iters / 2] / 1e3, ph = (double)th[iters / 2] / 1e3;
    printf("{\"goal\":\"P12c\",\"metric\":\"added_p50_us\",\"iters\":%ld,"
           "\"native_p50_us\":%.2f,\"http_binary_p50_us\":%.2f,\"added_p50_us\":%.2f,"
           "\"target_us\":25,\"met\":%s}\n",
           iters, pn, ph, ph - pn, ph - pn <= 25 ? "true" : "false");
    free(tn);
    free(th);
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    aims_client_destroy(cl);
    server_down(&sv);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "serve") == 0) {
        return serve(argv[2]);
    }
    if (argc == 3 && strcmp(argv[1], "p12c") == 0 && atol(argv[2]) > 0) {
        return p12c(atol(argv[2]));
    }
    fprintf(stderr, "usage: bench_http serve DIR | bench_http p12c N\n");
    return 2;
}
