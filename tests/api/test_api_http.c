/*
 * test_api_http.c -- black-box tests of the HTTP front door (aims_http.h)
 * through libaims.so, with curl as the client: misuse and parameter checks,
 * the loopback rule, start/stop/restart, and readiness following the node's
 * services (503 before a service is started and registered, 200 after, 503
 * again once it stopped). Every request the server handled must have been
 * freed (the counting allocator's teardown check). Skipped when the library
 * was built without HTTP.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include <aims/aims.h>

#include "testalloc.h"

static int have_http(void)
{
    aims_node *n = NULL;
    aims_http *h = NULL;
    assert_int_equal(aims_node_create("probe", &n), AIMS_OK);
    const aims_status st = aims_http_create(n, &h);
    aims_http_destroy(h);
    aims_node_destroy(n);
    return st != AIMS_E_UNSUPPORTED;
}

/* Run a curl command line ending in -w '\n%{http_code}': the status, body into
 * body (may be NULL). */
static int curl_run(const char *cmd, char *body, size_t cap)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    static char buf[1 << 16];
    const size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    pclose(p);
    char *nl = strrchr(buf, '\n');
    assert_non_null(nl);
    *nl = '\0';
    if (body != NULL) {
        snprintf(body, cap, "%s", buf);
    }
    return atoi(nl + 1);
}

/* HTTP status of GET url+path via curl, body into body (may be NULL). */
static int curl_get(const char *url, const char *path, char *body, size_t cap)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "curl -s -m 10 -w '\\n%%{http_code}' '%s%s'", url, path);
    return curl_run(cmd, body, cap);
}

static aims_status echo(void *user, const char *method, const aims_msg *req, aims_msg *reply,
                        uint64_t deadline_ns)
{
    (void)user;
    (void)method;
    (void)req;
    (void)reply;
    (void)deadline_ns;
    return AIMS_OK;
}

static const char *const g_docs[] = {
    "the cat sat on the mat",          "stocks fell as markets slid",
    "a dog barked at the cat",         "the market rallied on earnings",
    "my cat chased the little mouse",  "investors sold shares of the bank",
    "the kitten slept on the sofa",    "bond yields rose as stocks fell",
};
#define NDOCS (sizeof g_docs / sizeof g_docs[0])

/* A tiny TEXT classifier (tokenize + hash + fastText-style model): pets vs markets. */
static aims_bundle *make_text_bundle(void)
{
    int32_t labels[NDOCS];
    for (size_t i = 0; i < NDOCS; i++) {
        labels[i] = (int32_t)(i % 2);
    }
    aims_dataset *ds = NULL, *tds = NULL;
    aims_pipeline *p = NULL;
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    aims_bundle *b = NULL;
    size_t hs = 0;
    assert_int_equal(aims_dataset_create_texts(NDOCS, g_docs, NULL, labels, &ds), AIMS_OK);
    assert_int_equal(aims_pipeline_create(&p), AIMS_OK);
    assert_int_equal(aims_pipeline_add(p, AIMS_STEP_KIND_TOKENIZE, NULL), AIMS_OK);
    assert_int_equal(aims_pipeline_add(p, AIMS_STEP_KIND_HASH, &hs), AIMS_OK);
    assert_int_equal(aims_pipeline_set_step_param_i64(p, hs, AIMS_STEP_BUCKETS, 256), AIMS_OK);
    assert_int_equal(aims_pipeline_fit_transform(p, ds, &tds), AIMS_OK);
    assert_int_equal(aims_model_create(AIMS_MODEL_KIND_TEXT, 256, 2, &m), AIMS_OK);
    assert_int_equal(aims_model_set_param_i64(m, AIMS_MODEL_EMBED_DIM, 8), AIMS_OK);
    assert_int_equal(aims_trainer_create(m, &t), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 20), AIMS_OK);
    assert_int_equal(aims_trainer_set_param_f64(t, AIMS_TRAIN_LR, 0.5), AIMS_OK);
    assert_int_equal(aims_trainer_fit(t, tds, NULL), AIMS_OK);
    assert_int_equal(aims_bundle_create(p, m, &b), AIMS_OK);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(tds);
    aims_dataset_destroy(ds);
    aims_pipeline_destroy(p);
    return b;
}

