/*
 * test_tls_daemon.c -- aims_node across "hosts" over tls:// (loopback stands
 * in for the network): a registry daemon and a node daemon, both with
 * --tls-ca/--tls-cert/--tls-key, the node joining the registry over tls://,
 * a client calling the node's service by name over tls://. Also: a client
 * without a certificate is refused, plain tcp:// on a non-loopback address
 * exits 1 with a message naming --insecure, and --insecure allows it.
 * The PKI is made at start by tests/support/mkcerts.sh (openssl CLI).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <aims/aims_tls.h>

#include "itest.h"

static aims_tls_config *cfg_for(const char *pki, const char *who)
{
    aims_tls_config *cfg = NULL;
    char a[512], b[512], c[512];
    IT_CHECK(aims_tls_config_create(&cfg) == AIMS_OK, "tls config: %s", aims_errmsg());
    snprintf(a, sizeof a, "%s/ca.pem", pki);
    IT_CHECK(aims_tls_config_set_ca(cfg, a) == AIMS_OK, "%s", aims_tls_config_errmsg(cfg));
    if (who != NULL) {
        snprintf(b, sizeof b, "%s/%s.pem", pki, who);
        snprintf(c, sizeof c, "%s/%s.key", pki, who);
        IT_CHECK(aims_tls_config_set_cert(cfg, b, c) == AIMS_OK, "%s",
                 aims_tls_config_errmsg(cfg));
    }
    return cfg;
}

static aims_status echo_call(aims_client *c, const char *service, const char *addr)
{
    aims_msg *req = NULL, *rep = NULL;
    IT_CHECK(aims_msg_create(&req) == AIMS_OK && aims_msg_create(&rep) == AIMS_OK, "msg");
    const float x = 1.5f;
    const uint64_t dims[1] = {1};
    IT_CHECK(aims_msg_add(req, "x", AIMS_DT_F32, dims, 1, &x, 0) == AIMS_OK, "msg add");
    const aims_status rc = addr != NULL
                               ? aims_client_call_addr(c, addr, service, "m", req, rep, 0)
                               : aims_client_call(c, service, "m", req, rep, 0, 0);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return rc;
}

int main(int argc, char **argv)
{
    it_init(argc, argv, "tls_daemon");
    char pki[300], cmd[900], ca[320], ncert[320], nkey[320];
    snprintf(pki, sizeof pki, "%s/pki", it_dir());
    const char *src = getenv("AIMS_SOURCE_DIR");
    snprintf(cmd, sizeof cmd, "sh '%s/tests/support/mkcerts.sh' '%s'", src ? src : ".", pki);
    IT_CHECK(system(cmd) == 0, "mkcerts.sh failed");
    snprintf(ca, sizeof ca, "%s/ca.pem", pki);
    snprintf(ncert, sizeof ncert, "%s/node.pem", pki);
    snprintf(nkey, sizeof nkey, "%s/node.key", pki);

    it_proc reg, node;
    it_spawnl(&reg, "reg", 30000, "--name", "reg", "--listen", "tls://127.0.0.1:0",
              "--host-registry", "--heartbeat-ms", "200", "--tls-ca", ca, "--tls-cert", ncert,
              "--tls-key", nkey, (char *)NULL);
    IT_CHECK(strncmp(reg.addr, "tls://127.0.0.1:", 16) == 0, "registry address %s", reg.addr);
    it_spawnl(&node, "node", 30000, "--name", "node", "--listen", "tls://127.0.0.1:0", "--join",
              reg.addr, "--echo", "echo", "--heartbeat-ms", "200", "--tls-ca", ca, "--tls-cert",
              ncert, "--tls-key", nkey, "--tls-peer", "client1.aims", "--tls-peer",
              "node1.aims", (char *)NULL);
    it_log("registry %s and node %s serve tls://", reg.addr, node.addr);

    aims_client *c = NULL;
    IT_CHECK(aims_client_create(&c) == AIMS_OK, "client");
    aims_tls_config *ccfg = cfg_for(pki, "client");
    IT_CHECK(aims_client_set_tls(c, ccfg) == AIMS_OK, "set_tls: %s", aims_client_errmsg(c));
    aims_tls_config_destroy(ccfg);
    IT_CHECK(aims_client_join(c, reg.addr) == AIMS_OK, "join %s: %s", reg.addr, aims_errmsg());
    aims_status rc = AIMS_E_NOTFOUND;
    for (int i = 0; i < 200 && rc != AIMS_OK; i++) {
        rc = echo_call(c, "echo", NULL);
        if (rc != AIMS_OK) {
            it_sleep_ms(50);
        }
    }
    IT_CHECK(rc == AIMS_OK, "call by name over tls://: %s", aims_client_errmsg(c));
    it_log("client joined the registry and called echo by name, all over tls://");

    aims_client *nocert = NULL;
    IT_CHECK(aims_client_create(&nocert) == AIMS_OK, "client");
    aims_tls_config *bare = cfg_for(pki, NULL);
    IT_CHECK(aims_client_set_tls(nocert, bare) == AIMS_OK, "set_tls");
    aims_tls_config_destroy(bare);
    IT_CHECK(echo_call(nocert, "echo", node.addr) != AIMS_OK, "a client without a certificate "
             "was served");
    it_log("no client certificate: %s", aims_client_errmsg(nocert));
    aims_client_destroy(nocert);
    /* client2.aims has a good certificate, but the node allows only client1. */
    aims_client *other = NULL;
    IT_CHECK(aims_client_create(&other) == AIMS_OK, "client");
    aims_tls_config *c2 = cfg_for(pki, "client2");
    IT_CHECK(aims_client_set_tls(other, c2) == AIMS_OK, "set_tls");
    aims_tls_config_destroy(c2);
    IT_CHECK(echo_call(other, "echo", node.addr) != AIMS_OK, "--tls-peer not enforced");
    aims_client_destroy(other);
    IT_CHECK(echo_call(c, "echo", NULL) == AIMS_OK, "the good client stopped working");

    /* Plain tcp on a non-loopback address: refused unless --insecure. */
    const char *const plain[] = {"--name", "p", "--listen", "tcp://0.0.0.0:0", "--echo", "e",
                                 NULL};
    const int st = it_run(plain, 20000);
    IT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "plain tcp on 0.0.0.0: status %d", st);
    it_proc ins;
    it_spawnl(&ins, "insecure", 30000, "--name", "insecure", "--listen", "tcp://0.0.0.0:0",
              "--echo", "e", "--insecure", (char *)NULL);
    it_log("plain tcp on 0.0.0.0 exits 1 without --insecure, serves with it (%s)", ins.addr);
    it_signal(&ins, SIGTERM);
    IT_CHECK(it_wait_exit(&ins, 30000) != -1, "--insecure node did not exit");

    aims_client_destroy(c);
    it_signal(&node, SIGTERM);
    IT_CHECK(it_wait_exit(&node, 30000) != -1, "node did not exit");
    it_signal(&reg, SIGTERM);
    IT_CHECK(it_wait_exit(&reg, 30000) != -1, "registry did not exit");
    it_pass();
}
