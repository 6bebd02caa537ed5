/*
 * test_tls.c -- the tls:// transport beyond the service matrix: identities,
 * resumption, reload, configuration errors, and the hostile cases, each
 * refused with a clear error (client side: the status message; server side:
 * the warning it logs) while a well-behaved client on the same node keeps
 * working: no client certificate, another CA, expired and not-yet-valid
 * certificates, a wrong SAN, a peer name not allowed, plaintext to a TLS
 * port, TLS to a plaintext port, a stalled handshake (dropped within the
 * bound), a TLS 1.2-only client (openssl s_client -tls1_2). And a client no
 * one here wrote: openssl s_client sees TLS 1.3 and ALPN aims/1 and is
 * refused without a certificate, and gets the server's cipher suite order
 * (AES-128-GCM first with AES-NI). The PKI is made at start by mkcerts.sh.
 * No timing assertions: the stall test only waits for the drop, bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <poll.h>
#include <unistd.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "core/aimsi_core.h"
#include "svc/aimsi_local.h"
#include "svc/aimsi_node.h"
#include "svc/transport/aimsi_transport.h"
#include "svc/transport/aimsi_stream.h"
#include "svc_echo.h"
#include "testalloc.h"
#include "tls_support.h"
#include "tr_raw.h"

static char g_dir[128];

/* ---- captured warnings ---------------------------------------------------------------- */

static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_log[16384];

static void log_fn(void *user, aims_log_level level, const char *msg)
{
    (void)user;
    if (level < AIMS_LOG_WARN) {
        return;
    }
    pthread_mutex_lock(&g_log_mu);
    const size_t n = strlen(g_log);
    snprintf(g_log + n, sizeof g_log - n, "%s\n", msg);
    pthread_mutex_unlock(&g_log_mu);
}

static void log_clear(void)
{
    pthread_mutex_lock(&g_log_mu);
    g_log[0] = '\0';
    pthread_mutex_unlock(&g_log_mu);
}

/* Wait (bounded) until the node logged a line containing `what`. */
static int log_has(const char *what)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&g_log_mu);
        const int hit = strstr(g_log, what) != NULL;
        pthread_mutex_unlock(&g_log_mu);
        if (hit) {
            print_message("node logged: %s\n", what);
            return 1;
        }
        nap_ms(20);
    }
    fprintf(stderr, "log has no \"%s\"; it is:\n%s", what, g_log);
    return 0;
}

/* ---- a node serving "echo" over tls:// (or tcp://) ------------------------------------ */

typedef struct tnode {
    aims_node *node;
    aims_service *svc;
    aims_tls_config *cfg;
    hctx h;
    char addr[AIMSI_URL_MAX + 1];
    int port;
} tnode;

static void tnode_start(tnode *t, const char *scheme, aims_tls_config *cfg)
{
    static int seq;
    char name[32];
    snprintf(name, sizeof name, "tls%d", seq++);
    memset(t, 0, sizeof *t);
    t->cfg = cfg;
    t->h.tag = 1;
    assert_int_equal(aims_node_create(name, &t->node), AIMS_OK);
    if (cfg != NULL) {
        assert_int_equal(aims_node_set_tls(t->node, cfg), AIMS_OK);
    }
    char url[64];
    snprintf(url, sizeof url, "%s://127.0.0.1:0", scheme);
    assert_int_equal(aims_node_listen(t->node, url), AIMS_OK);
    size_t len = 0;
    assert_int_equal(aims_node_get_address(t->node, 0, t->addr, sizeof t->addr, &len), AIMS_OK);
    t->port = atoi(strrchr(t->addr, ':') + 1);
    assert_int_equal(aims_service_add_handler(t->node, "echo", echo_fn, &t->h, &t->svc),
                     AIMS_OK);
    assert_int_equal(aims_service_start(t->svc), AIMS_OK);
}

static void tnode_stop(tnode *t)
{
    aims_node_destroy(t->node);
    aims_tls_config_destroy(t->cfg);
}

static aims_client *client_with(aims_tls_config *cfg)
{
    aims_client *c = mk_client(NULL);
    if (cfg != NULL) {
        assert_int_equal(aims_client_set_tls(c, cfg), AIMS_OK);
        aims_tls_config_destroy(cfg); /* the client holds its own reference */
    }
    return c;
}

