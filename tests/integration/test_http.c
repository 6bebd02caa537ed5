/*
 * test_http.c -- the HTTP front door of the node daemon (aims_node --http),
 * tested with real clients (curl, Python requests, promtool) by
 * http_check.py, which this program runs against a live daemon:
 *
 *   1. train the tiny test bundle, start a daemon hosting it as clf@1 and
 *      clf@2 (own registry, so readiness means "registered") with --http on
 *      loopback port 0 (the daemon's "http" line says the port it took);
 *   2. ask the daemon for predictions over the NATIVE protocol (client.c,
 *      tcp://) -- class ids and scores -- and write rows + answers to a JSON
 *      file;
 *   3. run http_check.py URL native.json PID: every endpoint, the same
 *      predictions over HTTP JSON, hostile HTTP, promtool on /metrics, and
 *      finally SIGTERM to the daemon with /v2/health/ready going 503 during
 *      its drain;
 *   4. the daemon must exit 0.
 * Exit 77 (skipped) when the library was built without HTTP.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <aims/aims.h>

#include "itest.h"

static void write_floats(FILE *f, const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%s%.9g", i ? "," : "", (double)v[i]);
    }
}

/* Native predictions of rows x (what: 0 class ids, 1 scores) into f as "key": [...]. */
static void native(FILE *f, aims_client *c, const char *addr, const char *key, const float *x,
                   size_t rows, int32_t what)
{
    aims_msg *req = NULL, *reply = NULL;
    IT_CHECK(aims_msg_create(&req) == AIMS_OK && aims_msg_create(&reply) == AIMS_OK, "msg");
    const uint64_t dims[2] = {rows, IT_BUNDLE_COLS};
    IT_CHECK(aims_msg_add(req, "x", AIMS_DT_F32, dims, 2, x, 0) == AIMS_OK, "add x");
    if (what != 0) {
        IT_CHECK(aims_msg_add(req, "output", AIMS_DT_I32, NULL, 0, &what, 0) == AIMS_OK, "out");
    }
    const aims_status st = aims_client_call_addr(c, addr, "clf@1", "predict", req, reply, 10000);
    IT_CHECK(st == AIMS_OK, "native predict: %s", aims_client_errmsg(c));
    size_t i = 0;
    const void *data = NULL;
    size_t bytes = 0;
    IT_CHECK(aims_msg_find(reply, "y", &i) == AIMS_OK &&
                 aims_msg_get_tensor(reply, i, NULL, NULL, NULL, NULL, &data, &bytes) == AIMS_OK,
             "reply y");
    fprintf(f, "\"%s\": [", key);
    write_floats(f, data, bytes / sizeof(float));
    fprintf(f, "],\n");
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
}

int main(int argc, char **argv)
{
    it_init(argc, argv, "test_http");
    const char *script = argc > 2 ? argv[2] : "tests/integration/http_check.py";
    {
        aims_node *n = NULL;
        aims_http *h = NULL;
        IT_CHECK(aims_node_create("probe", &n) == AIMS_OK, "node");
        const aims_status st = aims_http_create(n, &h);
        aims_http_destroy(h);
        aims_node_destroy(n);
        if (st == AIMS_E_UNSUPPORTED) {
            it_log("built without HTTP: skipped");
            return 77;
        }
    }
    char bundle[300], pipeline[300], a1[320], a2[320], native_path[300];
    snprintf(bundle, sizeof bundle, "%s/clf.bundle", it_dir());
    snprintf(pipeline, sizeof pipeline, "%s/clf.pipeline", it_dir());
    snprintf(a1, sizeof a1, "clf@1=%s", bundle);
    snprintf(a2, sizeof a2, "clf@2=%s", bundle);
    it_make_bundle(bundle, pipeline);
    it_proc d;
    it_spawnl(&d, "http-node", 30000, "--name", "http-node", "--listen", "tcp://127.0.0.1:0",
              "--host-registry", "--heartbeat-ms", "500", "--infer", a1, "--infer", a2,
              "--http", "127.0.0.1:0", (char *)NULL); /* its port: d.http */
    it_log("daemon %s, http on %s", d.addr, d.http);

    /* native predictions of a few rows (same rows http_check.py posts) */
    static const float x[3 * IT_BUNDLE_COLS] = {10, 9, 8, 7, 250, 251, 252, 253, 12, 11, 10, 9};
    snprintf(native_path, sizeof native_path, "%s/native.json", it_dir());
    FILE *f = fopen(native_path, "w");
    IT_CHECK(f != NULL, "cannot write %s", native_path);
    aims_client *c = NULL;
    IT_CHECK(aims_client_create(&c) == AIMS_OK, "client");
    fprintf(f, "{\"x\": [");
    write_floats(f, x, sizeof x / sizeof x[0]);
    fprintf(f, "],\n\"cols\": %d,\n", IT_BUNDLE_COLS);
    native(f, c, d.addr, "class", x, 3, 0);
    native(f, c, d.addr, "scores", x, 3, 1);
    fprintf(f, "\"rows\": 3}\n");
    fclose(f);
    aims_client_destroy(c);

    char cmd[1200];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s %s %d", script, d.http, native_path,
             (int)d.pid);
    it_log("running %s", cmd);
    const int rc = system(cmd);
    IT_CHECK(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "http_check.py failed (%d)", rc);
    const int st = it_wait_exit(&d, 20000);
    IT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon exit status %d", st);
    it_pass();
}
