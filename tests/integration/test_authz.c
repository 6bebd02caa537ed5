/*
 * test_authz.c -- lease and job secrets against a rogue client (issue 10).
 *
 * A registry daemon and an echo node joined to it (its lease renewed every
 * 100 ms with the secret its registration returned) plus a train node. A
 * rogue client that knows only what anybody can read (instance ids from
 * "changes", the job id) then tries:
 *   - deregister the echo instance by id, without and with a wrong secret
 *   - renew it without secrets (and with a wrong one: reported missing)
 *   - status, result and cancel of another caller's job without the handle
 * Each is refused with AIMS_E_DENIED and a message naming the secret; the
 * instance stays listed, the job keeps running for its owner, whose status
 * calls with the handle keep working.
 *
 * Then a daemon with --policy and --audit: a token made by the `openssl`
 * CLI (docs/POLICY.md's recipe) in "$auth" admits a call that is denied
 * without it; a rogue registering a service name the policy gives to another
 * identity is refused; every denial lands in the audit file as a JSON line.
 */
#include "itest.h"

#include <aims/aims_policy.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static aims_msg *new_msg(void)
{
    aims_msg *m = NULL;
    IT_CHECK(aims_msg_create(&m) == AIMS_OK, "msg: %s", aims_errmsg());
    return m;
}

static void put_bytes(aims_msg *m, const char *name, const char *s)
{
    const uint64_t d[1] = {strlen(s)};
    IT_CHECK(aims_msg_add(m, name, AIMS_DT_BYTES, d, 1, s, 0) == AIMS_OK, "msg: %s",
             aims_errmsg());
}

static void put_i64(aims_msg *m, const char *name, int64_t v)
{
    IT_CHECK(aims_msg_add(m, name, AIMS_DT_I64, NULL, 0, &v, 0) == AIMS_OK, "msg: %s",
             aims_errmsg());
}