static aims_status call(aims_client *c, const char *addr)
{
    aims_msg *req = mk_req(2.0f), *rep = mk_msg();
    const aims_status rc = aims_client_call_addr(c, addr, "echo", "m", req, rep, 0);
    if (rc == AIMS_OK) {
        assert_int_equal(reply_tag(rep), 1);
    }
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return rc;
}

/* A hostile client is refused with `client_says` in its error (NULL: any
 * error) and `node_says` in the node's log; the good client is unaffected. */
static void expect_refused(const tnode *t, aims_client *good, aims_client *bad,
                           const char *client_says, const char *node_says)
{
    log_clear();
    assert_int_equal(call(good, t->addr), AIMS_OK);
    const aims_status rc = call(bad, t->addr);
    assert_int_not_equal(rc, AIMS_OK);
    print_message("client refused: %s\n", aims_client_errmsg(bad));
    if (client_says != NULL && strstr(aims_client_errmsg(bad), client_says) == NULL) {
        fail_msg("client error \"%s\" does not say \"%s\"", aims_client_errmsg(bad),
                 client_says);
    }
    if (node_says != NULL) {
        assert_true(log_has(node_says));
    }
    assert_int_equal(call(good, t->addr), AIMS_OK);
}

/* Read until EOF/error, at most `ms`: 1 when the peer closed. */
static int closed_within(int fd, int ms)
{
    char buf[512];
    for (int waited = 0; waited < ms; waited += 100) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) > 0) {
            const ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) {
                return 1;
            }
        }
    }
    return 0;
}

/* Run a shell command, capture its stdout+stderr into out[cap]; returns exit status. */
static int run(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = 0;
    while (n + 1 < cap) {
        const size_t r = fread(out + n, 1, cap - 1 - n, p);
        if (r == 0) {
            break;
        }
        n += r;
    }
    out[n] = '\0';
    return pclose(p);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_tls_call_and_identities(void **state)
{
    (void)state;
    tnode t;
    tnode_start(&t, "tls", tls_cfg(g_dir, "node"));
    aims_tls_config *ccfg = tls_cfg(g_dir, "client");
    assert_string_equal(aims_tls_config_identity(ccfg), "client1.aims");
    assert_string_equal(aims_tls_config_identity(t.cfg), "node1.aims");
    aims_client *c = client_with(ccfg);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(call(c, t.addr), AIMS_OK);
    }
    /* A DNS name is checked against the DNS subjectAltNames (SNI sent). */
    char byname[64];
    snprintf(byname, sizeof byname, "tls://localhost:%d", t.port);
    assert_int_equal(call(c, byname), AIMS_OK);
    /* The node knows who is calling (per connection), and who it is itself. */
    pthread_mutex_lock(&t.node->lock);
    assert_non_null(t.node->conns);
    assert_string_equal(aimsi_node_conn_peer(t.node->conns), "client1.aims");
    pthread_mutex_unlock(&t.node->lock);
    assert_string_equal(aimsi_node_identity(t.node), "node1.aims");
    aims_client_destroy(c);
    tnode_stop(&t);
}

/* First handshakes of one config at the same moment: OpenSSL decodes a
 * certificate's extensions into the shared X509 on first use, and TSan saw two
 * first dials of one client config write and read that cache at once
 * (test_svc_matrix_tls); the config now decodes them when it is built. Fresh
 * configs each round, N clients sharing one, released together. */
typedef struct first_dial {
    aims_client *c;
    const char *addr;
    pthread_barrier_t *go;
    aims_msg *req, *rep;
    aims_status st;
    pthread_t th;
} first_dial;

static void *first_dial_main(void *p)
{
    first_dial *d = p;
    pthread_barrier_wait(d->go);
    d->st = aims_client_call_addr(d->c, d->addr, "echo", "m", d->req, d->rep, 0);
    return NULL;
}

