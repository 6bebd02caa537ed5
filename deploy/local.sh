#!/bin/sh
# deploy/local.sh -- the Kubernetes topology of deploy/k8s, here, as processes:
# a 3-member etcd cluster on loopback and aims_node daemons joined to it,
# configured from the same deploy/topology.env.
#
#   deploy/local.sh up       start etcd members and nodes (state in $AIMS_LOCAL_DIR)
#   deploy/local.sh etcd     start the etcd members only (`make demo ARGS=--etcd`
#                            runs the demo's nodes on them; prints "join: URL")
#   deploy/local.sh status   the instances registered in etcd
#   deploy/local.sh down     stop everything started by `up`
#   deploy/local.sh check    up, wait until every replica is registered, down
#                            (exit 0 on success; the 'integration' test suite runs it)
#
# Environment: AIMS_NODE (daemon binary, default build/examples/aims_node),
# AIMS_LOCAL_DIR (state dir, default /tmp/aims-local-$USER), AIMS_BUNDLE (an
# .aimsb bundle: also start INFER_REPLICAS infer nodes), ETCD_BASE_PORT
# (default 23790: member i uses client port base+2i, peer port base+2i+1),
# AIMS_ETCD_TLS=1 (TLS as in deploy/k8s: deploy/certs.sh makes a throw-away
# CA and certificates in $AIMS_LOCAL_DIR/pki with the openssl CLI; etcd
# serves https to clients and peers and requires client certificates; the
# nodes join with etcd://...?cacert=&cert=&key=).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/topology.env"
AIMS_NODE=${AIMS_NODE:-$here/../build/examples/aims_node}
DIR=${AIMS_LOCAL_DIR:-/tmp/aims-local-$(id -un)}
BASE=${ETCD_BASE_PORT:-23790}

endpoints() {
    i=0; eps=""
    while [ $i -lt "$ETCD_MEMBERS" ]; do
        eps="$eps${eps:+,}127.0.0.1:$((BASE + 2 * i))"; i=$((i + 1))
    done
    echo "$eps"
}
JOIN="etcd://$(endpoints)/$AIMS_PREFIX"
PKI=$DIR/pki
scheme=http
if [ "${AIMS_ETCD_TLS:-0}" = 1 ]; then
    scheme=https
    JOIN="$JOIN?cacert=$PKI/ca.pem&cert=$PKI/etcd-client.pem&key=$PKI/etcd-client.key"
fi

etcdctl_() {
    if [ $scheme = https ]; then
        set -- --cacert "$PKI/ca.pem" --cert "$PKI/etcd-client.pem" --key "$PKI/etcd-client.key" "$@"
    fi
    ETCDCTL_API=3 etcdctl --endpoints="$(endpoints)" "$@"
}

etcd_up() {
    command -v etcd >/dev/null || { echo "local.sh: no etcd (apt-get install etcd-server)" >&2; exit 1; }
    mkdir -p "$DIR"
    tls=""
    if [ $scheme = https ]; then
        sh "$here/certs.sh" "$PKI" >/dev/null
        tls="--cert-file $PKI/etcd.pem --key-file $PKI/etcd.key --trusted-ca-file $PKI/ca.pem
             --client-cert-auth --peer-cert-file $PKI/etcd.pem --peer-key-file $PKI/etcd.key
             --peer-trusted-ca-file $PKI/ca.pem --peer-client-cert-auth"
    fi
    cluster=""; i=0
    while [ $i -lt "$ETCD_MEMBERS" ]; do
        cluster="$cluster${cluster:+,}m$i=$scheme://127.0.0.1:$((BASE + 2 * i + 1))"; i=$((i + 1))
    done
    i=0
    while [ $i -lt "$ETCD_MEMBERS" ]; do
        c=$scheme://127.0.0.1:$((BASE + 2 * i)); p=$scheme://127.0.0.1:$((BASE + 2 * i + 1))
        # shellcheck disable=SC2086 # $tls: several flags
        etcd --name m$i --data-dir "$DIR/etcd-m$i" --unsafe-no-fsync \
             --listen-client-urls $c --advertise-client-urls $c \
             --listen-peer-urls $p --initial-advertise-peer-urls $p \
             --initial-cluster "$cluster" --initial-cluster-state new \
             --initial-cluster-token aims-local $tls >"$DIR/etcd-m$i.log" 2>&1 &
        echo $! >>"$DIR/pids"
        i=$((i + 1))
    done
    t=0
    until etcdctl_ endpoint health >/dev/null 2>&1; do
        t=$((t + 1)); [ $t -lt 100 ] || { echo "local.sh: etcd not healthy" >&2; down; exit 1; }
        sleep 0.2
    done
    echo "etcd: $scheme $(endpoints)"
}

up() {
    [ -x "$AIMS_NODE" ] || { echo "local.sh: no daemon at $AIMS_NODE (build first)" >&2; exit 1; }
    etcd_up
    node() { # name, service flags...
        name=$1; shift
        "$AIMS_NODE" --name "$name" --listen tcp://127.0.0.1:0 --join "$JOIN" \
            --heartbeat-ms "$AIMS_HEARTBEAT_MS" --workers "$AIMS_WORKERS" "$@" \
            >"$DIR/$name.out" 2>"$DIR/$name.log" &
        echo $! >>"$DIR/pids"
    }
    i=0
    while [ $i -lt "$ECHO_REPLICAS" ]; do node echo-$i --echo "$ECHO_SERVICE"; i=$((i + 1)); done
    if [ -n "${AIMS_BUNDLE:-}" ]; then
        i=0
        while [ $i -lt "$INFER_REPLICAS" ]; do
            node infer-$i --infer "$INFER_SERVICE=$AIMS_BUNDLE"; i=$((i + 1))
        done
    fi
    echo "nodes joined $JOIN (logs and pids in $DIR)"
}

status() {
    etcdctl_ get --prefix "/$AIMS_PREFIX/svc/" \
        --print-value-only
}

down() {
    if [ -f "$DIR/pids" ]; then
        # Nodes first (they leave the registry), then etcd.
        tac "$DIR/pids" | while read -r pid; do kill "$pid" 2>/dev/null || true; done
        sleep 1
        while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done <"$DIR/pids"
    fi
    rm -rf "$DIR"
}

check() {
    trap down EXIT
    up
    want=$ECHO_REPLICAS
    [ -z "${AIMS_BUNDLE:-}" ] || want=$((want + INFER_REPLICAS))
    t=0
    while :; do
        n=$(status 2>/dev/null | grep -c '"address"' || true)
        [ "$n" -ge "$want" ] && break
        t=$((t + 1))
        [ $t -lt 150 ] || { echo "local.sh check: $n of $want instances registered" >&2; exit 1; }
        sleep 0.2
    done
    status
    echo "local.sh check: $n instances registered in etcd"
}

case "${1:-}" in
    up) up ;;
    etcd) etcd_up; echo "join: $JOIN" ;;
    status) status ;;
    down) down ;;
    check) check ;;
    *) sed -n '2,22p' "$0" >&2; exit 2 ;;
esac
