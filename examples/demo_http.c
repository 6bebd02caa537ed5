/*
 * demo_http.c -- aims_demo's check of the HTTP front door (see demo_http.h).
 *
 * How: one short-lived connection per request ("Connection: close"), the
 * whole answer read until EOF, the status taken from the status line and
 * the class from the first number after "data":[ in the infer reply (the
 * front door writes classes as FP32 with %.9g). Loopback only, a 10 s
 * receive timeout so a stuck server cannot hang the demo. An https:// door
 * (aims_demo --processes over tls://) is asked through `curl --cacert -i`,
 * whose output (status line, headers, body) is parsed the same way.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "demo_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *g_ca; /* demo_http_set_ca: https through curl */

void demo_http_set_ca(const char *ca_file)
{
    g_ca = ca_file;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* "http://127.0.0.1:PORT" -> port (the demo binds the front door on loopback). */
static int url_port(const char *url)
{
    const char *p = strrchr(url, ':');
    return p != NULL ? atoi(p + 1) : 0;
}

/* Split a whole answer (status line, headers, body) in buf: *status, and
 * the body moved to the front. */
static int split_answer(char *buf, size_t len, int *status, char **out)
{
    buf[len] = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", status) != 1) {
        free(buf);
        return 1;
    }
    char *b = strstr(buf, "\r\n\r\n");
    b = b != NULL ? b + 4 : buf + len;
    memmove(buf, b, strlen(b) + 1);
    *out = buf;
    return 0;
}

/* The same request through `curl -i` (https://127.0.0.1:PORT, g_ca trusted).
 * The request line's method and path come from head; body (JSON, no quote)
 * goes on the command line. */
static int request_curl(int port, const char *head, const char *body, size_t body_len,
                        int *status, char **out)
{
    char method[8], path[256];
    if (sscanf(head, "%7s %255s", method, path) != 2 || body_len > 60000 ||
        strchr(body, '\'') != NULL) {
        return 1;
    }
    const size_t cap = 1024 + body_len;
    char *cmd = malloc(cap);
    if (cmd == NULL) {
        return 1;
    }
    snprintf(cmd, cap, "curl -sS -i --max-time 10 --cacert '%s' -X %s %s%s%s "
                       "'https://127.0.0.1:%d%s'", g_ca, method,
             body_len ? "-H 'Expect:' -H 'Content-Type: application/json' --data-binary '" : "",
             body_len ? body : "", body_len ? "'" : "", port, path);
    FILE *p = popen(cmd, "r");
    free(cmd);
    size_t sz = 1 << 16, len = 0;
    char *buf = malloc(sz);
    if (p == NULL || buf == NULL) {
        if (p != NULL) {
            pclose(p);
        }
        free(buf);
        return 1;
    }
    for (;;) {
        if (len + 1 == sz) {
            char *nb = realloc(buf, sz * 2);
            if (nb == NULL) {
                break;
            }
            buf = nb;
            sz *= 2;
        }
        const size_t n = fread(buf + len, 1, sz - 1 - len, p);
        if (n == 0) {
            break;
        }
        len += n;
    }
    if (pclose(p) != 0) {
        free(buf);
        return 1;
    }
    return split_answer(buf, len, status, out);
}

/* One request; *body gets the malloc'ed answer body (NUL-terminated). */
static int request(int port, const char *head, const char *body, size_t body_len, int *status,
                   char **out)
{
    *status = 0;
    *out = NULL;
    if (g_ca != NULL) {
        return request_curl(port, head, body, body_len, status, out);
    }
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return 1;
    }
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return 1;
    }
    const char *parts[2] = {head, body};
    const size_t lens[2] = {strlen(head), body_len};
    for (int k = 0; k < 2; k++) {
        size_t off = 0;
        while (off < lens[k]) {
            const ssize_t n = send(fd, parts[k] + off, lens[k] - off, MSG_NOSIGNAL);
            if (n <= 0) {
                close(fd);
                return 1;
            }
            off += (size_t)n;
        }
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (buf == NULL) {
            close(fd);
            return 1;
        }
        if (len + 1 == cap) {
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                close(fd);
                return 1;
            }
            buf = nb;
            cap *= 2;
        }
        const ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n < 0) {
            free(buf);
            close(fd);
            return 1;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    return split_answer(buf, len, status, out);
}

static int get(int port, const char *path, int *status, char **out)
{
    char head[512];
    snprintf(head, sizeof head,
             "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n", path, port);
    return request(port, head, "", 0, status, out);
}

int demo_http_check(const char *url, const char *model, const char *version, const float *row,
                    size_t cols, demo_http_result *r)
{
    memset(r, 0, sizeof *r);
    r->infer_class = -1;
    const int port = url_port(url);
    char *out = NULL;
    /* Readiness is a state, not an event: a node is unready while a service's
     * registration is being renewed, so the check polls it the way a probe
     * does (every 100 ms, up to 5 s) and says why it was not ready. */
    for (int tries = 0;; tries++) {
        if (port <= 0 || get(port, "/v2/health/ready", &r->ready_status, &out) != 0) {
            return 1;
        }
        if (r->ready_status == 200 || tries == 50) {
            free(out);
            break;
        }
        if (tries == 0) {
            fprintf(stderr, "aims_demo: GET /v2/health/ready answered %d: %s (polling)\n",
                    r->ready_status, out);
        }
        free(out);
        const struct timespec pause = {0, 100 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }

    /* the KServe v2 JSON request: {"inputs":[{"name":"x","shape":[1,C],...}]} */
    const size_t cap = 256 + cols * 18;
    char *json = malloc(cap);
    if (json == NULL) {
        return 1;
    }
    size_t n = (size_t)snprintf(json, cap,
                                "{\"id\":\"demo\",\"inputs\":[{\"name\":\"x\",\"shape\":[1,%zu],"
                                "\"datatype\":\"FP32\",\"data\":[",
                                cols);
    for (size_t j = 0; j < cols; j++) {
        n += (size_t)snprintf(json + n, cap - n, "%s%.9g", j ? "," : "", (double)row[j]);
    }
    n += (size_t)snprintf(json + n, cap - n, "]}]}");
    char head[512];
    snprintf(head, sizeof head,
             "POST /v2/models/%s/versions/%s/infer HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
             model, version, port, n);
    const double t0 = now_s();
    const int rc = request(port, head, json, n, &r->infer_status, &out);
    r->infer_us = (now_s() - t0) * 1e6;
    free(json);
    if (rc != 0) {
        return 1;
    }
    const char *d = strstr(out, "\"data\":[");
    if (r->infer_status == 200 && d != NULL) {
        r->infer_class = (int)strtod(d + 8, NULL);
    } else {
        fprintf(stderr, "aims_demo: HTTP infer answered %d: %s\n", r->infer_status, out);
    }
    free(out);

    if (get(port, "/metrics", &r->metrics_status, &out) != 0) {
        return 1;
    }
    r->metrics_bytes = strlen(out);
    r->metrics_has_model = strstr(out, model) != NULL;
    free(out);
    return 0;
}