/* HTTP status of POST body (a file written first) to url+path, reply into out. */
static int curl_post(const char *url, const char *path, const char *body, char *out, size_t cap)
{
    char file[] = "/tmp/aims-http-body-XXXXXX";
    const int fd = mkstemp(file);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, body, strlen(body)), (ssize_t)strlen(body));
    close(fd);
    char cmd[600];
    snprintf(cmd, sizeof cmd,
             "curl -s -m 10 -w '\\n%%{http_code}' -H 'Content-Type: application/json' "
             "--data-binary @%s '%s%s'", file, url, path);
    const int code = curl_run(cmd, out, cap);
    unlink(file);
    return code;
}

/* A TEXT model takes BYTES documents (raw text, newlines inside a document
 * allowed) and answers what aims_bundle_predict_texts answers. */
static void test_api_http_text_model_bytes(void **state)
{
    (void)state;
    if (!have_http()) {
        skip();
    }
    aims_bundle *b = make_text_bundle();
    aims_node *n = NULL;
    aims_service *s = NULL;
    aims_http *h = NULL;
    char url[64], body[8192];
    assert_int_equal(aims_node_create("http-text", &n), AIMS_OK);
    assert_int_equal(aims_service_add_infer(n, "topic@3", b, &s), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    assert_int_equal(aims_http_create(n, &h), AIMS_OK);
    assert_int_equal(aims_http_start(h), AIMS_OK);
    assert_int_equal(aims_http_url(h, url, sizeof url, NULL), AIMS_OK);
    assert_int_equal(curl_get(url, "/v2/models/topic", body, sizeof body), 200);
    assert_non_null(strstr(body, "{\"name\":\"text\",\"datatype\":\"BYTES\",\"shape\":[-1]}"));
    const char *docs[3] = {"my cat sat on the sofa", "stocks and bonds fell", "the kitten\nslept"};
    float want[6];
    assert_int_equal(aims_bundle_predict_texts(b, AIMS_OUT_SCORES, docs, NULL, 3, want, 6),
                     AIMS_OK);
    assert_int_equal(curl_post(url, "/v2/models/topic/versions/3/infer",
                               "{\"id\":\"t\",\"inputs\":[{\"name\":\"text\",\"shape\":[3],"
                               "\"datatype\":\"BYTES\",\"data\":[\"my cat sat on the sofa\","
                               "\"stocks and bonds fell\",\"the kitten\\nslept\"]}],"
                               "\"parameters\":{\"output\":\"scores\"}}",
                               body, sizeof body),
                     200);
    char expect[256];
    snprintf(expect, sizeof expect, "\"shape\":[3,2],\"data\":[%.9g,%.9g,%.9g,%.9g,%.9g,%.9g]",
             (double)want[0], (double)want[1], (double)want[2], (double)want[3],
             (double)want[4], (double)want[5]);
    assert_non_null(strstr(body, expect));
    assert_non_null(strstr(body, "\"model_version\":\"3\""));
    /* numbers for a text model, and a dense-style input name: 400 */
    assert_int_equal(curl_post(url, "/v2/models/topic/infer",
                               "{\"inputs\":[{\"name\":\"text\",\"shape\":[1],"
                               "\"datatype\":\"FP32\",\"data\":[1]}]}", body, sizeof body),
                     400);
    assert_int_equal(curl_post(url, "/v2/models/topic/infer",
                               "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],"
                               "\"datatype\":\"BYTES\",\"data\":[\"a\"]}]}", body, sizeof body),
                     400);
    aims_http_destroy(h);
    aims_node_destroy(n);
    aims_bundle_destroy(b);
}

/* ---- overload (429 + Retry-After) and deadline (504), deterministically ------------- */

typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, open;
} gate;