static void test_tls_first_handshakes_at_once(void **state)
{
    (void)state;
    enum { ROUNDS = 4, N = 4 };
    for (int r = 0; r < ROUNDS; r++) {
        tnode t;
        tnode_start(&t, "tls", tls_cfg(g_dir, "node"));
        aims_tls_config *ccfg = tls_cfg(g_dir, "client");
        assert_non_null(ccfg);
        pthread_barrier_t go;
        assert_int_equal(pthread_barrier_init(&go, NULL, N), 0);
        first_dial d[N];
        for (int i = 0; i < N; i++) {
            d[i] = (first_dial){mk_client(NULL), t.addr, &go, mk_req(2.0f), mk_msg(), AIMS_OK, 0};
            assert_int_equal(aims_client_set_tls(d[i].c, ccfg), AIMS_OK);
            assert_int_equal(pthread_create(&d[i].th, NULL, first_dial_main, &d[i]), 0);
        }
        for (int i = 0; i < N; i++) {
            pthread_join(d[i].th, NULL);
            assert_int_equal(d[i].st, AIMS_OK);
            assert_int_equal(reply_tag(d[i].rep), 1);
            aims_msg_destroy(d[i].req);
            aims_msg_destroy(d[i].rep);
            aims_client_destroy(d[i].c);
        }
        pthread_barrier_destroy(&go);
        aims_tls_config_destroy(ccfg);
        tnode_stop(&t);
    }
}

/* Peer identities at the stream level, both sides; a second dial resumes. */
typedef struct sside {
    pthread_mutex_t mu;
    void *conn;
    int frames;
} sside;

static void *s_accept(void *user, void *listener, void *conn)
{
    (void)listener;
    sside *s = user;
    pthread_mutex_lock(&s->mu);
    s->conn = conn;
    pthread_mutex_unlock(&s->mu);
    return s;
}

static void s_frame(void *conn_user, const void *frame, size_t len)
{
    (void)frame, (void)len;
    sside *s = conn_user;
    pthread_mutex_lock(&s->mu);
    s->frames++;
    pthread_mutex_unlock(&s->mu);
}

static void s_close(void *conn_user, aims_status why)
{
    (void)conn_user, (void)why;
}

static void test_tls_stream_peer_identity_and_resumption(void **state)
{
    (void)state;
    aims_tls_config *scfg = tls_cfg(g_dir, "node");
    aims_tls_config *ccfg = tls_cfg(g_dir, "client");
    sside srv = {PTHREAD_MUTEX_INITIALIZER, NULL, 0};
    sside cli = {PTHREAD_MUTEX_INITIALIZER, NULL, 0};
    const aims_transport_hooks sh = {&srv, s_accept, s_frame, s_close};
    const aims_transport_hooks ch = {&cli, NULL, s_frame, s_close};
    const aims_transport *vs = aimsi_transport_tls(scfg);
    const aims_transport *vc = aimsi_transport_tls(ccfg);
    void *is = NULL, *ic = NULL, *l = NULL;
    assert_int_equal(vs->create(vs->factory_user, &sh, 1u << 20, &is), AIMS_OK);
    assert_int_equal(vc->create(vc->factory_user, &ch, 1u << 20, &ic), AIMS_OK);
    char bound[128];
    assert_int_equal(vs->listen(is, "tls://127.0.0.1:0", 0, bound, sizeof bound, &l), AIMS_OK);
    assert_memory_equal(bound, "tls://127.0.0.1:", 16);
    for (int round = 0; round < 2; round++) {
        void *conn = NULL;
        assert_int_equal(vc->dial(ic, bound, &cli, &conn), AIMS_OK);
        assert_string_equal(aimsi_stream_peer(ic, conn), "node1.aims");
        void *sconn = NULL;
        for (int i = 0; i < 500 && sconn == NULL; i++) {
            pthread_mutex_lock(&srv.mu);
            sconn = srv.conn;
            pthread_mutex_unlock(&srv.mu);
            if (sconn == NULL) {
                nap_ms(10);
            }
        }
        assert_non_null(sconn);
        assert_string_equal(aimsi_stream_peer(is, sconn), "client1.aims");
        vc->close(ic, conn);
        vs->close(is, sconn);
        srv.conn = NULL;
    }
    assert_true(aimsi_tls_config_resumed(ccfg) >= 1);
    vs->unlisten(is, l);
    vc->destroy(ic);
    vs->destroy(is);
    aims_tls_config_destroy(scfg);
    aims_tls_config_destroy(ccfg);
}

