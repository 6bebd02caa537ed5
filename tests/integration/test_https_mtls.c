/*
 * test_https_mtls.c -- client certificates on the HTTPS front door (issue 12
 * item 5: mutual TLS, the caller's identity = its certificate name).
 *
 *   1. a throw-away PKI (tests/support/mkcerts.sh, openssl CLI): the test CA,
 *      client1.aims and client2.aims signed by it, a rogue client1.aims signed
 *      by another CA, an expired client; a policy allowing only client1.aims
 *      to call clf*; an audit log;
 *   2. the daemon: tls:// listener, own registry, the test bundle as clf@1,
 *      --tls-peer client1.aims --tls-peer client2.aims (the node requires
 *      named peers, so its HTTPS door requires client certificates too),
 *      --http on a free loopback port;
 *   3. https_mtls_check.py runs real curl: with client1's certificate the
 *      probes and infer answer 200; without a certificate, with the rogue one
 *      and the expired one: 403 naming the reason; client2 (a peer, not in
 *      the policy): infer 403; the audit log shows the certificate names;
 *   4. SIGTERM: the daemon must exit 0.
 * Exit 77 (skipped) when built without HTTP or TLS.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <aims/aims.h>

#include "itest.h"

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    IT_CHECK(f != NULL && fputs(text, f) >= 0 && fclose(f) == 0, "cannot write %s", path);
}

int main(int argc, char **argv)
{
    it_init(argc, argv, "test_https_mtls");
    const char *script = argc > 2 ? argv[2] : "tests/integration/https_mtls_check.py";
    {
        aims_http *h = NULL;
        aims_tls_config *t = NULL;
        const aims_status hs = aims_http_create(NULL, &h);
        const aims_status ts = aims_tls_config_create(&t);
        aims_tls_config_destroy(t);
        if (hs == AIMS_E_UNSUPPORTED || ts == AIMS_E_UNSUPPORTED) {
            it_log("built without HTTP or TLS: skipped");
            return 77;
        }
    }
    const char *src = getenv("AIMS_SOURCE_DIR");
    char cmd[1600], pki[300], bundle[300], pipeline[300], a1[320], http[64], policy[320];
    char key[320], ca[320], cert[320], nkey[320], audit[320];
    snprintf(pki, sizeof pki, "%s/pki", it_dir());
    snprintf(cmd, sizeof cmd, "sh '%s/tests/support/mkcerts.sh' '%s'", src ? src : ".", pki);
    IT_CHECK(system(cmd) == 0, "mkcerts.sh failed (openssl CLI missing? AIMS_SOURCE_DIR?)");
    snprintf(ca, sizeof ca, "%s/ca.pem", pki);
    snprintf(cert, sizeof cert, "%s/node.pem", pki);
    snprintf(nkey, sizeof nkey, "%s/node.key", pki);
    snprintf(key, sizeof key, "%s/hs256.key", pki);
    write_file(key, "https test key: at least thirty-two bytes long\n");
    snprintf(policy, sizeof policy, "%s/node.policy", pki);
    write_file(policy, "# only client1's certificate may infer over any door\n"
                       "allow client1.aims call clf*/*\n"
                       "jwt-hs256-key-file hs256.key\n");
    snprintf(audit, sizeof audit, "%s/audit.log", pki);
    snprintf(bundle, sizeof bundle, "%s/clf.bundle", it_dir());
    snprintf(pipeline, sizeof pipeline, "%s/clf.pipeline", it_dir());
    snprintf(a1, sizeof a1, "clf@1=%s", bundle);
    it_make_bundle(bundle, pipeline);
    const int port = it_free_port();
    snprintf(http, sizeof http, "127.0.0.1:%d", port);
    it_proc d;
    it_spawnl(&d, "mtls-node", 30000, "--name", "mtls-node", "--listen", "tls://127.0.0.1:0",
              "--host-registry", "--heartbeat-ms", "500", "--infer", a1, "--tls-ca", ca,
              "--tls-cert", cert, "--tls-key", nkey, "--tls-peer", "client1.aims", "--tls-peer",
              "client2.aims", "--policy", policy, "--audit", audit, "--http", http,
              (char *)NULL);
    it_log("daemon %s, https on %s", d.addr, http);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s https://%s %s", script, http, pki);
    it_log("running %s", cmd);
    const int rc = system(cmd);
    IT_CHECK(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "https_mtls_check.py failed (%d)", rc);
    it_signal(&d, SIGTERM);
    const int st = it_wait_exit(&d, 20000);
    IT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon exit status %d", st);
    it_pass();
}
