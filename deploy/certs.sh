#!/bin/sh
# deploy/certs.sh -- the TLS material of a deployment, made with the openssl
# CLI (a throw-away CA for trying things out; in production bring your own CA
# or cert-manager and keep the file names). Nothing here is committed: run it.
#
#   deploy/certs.sh DIR            make DIR/{ca,etcd,etcd-client,node}.{pem,key}
#   deploy/certs.sh DIR --k8s      ... and DIR/secrets.yaml: the Secrets that
#                                  deploy/k8s/*.yaml mount (kubectl apply -f it)
#
#   ca.pem ca.key                  the CA (keep ca.key out of the cluster)
#   etcd.pem etcd.key              etcd members: serving, peer and gateway
#                                  certificate (serverAuth + clientAuth: etcd's
#                                  JSON gateway dials its own TLS port with it)
#   etcd-client.pem etcd-client.key  aims_node's etcd client certificate (no CN:
#                                  with etcd auth on, 3.4's gateway refuses a CN)
#   node.pem node.key              aims_node's tls:// and HTTPS door certificate
#
# Environment: ETCD_SANS, NODE_SANS (subjectAltName lists; defaults fit the
# manifests in namespace $K8S_NAMESPACE, default "default", plus loopback so
# deploy/local.sh can use the same files). EC P-256 keys, valid $DAYS (30) days.
set -eu
[ $# -ge 1 ] || { sed -n '2,20p' "$0" >&2; exit 2; }
d=$1
ns=${K8S_NAMESPACE:-default}
days=${DAYS:-30}
ETCD_SANS=${ETCD_SANS:-DNS:etcd-0.etcd,DNS:etcd-1.etcd,DNS:etcd-2.etcd,DNS:*.etcd.$ns.svc.cluster.local,DNS:etcd.$ns.svc,DNS:localhost,IP:127.0.0.1}
NODE_SANS=${NODE_SANS:-DNS:aims-infer.$ns.svc,DNS:aims-echo.$ns.svc,DNS:localhost,IP:127.0.0.1}
command -v openssl >/dev/null || { echo "certs.sh: no openssl CLI" >&2; exit 1; }
mkdir -p "$d"
cd "$d"
umask 077

key() { # name subject
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
}
sign() { # name extendedKeyUsage subjectAltName
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
        "$2" "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out "$1.pem" -days "$days" -extfile "$1.ext" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout ca.key -out ca.pem -days "$days" -subj "/CN=aims deploy CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
key etcd "/CN=etcd"
sign etcd serverAuth,clientAuth "$ETCD_SANS"
key etcd-client "/O=aims client"
sign etcd-client clientAuth "DNS:aims-etcd-client"
key node "/CN=aims-node"
sign node serverAuth,clientAuth "$NODE_SANS"
rm -f ca.srl

[ "${2:-}" = "--k8s" ] || exit 0
b64() { base64 -w0 <"$1"; }
secret() { # name, then key=file pairs
    printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  labels: {app.kubernetes.io/part-of: aims}\ntype: Opaque\ndata:\n' "$1"
    shift
    for kv in "$@"; do printf '  %s: %s\n' "${kv%%=*}" "$(b64 "${kv#*=}")"; done
}
{
    echo "# made by deploy/certs.sh: the Secrets deploy/k8s/*.yaml mount (do not commit)"
    secret etcd-tls ca.pem=ca.pem tls.pem=etcd.pem tls.key=etcd.key
    secret aims-etcd-client ca.pem=ca.pem client.pem=etcd-client.pem client.key=etcd-client.key
    secret aims-node-tls ca.pem=ca.pem tls.pem=node.pem tls.key=node.key
} >secrets.yaml
echo "certs.sh: $d/secrets.yaml"
