#!/usr/bin/python3
"""https_mtls_check.py URL PKI_DIR -- curl against a live aims_node whose HTTPS
front door requires client certificates (started by test_https_mtls.c: peers
client1.aims and client2.aims, a policy allowing only client1.aims to call
clf*, the audit log in PKI_DIR/audit.log). Test PKI from tests/support/mkcerts.sh.
"""
import json
import os
import subprocess
import sys
import time

URL, PKI = sys.argv[1], sys.argv[2]
CA = os.path.join(PKI, "ca.pem")
FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


def curl(url, who=None, *extra):
    """(curl exit code, http status, body); who: a client certificate of the PKI."""
    cert = ["--cert", os.path.join(PKI, who + ".pem"), "--key",
            os.path.join(PKI, who + ".key")] if who else []
    out = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", CA, "-o", "-", "-w",
                          "\n%{http_code}", *cert, *extra, url],
                         capture_output=True, text=True, timeout=40)
    body, _, code = out.stdout.rpartition("\n")
    return out.returncode, int(code or 0), body


req = json.dumps({"id": "mtls-1", "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                              "data": [10, 9, 8, 7]}]})
infer = URL + "/v2/models/clf/versions/1/infer"
JSON = ("-H", "Content-Type: application/json", "--data-binary", req)

# client1: a peer the node names and the policy allows
rc, code, _ = curl(URL + "/v2/health/ready", "client")
check(rc == 0 and code == 200, "client1 certificate: /v2/health/ready -> 200 (%d, %d)" % (rc, code))
rc, code, body = curl(infer, "client", *JSON)
out = json.loads(body) if code == 200 else {}
check(code == 200 and out.get("id") == "mtls-1" and out.get("outputs"),
      "client1 certificate: infer -> 200 (%d %s)" % (code, body[:160]))

# refused: no certificate, another CA's, an expired one, a not yet valid one, and
# a valid one (node1.aims) without a name the node accepts (--tls-peer)
for who, why in ((None, "client certificate required"), ("rogue", "rejected"),
                 ("expired", "rejected"), ("future", "rejected"),
                 ("node", "not one of the node's allowed peer names")):
    rc, code, body = curl(URL + "/v2/health/live", who)
    refused = (code == 403 and why in body) or (code == 0 and rc != 0)
    check(refused, "%s: refused (exit %d, %d %s)" % (who or "no certificate", rc, code, body[:120]))
    rc, code, body = curl(infer, who, *JSON)
    check(code != 200, "%s: infer refused (%d)" % (who or "no certificate", code))

# client2: CA-signed and a named peer, so the door lets it in, but the policy
# sees its certificate name and allows only client1.aims to infer
rc, code, _ = curl(URL + "/v2/health/live", "client2")
check(code == 200, "client2 certificate: /v2/health/live -> 200 (%d)" % code)
rc, code, body = curl(infer, "client2", *JSON)
check(code == 403 and "error" in body, "client2 certificate: infer -> 403 by policy (%d %s)"
      % (code, body[:160]))

# the policy judged the certificate name: the audit log (denials) says who
audit = ""
for _ in range(50):
    with open(os.path.join(PKI, "audit.log")) as f:
        audit = f.read()
    if "client2.aims" in audit:
        break
    time.sleep(0.1)
lines = [json.loads(l) for l in audit.splitlines() if l.strip()]
c2 = [l for l in lines if l.get("identity") == "client2.aims" and l.get("action") == "denied"]
check(len(c2) > 0, "audit log: the denial names the caller by its certificate (client2.aims)")
if c2:
    print("  audit:", json.dumps(c2[-1]))

print("%d failure(s)" % len(FAILS), flush=True)
sys.exit(1 if FAILS else 0)
