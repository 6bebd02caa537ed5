#!/usr/bin/python3
"""http_check.py URL NATIVE_JSON DAEMON_PID -- real HTTP clients against a
live aims_node --http (started by test_http.c, which hosts the test bundle
as clf@1 and clf@2 and wrote the native protocol's predictions for three
rows to NATIVE_JSON).

Clients: curl (every endpoint), Python requests (KServe v2 examples),
promtool (check metrics on the scrape), raw sockets (smuggling shapes,
oversize headers, slow clients). Ends by sending SIGTERM to the daemon and
watching /v2/health/ready go 503 while it drains.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import requests

URL, NATIVE, PID = sys.argv[1], sys.argv[2], int(sys.argv[3])
HOST, PORT = URL[len("http://"):].rsplit(":", 1)
PORT = int(PORT)
FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


def curl(path, *extra):
    """(status, body) of curl on path."""
    out = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *extra, URL + path],
                         capture_output=True, text=True, timeout=30)
    body, _, code = out.stdout.rpartition("\n")
    return int(code or 0), body


def raw(data, read_timeout=5.0):
    """Send raw bytes, return the first response's status code (0 if none)."""
    s = socket.create_connection((HOST, PORT), timeout=read_timeout)
    try:
        s.sendall(data)
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        line = buf.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 else 0
    except (socket.timeout, ConnectionResetError, BrokenPipeError):
        return 0
    finally:
        s.close()


native = json.load(open(NATIVE))
rows, cols = native["rows"], native["cols"]
flat = native["x"]
nested = [flat[r * cols:(r + 1) * cols] for r in range(rows)]

# ---- curl: every endpoint ------------------------------------------------------
code, body = curl("/v2/health/live")
check(code == 200 and json.loads(body)["live"] is True, "curl live 200")
code, body = curl("/v2/health/ready")
check(code == 200, "curl ready 200 (services started and registered): %s" % body)
code, body = curl("/v2")
meta = json.loads(body)
check(code == 200 and meta["name"] == "libaims" and "version" in meta, "curl /v2 metadata")
code, body = curl("/v2/models/clf")
meta = json.loads(body) if code == 200 else {}
check(code == 200 and meta.get("name") == "clf" and sorted(meta.get("versions", [])) == ["1", "2"]
      and meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, cols]}]
      and meta["outputs"][0]["name"] == "y" and meta["outputs"][0]["shape"][0] == -1,
      "curl model metadata: %s" % body)
code, body = curl("/v2/models/clf/versions/2")
check(code == 200 and json.loads(body)["name"] == "clf", "curl version metadata")
code, body = curl("/v2/models/clf/ready")
check(code == 200 and json.loads(body)["ready"] is True, "curl model ready")
code, body = curl("/v2/models/clf/versions/1/ready")
check(code == 200, "curl version ready")
req = {"id": "curl-1", "inputs": [{"name": "x", "shape": [rows, cols], "datatype": "FP32",
                                   "data": flat}]}
code, body = curl("/v2/models/clf/versions/1/infer", "-H", "Content-Type: application/json",
                  "--data-binary", json.dumps(req))
out = json.loads(body) if code == 200 else {}
check(code == 200 and out.get("id") == "curl-1" and out.get("model_name") == "clf"
      and out.get("model_version") == "1", "curl infer: %s" % body[:200])
check(out and out["outputs"][0]["data"] == native["class"],
      "curl infer: same class ids as the native client (%s vs %s)"
      % (out and out["outputs"][0]["data"], native["class"]))
code, body = curl("/metrics")
check(code == 200 and "aims_model_request_success_total" in body, "curl /metrics")
code, body = curl("/")
check(code == 200 and "<svg" in body and "clf@1" in body and "<script" not in body,
      "curl status page (self-contained, inline SVG)")
code, body = curl("/v2/models/nope")
check(code == 404 and "error" in json.loads(body), "curl unknown model 404")
code, body = curl("/v2/models/clf/versions/9/infer", "--data-binary", json.dumps(req))
check(code == 404 and "error" in json.loads(body), "curl unknown version 404")
code, body = curl("/nowhere")
check(code == 404, "curl unknown path 404")

