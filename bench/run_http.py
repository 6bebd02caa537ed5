#!/usr/bin/python3
"""HTTP front door benchmark (issue 12, goals P12a-c).

    /usr/bin/python3 bench/run_http.py [--build-dir build-bench] [--rounds 3]
        [--duration 3] [--p12c-iters 5000]

1. bench_http serve (bench/bench_http.c) hosts a 784-256-10 MLP as mlp@1
   with the HTTP front door on a loopback port and writes the request bodies;
   (with OPENBLAS_NUM_THREADS=1, SERVER_ENV, recorded as "server_env");
2. nginx serves static files of the same sizes as the binary and the JSON
   infer replies, from a throwaway config in a temp dir (non-root paths,
   127.0.0.1, 2 workers, access log off; recorded as "nginx");
3. wrk -t2 -c16 -d3s --latency (keep-alive; the same for every contender)
   against: (a) single-row infer over HTTP binary, (b) over HTTP JSON,
   nginx with the binary-reply-sized file, nginx with the JSON-reply-sized
   file; one unrecorded 1 s warm-up each, then 3 rounds, the order
   rotating every round;
4. P12a = median rps (a) / median rps nginx(bin) (target >= 0.5),
   P12b = median rps (b) / median rps nginx(json) (target >= 0.35);
   p50 latency medians alongside;
5. P12c: bench_http p12c N (native client call vs HTTP binary call on a
   keep-alive connection, alternating, same model): added p50 <= 25 us;
6. one JSON object per row to bench/results/http-<UTC>.jsonl and
   bench/results/latest-http.jsonl.
A contender that fails is recorded with "error" and the run goes on.

BLAS settings (benchlib.py, issue 15): with --blas-env both (the default) one
bench_http server runs with the machine's OPENBLAS_* settings and one with
OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset (batched predicts call OpenBLAS);
each is a contender in the same rounds, the ratio uses the faster
("blas_best"), both are recorded ("blas_settings"). nginx calls no BLAS.
"""
import argparse
import datetime
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import blas_env, blas_summary, blas_variants, machine_info, machine_line, pick_blas

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WRK = ["wrk", "-t2", "-c16"]
# The peer at its best on this 2-core machine: as many workers as cores, no
# access log; both recorded beside every ratio ("nginx").
NGINX_WORKERS = 2
# The libaims server as run_svc.py and run_pipe.py run theirs: OpenBLAS on the
# calling thread. With OpenBLAS's own threads (2 here) a batched predict left
# them spinning in sched_yield beside the door's 2 threads and the workers on
# 2 cores; under load the server then fell into a state of ~100-400 rps (from
# 6,000-15,000) -- 25 % of its CPU in sched_yield (perf, docs/DOOR_SPEED.md).
SERVER_ENV = {"OPENBLAS_NUM_THREADS": "1"}
NGINX_CONF = {"worker_processes": NGINX_WORKERS, "access_log": "off",
              "keepalive_requests": 1000000}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def lua_script(path, body_file, ctype, ihcl):
    with open(path, "w") as f:
        f.write('local f = io.open("%s", "rb")\nwrk.body = f:read("*a")\nf:close()\n' % body_file)
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "%s"\n' % ctype)
        if ihcl:
            f.write('wrk.headers["Inference-Header-Content-Length"] = "%s"\n' % ihcl)


def to_us(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return None
    v = float(m.group(1))
    return v * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]


def run_wrk(url, duration, script=None):
    cmd = WRK + ["-d%ds" % duration, "--latency"]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
    out = p.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors:.*", out)
    if p.returncode != 0 or not rps:
        return {"error": (p.stderr or out).strip()[-300:]}
    r = {"rps": float(rps.group(1)), "p50_us": to_us(p50.group(1)) if p50 else None}
    if bad:
        r["error"] = "%s non-2xx responses" % bad.group(1)
    if errs:
        r["socket_errors"] = errs.group(0)
    return r


