/*
 * test_optimize_daemon.c -- aims-node --optimize (docs/OPTIMIZE.md) as a
 * separate process over tcp://127.0.0.1: the harness's tiny bundle is sent
 * as bytes with held-out rows made the same way it_make_bundle's are; a
 * generous bound returns an int8 bundle and publishes it to the daemon's
 * --infer service (which then answers), a negative bound is refused with
 * nothing returned, and corrupt bundle bytes are a clear error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <aims/aims.h>

#include "itest.h"

#define ROWS 40

static void *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    IT_CHECK(f != NULL, "open %s", path);
    IT_CHECK(fseek(f, 0, SEEK_END) == 0, "seek");
    const long n = ftell(f);
    IT_CHECK(n > 0, "empty %s", path);
    rewind(f);
    void *buf = malloc((size_t)n);
    IT_CHECK(buf != NULL && fread(buf, 1, (size_t)n, f) == (size_t)n, "read %s", path);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static aims_msg *request(const void *bundle, size_t blen, float max_drop, const char *publish)
{
    static float x[ROWS * IT_BUNDLE_COLS];
    static int32_t y[ROWS];
    for (int r = 0; r < ROWS; r++) { /* it_make_bundle's two classes */
        y[r] = r % 2;
        for (int k = 0; k < IT_BUNDLE_COLS; k++) {
            x[r * IT_BUNDLE_COLS + k] = (float)(y[r] ? 200 + r + k : 10 + r - k);
        }
    }
    aims_msg *m = NULL;
    IT_CHECK(aims_msg_create(&m) == AIMS_OK, "msg");
    const uint64_t bn = blen, xd[2] = {ROWS, IT_BUNDLE_COLS}, yd = ROWS;
    IT_CHECK(aims_msg_add(m, "bundle", AIMS_DT_BYTES, &bn, 1, bundle, 0) == AIMS_OK &&
                 aims_msg_add(m, "x", AIMS_DT_F32, xd, 2, x, 0) == AIMS_OK &&
                 aims_msg_add(m, "y", AIMS_DT_I32, &yd, 1, y, 0) == AIMS_OK &&
                 aims_msg_add(m, "max_drop", AIMS_DT_F32, NULL, 0, &max_drop, 0) == AIMS_OK,
             "request: %s", aims_errmsg());
    if (publish != NULL) {
        const uint64_t pn = strlen(publish);
        IT_CHECK(aims_msg_add(m, "publish", AIMS_DT_BYTES, &pn, 1, publish, 0) == AIMS_OK,
                 "publish");
    }
    return m;
}

int main(int argc, char **argv)
{
    it_init(argc, argv, "optimize_daemon");
    char bundle[300], pipeline[300], infer_arg[320];
    snprintf(bundle, sizeof bundle, "%s/clf.bundle", it_dir());
    snprintf(pipeline, sizeof pipeline, "%s/pre.pipeline", it_dir());
    it_make_bundle(bundle, pipeline);
    snprintf(infer_arg, sizeof infer_arg, "clf=%s", bundle);
    it_proc d;
    it_spawnl(&d, "opt", 30000, "--name", "opt", "--listen", "tcp://127.0.0.1:0", "--infer",
              infer_arg, "--optimize", "optimize.clf", (char *)NULL);
    aims_client *c = it_client(NULL, 50);
    size_t blen = 0;
    void *bytes = read_all(bundle, &blen);
    aims_msg *rep = NULL;
    IT_CHECK(aims_msg_create(&rep) == AIMS_OK, "msg");

    aims_msg *req = request(bytes, blen, 0.5f, "clf");
    aims_status rc = aims_client_call_addr(c, d.addr, "optimize.clf", "optimize", req, rep, 30000);
    IT_CHECK(rc == AIMS_OK, "optimize: %s (%s)", aims_status_name(rc), aims_msg_error(rep));
    size_t idx = 0;
    IT_CHECK(aims_msg_find(rep, "bundle", &idx) == AIMS_OK, "no int8 bundle in the reply");
    IT_CHECK(aims_msg_find(rep, "published", &idx) == AIMS_OK, "not published");
    aims_msg_destroy(req);
    it_log("accepted: int8 bundle returned and published to clf");

    /* the infer service still answers (now with the int8 model) */
    req = NULL;
    IT_CHECK(aims_msg_create(&req) == AIMS_OK, "msg");
    const float row[IT_BUNDLE_COLS] = {210, 211, 212, 213};
    const uint64_t rd[2] = {1, IT_BUNDLE_COLS};
    IT_CHECK(aims_msg_add(req, "x", AIMS_DT_F32, rd, 2, row, 0) == AIMS_OK, "row");
    rc = aims_client_call_addr(c, d.addr, "clf", "predict", req, rep, 30000);
    IT_CHECK(rc == AIMS_OK, "predict after publish: %s (%s)", aims_status_name(rc),
             aims_msg_error(rep));
    aims_msg_destroy(req);

    req = request(bytes, blen, -1.0f, "clf");
    rc = aims_client_call_addr(c, d.addr, "optimize.clf", "optimize", req, rep, 30000);
    IT_CHECK(rc == AIMS_E_RANGE, "negative bound: %s", aims_status_name(rc));
    IT_CHECK(strstr(aims_msg_error(rep), "refused") != NULL, "message: %s", aims_msg_error(rep));
    IT_CHECK(aims_msg_find(rep, "bundle", &idx) != AIMS_OK, "a refused call returned a bundle");
    aims_msg_destroy(req);
    it_log("negative bound refused: %s", aims_msg_error(rep));

    memset(bytes, 0x42, blen / 2);
    req = request(bytes, blen, 0.5f, NULL);
    rc = aims_client_call_addr(c, d.addr, "optimize.clf", "optimize", req, rep, 30000);
    IT_CHECK(rc == AIMS_E_CORRUPT, "corrupt bundle: %s", aims_status_name(rc));
    aims_msg_destroy(req);
    it_log("corrupt bundle: %s", aims_msg_error(rep));

    aims_msg_destroy(rep);
    free(bytes);
    aims_client_destroy(c);
    it_signal(&d, SIGTERM);
    const int st = it_wait_exit(&d, 30000);
    IT_CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: status %d", st);
    it_pass();
}
