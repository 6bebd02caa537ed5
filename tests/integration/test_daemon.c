/*
 * test_daemon.c -- the aims_node daemon itself: its command line, every
 * service kind it can host, and its exits.
 *
 *   - usage errors exit 2; a bundle that does not exist exits 1;
 *   - one daemon hosting infer (a bundle this test trains and saves),
 *     preprocess (the bundle's pipeline), train and echo, on tcp:// and
 *     ipc://, without a registry: every service answers through
 *     aims_client_call_addr on both addresses; the echo's "pid" is the
 *     daemon's pid;
 *   - SIGINT drains and exits 0 (under ASan, LeakSanitizer checks the whole
 *     node teardown with every kind of service on the way out).
 */
#include "itest.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#define COLS IT_BUNDLE_COLS

/* Call one method on one address; returns the reply (caller destroys). */
static aims_msg *call(aims_client *c, const char *addr, const char *svc, const char *method,
                      const aims_msg *req)
{
    aims_msg *rep = NULL;
    IT_CHECK(aims_msg_create(&rep) == AIMS_OK, "msg");
    const aims_status rc = aims_client_call_addr(c, addr, svc, method, req, rep, 10000);
    IT_CHECK(rc == AIMS_OK, "%s %s/%s: %s: %s (reply: '%s')", addr, svc, method,
             aims_strerror(rc), aims_client_errmsg(c), aims_msg_error(rep));
    return rep;
}

static void check_services(aims_client *c, const char *addr, pid_t daemon)
{
    static float x[2 * COLS] = {10, 9, 8, 7, 250, 251, 252, 253};
    const uint64_t xdims[2] = {2, COLS};
    aims_msg *req = NULL;
    IT_CHECK(aims_msg_create(&req) == AIMS_OK &&
                 aims_msg_add(req, "x", AIMS_DT_F32, xdims, 2, x, 0) == AIMS_OK,
             "msg");

    aims_msg *rep = call(c, addr, "echo", "anything", req);
    size_t i = 0;
    const void *data = NULL;
    size_t bytes = 0;
    IT_CHECK(aims_msg_find(rep, "pid", &i) == AIMS_OK &&
                 aims_msg_get_tensor(rep, i, NULL, NULL, NULL, NULL, &data, &bytes) == AIMS_OK &&
                 bytes == 8,
             "echo reply without pid");
    int64_t pid;
    memcpy(&pid, data, sizeof pid);
    IT_CHECK(pid == (int64_t)daemon, "echo pid %lld, daemon %ld", (long long)pid, (long)daemon);
    IT_CHECK(aims_msg_find(rep, "x", &i) == AIMS_OK, "echo lost the request tensor");
    aims_msg_destroy(rep);

    rep = call(c, addr, "clf", "predict", req);
    size_t ndim = 0;
    const uint64_t *dims = NULL;
    IT_CHECK(aims_msg_find(rep, "y", &i) == AIMS_OK &&
                 aims_msg_get_tensor(rep, i, NULL, NULL, &ndim, &dims, NULL, NULL) == AIMS_OK &&
                 ndim >= 1 && dims[0] == 2,
             "infer reply: no 'y' with 2 rows");
    aims_msg_destroy(rep);

    rep = call(c, addr, "pre", "transform", req);
    IT_CHECK(aims_msg_find(rep, "x", &i) == AIMS_OK, "preprocess reply without 'x'");
    aims_msg_destroy(rep);

    /* The train service: an unknown job is an error, not a crash. */
    aims_msg *jreq = NULL, *jrep = NULL;
    const uint64_t jdims[1] = {4};
    IT_CHECK(aims_msg_create(&jreq) == AIMS_OK && aims_msg_create(&jrep) == AIMS_OK &&
                 aims_msg_add(jreq, "job", AIMS_DT_BYTES, jdims, 1, "nope", 0) == AIMS_OK,
             "msg");
    const aims_status rc = aims_client_call_addr(c, addr, "tr", "status", jreq, jrep, 10000);
    IT_CHECK(rc != AIMS_OK && rc != AIMS_E_CLOSED && rc != AIMS_E_IO && rc != AIMS_E_TIMEOUT,
             "train status of an unknown job: %s", aims_strerror(rc));
    aims_msg_destroy(jreq);
    aims_msg_destroy(jrep);
    aims_msg_destroy(req);
    it_log("%s: echo, infer, preprocess, train answer", addr);
}

int main(int argc, char **argv)
{
    it_init(argc, argv, "daemon");
    const char *const no_args[] = {NULL};
    const char *const bad_flag[] = {"--name", "x", "--listen", "tcp://127.0.0.1:0", "--bogus",
                                    "1", NULL};
    const char *const both[] = {"--name", "x", "--listen", "tcp://127.0.0.1:0", "--join",
                                "tcp://127.0.0.1:1", "--host-registry", NULL};
    int st = it_run(no_args, 20000);
    IT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "no arguments: status %d", st);
    st = it_run(bad_flag, 20000);
    IT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "unknown flag: status %d", st);
    st = it_run(both, 20000);
    IT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "--join with --host-registry: status %d", st);

    char bundle[300], pipeline[300], missing[320], ipc[300];
    snprintf(bundle, sizeof bundle, "%s/clf.bundle", it_dir());
    snprintf(pipeline, sizeof pipeline, "%s/pre.pipeline", it_dir());
    snprintf(missing, sizeof missing, "clf=%s/none.bundle", it_dir());
    snprintf(ipc, sizeof ipc, "ipc://%s/d.sock", it_dir());
    const char *const bad_bundle[] = {"--name", "x", "--listen", "tcp://127.0.0.1:0", "--infer",
                                      missing, NULL};
    st = it_run(bad_bundle, 20000);
    IT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "missing bundle: status %d", st);
    it_log("usage errors exit 2, a missing bundle exits 1");

    it_make_bundle(bundle, pipeline);
    char infer_arg[320], pre_arg[320];
    snprintf(infer_arg, sizeof infer_arg, "clf=%s", bundle);
    snprintf(pre_arg, sizeof pre_arg, "pre=%s", pipeline);
    it_proc d;
    it_spawnl(&d, "all-kinds", 30000, "--name", "all-kinds", "--listen", "tcp://127.0.0.1:0",
              "--listen", ipc, "--infer", infer_arg, "--preprocess", pre_arg, "--train", "tr",
              "--echo", "echo", "--workers", "2", "--queue-cap", "64", "--concurrency", "2",
              "--max-frame", "4194304", "--heartbeat-ms", "200", (char *)NULL);
    aims_client *c = it_client(NULL, 50);
    check_services(c, d.addr, d.pid);
    check_services(c, ipc, d.pid);
    aims_client_destroy(c);

    it_signal(&d, SIGINT);
    st = it_wait_exit(&d, 30000);
    IT_CHECK(st != -1, "no exit within 30 s of SIGINT");
    IT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGINT: status %d", st);
    it_log("SIGINT: drained and exited 0");
    it_pass();
}
