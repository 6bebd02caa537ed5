/*
 * demo_tls.c -- the throw-away PKI and policy of aims_demo --processes
 * (see demo_tls.h).
 *
 * How: one shell script run with system(): `openssl req -x509` makes an EC
 * P-256 CA valid one day, `openssl req` + `openssl x509 -req` sign the node
 * and client certificates with the extensions the tls:// transport checks
 * (SAN, extended key usage) -- the same commands docs/SECURITY.md shows. The
 * policy names those identities: nodes may register any service and keep
 * their leases, the demo client may call, train and see its jobs, and the
 * HTTPS front door's anonymous callers may only predict.
 */
#include "demo_tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char k_script[] =
    "set -e; umask 077; mkdir -p '%s'; cd '%s'\n"
    "openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
    "-keyout ca.key -out ca.pem -days 1 -subj '/CN=aims demo CA' "
    "-addext basicConstraints=critical,CA:TRUE "
    "-addext keyUsage=critical,keyCertSign,cRLSign\n"
    "cert() { # name san eku\n"
    "  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
    "-keyout $1.key -out $1.csr -subj /CN=$1\n"
    "  printf 'basicConstraints=critical,CA:FALSE\\nkeyUsage=critical,digitalSignature\\n"
    "extendedKeyUsage=%%s\\nsubjectAltName=%%s\\n' $3 $2 > $1.ext\n"
    "  openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 "
    "-sha256 -extfile $1.ext -out $1.pem\n"
    "  rm -f $1.csr $1.ext\n"
    "}\n"
    "cert node DNS:node.demo,IP:127.0.0.1 serverAuth,clientAuth\n"
    "cert client DNS:demo-client clientAuth\n";

static const char k_policy[] =
    "# aims_demo --processes: who may do what on every node (docs/POLICY.md)\n"
    "allow   node.demo     register  *               # nodes publish their services\n"
    "allow   node.demo     join      aims.registry   # ... and keep their leases\n"
    "allow   demo-client   join      aims.registry   # the demo reads the registry\n"
    "allow   demo-client   call      *               # calls every service\n"
    "allow   demo-client   train     train.fmnist    # submits training jobs\n"
    "allow   demo-client   jobs      train.fmnist    # and sees its own jobs\n"
    "allow   demo-client   register  infer.fmnist@*  # publishes model versions\n"
    "allow   demo-client   deploy    infer.fmnist*   # deploys the int8 canary\n"
    "allow   anonymous     call      infer.fmnist@1/predict   # HTTPS front door\n";

int demo_tls_make(const char *dir, demo_tls *t)
{
    memset(t, 0, sizeof *t);
    if ((size_t)snprintf(t->dir, sizeof t->dir, "%s/pki", dir) >= sizeof t->dir) {
        fprintf(stderr, "aims_demo: %s: path too long for the PKI\n", dir);
        return 1;
    }
    char *script = malloc(sizeof k_script + 2 * sizeof t->dir + 64);
    if (script == NULL) {
        return 1;
    }
    snprintf(script, sizeof k_script + 2 * sizeof t->dir + 64, k_script, t->dir, t->dir);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/mkpki.sh", dir);
    FILE *f = fopen(path, "w");
    const int wrote = f != NULL && fputs(script, f) >= 0;
    free(script);
    if (f == NULL || fclose(f) != 0 || !wrote) {
        fprintf(stderr, "aims_demo: cannot write %s\n", path);
        return 1;
    }
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "sh '%s' >/dev/null 2>&1", path);
    if (system(cmd) != 0) {
        fprintf(stderr, "aims_demo: making the test CA with the openssl CLI failed "
                        "(is `openssl` installed?)\n");
        return 1;
    }
    snprintf(t->ca, sizeof t->ca, "%s/ca.pem", t->dir);
    snprintf(t->node_cert, sizeof t->node_cert, "%s/node.pem", t->dir);
    snprintf(t->node_key, sizeof t->node_key, "%s/node.key", t->dir);
    snprintf(t->client_cert, sizeof t->client_cert, "%s/client.pem", t->dir);
    snprintf(t->client_key, sizeof t->client_key, "%s/client.key", t->dir);
    snprintf(t->policy, sizeof t->policy, "%s/node.policy", t->dir);
    f = fopen(t->policy, "w");
    const int put = f != NULL && fputs(k_policy, f) >= 0;
    if (f == NULL || fclose(f) != 0 || !put) {
        fprintf(stderr, "aims_demo: cannot write %s\n", t->policy);
        return 1;
    }
    return 0;
}