static void test_tls_refuses_bad_client_certificates(void **state)
{
    (void)state;
    tnode t;
    tnode_start(&t, "tls", tls_cfg(g_dir, "node"));
    aims_client *good = client_with(tls_cfg(g_dir, "client"));
    /* No client certificate at all. */
    aims_client *bad = client_with(tls_cfg(g_dir, NULL));
    expect_refused(&t, good, bad, "certificate required", "peer did not return a certificate");
    aims_client_destroy(bad);
    /* A certificate from another CA (the client trusts ours). */
    bad = client_with(tls_cfg2(g_dir, "ca", "rogue"));
    expect_refused(&t, good, bad, "unknown ca", "unable to get local issuer certificate");
    aims_client_destroy(bad);
    bad = client_with(tls_cfg(g_dir, "expired"));
    expect_refused(&t, good, bad, "certificate expired", "certificate has expired");
    aims_client_destroy(bad);
    bad = client_with(tls_cfg(g_dir, "future"));
    expect_refused(&t, good, bad, NULL, "certificate is not yet valid");
    aims_client_destroy(bad);
    aims_client_destroy(good);
    tnode_stop(&t);
}

static void test_tls_client_checks_server_name(void **state)
{
    (void)state;
    tnode t;
    tnode_start(&t, "tls", tls_cfg(g_dir, "wrongsan"));
    aims_client *c = client_with(tls_cfg(g_dir, "client"));
    assert_int_not_equal(call(c, t.addr), AIMS_OK);
    print_message("wrong SAN: %s\n", aims_client_errmsg(c));
    if (strstr(aims_client_errmsg(c), "mismatch") == NULL) {
        fail_msg("error \"%s\" does not name the mismatch", aims_client_errmsg(c));
    }
    aims_client_destroy(c);
    tnode_stop(&t);
    /* A server from another CA is refused too. */
    tnode_start(&t, "tls", tls_cfg2(g_dir, "other-ca", "node"));
    c = client_with(tls_cfg2(g_dir, "other-ca", "client"));
    assert_int_not_equal(call(c, t.addr), AIMS_OK);
    aims_client_destroy(c);
    tnode_stop(&t);
}

static void test_tls_allowed_peer_names(void **state)
{
    (void)state;
    aims_tls_config *scfg = tls_cfg(g_dir, "node");
    assert_int_equal(aims_tls_config_add_peer_name(scfg, "client2.aims"), AIMS_OK);
    tnode t;
    tnode_start(&t, "tls", scfg);
    aims_client *good = client_with(tls_cfg(g_dir, "client2"));
    aims_client *bad = client_with(tls_cfg(g_dir, "client"));
    expect_refused(&t, good, bad, NULL, "\"client1.aims\" is not among the allowed peer names");
    aims_client_destroy(bad);
    aims_client_destroy(good);
    tnode_stop(&t);
}

static void test_tls_plaintext_both_ways(void **state)
{
    (void)state;
    tnode t;
    tnode_start(&t, "tls", tls_cfg(g_dir, "node"));
    aims_client *good = client_with(tls_cfg(g_dir, "client"));
    assert_int_equal(call(good, t.addr), AIMS_OK);
    /* Plaintext bytes (a libaims frame header, then junk) to the TLS port. */
    log_clear();
    const int fd = tr_raw_connect(t.addr);
    const char junk[] = "AIMF this is not a TLS record at all, not even close..........";
    assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    assert_int_equal(call(good, t.addr), AIMS_OK);
    assert_true(closed_within(fd, 10000));
    assert_true(log_has("does not speak TLS"));
    close(fd);
    /* TLS to a plaintext tcp:// port. */
    tnode p;
    tnode_start(&p, "tcp", NULL);
    char url[128];
    snprintf(url, sizeof url, "tls://127.0.0.1:%d", p.port);
    assert_int_not_equal(call(good, url), AIMS_OK);
    print_message("TLS to plaintext: %s\n", aims_client_errmsg(good));
    if (strstr(aims_client_errmsg(good), "TLS handshake") == NULL) {
        fail_msg("error \"%s\" does not name the handshake", aims_client_errmsg(good));
    }
    aims_client *plain = client_with(NULL);
    assert_int_equal(call(plain, p.addr), AIMS_OK);
    assert_int_equal(call(good, t.addr), AIMS_OK);
    aims_client_destroy(plain);
    tnode_stop(&p);
    aims_client_destroy(good);
    tnode_stop(&t);
}

