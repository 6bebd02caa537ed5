/*
 * test_https.c -- HTTPS on the node daemon's front door (aims_https.h; issue
 * 12 item 5, issue 10): `aims_node --tls-* --policy --http` serves the KServe
 * v2 door over TLS with the node's own certificate, and the node's policy
 * judges JWT bearer tokens there as on the native protocol.
 *
 *   1. a throw-away PKI (tests/support/mkcerts.sh, openssl CLI) and an HS256
 *      key; a policy allowing only jwt:alice to call clf*;
 *   2. the daemon: tls:// listener, own registry, the test bundle as clf@1,
 *      --http on a free loopback port (HTTPS because of --tls-cert);
 *   3. https_check.py runs real clients no one here wrote: curl --cacert
 *      (probes, TLS 1.2 refused, no CA refused, plain HTTP refused, infer
 *      without / with a bad / with alice's token), Python requests,
 *      openssl s_client (TLS 1.3) and headless Chromium (the status page
 *      over HTTPS, certificate pinned by its SPKI hash) when installed;
 *   4. SIGTERM: the daemon must exit 0.
 * Steps 1 and 3-4 are https_itest.c's (shared with test_https_mtls.c).
 * Exit 77 (skipped) when built without HTTP or TLS.
 */
#include <aims/aims.h>

#include "https_itest.h"
#include "itest.h"

int main(int argc, char **argv)
{
    it_init(argc, argv, "test_https");
    const char *script = argc > 2 ? argv[2] : "tests/integration/https_check.py";
    https_rig r;
    if (!https_rig_start(&r, "# only alice's token may infer over any door\n"
                             "allow jwt:alice call clf*/*\n"
                             "jwt-hs256-key-file hs256.key\n")) {
        return 77;
    }
    it_proc d;
    it_spawnl(&d, "https-node", 30000, "--name", "https-node", "--listen", "tls://127.0.0.1:0",
              "--host-registry", "--heartbeat-ms", "500", "--infer", r.a1, "--tls-ca", r.ca,
              "--tls-cert", r.cert, "--tls-key", r.nkey, "--policy", r.policy, "--http", r.http,
              (char *)NULL);
    https_rig_check(&r, &d, script);
    it_pass();
}
