#!/bin/sh
# mkcerts.sh DIR -- make a throw-away test PKI in DIR with the openssl CLI
# (nothing here is committed key material; tests call this at start-up).
#
#   ca.pem ca.key                 the test CA ("aims test CA")
#   node.pem node.key             server: SAN node1.aims, localhost, 127.0.0.1, ::1
#   client.pem client.key         client: SAN client1.aims
#   client2.pem client2.key       client: SAN client2.aims
#   other-ca.pem                  an unrelated CA
#   rogue.pem rogue.key           client signed by the other CA (SAN client1.aims)
#   expired.pem expired.key       client valid 2020-01-01..2020-01-02
#   future.pem future.key         client valid from 2099
#   wrongsan.pem wrongsan.key     server: SAN other.example only
# EC P-256 keys: fast to make, fast to handshake.
set -eu
d=$1
mkdir -p "$d"
cd "$d"

newkey() { # name subject
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
}

mkca() { # name cn
    mkdir -p "$1.db/new"
    : > "$1.db/index.txt"
    echo 1000 > "$1.db/serial"
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1.key" -out "$1.pem" -days 30 -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    cat > "$1.cnf" <<CNF
[ ca ]
default_ca = ca_default
[ ca_default ]
dir = $d/$1.db
database = \$dir/index.txt
new_certs_dir = \$dir/new
serial = \$dir/serial
certificate = $d/$1.pem
private_key = $d/$1.key
default_md = sha256
default_days = 30
policy = policy_any
unique_subject = no
email_in_dn = no
[ policy_any ]
commonName = supplied
CNF
}

sign() { # ca name kind(server|client) san [startdate enddate]
    ca=$1 name=$2 kind=$3 san=$4
    if [ "$kind" = server ]; then eku=serverAuth; else eku=clientAuth; fi
    cat > "$name.ext" <<EXT
[ ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = $eku
subjectAltName = $san
EXT
    if [ $# -ge 6 ]; then
        dates="-startdate $5 -enddate $6"
    else
        dates=""
    fi
    # shellcheck disable=SC2086
    openssl ca -batch -notext -config "$ca.cnf" -in "$name.csr" -out "$name.pem" \
        -extfile "$name.ext" -extensions ext $dates 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

mkca ca "aims test CA"
mkca other-ca "some other CA"

newkey client "/CN=client1.aims"
sign ca client client "DNS:client1.aims"
newkey client2 "/CN=client2.aims"
sign ca client2 client "DNS:client2.aims"
newkey rogue "/CN=client1.aims"
sign other-ca rogue client "DNS:client1.aims"
newkey expired "/CN=expired.aims"
sign ca expired client "DNS:expired.aims" 20200101000000Z 20200102000000Z
newkey future "/CN=future.aims"
sign ca future client "DNS:future.aims" 20990101000000Z 20991231000000Z
newkey wrongsan "/CN=other.example"
sign ca wrongsan server "DNS:other.example"
# A node certificate must also work as a client certificate (nodes dial
# registries and each other): the node cert gets both usages.
newkey node "/CN=node1.aims"
sign_both() {
    cat > node.ext <<EXT
[ ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = DNS:node1.aims,DNS:localhost,IP:127.0.0.1,IP:::1
EXT
    openssl ca -batch -notext -config ca.cnf -in node.csr -out node.pem \
        -extfile node.ext -extensions ext 2>/dev/null
    rm -f node.csr node.ext
}
sign_both