static aims_status block_handler(void *user, const char *method, const aims_msg *req,
                                 aims_msg *reply, uint64_t deadline_ns)
{
    (void)method;
    (void)req;
    (void)reply;
    (void)deadline_ns;
    gate *g = user;
    pthread_mutex_lock(&g->mu);
    g->entered = 1;
    pthread_cond_broadcast(&g->cv);
    while (!g->open) {
        pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    return AIMS_OK;
}

static void *call_block(void *arg)
{
    aims_client *c = NULL;
    aims_msg *req = NULL, *reply = NULL;
    if (aims_client_create(&c) == AIMS_OK && aims_msg_create(&req) == AIMS_OK &&
        aims_msg_create(&reply) == AIMS_OK) {
        (void)aims_client_call_addr(c, "inproc://http-load", "block", "run", req, reply, 20000);
    }
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    aims_client_destroy(c);
    return arg;
}

static aims_bundle *make_dense_bundle(void)
{
    static const float x[8 * 4] = {1, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1,
                                   1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 0};
    static const int32_t y[8] = {0, 1, 0, 1, 0, 1, 0, 1};
    aims_dataset *ds = NULL;
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    aims_bundle *b = NULL;
    assert_int_equal(aims_dataset_create_dense(8, 4, x, y, &ds), AIMS_OK);
    assert_int_equal(aims_model_create(AIMS_MODEL_KIND_SOFTMAX, 4, 2, &m), AIMS_OK);
    assert_int_equal(aims_trainer_create(m, &t), AIMS_OK);
    assert_int_equal(aims_trainer_fit(t, ds, NULL), AIMS_OK);
    assert_int_equal(aims_bundle_create(NULL, m, &b), AIMS_OK);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
    return b;
}

/* The node's one worker is held by a handler; the model's queue holds one
 * request: the next HTTP request is refused 429 with Retry-After, the queued
 * one outlives its HTTP deadline and gets 504, and once the worker is free
 * requests succeed again. */
static void test_api_http_overload_and_deadline(void **state)
{
    (void)state;
    if (!have_http()) {
        skip();
    }
    aims_bundle *b = make_dense_bundle();
    aims_node *n = NULL;
    aims_service *blk = NULL, *clf = NULL;
    aims_http *h = NULL;
    gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    char url[64], body[4096];
    assert_int_equal(aims_node_create("http-load", &n), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(n, AIMS_NODE_WORKERS, 1), AIMS_OK);
    assert_int_equal(aims_node_listen(n, "inproc://http-load"), AIMS_OK);
    assert_int_equal(aims_service_add_handler(n, "block", block_handler, &g, &blk), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(blk, AIMS_SERVICE_INLINE, 0), AIMS_OK);
    assert_int_equal(aims_service_add_infer(n, "clf", b, &clf), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(clf, AIMS_SERVICE_INLINE, 0), AIMS_OK);
    assert_int_equal(aims_service_set_param_i64(clf, AIMS_SERVICE_QUEUE_CAP, 1), AIMS_OK);
    assert_int_equal(aims_service_start(blk), AIMS_OK);
    assert_int_equal(aims_service_start(clf), AIMS_OK);
    assert_int_equal(aims_http_create(n, &h), AIMS_OK);
    assert_int_equal(aims_http_set_param_i64(h, AIMS_HTTP_TIMEOUT_MS, 100), AIMS_OK);
    assert_int_equal(aims_http_start(h), AIMS_OK);
    assert_int_equal(aims_http_url(h, url, sizeof url, NULL), AIMS_OK);
    const char *req = "{\"inputs\":[{\"name\":\"x\",\"shape\":[1,4],\"datatype\":\"FP32\","
                      "\"data\":[1,0,0,0]}]}";
    /* an idle model answers */
    assert_int_equal(curl_post(url, "/v2/models/clf/infer", req, body, sizeof body), 200);
    /* hold the only worker */
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, call_block, NULL), 0);
    pthread_mutex_lock(&g.mu);
    while (!g.entered) {
        pthread_cond_wait(&g.cv, &g.mu);
    }
    pthread_mutex_unlock(&g.mu);
    /* request A waits in the queue (curl in the background) */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "curl -s -m 20 -o /dev/null -w '%%{http_code}' -d '%s' "
             "'%s/v2/models/clf/infer'", req, url);
    FILE *a = popen(cmd, "r");
    assert_non_null(a);
    double queued = 0;
    while (queued < 1) {
        assert_int_equal(aims_service_get_stat(clf, AIMS_SERVICE_STAT_QUEUED, &queued), AIMS_OK);
        usleep(1000);
    }
    /* request B finds the queue full: 429 with Retry-After */
    snprintf(cmd, sizeof cmd, "curl -s -m 10 -D - -o /dev/null -d '%s' '%s/v2/models/clf/infer'",
             req, url);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    const size_t got = fread(body, 1, sizeof body - 1, p);
    body[got] = '\0';
    pclose(p);
    assert_non_null(strstr(body, " 429"));
    assert_non_null(strstr(body, "Retry-After: 1"));
    /* A's 100 ms deadline passes in the queue: 504 once the worker frees up */
    usleep(300000);
    pthread_mutex_lock(&g.mu);
    g.open = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    pthread_join(tid, NULL);
    char code[8] = {0};
    assert_true(fread(code, 1, sizeof code - 1, a) > 0);
    pclose(a);
    assert_string_equal(code, "504");
    assert_int_equal(curl_post(url, "/v2/models/clf/infer", req, body, sizeof body), 200);
    static char scrape[1 << 16];
    assert_int_equal(curl_get(url, "/metrics", scrape, sizeof scrape), 200);
    assert_non_null(strstr(scrape, "aims_http_responses_total{code=\"4xx\"} 1\n"));
    assert_non_null(strstr(scrape, "aims_http_responses_total{code=\"5xx\"} 1\n"));
    aims_http_destroy(h);
    aims_node_destroy(n);
    aims_bundle_destroy(b);
}