# ---- Python requests: the KServe v2 examples (shapes of the protocol doc) -------------
s = requests.Session()  # keep-alive: every request below reuses one connection
r = s.post(URL + "/v2/models/clf/infer", json={
    "id": "42",
    "inputs": [{"name": "x", "shape": [rows, cols], "datatype": "FP32", "data": nested}],
    "outputs": [{"name": "y"}]})
check(r.status_code == 200 and r.json()["id"] == "42", "requests: nested data, outputs")
check(r.status_code == 200 and r.json()["outputs"][0]["data"] == native["class"],
      "requests: same class ids as native")
r = s.post(URL + "/v2/models/clf/versions/1/infer", json={
    "inputs": [{"name": "x", "shape": [rows, cols], "datatype": "FP32", "data": flat}],
    "parameters": {"output": "scores"}})
ok = r.status_code == 200
y = r.json()["outputs"][0] if ok else {}
check(ok and y["shape"] == [rows, 2] and y["data"] == native["scores"],
      "requests: scores identical to the native client's")
r = s.post(URL + "/v2/models/clf/infer", json={
    "inputs": [{"name": "x", "shape": [cols], "datatype": "INT32",
                "data": [int(v) for v in flat[:cols]]}]})
check(r.status_code == 200 and r.json()["outputs"][0]["data"] == native["class"][:1],
      "requests: INT32 single row [cols]")
r = s.post(URL + "/v2/models/clf/infer", json={
    "inputs": [{"name": "x", "shape": [1, cols], "datatype": "UINT8", "data": [250, 251, 252, 253]}],
    "outputs": [{"name": "y", "parameters": {"output": "probabilities"}}]})
check(r.status_code == 200 and abs(sum(r.json()["outputs"][0]["data"]) - 1.0) < 1e-5,
      "requests: UINT8 with per-output probabilities")

# ---- big numeric arrays (parsed without a cJSON tree): same answers ------------------
many = 40  # 40 copies of the 3 rows: "data" well over the lifting threshold
r = s.post(URL + "/v2/models/clf/versions/1/infer", json={
    "inputs": [{"name": "x", "shape": [rows * many, cols], "datatype": "FP32",
                "data": [nested] * many}], "parameters": {"output": "scores"}})
check(r.status_code == 200 and r.json()["outputs"][0]["data"] == native["scores"] * many,
      "big nested FP32 data: scores identical to native (%d)" % r.status_code)
r = s.post(URL + "/v2/models/clf/versions/1/infer", json={
    "inputs": [{"name": "x", "shape": [rows * many, cols], "datatype": "INT64",
                "data": [int(v) for v in flat] * many}]})
check(r.status_code == 200 and r.json()["outputs"][0]["data"] == native["class"] * many,
      "big flat INT64 data: class ids identical to native (%d)" % r.status_code)
big_rows = ",".join(["[1,2,3,4]"] * 100)

# ---- binary tensor extension: same scores as native and JSON ------------------------
import struct
hdr = json.dumps({"inputs": [{"name": "x", "shape": [rows, cols], "datatype": "FP32",
                              "parameters": {"binary_data_size": 4 * rows * cols}}],
                  "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
                  "parameters": {"output": "scores"}}).encode()
r = s.post(URL + "/v2/models/clf/versions/1/infer", data=hdr + struct.pack("<%df" % len(flat), *flat),
           headers={"Content-Type": "application/octet-stream",
                    "Inference-Header-Content-Length": str(len(hdr))})