static void test_tls_stalled_handshake_dropped(void **state)
{
    (void)state;
    /* A short handshake bound (the default is 10 s); the well-behaved client
     * still finishes well within it. */
    aims_tls_config *scfg = tls_cfg(g_dir, "node");
    assert_int_equal(aims_tls_config_set_handshake_timeout(scfg, 2000), AIMS_OK);
    tnode t;
    tnode_start(&t, "tls", scfg);
    aims_client *good = client_with(tls_cfg(g_dir, "client"));
    log_clear();
    const int silent = tr_raw_connect(t.addr);
    const int partial = tr_raw_connect(t.addr);
    const unsigned char hello_start[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
    assert_int_equal(write(partial, hello_start, sizeof hello_start), (ssize_t)sizeof hello_start);
    assert_int_equal(call(good, t.addr), AIMS_OK);
    /* Dropped after the bound (2 s + a 1 s sweep); 15 s is only a safety net. */
    assert_true(closed_within(silent, 15000));
    assert_true(closed_within(partial, 15000));
    assert_true(log_has("handshake not finished in time"));
    assert_int_equal(call(good, t.addr), AIMS_OK);
    close(silent);
    close(partial);
    aims_client_destroy(good);
    tnode_stop(&t);
}

static void test_tls_openssl_s_client(void **state)
{
    (void)state;
    tnode t;
    tnode_start(&t, "tls", tls_cfg(g_dir, "node"));
    aims_client *good = client_with(tls_cfg(g_dir, "client"));
    char cmd[1024], out[16384];
    /* A real client: TLS 1.3, ALPN aims/1, server verified; no client certificate. */
    log_clear();
    snprintf(cmd, sizeof cmd,
             "echo | timeout 20 openssl s_client -connect 127.0.0.1:%d -alpn aims/1 "
             "-CAfile %s/ca.pem -verify_return_error -verify_ip 127.0.0.1 2>&1",
             t.port, g_dir);
    (void)run(cmd, out, sizeof out);
    if (strstr(out, "TLSv1.3") == NULL || strstr(out, "ALPN protocol: aims/1") == NULL ||
        strstr(out, "Verify return code: 0 (ok)") == NULL) {
        fail_msg("s_client did not see TLS 1.3 + ALPN aims/1 + a verified server:\n%s", out);
    }
    assert_true(log_has("peer did not return a certificate"));
    /* With a client certificate it is accepted (the node waits for a frame). */
    log_clear();
    snprintf(cmd, sizeof cmd,
             "echo | timeout 20 openssl s_client -connect 127.0.0.1:%d -alpn aims/1 "
             "-CAfile %s/ca.pem -cert %s/client.pem -key %s/client.key -verify_return_error 2>&1",
             t.port, g_dir, g_dir, g_dir);
    (void)run(cmd, out, sizeof out);
    if (strstr(out, "alert") != NULL || strstr(out, "TLSv1.3") == NULL) {
        fail_msg("s_client with a certificate was refused:\n%s", out);
    }
    /* TLS 1.2 only: refused (protocol version). */
    snprintf(cmd, sizeof cmd,
             "echo | timeout 20 openssl s_client -tls1_2 -connect 127.0.0.1:%d -alpn aims/1 "
             "-CAfile %s/ca.pem -cert %s/client.pem -key %s/client.key 2>&1",
             t.port, g_dir, g_dir, g_dir);
    assert_int_not_equal(run(cmd, out, sizeof out), 0);
    if (strstr(out, "protocol version") == NULL) {
        fail_msg("s_client -tls1_2 was not refused with protocol version:\n%s", out);
    }
    assert_true(log_has("unsupported protocol"));
    /* No ALPN: refused. */
    snprintf(cmd, sizeof cmd,
             "echo | timeout 20 openssl s_client -connect 127.0.0.1:%d "
             "-CAfile %s/ca.pem -cert %s/client.pem -key %s/client.key 2>&1",
             t.port, g_dir, g_dir, g_dir);
    (void)run(cmd, out, sizeof out);
    assert_true(log_has("ALPN"));
    assert_int_equal(call(good, t.addr), AIMS_OK);
    aims_client_destroy(good);
    tnode_stop(&t);
}

static int cpu_has_aes_ni(void)
{
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
#else
    return 1;
#endif
}

/* The server's suite order decides (tls_config.c): AES-128-GCM where the CPU
 * has AES-NI, even for a client that lists AES-256-GCM first (openssl
 * s_client's default order), and ChaCha20-Poly1305 for a client that puts it
 * first (what a client without AES-NI does). A real client: openssl s_client. */
static void test_tls_cipher_suite_order(void **state)
{
    (void)state;
    tnode t;
    tnode_start(&t, "tls", tls_cfg(g_dir, "node"));
    char cmd[1024], out[16384];
    static const char *const offers[2] = {
        "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"};
    const char *const want[2] = {cpu_has_aes_ni() ? "Cipher is TLS_AES_128_GCM_SHA256"
                                                  : "Cipher is TLS_CHACHA20_POLY1305_SHA256",
                                 "Cipher is TLS_CHACHA20_POLY1305_SHA256"};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd,
                 "echo | timeout 20 openssl s_client -connect 127.0.0.1:%d -alpn aims/1 "
                 "-CAfile %s/ca.pem -cert %s/client.pem -key %s/client.key "
                 "-ciphersuites %s 2>&1",
                 t.port, g_dir, g_dir, g_dir, offers[i]);
        (void)run(cmd, out, sizeof out);
        if (strstr(out, want[i]) == NULL) {
            fail_msg("client offering %s: expected \"%s\":\n%s", offers[i], want[i], out);
        }
    }
    tnode_stop(&t);
}