/* The registry's instance id of the first instance of `service`. */
static int64_t instance_id(aims_client *c, const char *reg, const char *service)
{
    aims_msg *req = new_msg(), *rep = new_msg();
    put_i64(req, "since", -1);
    put_i64(req, "epoch", 0);
    IT_CHECK(aims_client_call_addr(c, reg, "aims.registry", "changes", req, rep, 2000) == AIMS_OK,
             "changes: %s", aims_errmsg());
    size_t ii = 0, is = 0, sn = 0, ib = 0;
    const void *ids = NULL, *svc = NULL;
    IT_CHECK(aims_msg_find(rep, "ids", &ii) == AIMS_OK && aims_msg_find(rep, "services", &is) ==
             AIMS_OK, "changes reply without ids/services");
    aims_msg_get_tensor(rep, ii, NULL, NULL, NULL, NULL, &ids, &ib);
    aims_msg_get_tensor(rep, is, NULL, NULL, NULL, NULL, &svc, &sn);
    int64_t found = 0;
    const char *p = svc;
    for (size_t k = 0; k < ib / 8 && p != NULL; k++) {
        const char *nl = memchr(p, '\n', sn - (size_t)(p - (const char *)svc));
        if (nl != NULL && (size_t)(nl - p) == strlen(service) &&
            memcmp(p, service, strlen(service)) == 0) {
            memcpy(&found, (const char *)ids + 8 * k, 8);
            break;
        }
        p = nl != NULL ? nl + 1 : NULL;
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    IT_CHECK(found > 0, "no instance of %s in the registry", service);
    return found;
}

static void expect_denied(aims_client *c, const char *addr, const char *svc, const char *method,
                          aims_msg *req, const char *what)
{
    aims_msg *rep = new_msg();
    const aims_status rc = aims_client_call_addr(c, addr, svc, method, req, rep, 5000);
    IT_CHECK(rc == AIMS_E_DENIED, "%s: got %s (%s), want AIMS_E_DENIED", what, aims_strerror(rc),
             aims_errmsg());
    const char *msg = aims_errmsg();
    IT_CHECK(strstr(msg, "secret") != NULL || strstr(msg, "handle") != NULL,
             "%s: the refusal does not say why: %s", what, msg);
    it_log("%s: refused (%s)", what, msg);
    aims_msg_destroy(rep);
}

static void rogue_registry(aims_client *c, const char *reg)
{
    const int64_t id = instance_id(c, reg, "echo");
    aims_msg *req = new_msg();
    put_i64(req, "id", id);
    expect_denied(c, reg, "aims.registry", "deregister", req, "deregister without secret");
    put_bytes(req, "secret", "00000000000000000000000000000000");
    expect_denied(c, reg, "aims.registry", "deregister", req, "deregister with a wrong secret");
    aims_msg_clear(req);
    const uint64_t d[1] = {1};
    IT_CHECK(aims_msg_add(req, "ids", AIMS_DT_I64, d, 1, &id, 0) == AIMS_OK, "msg");
    expect_denied(c, reg, "aims.registry", "heartbeat", req, "heartbeat without secrets");
    put_bytes(req, "secrets", "ffffffffffffffffffffffffffffffff\n");
    aims_msg *rep = new_msg();
    IT_CHECK(aims_client_call_addr(c, reg, "aims.registry", "heartbeat", req, rep, 5000) ==
             AIMS_OK, "heartbeat with a wrong secret: %s", aims_errmsg());
    size_t im = 0, mb = 0;
    IT_CHECK(aims_msg_find(rep, "missing", &im) == AIMS_OK, "no 'missing'");
    aims_msg_get_tensor(rep, im, NULL, NULL, NULL, NULL, NULL, &mb);
    IT_CHECK(mb == 8, "a wrong secret renewed the lease");
    aims_msg_destroy(rep);
    aims_msg_destroy(req);
    /* The real instance is still there, under the same id, several beats later. */
    it_sleep_ms(500);
    IT_CHECK(instance_id(c, reg, "echo") == id, "the echo instance changed or vanished");
}

static int32_t state_of(const aims_msg *rep)
{
    size_t i = 0;
    const void *p = NULL;
    int32_t s = -1;
    if (aims_msg_find(rep, "state", &i) == AIMS_OK &&
        aims_msg_get_tensor(rep, i, NULL, NULL, NULL, NULL, &p, NULL) == AIMS_OK) {
        memcpy(&s, p, sizeof s);
    }
    return s;
}

static void rogue_jobs(aims_client *c, const char *addr)
{
    enum { ROWS = 64, COLS = 4 };
    float x[ROWS * COLS];
    int32_t y[ROWS];
    for (int i = 0; i < ROWS; i++) {
        y[i] = i % 2;
        for (int k = 0; k < COLS; k++) {
            x[i * COLS + k] = (float)(y[i] * 2 - 1) + 0.01f * (float)k;
        }
    }
    aims_msg *req = new_msg(), *rep = new_msg();
    const uint64_t xd[2] = {ROWS, COLS}, yd[1] = {ROWS};
    put_bytes(req, "job", "fmnist-1");
    IT_CHECK(aims_msg_add(req, "x", AIMS_DT_F32, xd, 2, x, 0) == AIMS_OK &&
             aims_msg_add(req, "y", AIMS_DT_I32, yd, 1, y, 0) == AIMS_OK, "msg");
    put_bytes(req, "spec", "kind=softmax\nclasses=2\nepochs=2000\nbatch=8");
    IT_CHECK(aims_client_call_addr(c, addr, "tr", "submit", req, rep, 20000) == AIMS_OK,
             "submit: %s", aims_errmsg());
    size_t hi = 0;
    const void *hp = NULL;
    size_t hn = 0;
    IT_CHECK(aims_msg_find(rep, "handle", &hi) == AIMS_OK &&
             aims_msg_get_tensor(rep, hi, NULL, NULL, NULL, NULL, &hp, &hn) == AIMS_OK && hn == 32,
             "submit returned no 32-character handle");
    char handle[33];
    memcpy(handle, hp, 32);
    handle[32] = '\0';

    aims_msg *rogue = new_msg();
    put_bytes(rogue, "job", "fmnist-1");
    expect_denied(c, addr, "tr", "status", rogue, "status of another caller's job");
    expect_denied(c, addr, "tr", "result", rogue, "result of another caller's job");
    expect_denied(c, addr, "tr", "cancel", rogue, "cancel of another caller's job");
    put_bytes(rogue, "handle", "0123456789abcdef0123456789abcdef");
    expect_denied(c, addr, "tr", "cancel", rogue, "cancel with a guessed handle");

    aims_msg_clear(req);
    put_bytes(req, "job", "fmnist-1");
    put_bytes(req, "handle", handle);
    IT_CHECK(aims_client_call_addr(c, addr, "tr", "status", req, rep, 5000) == AIMS_OK,
             "owner's status: %s", aims_errmsg());
    IT_CHECK(state_of(rep) == 0 || state_of(rep) == 1, "the job is not queued/running: %d",
             (int)state_of(rep));
    IT_CHECK(aims_client_call_addr(c, addr, "tr", "cancel", req, rep, 5000) == AIMS_OK,
             "owner's cancel: %s", aims_errmsg());
    aims_msg_destroy(rogue);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
}

/* Run a shell command and read its first output line into out. */
static void sh(const char *cmd, char *out, size_t cap)
{
    FILE *f = popen(cmd, "r");
    IT_CHECK(f != NULL, "popen");
    out[0] = '\0';
    if (fgets(out, (int)cap, f) == NULL) {
        out[0] = '\0';
    }
    const int st = pclose(f);
    IT_CHECK(st == 0 && out[0] != '\0', "command failed: %s", cmd);
    out[strcspn(out, "\n")] = '\0';
}

static int count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        IT_CHECK(line[0] == '{' && strstr(line, "}\n") != NULL, "audit line is not JSON: %s",
                 line);
        n += strstr(line, needle) != NULL;
    }
    fclose(f);
    return n;
}