def reply_size(port, path, body, headers):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status != 200:
        raise RuntimeError("infer answered %d: %s" % (r.status, data[:200]))
    return len(data)


def start_nginx(tmp, sizes):
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    for name, n in sizes.items():
        with open(os.path.join(www, name), "wb") as f:
            f.write(b"x" * n)
    port = free_port()
    temps = "\n".join("    %s_temp_path %s/%s;" % (k, tmp, k)
                      for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""worker_processes %(workers)d;
daemon off;
pid %(t)s/nginx.pid;
error_log %(t)s/error.log;
events { worker_connections 1024; }
http {
    access_log off;
%(temps)s
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:%(port)d;
        root %(www)s;
        location / { default_type application/octet-stream; }
    }
}
""" % {"t": tmp, "temps": temps, "port": port, "www": www, "workers": NGINX_WORKERS})
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", tmp, "-e", os.path.join(tmp, "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("nginx exited: %s" % proc.stderr.read().decode()[-300:])
            time.sleep(0.05)
    proc.terminate()
    raise RuntimeError("nginx did not listen on %d" % port)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default="build-bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--p12c-iters", type=int, default=5000)
    ap.add_argument("--blas-env", choices=("both", "native", "inherit"), default="both",
                    help="both: a server with the machine's OPENBLAS_* settings and one with "
                    "OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset, the faster counts; native: "
                    "unset only; inherit: as set")
    a = ap.parse_args()
    tags = blas_variants(a.blas_env)
    exe = os.path.join(REPO, a.build_dir, "bench", "bench_http")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    info = machine_info(os.path.join(REPO, a.build_dir))
    info["blas_env"] = a.blas_env
    rows = []
    tmp = tempfile.mkdtemp(prefix="aims-bench-http-")
    os.chmod(tmp, 0o755)  # nginx workers may run as another user (root starts them)
    srvs, ngx = [], None
    try:
        infers = {}  # BLAS tag -> infer URL of the server started with it
        for tag in tags:
            d = os.path.join(tmp, tag)
            os.makedirs(d)
            srvs.append(subprocess.Popen([exe, "serve", d], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True,
                                         env=dict(blas_env(tag), **SERVER_ENV)))
            line = srvs[-1].stdout.readline().strip()
            if not line.startswith("ready "):
                raise RuntimeError("bench_http serve (BLAS %s) did not start: %r" % (tag, line))
            infers[tag] = line[6:] + "/v2/models/mlp/versions/1/infer"
        # the request bodies are the same for every server: take the first's
        tmp_srv = os.path.join(tmp, tags[0])
        url = infers[tags[0]].rsplit("/v2/", 1)[0]
        port = int(url.rsplit(":", 1)[1])
        path = "/v2/models/mlp/versions/1/infer"
        hdr = open(os.path.join(tmp_srv, "req.bin.hdr")).read().strip()
        bin_body = open(os.path.join(tmp_srv, "req.bin"), "rb").read()
        json_body = open(os.path.join(tmp_srv, "req.json"), "rb").read()
        sizes = {
            "bin": reply_size(port, path, bin_body,
                              {"Content-Type": "application/octet-stream",
                               "Inference-Header-Content-Length": hdr}),
            "json": reply_size(port, path, json_body, {"Content-Type": "application/json"}),
        }
        lua_script(os.path.join(tmp, "bin.lua"), os.path.join(tmp_srv, "req.bin"),
                   "application/octet-stream", hdr)
        lua_script(os.path.join(tmp, "json.lua"), os.path.join(tmp_srv, "req.json"),
                   "application/json", None)
        ngx, nport = start_nginx(os.path.join(tmp, "nginx"), sizes)
        cases = []
        for tag in tags:  # contender name "<case>@<tag>" for each server
            cases += [("aims_http_binary@" + tag, infers[tag], os.path.join(tmp, "bin.lua")),
                      ("aims_http_json@" + tag, infers[tag], os.path.join(tmp, "json.lua"))]
        cases += [("nginx_static_bin", "http://127.0.0.1:%d/bin" % nport, None),
                  ("nginx_static_json", "http://127.0.0.1:%d/json" % nport, None)]
        res = {c[0]: [] for c in cases}
        for name, u, script in cases:  # warm-up, not recorded: first-touch costs
            run_wrk(u, 1, script)
        for r in range(a.rounds):
            order = cases[r % len(cases):] + cases[:r % len(cases)]
            for name, u, script in order:
                m = run_wrk(u, a.duration, script)
                m.update({"round": r, "contender": name})
                res[name].append(m)
                print(json.dumps(m), file=sys.stderr)

        def med(name, key):
            vals = [m[key] for m in res[name] if "error" not in m and m.get(key) is not None]
            return statistics.median(vals) if vals else None

        for goal, mine, ref, target in (("P12a", "aims_http_binary", "nginx_static_bin", 0.5),
                                        ("P12b", "aims_http_json", "nginx_static_json", 0.35)):
            by = {t: {"median": med(mine + "@" + t, "rps"),
                      "p50_us": med(mine + "@" + t, "p50_us")} for t in tags}
            best = pick_blas(by, higher_is_better=True) or tags[0]
            a_rps, n_rps = by[best]["median"], med(ref, "rps")
            ratio = a_rps / n_rps if a_rps and n_rps else None
            rows.append({"goal": goal, "metric": "rps_ratio_vs_nginx", "contender": mine,
                         "reference": ref, "rounds": a.rounds, "wrk": " ".join(WRK) +
                         " -d%ds --latency" % a.duration, "reply_bytes": sizes[
                             "bin" if goal == "P12a" else "json"],
                         "median_rps": a_rps, "nginx_median_rps": n_rps,
                         "median_p50_us": by[best]["p50_us"],
                         "blas_best": best, "blas_settings": blas_summary(by),
                         "nginx_median_p50_us": med(ref, "p50_us"), "nginx": NGINX_CONF,
                         "server_env": SERVER_ENV,
                         "ratio": ratio, "target": target,
                         "met": ratio is not None and ratio >= target,
                         "per_round": res[mine + "@" + best], "nginx_per_round": res[ref]})
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as ex:
        rows.append({"goal": "P12a-b", "error": str(ex)})
    finally:
        if ngx is not None:
            ngx.terminate()
            ngx.wait(timeout=10)
        for srv in srvs:
            try:
                srv.stdin.close()
                srv.wait(timeout=20)
            except subprocess.TimeoutExpired:
                srv.kill()
                srv.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    try:
        p = subprocess.run([exe, "p12c", str(a.p12c_iters)], capture_output=True, text=True,
                           timeout=300)
        got = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
        rows.extend(got if got else [{"goal": "P12c", "error": p.stderr.strip()[-300:]}])
    except (OSError, subprocess.SubprocessError) as ex:
        rows.append({"goal": "P12c", "error": str(ex)})

    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    out = [dict(r, machine=info, utc=stamp) for r in rows]
    for path in (os.path.join(HERE, "results", "http-%s.jsonl" % stamp),
                 os.path.join(HERE, "results", "latest-http.jsonl")):
        with open(path, "w") as f:
            for r in out:
                f.write(json.dumps(r) + "\n")
    print("%s\n" % machine_line(info))
    print("| goal | contender | value | target | met |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print("| %s | | error: %s | | |" % (r["goal"], r["error"][:80]))
        elif r["goal"] == "P12c":
            print("| P12c | http binary - native | %.1f us added p50 (%.1f vs %.1f) | <= 25 us | %s |"
                  % (r["added_p50_us"], r["http_binary_p50_us"], r["native_p50_us"], r["met"]))
        else:
            print("| %s | %s (BLAS %s) | %s x nginx (%s vs %s rps, p50 %s us) | >= %s | %s |"
                  % (r["goal"], r["contender"], r.get("blas_best"),
                     "%.3f" % r["ratio"] if r["ratio"] else "-", r["median_rps"],
                     r["nginx_median_rps"], r["median_p50_us"], r["target"], r["met"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