static void copy_file(const char *from, const char *to)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp '%s/%s' '%s/%s'", g_dir, from, g_dir, to);
    assert_int_equal(system(cmd), 0);
}

static void test_tls_reload(void **state)
{
    (void)state;
    copy_file("node.pem", "live.pem");
    copy_file("node.key", "live.key");
    tnode t;
    tnode_start(&t, "tls", tls_cfg(g_dir, "live"));
    aims_client *c1 = client_with(tls_cfg(g_dir, "client"));
    assert_int_equal(call(c1, t.addr), AIMS_OK);
    /* Rotate to a certificate with the wrong SAN: new connections see it. */
    copy_file("wrongsan.pem", "live.pem");
    copy_file("wrongsan.key", "live.key");
    assert_int_equal(aims_tls_config_reload(t.cfg), AIMS_OK);
    aims_client *c2 = client_with(tls_cfg(g_dir, "client"));
    assert_int_not_equal(call(c2, t.addr), AIMS_OK);
    assert_int_equal(call(c1, t.addr), AIMS_OK); /* an open connection keeps its session */
    /* A broken rotation (key of another certificate) is refused; the old files stay. */
    copy_file("node.key", "live.key");
    assert_int_equal(aims_tls_config_reload(t.cfg), AIMS_E_INVAL);
    assert_non_null(strstr(aims_tls_config_errmsg(t.cfg), "does not match"));
    copy_file("node.pem", "live.pem");
    assert_int_equal(aims_tls_config_reload(t.cfg), AIMS_OK);
    aims_client_destroy(c2);
    c2 = client_with(tls_cfg(g_dir, "client"));
    assert_int_equal(call(c2, t.addr), AIMS_OK);
    aims_client_destroy(c2);
    aims_client_destroy(c1);
    tnode_stop(&t);
}