ok = r.status_code == 200 and "Inference-Header-Content-Length" in r.headers
if ok:
    jl = int(r.headers["Inference-Header-Content-Length"])
    meta_out = json.loads(r.content[:jl])["outputs"][0]
    raw_y = r.content[jl:]
    vals = list(struct.unpack("<%df" % (len(raw_y) // 4), raw_y))
    ok = meta_out["parameters"]["binary_data_size"] == len(raw_y) and \
        [float("%.9g" % v) for v in vals] == native["scores"]
check(ok, "binary in + binary out: same scores as native (%d %s)" % (r.status_code, r.content[:120]))
r = s.post(URL + "/v2/models/clf/infer", data=hdr + b"\0" * 3,
           headers={"Inference-Header-Content-Length": str(len(hdr))})
check(r.status_code == 400, "binary: wrong binary_data_size -> 400 %s" % r.text)
r = s.post(URL + "/v2/models/clf/infer", data=hdr,
           headers={"Inference-Header-Content-Length": str(len(hdr) + 10)})
check(r.status_code == 400, "binary: header length past the body -> 400 %s" % r.text)
for bad in (float("nan"), float("inf"), float("-inf")):  # the FP32 fast path checks the bits
    body = struct.pack("<%df" % len(flat), *(flat[:-1] + [bad]))
    r = s.post(URL + "/v2/models/clf/infer", data=hdr + body,
               headers={"Inference-Header-Content-Length": str(len(hdr))})
    check(r.status_code == 400 and "not finite" in r.text,
          "binary: a %r FP32 value -> 400 %s" % (bad, r.text))

# ---- hostile HTTP: each a clear 4xx, the server keeps serving ----------------------------
def post(body, ctype="application/json"):
    return requests.post(URL + "/v2/models/clf/infer", data=body,
                         headers={"Content-Type": ctype}, timeout=10)


hostile = {
    "bad JSON": b'{"inputs": [',
    "not an object": b"[1,2,3]",
    "NaN in JSON": b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[NaN,1,2,3]}]}',
    "Infinity in JSON": b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[Infinity,1,2,3]}]}',
    "FP32 overflow": b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1e39,1,2,3]}]}',
    "wrong datatype": b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"BOOL","data":[1,1,2,3]}]}',
    "BYTES for a dense model": b'{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["a"]}]}',
    "wrong width": b'{"inputs":[{"name":"x","shape":[1,5],"datatype":"FP32","data":[1,1,2,3,4]}]}',
    "shape/data mismatch": b'{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP32","data":[1,1,2,3]}]}',
    "huge shape": b'{"inputs":[{"name":"x","shape":[100000000000,4],"datatype":"FP32","data":[1]}]}',
    "negative shape": b'{"inputs":[{"name":"x","shape":[-1,4],"datatype":"FP32","data":[1,2,3,4]}]}',
    "strings as numbers": b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":["1","2","3","4"]}]}',
    "INT32 not integral": b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"INT32","data":[1.5,2,3,4]}]}',
    "UINT8 out of range": b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"UINT8","data":[256,2,3,4]}]}',
    "unknown input": b'{"inputs":[{"name":"input0","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}',
    "unknown output": b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"z"}]}',
    "two inputs": b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]},{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}',
    "id not a string": b'{"id":5,"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}',
    "bad output parameter": b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":{"output":"logits"}}',
    "deep nesting": b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":' + b"[" * 500 + b"1" + b"]" * 500 + b"}]}",
    "empty body": b"",
    "big array, leading zero": ('{"inputs":[{"name":"x","shape":[101,4],"datatype":"FP32","data":[%s,[01,2,3,4]]}]}' % big_rows).encode(),
    "big array, trailing comma": ('{"inputs":[{"name":"x","shape":[100,4],"datatype":"FP32","data":[%s,]}]}' % big_rows).encode(),
    "big array, empty element": ('{"inputs":[{"name":"x","shape":[100,4],"datatype":"FP32","data":[%s,,[1,2,3,4]]}]}' % big_rows).encode(),
    "big array, bare minus": ('{"inputs":[{"name":"x","shape":[101,4],"datatype":"FP32","data":[%s,[-,2,3,4]]}]}' % big_rows).encode(),
    "big array, NaN": ('{"inputs":[{"name":"x","shape":[101,4],"datatype":"FP32","data":[%s,[NaN,2,3,4]]}]}' % big_rows).encode(),
    "big array, 1e39 as FP32": ('{"inputs":[{"name":"x","shape":[101,4],"datatype":"FP32","data":[%s,[1e39,2,3,4]]}]}' % big_rows).encode(),
    "big array, too few": ('{"inputs":[{"name":"x","shape":[101,4],"datatype":"FP32","data":[%s]}]}' % big_rows).encode(),
    "big array, UINT8 300": ('{"inputs":[{"name":"x","shape":[101,4],"datatype":"UINT8","data":[%s,[300,2,3,4]]}]}' % big_rows).encode(),
    "big array for BYTES": ('{"inputs":[{"name":"x","shape":[400],"datatype":"BYTES","data":[%s]}]}' % big_rows).encode(),
    "forged placeholder": b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":"\\u0001aims:0"}]}',
}
for what, body in hostile.items():
    r = post(body)
    try:
        err = r.json().get("error", "")
    except ValueError:
        err = ""
    check(r.status_code == 400 and err != "", "hostile %s -> %d %s" % (what, r.status_code, err))