/* ---- connection cap and slow clients ----------------------------------------------- */

static int connect_to(const char *url)
{
    int port = 0;
    assert_int_equal(sscanf(url, "http://127.0.0.1:%d", &port), 1);
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* 1 when the server closed fd within ~10 s (read returns 0 or an error). */
static int closed_by_server(int fd)
{
    struct timeval tv = {10, 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char c;
    const ssize_t n = recv(fd, &c, 1, 0);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* Idle clients and a slow client (half a request, then nothing) are dropped
 * after AIMS_HTTP_IDLE_TIMEOUT_S. With AIMS_HTTP_MAX_CONNECTIONS = 4, four
 * open connections fill the server: a fifth is not served (libmicrohttpd
 * stops accepting; it waits in the listen backlog) until one of them closes. */
static void test_api_http_connection_cap_and_slow_clients(void **state)
{
    (void)state;
    if (!have_http()) {
        skip();
    }
    aims_node *n = NULL;
    aims_http *h = NULL;
    char url[64];
    assert_int_equal(aims_node_create("http-cap", &n), AIMS_OK);
    assert_int_equal(aims_http_create(n, &h), AIMS_OK);
    assert_int_equal(aims_http_set_param_i64(h, AIMS_HTTP_MAX_CONNECTIONS, 4), AIMS_OK);
    assert_int_equal(aims_http_set_param_i64(h, AIMS_HTTP_IDLE_TIMEOUT_S, 1), AIMS_OK);
    assert_int_equal(aims_http_set_param_i64(h, AIMS_HTTP_THREADS, 1), AIMS_OK);
    assert_int_equal(aims_http_start(h), AIMS_OK);
    assert_int_equal(aims_http_url(h, url, sizeof url, NULL), AIMS_OK);
    int fds[4];
    for (int i = 0; i < 4; i++) {
        fds[i] = connect_to(url);
    }
    /* slowloris on one of them: a request line and one header, never finished */
    const char *part = "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n";
    assert_int_equal(send(fds[0], part, strlen(part), 0), (ssize_t)strlen(part));
    /* the idle timeout closes all four (the slow one included) */
    for (int i = 0; i < 4; i++) {
        assert_true(closed_by_server(fds[i]));
        close(fds[i]);
    }
    assert_int_equal(curl_get(url, "/v2/health/live", NULL, 0), 200);
    aims_http_destroy(h);
    /* cap (idle timeout long now): with four connections open the fifth is
     * not served -- it waits in the listen backlog -- until one closes */
    assert_int_equal(aims_http_create(n, &h), AIMS_OK);
    assert_int_equal(aims_http_set_param_i64(h, AIMS_HTTP_MAX_CONNECTIONS, 4), AIMS_OK);
    assert_int_equal(aims_http_set_param_i64(h, AIMS_HTTP_THREADS, 1), AIMS_OK);
    assert_int_equal(aims_http_start(h), AIMS_OK);
    assert_int_equal(aims_http_url(h, url, sizeof url, NULL), AIMS_OK);
    for (int i = 0; i < 4; i++) {
        fds[i] = connect_to(url);
    }
    const int extra = connect_to(url); /* the kernel completes the handshake */
    const char *req = "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(send(extra, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    char buf[512];
    struct timeval tv = {1, 0};
    (void)setsockopt(extra, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t got = recv(extra, buf, sizeof buf - 1, 0);
    assert_true(got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)); /* not served */
    close(fds[0]);
    tv.tv_sec = 10;
    (void)setsockopt(extra, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    got = recv(extra, buf, sizeof buf - 1, 0);
    assert_true(got > 12);
    buf[got] = '\0';
    assert_int_equal(strncmp(buf, "HTTP/1.1 200", 12), 0); /* served once there is room */
    close(extra);
    for (int i = 1; i < 4; i++) {
        close(fds[i]);
    }
    aims_http_destroy(h);
    aims_node_destroy(n);
}

static void test_api_http_misuse_and_params(void **state)
{
    (void)state;
    if (!have_http()) {
        skip();
    }
    aims_node *n = NULL;
    aims_http *h = NULL;
    assert_int_equal(aims_node_create("http-params", &n), AIMS_OK);
    assert_int_equal(aims_http_create(NULL, &h), AIMS_E_MISUSE);
    assert_int_equal(aims_http_create(n, NULL), AIMS_E_MISUSE);
    assert_int_equal(aims_http_create((aims_node *)(void *)&h, &h), AIMS_E_MISUSE);
    assert_int_equal(aims_http_create(n, &h), AIMS_OK);
    char url[64];
    assert_int_equal(aims_http_url(h, url, sizeof url, NULL), AIMS_E_STATE);
    assert_int_equal(aims_http_set_param_i64(h, AIMS_HTTP_MAX_BODY, 10), AIMS_E_RANGE);
    assert_int_equal(aims_http_set_param_i64(h, AIMS_NODE_WORKERS, 1), AIMS_E_UNSUPPORTED);
    assert_int_equal(aims_http_set_param_i64(h, AIMS_HTTP_THREADS, 1), AIMS_OK);
    assert_int_equal(aims_http_set_listen(h, "no-port"), AIMS_E_INVAL);
    assert_int_equal(aims_http_set_listen(h, "10.1.2.3:0"), AIMS_OK);
    assert_int_equal(aims_http_start(h), AIMS_E_STATE); /* not loopback, not insecure */
    assert_non_null(strstr(aims_http_errmsg(h), "AIMS_HTTP_INSECURE"));
    assert_int_equal(aims_http_set_listen(h, "example.org:80"), AIMS_OK);
    assert_int_equal(aims_http_start(h), AIMS_E_INVAL);
    assert_int_equal(aims_http_set_listen(h, "127.0.0.1:0"), AIMS_OK);
    assert_int_equal(aims_http_start(h), AIMS_OK);
    assert_int_equal(aims_http_start(h), AIMS_E_STATE);
    assert_int_equal(aims_http_set_param_i64(h, AIMS_HTTP_THREADS, 2), AIMS_E_STATE);
    assert_int_equal(aims_http_url(h, url, 8, NULL), AIMS_E_RANGE);
    size_t len = 0;
    assert_int_equal(aims_http_url(h, url, sizeof url, &len), AIMS_OK);
    assert_int_equal(strncmp(url, "http://127.0.0.1:", 17), 0);
    assert_int_equal(len, strlen(url));
    assert_int_equal(curl_get(url, "/v2/health/live", NULL, 0), 200);
    aims_http_stop(h);
    aims_http_stop(h); /* idempotent */
    assert_int_equal(aims_http_start(h), AIMS_OK); /* restart */
    assert_int_equal(aims_http_url(h, url, sizeof url, NULL), AIMS_OK);
    assert_int_equal(curl_get(url, "/v2/health/live", NULL, 0), 200);
    aims_http_destroy(h);
    aims_http_destroy(NULL);
    aims_node_destroy(n);
}

static void test_api_http_ready_follows_services(void **state)
{
    (void)state;
    if (!have_http()) {
        skip();
    }
    aims_node *n = NULL;
    aims_registry *r = NULL;
    aims_service *s = NULL;
    aims_http *h = NULL;
    char url[64], body[4096];
    assert_int_equal(aims_registry_create(&r), AIMS_OK);
    assert_int_equal(aims_node_create("http-ready", &n), AIMS_OK);
    assert_int_equal(aims_node_set_param_i64(n, AIMS_NODE_DRAIN_GRACE_MS, 1), AIMS_OK);
    assert_int_equal(aims_node_listen(n, "inproc://http-ready"), AIMS_OK);
    assert_int_equal(aims_node_set_registry(n, r), AIMS_OK);
    assert_int_equal(aims_http_create(n, &h), AIMS_OK);
    assert_int_equal(aims_http_start(h), AIMS_OK);
    assert_int_equal(aims_http_url(h, url, sizeof url, NULL), AIMS_OK);
    /* no services yet */
    assert_int_equal(curl_get(url, "/v2/health/ready", body, sizeof body), 503);
    assert_non_null(strstr(body, "\"error\""));
    assert_int_equal(curl_get(url, "/v2/health/live", NULL, 0), 200);
    /* added, not started: not ready */
    assert_int_equal(aims_service_add_handler(n, "echo", echo, NULL, &s), AIMS_OK);
    assert_int_equal(curl_get(url, "/v2/health/ready", body, sizeof body), 503);
    assert_non_null(strstr(body, "not started"));
    /* started and registered: ready */
    assert_int_equal(aims_service_start(s), AIMS_OK);
    assert_int_equal(curl_get(url, "/v2/health/ready", body, sizeof body), 200);
    /* a handler service is not a model */
    assert_int_equal(curl_get(url, "/v2/models/echo", body, sizeof body), 404);
    assert_int_equal(curl_get(url, "/metrics", body, sizeof body), 200);
    assert_non_null(strstr(body, "aims_model_running{model=\"echo\""));
    assert_int_equal(curl_get(url, "/", body, sizeof body), 200);
    assert_non_null(strstr(body, "echo"));
    /* stopped: not ready again */
    assert_int_equal(aims_service_stop(s, 1000), AIMS_OK);
    assert_int_equal(curl_get(url, "/v2/health/ready", body, sizeof body), 503);
    aims_http_destroy(h);
    aims_node_destroy(n);
    aims_registry_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_api_http_misuse_and_params, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_api_http_ready_follows_services, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_api_http_text_model_bytes, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_api_http_overload_and_deadline, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_api_http_connection_cap_and_slow_clients, ta_setup,
                                        ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