static void test_tls_config_errors(void **state)
{
    (void)state;
    aims_tls_config *cfg = NULL;
    char a[512], b[512];
    assert_int_equal(aims_tls_config_create(&cfg), AIMS_OK);
    assert_int_equal(aims_tls_config_set_ca(cfg, "/nonexistent/ca.pem"), AIMS_E_NOTFOUND);
    assert_non_null(strstr(aims_tls_config_errmsg(cfg), "/nonexistent/ca.pem"));
    snprintf(a, sizeof a, "%s/client.pem", g_dir);
    snprintf(b, sizeof b, "%s/node.key", g_dir);
    assert_int_equal(aims_tls_config_set_cert(cfg, a, b), AIMS_E_INVAL);
    snprintf(a, sizeof a, "%s/node.key", g_dir);
    assert_int_equal(aims_tls_config_set_ca(cfg, a), AIMS_E_INVAL); /* not a certificate */
    assert_int_equal(aims_tls_config_set_handshake_timeout(cfg, 1), AIMS_E_RANGE);
    assert_int_equal(aims_tls_config_add_peer_name(cfg, ""), AIMS_E_INVAL);
    assert_int_equal(aims_tls_config_reload(cfg), AIMS_E_STATE);
    assert_int_equal(aims_tls_config_set_ca(NULL, "x"), AIMS_E_MISUSE);
    /* A node without a certificate cannot serve; without a config tls:// says so. */
    aims_node *n = NULL;
    assert_int_equal(aims_node_create("tlserr", &n), AIMS_OK);
    assert_int_equal(aims_node_listen(n, "tls://127.0.0.1:0"), AIMS_E_STATE);
    assert_non_null(strstr(aims_node_errmsg(n), "aims_node_set_tls"));
    snprintf(a, sizeof a, "%s/ca.pem", g_dir);
    assert_int_equal(aims_tls_config_set_ca(cfg, a), AIMS_OK);
    assert_int_equal(aims_node_set_tls(n, cfg), AIMS_OK);
    assert_int_equal(aims_node_listen(n, "tls://127.0.0.1:0"), AIMS_OK); /* accept needs a cert */
    assert_int_equal(aims_node_set_tls(n, cfg), AIMS_E_STATE); /* in use */
    /* Plain tcp on a non-loopback address is refused, naming the way out. */
    assert_int_equal(aims_node_listen(n, "tcp://0.0.0.0:0"), AIMS_E_INVAL);
    assert_non_null(strstr(aims_node_errmsg(n), "--insecure"));
    aims_node_destroy(n);
    aims_tls_config_destroy(cfg);
}

static aims_status config_op(void *ctx)
{
    (void)ctx;
    char a[512], b[512], c[512];
    aims_tls_config *cfg = NULL;
    AIMSI_TRY(aims_tls_config_create(&cfg));
    snprintf(a, sizeof a, "%s/ca.pem", g_dir);
    snprintf(b, sizeof b, "%s/node.pem", g_dir);
    snprintf(c, sizeof c, "%s/node.key", g_dir);
    aims_status rc = aims_tls_config_set_ca(cfg, a);
    if (rc == AIMS_OK) {
        rc = aims_tls_config_set_cert(cfg, b, c);
    }
    if (rc == AIMS_OK) {
        rc = aims_tls_config_add_peer_name(cfg, "client1.aims");
    }
    if (rc == AIMS_OK) {
        rc = aims_tls_config_reload(cfg);
    }
    aims_node *n = NULL;
    if (rc == AIMS_OK) {
        rc = aims_node_create("tlsalloc", &n);
    }
    if (rc == AIMS_OK) {
        rc = aims_node_set_tls(n, cfg);
    }
    aims_node_destroy(n);
    aims_tls_config_destroy(cfg);
    return rc;
}

static void test_tls_config_alloc_failures(void **state)
{
    (void)state;
    ta_fail_loop("tls config", config_op, NULL);
}

int main(void)
{
    if (tls_temp_pki(g_dir, sizeof g_dir, "tls") != 0) {
        return 1;
    }
    ta_install();
    aims_set_log(log_fn, NULL, AIMS_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tls_call_and_identities, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_tls_first_handshakes_at_once, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_tls_stream_peer_identity_and_resumption, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_tls_refuses_bad_client_certificates, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_tls_client_checks_server_name, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_tls_allowed_peer_names, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_tls_plaintext_both_ways, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_tls_stalled_handshake_dropped, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_tls_openssl_s_client, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_tls_cipher_suite_order, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_tls_reload, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_tls_config_errors, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_tls_config_alloc_failures, ta_setup, ta_teardown),
    };
    const int rc = cmocka_run_group_tests_name("tls", tests, NULL, NULL);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    const int sr = system(cmd);
    (void)sr;
    return rc;
}