/* Built without OpenSSL (meson -Dtls=disabled), tokens cannot be checked. */
static int have_jwt(void)
{
    aims_policy *p = NULL;
    char id[64];
    IT_CHECK(aims_policy_create(&p) == AIMS_OK, "policy");
    const aims_status rc = aims_policy_verify_token(p, "a.b.c", id, sizeof id);
    aims_policy_destroy(p);
    return rc != AIMS_E_UNSUPPORTED;
}

static void policy_daemon(aims_client *c)
{
    if (!have_jwt()) {
        it_log("built without OpenSSL: the policy daemon scenario is skipped");
        return;
    }
    char pol[300], key[300], audit[300], cmd[2048], tok[2048];
    snprintf(pol, sizeof pol, "%s/node.policy", it_dir());
    snprintf(key, sizeof key, "%s/hs256.key", it_dir());
    snprintf(audit, sizeof audit, "%s/audit.jsonl", it_dir());
    snprintf(cmd, sizeof cmd, "openssl rand -hex 32 > %s && echo ok", key);
    sh(cmd, tok, sizeof tok);
    FILE *f = fopen(pol, "w");
    IT_CHECK(f != NULL, "policy file");
    fprintf(f, "# integration test policy\n"
               "jwt-hs256-key-file hs256.key\n"
               "jwt-audience aims\n"
               "allow jwt:alice call echo/*\n"
               "allow uid:%u register echo\n"
               "allow * join aims.registry\n", (unsigned)getuid());
    fclose(f);
    /* the token, made by the openssl CLI */
    snprintf(cmd, sizeof cmd,
             "b64() { base64 -w0 | tr '+/' '-_' | tr -d '='; }; "
             "h=$(printf '{\"alg\":\"HS256\",\"typ\":\"JWT\"}' | b64); "
             "p=$(printf '{\"sub\":\"alice\",\"exp\":%lld,\"aud\":\"aims\"}' | b64); "
             "s=$(printf '%%s.%%s' \"$h\" \"$p\" | openssl dgst -sha256 -mac HMAC "
             "-macopt key:\"$(cat %s)\" -binary | b64); echo \"$h.$p.$s\"",
             (long long)time(NULL) + 3600, key);
    sh(cmd, tok, sizeof tok);
    it_proc d;
    it_spawnl(&d, "secured", 20000, "--name", "secured", "--listen", "tcp://127.0.0.1:0",
              "--host-registry", "--echo", "echo", "--policy", pol, "--audit", audit,
              (char *)NULL);
    aims_msg *req = new_msg(), *rep = new_msg();
    put_bytes(req, "x", "hello");
    aims_status rc = aims_client_call_addr(c, d.addr, "echo", "ping", req, rep, 5000);
    IT_CHECK(rc == AIMS_E_DENIED, "anonymous call: %s", aims_strerror(rc));
    it_log("anonymous call refused: %s", aims_errmsg());
    put_bytes(req, "$auth", tok);
    rc = aims_client_call_addr(c, d.addr, "echo", "ping", req, rep, 5000);
    IT_CHECK(rc == AIMS_OK, "call with the openssl-made token: %s (%s)", aims_strerror(rc),
             aims_errmsg());
    size_t i = 0;
    IT_CHECK(aims_msg_find(rep, "$auth", &i) != AIMS_OK, "the token reached the handler");
    it_log("call with an HS256 token made by the openssl CLI admitted");
    tok[strlen(tok) - 2] = tok[strlen(tok) - 2] == 'A' ? 'B' : 'A';
    aims_msg_clear(req);
    put_bytes(req, "x", "hello");
    put_bytes(req, "$auth", tok);
    rc = aims_client_call_addr(c, d.addr, "echo", "ping", req, rep, 5000);
    IT_CHECK(rc == AIMS_E_DENIED, "a tampered token: %s", aims_strerror(rc));
    /* a rogue (anonymous over tcp) registering the service name "echo" */
    aims_msg_clear(req);
    put_bytes(req, "service", "echo");
    put_bytes(req, "address", "tcp://127.0.0.1:1");
    put_i64(req, "weight", 10000);
    put_i64(req, "ttl_ms", 60000);
    rc = aims_client_call_addr(c, d.addr, "aims.registry", "register", req, rep, 5000);
    IT_CHECK(rc == AIMS_E_DENIED, "rogue register: %s", aims_strerror(rc));
    it_log("rogue register refused: %s", aims_errmsg());
    IT_CHECK(it_registry_addrs(c, d.addr, "echo", cmd, sizeof cmd) == 1,
             "the registry lists the rogue or lost the real echo");
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    it_signal(&d, SIGTERM);
    IT_CHECK(it_wait_exit(&d, 20000) == 0, "daemon exit");
    const int denied = count_lines(audit, "\"action\":\"denied\"");
    IT_CHECK(denied == 3, "audit file has %d denials, want 3", denied);
    IT_CHECK(count_lines(audit, "\"identity\":\"anonymous\"") >= 2, "no anonymous identity");
    it_log("audit file: %d JSON denial lines", denied);
}

int main(int argc, char **argv)
{
    it_init(argc, argv, "authz");
    it_proc reg, echo, tr;
    it_spawn_registry(&reg, 100);
    it_spawnl(&echo, "echo", 20000, "--name", "echo", "--listen", "tcp://127.0.0.1:0", "--join",
              reg.addr, "--echo", "echo", "--heartbeat-ms", "100", (char *)NULL);
    it_spawnl(&tr, "train", 20000, "--name", "tr", "--listen", "tcp://127.0.0.1:0", "--train",
              "tr", (char *)NULL);
    aims_client *c = it_client(NULL, 50);
    for (int i = 0; i < 100; i++) {
        char buf[1024];
        if (it_registry_addrs(c, reg.addr, "echo", buf, sizeof buf) >= 1) {
            break;
        }
        it_sleep_ms(50);
    }
    rogue_registry(c, reg.addr);
    rogue_jobs(c, tr.addr);
    policy_daemon(c);
    aims_client_destroy(c);
    it_pass();
}
