#!/usr/bin/python3
"""https_check.py URL PKI_DIR -- real clients against a live aims_node whose
HTTP front door serves HTTPS (started by test_https.c with the test PKI in
PKI_DIR: ca.pem, node.pem (SAN node1.aims, localhost, 127.0.0.1), hs256.key,
and a policy allowing only jwt:alice to call clf*).

Clients: curl (with the CA, without it, TLS 1.2 only, plain HTTP to the TLS
port, infer with and without bearer tokens), Python requests, openssl
s_client, and headless Chromium (skipped when not installed) loading the
status page with the node's certificate pinned by its SPKI hash.
"""
import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import requests

URL, PKI = sys.argv[1], sys.argv[2]
HOSTPORT = URL[len("https://"):]
PORT = int(HOSTPORT.rsplit(":", 1)[1])
CA = os.path.join(PKI, "ca.pem")
FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


def curl(url, *extra):
    """(curl exit code, http status, body)."""
    out = subprocess.run(["curl", "-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}",
                          *extra, url], capture_output=True, text=True, timeout=40)
    body, _, code = out.stdout.rpartition("\n")
    return out.returncode, int(code or 0), body


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(sub, key, exp_delta=600):
    h = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    p = b64url(json.dumps({"sub": sub, "exp": int(time.time()) + exp_delta}).encode())
    sig = hmac.new(key, ("%s.%s" % (h, p)).encode(), hashlib.sha256).digest()
    return "%s.%s.%s" % (h, p, b64url(sig))


with open(os.path.join(PKI, "hs256.key"), "rb") as f:
    KEY = f.read().rstrip(b"\n")

# probes over HTTPS, verified against the test CA (by IP and by name)
rc, code, body = curl(URL + "/v2/health/ready", "--cacert", CA)
check(rc == 0 and code == 200, "curl --cacert https /v2/health/ready -> 200 (%d, %d)" % (rc, code))
rc, code, body = curl("https://localhost:%d/v2/health/live" % PORT, "--cacert", CA)
check(rc == 0 and code == 200, "curl --cacert https://localhost (SAN DNS) -> 200")
rc, code, body = curl(URL + "/v2", "--cacert", CA)
check(rc == 0 and code == 200 and json.loads(body).get("name"), "curl https /v2 metadata")
# refusals: unknown CA, TLS 1.2 only, plaintext to the TLS port
rc, code, body = curl(URL + "/v2/health/live")
check(rc == 60, "curl without the CA: certificate not trusted (exit %d, want 60)" % rc)
rc, code, body = curl(URL + "/v2/health/live", "--cacert", CA, "--tlsv1.2", "--tls-max", "1.2")
check(rc != 0 and code == 0, "curl TLS 1.2 only: refused (exit %d)" % rc)
rc, code, body = curl("http://%s/v2/health/live" % HOSTPORT)
check(code != 200, "plain HTTP to the HTTPS port: no answer (exit %d, status %d)" % (rc, code))
# the same policy as the native door: only alice's token may infer
req = {"id": "tls-1", "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                  "data": [10, 9, 8, 7]}]}
infer = URL + "/v2/models/clf/versions/1/infer"
rc, code, body = curl(infer, "--cacert", CA, "-H", "Content-Type: application/json",
                      "--data-binary", json.dumps(req))
check(code == 403 and "error" in body, "infer without a token -> 403 (%d %s)" % (code, body[:120]))
rc, code, body = curl(infer, "--cacert", CA, "-H", "Authorization: Bearer " + jwt("mallory", KEY),
                      "--data-binary", json.dumps(req))
check(code == 403, "infer as jwt:mallory -> 403 (%d)" % code)
rc, code, body = curl(infer, "--cacert", CA, "-H", "Authorization: Bearer " + jwt("alice", b"x" * 40),
                      "--data-binary", json.dumps(req))
check(code == 403, "infer with a wrongly signed token -> 403 (%d)" % code)
rc, code, body = curl(infer, "--cacert", CA, "-H", "Authorization: Bearer " + jwt("alice", KEY),
                      "--data-binary", json.dumps(req))
out = json.loads(body) if code == 200 else {}
check(code == 200 and out.get("id") == "tls-1" and out.get("outputs"),
      "infer as jwt:alice over HTTPS -> 200 (%d %s)" % (code, body[:160]))

# Python requests, verifying against the CA
r = requests.get(URL + "/v2/models/clf", verify=CA, timeout=10)
check(r.status_code == 200 and r.json().get("name") == "clf", "requests https model metadata")
r = requests.post(infer, json=req, verify=CA, timeout=10,
                  headers={"Authorization": "Bearer " + jwt("alice", KEY)})
check(r.status_code == 200 and r.json()["outputs"][0]["data"] == out.get("outputs", [{}])[0].get("data"),
      "requests https infer: same answer as curl")
r = requests.get(URL + "/metrics", verify=CA, timeout=10)
check(r.status_code == 200 and "aims_http_open_connections" in r.text, "requests https /metrics")

# openssl s_client: TLS 1.3 and the certificate chain verifies
sc = subprocess.run(["openssl", "s_client", "-connect", HOSTPORT, "-CAfile", CA, "-brief",
                     "-verify_return_error"], input="", capture_output=True, text=True, timeout=30)
check("TLSv1.3" in sc.stdout + sc.stderr and "Verification: OK" in sc.stdout + sc.stderr,
      "openssl s_client: TLSv1.3, verification OK")

# headless Chromium: the status page over HTTPS, the node's key pinned by SPKI
chromium = shutil.which("chromium") or shutil.which("chromium-browser")
if chromium is None:
    print("skip chromium: not installed", flush=True)
else:
    pub = subprocess.run(["openssl", "x509", "-in", os.path.join(PKI, "node.pem"), "-pubkey",
                          "-noout"], capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         capture_output=True, check=True).stdout
    spki = base64.b64encode(hashlib.sha256(der).digest()).decode()
    profile = tempfile.mkdtemp(prefix="aims-chromium-")
    try:
        cr = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                             "--user-data-dir=" + profile,
                             "--ignore-certificate-errors-spki-list=" + spki,
                             "--dump-dom", URL + "/"], capture_output=True, text=True,
                            timeout=120)
        check(cr.returncode == 0 and "clf@1" in cr.stdout,
              "chromium --dump-dom https status page shows clf@1 (exit %d, %d bytes)"
              % (cr.returncode, len(cr.stdout)))
    except subprocess.TimeoutExpired:
        check(False, "chromium did not finish in 120 s")
    finally:
        shutil.rmtree(profile, ignore_errors=True)

print("%d failure(s)" % len(FAILS), flush=True)
sys.exit(1 if FAILS else 0)