r = requests.get(URL + "/v2/models/clf/infer", timeout=10)
check(r.status_code == 405, "GET on infer -> 405")
big = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[' + b"1," * (9 << 20) + b"1]}]}"
try:
    r = post(big)
    code = r.status_code
except requests.exceptions.ConnectionError:
    code = 413  # the server may close before reading the whole upload
check(code == 413, "oversize body (18 MiB > 16 MiB) -> 413 (%d)" % code)
code = raw(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
check(code in (431, 413, 400) or code == 0, "oversize headers -> %d" % code)
code = raw(b"POST /v2/models/clf/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
           b"Content-Length: 40\r\n\r\n{}{}")
check(code == 400, "duplicate Content-Length -> %d" % code)
code = raw(b"POST /v2/models/clf/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
check(code == 400, "Content-Length with chunked -> %d" % code)
code = raw(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n")
check(code in (200, 400), "duplicate Host -> %d" % code)
code = raw(b"GARBAGE\r\n\r\n")
check(code in (0, 400, 505), "garbage request line -> %d (0: closed without a reply)" % code)
# chunked upload (legal) still works
chunked = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                          "Transfer-Encoding: chunked", "-H", "Content-Type: application/json",
                          "--data-binary", json.dumps(req), URL + "/v2/models/clf/infer"],
                         capture_output=True, text=True, timeout=30).stdout
check(chunked == "200", "chunked upload -> %s" % chunked)
# a slow client holding a half-sent request does not block others
slow = socket.create_connection((HOST, PORT))
slow.sendall(b"POST /v2/models/clf/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
r = s.post(URL + "/v2/models/clf/infer", json=req)
check(r.status_code == 200, "others served while a slow client trickles")
slow.close()
r = s.get(URL + "/v2/health/live")
check(r.status_code == 200, "server alive after the hostile requests (keep-alive session)")

# ---- promtool on the scrape ----------------------------------------------------------
scrape = requests.get(URL + "/metrics", timeout=10).text
check("aims_model_batch_executions_total" in scrape and "process_resident_memory_bytes" in scrape
      and "aims_svc_latency_seconds_bucket" in scrape, "metrics families present")
p = subprocess.run(["promtool", "check", "metrics"], input=scrape, capture_output=True,
                   text=True, timeout=60)
check(p.returncode == 0 and p.stdout.strip() == "" and p.stderr.strip() == "",
      "promtool check metrics: rc %d %s%s" % (p.returncode, p.stdout, p.stderr))

# ---- headless Chromium loads the status page (no JavaScript needed) ------------------
chromium = next((c for c in ("chromium", "chromium-browser") if subprocess.run(
    ["sh", "-c", "command -v " + c], capture_output=True).returncode == 0), None)
if chromium is None:
    print("skip Chromium DOM check: chromium not installed")
else:
    shot = os.path.abspath("test_http_status.png")  # artefact, in the test's working dir
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-dev-shm-usage"]
    dom = subprocess.run(base + ["--dump-dom", URL + "/"], capture_output=True, text=True,
                         timeout=120).stdout
    check('id="services"' in dom and "clf@1" in dom and "clf@2" in dom and "<svg" in dom
          and "load balance degree" in dom and "parallelism" in dom and "autonomy" in dom,
          "Chromium DOM of / shows the services, the SVG histogram and the seed metrics")
    subprocess.run(base + ["--screenshot=" + shot, "--window-size=1200,800", URL + "/"],
                   capture_output=True, timeout=120)
    print("status page screenshot: %s (%s)" % (shot, os.path.exists(shot)))

# ---- readiness while draining ----------------------------------------------------------
os.kill(PID, signal.SIGTERM)
saw_503 = False
deadline = time.time() + 10
while time.time() < deadline:
    try:
        r = requests.get(URL + "/v2/health/ready", timeout=2)
    except requests.exceptions.ConnectionError:
        break
    if r.status_code == 503:
        saw_503 = True
        check("draining" in r.json().get("error", ""), "503 says draining: %s" % r.text)
        break
    time.sleep(0.02)
check(saw_503, "readiness 503 while the node drains")

if FAILS:
    print("%d checks failed" % len(FAILS))
    sys.exit(1)
print("all HTTP checks passed")
