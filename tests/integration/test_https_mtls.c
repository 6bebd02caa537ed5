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
 * Steps 1 and 3-4 are https_itest.c's (shared with test_https.c).
 * Exit 77 (skipped) when built without HTTP or TLS.
 */
#include <stdio.h>

#include <aims/aims.h>

#include "https_itest.h"
#include "itest.h"

int main(int argc, char **argv)
{
    it_init(argc, argv, "test_https_mtls");
    const char *script = argc > 2 ? argv[2] : "tests/integration/https_mtls_check.py";
    https_rig r;
    if (!https_rig_start(&r, "# only client1's certificate may infer over any door\n"
                             "allow client1.aims call clf*/*\n"
                             "jwt-hs256-key-file hs256.key\n")) {
        return 77;
    }
    char audit[320];
    snprintf(audit, sizeof audit, "%s/audit.log", r.pki);
    it_proc d;
    it_spawnl(&d, "mtls-node", 30000, "--name", "mtls-node", "--listen", "tls://127.0.0.1:0",
              "--host-registry", "--heartbeat-ms", "500", "--infer", r.a1, "--tls-ca", r.ca,
              "--tls-cert", r.cert, "--tls-key", r.nkey, "--tls-peer", "client1.aims",
              "--tls-peer", "client2.aims", "--policy", r.policy, "--audit", audit, "--http",
              r.http, (char *)NULL);
    https_rig_check(&r, &d, script);
    it_pass();
}
