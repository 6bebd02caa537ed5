#!/usr/bin/python3
"""P12a side by side: several bench_http builds and nginx in the same rounds.

    bench/run_http_ab.py NAME=BENCH_HTTP[,NAME=BENCH_HTTP...] ROUNDS SECONDS [ENV=VAL...]

Starts `bench_http serve` of each build (OPENBLAS_NUM_THREADS=1, as run_http.py)
and nginx (run_http.py's config), then ROUNDS rounds of wrk -t2 -c16 -dSECONDS
(binary infer; nginx: a static file of the reply's size), the order reversed
every other round. Per round and server: rps, p50, server CPU us per request
and voluntary/involuntary context switches per request (/proc/PID/task),
threads, rows per model run and compute per run/row (the door's /metrics).
Prints JSON lines, medians and each build's median ratio to nginx; writes no
results file (docs/DOOR_SPEED.md "Session 11" has the numbers).
"""
import os, sys, re, json, subprocess, tempfile, time, urllib.request, glob, socket, statistics
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_http as rh
builds = sys.argv[1].split(",")          # name=path-to-bench_http
rounds = int(sys.argv[2]); dur = int(sys.argv[3])
extra_env = dict(kv.split("=",1) for kv in sys.argv[4:])
tmp = tempfile.mkdtemp(prefix="p12ab-"); os.chmod(tmp, 0o755)
srv = {}
for b in builds:
    name, exe = b.split("=")
    d = os.path.join(tmp, name); os.makedirs(d)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", **extra_env)
    p = subprocess.Popen([exe,"serve",d], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    line = p.stdout.readline().strip()
    assert line.startswith("ready "), line
    srv[name] = (p, line[6:], d)
first = list(srv.values())[0]
hdr = open(os.path.join(first[2], "req.bin.hdr")).read().strip()
lua = os.path.join(tmp, "bin.lua"); rh.lua_script(lua, os.path.join(first[2], "req.bin"), "application/octet-stream", hdr)
port = int(first[1].rsplit(":",1)[1])
size = rh.reply_size(port, "/v2/models/mlp/versions/1/infer", open(os.path.join(first[2],"req.bin"),"rb").read(),
    {"Content-Type":"application/octet-stream","Inference-Header-Content-Length":hdr})
ngx, nport = rh.start_nginx(os.path.join(tmp,"nginx"), {"bin": size})
def stats(pid):
    cpu=0; vcs=0; ivcs=0; n=0
    for t in glob.glob("/proc/%d/task/*"%pid):
        try:
            st=open(t+"/stat").read().rsplit(")",1)[1].split()
            cpu+=int(st[11])+int(st[12])
            s=open(t+"/status").read()
            vcs+=int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)",s,re.M).group(1))
            ivcs+=int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)",s,re.M).group(1))
            n+=1
        except Exception: pass
    return cpu, vcs, ivcs, n
def metrics(url):
    t = urllib.request.urlopen(url+"/metrics", timeout=5).read().decode()
    out={}
    for k in ("aims_model_batch_executions_total","aims_model_inference_rows_total","aims_model_request_success_total","aims_model_compute_seconds_total"):
        m=re.search(r"^%s\{[^}]*\}\s+(\S+)"%k,t,re.M)
        out[k]=float(m.group(1)) if m else 0
    return out
cases=[(n,srv[n][1]+"/v2/models/mlp/versions/1/infer",lua) for n in srv]+[("nginx","http://127.0.0.1:%d/bin"%nport,None)]
hz=os.sysconf("SC_CLK_TCK")
for n,u,s in cases: rh.run_wrk(u,1,s)
res={c[0]:[] for c in cases}
for r in range(rounds):
    order = cases if r%2==0 else cases[::-1]
    for n,u,s in order:
        pid = srv[n][0].pid if n in srv else None
        b = stats(pid) if pid else None
        m0 = metrics(srv[n][1]) if pid else None
        w = rh.run_wrk(u,dur,s)
        row={"round":r,"who":n,"rps":w.get("rps"),"p50":w.get("p50_us")}
        if pid:
            a=stats(pid); m1=metrics(srv[n][1]); req=w["rps"]*dur
            d={k:m1[k]-m0[k] for k in m1}
            row.update(cpu_us=round((a[0]-b[0])/hz*1e6/req,1), vcs=round((a[1]-b[1])/req,2), ivcs=round((a[2]-b[2])/req,2), threads=a[3],
                       rows_per_batch=round(d["aims_model_inference_rows_total"]/max(1,d["aims_model_batch_executions_total"]),2),
                       compute_us_per_batch=round(d["aims_model_compute_seconds_total"]*1e6/max(1,d["aims_model_batch_executions_total"]),1),
                       compute_us_per_row=round(d["aims_model_compute_seconds_total"]*1e6/max(1,d["aims_model_inference_rows_total"]),1))
        res[n].append(row); print(json.dumps(row), flush=True)
print("load", open("/proc/loadavg").read().strip())
for n in res:
    v=[x["rps"] for x in res[n] if x["rps"]]
    print(n, "median rps", statistics.median(v), "all", v)
ng=statistics.median([x["rps"] for x in res["nginx"]])
for n in srv:
    print(n, "ratio", round(statistics.median([x["rps"] for x in res[n]])/ng,3))
ngx.terminate(); ngx.wait()
for p,_,_ in srv.values():
    p.stdin.close(); p.wait(timeout=20)
import shutil
shutil.rmtree(tmp, ignore_errors=True)
