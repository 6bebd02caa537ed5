"""R6 against nginx, R4b, and the FIFO/LIFO comparison of issue 11
(bench/run_overload.py --peer / --hung / --lifo; bench/bench_overload.c is
the load generator).

--peer. Two aims_node instances serve the same MLP bundle (16 inputs, 2 x 2048
relu, 10 classes; a 64-row predict per call, one worker, concurrency 1 and
the default batching each -- batch_max counts rows, so a batch holds one
64-row call --, OPENBLAS_NUM_THREADS=1) on
tcp:// and, each, an HTTP front door with a 2 s request deadline (--param http_timeout_ms=2000). nginx (one worker,
access log off) proxies to the two front doors with the overload protection
nginx open source has: `max_conns` per upstream server (nginx answers 502 at
once when every server is at it; the `queue` directive that would hold such
requests is nginx Plus only), `proxy_next_upstream error timeout http_429
http_503 non_idempotent` with 2 tries (a refused request goes to the other
instance), `max_fails=0` (the default max_fails=1 counts every 429 as a
failure and takes the server out for 10 s: under overload nginx then answered
502 "no live upstreams" to nearly everything), keep-alive upstream connections
and 2 s proxy timeouts.
`limit_conn`/`limit_req` would cap per-client rates, which is not what
protects a service from the sum of its clients, so they are not used.
Capacity is measured once with libaims' client (closed loop, 8 threads, 3 s,
over both instances); then for each factor the same open-loop offer (factor
x capacity, 2 s deadlines) runs through libaims' client against the two
instances, then through each nginx (max_conns as given; 0 = without), one
after the other on the same instances. Useful work per phase: answers OK
within 2 s / model runs the instances executed (their /metrics).

--hung (R4b). Three echo instances (1 ms per call, 2 workers); libaims'
client offers a steady open loop; 3 s in, one instance is SIGSTOPped for 4 s.
Failed calls and p99 over the whole run.

--lifo (the LIFO question). One echo instance spinning 10 ms per call on one
worker (the test_goodput setup), offered 2.5x and 5x its capacity through
libaims' client, with the default admission (FIFO, refusal at arrival,
adaptive limit), with `--param lifo=1`, and with `lifo=1
climit_tolerance_pct=0` (the earlier design: LIFO + drop after the target,
no adaptive limit).

The generator is one thread (bench_overload.c's header says how it is
bounded); its CPU seconds and nginx's are recorded with each phase.
"""

import json
import os
import signal
import subprocess
import tempfile
import threading
import time

HIDDEN = 2048
LAYERS = 2
PREFIX = []  # ["chrt", "-f", "1"] when run_overload.py measures under SCHED_FIFO: every process


class Proc:
    """An aims_node (or other) child whose first stdout lines we read."""

    def __init__(self, args, env=None):
        self.p = subprocess.Popen(PREFIX + args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, env=env)
        self.addr = self.http = None

    def wait_ready(self, want_http=False, timeout=30):
        t0 = time.time()
        while time.time() - t0 < timeout:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError("aims_node exited before it was ready")
            if line.startswith("ready "):
                self.addr = line.split()[1]
                if not want_http:
                    return self
            elif line.startswith("http "):
                self.http = line.split()[1]
                return self
        raise RuntimeError("aims_node not ready in time")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGCONT)
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def descendants(root):
    """root and every process below it (from /proc's parent links)."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


class IoBoost(threading.Thread):
    """While running, put the libaims I/O threads (named "aims-io-<scheme>")
    of root's process tree -- the daemons' and the clients' -- at SCHED_FIFO
    priority `prio` (run_overload.py --io-prio). The library runs them one
    above the workers by itself (stream_io.c); --io-prio 1 puts them back at
    the workers' priority, to measure what that changes."""

    def __init__(self, root, prio):
        super().__init__(daemon=True)
        self.root, self.prio, self.done = root, prio, set()
        self.halt = threading.Event()

    def scan(self):
        for pid in descendants(self.root):
            try:
                tids = os.listdir("/proc/%d/task" % pid)
            except OSError:
                continue
            for tid in tids:
                if (pid, tid) in self.done:
                    continue
                try:
                    with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                        comm = f.read().strip()
                except OSError:
                    continue
                if comm.startswith("aims-io-") and subprocess.run(
                        ["chrt", "-f", "-p", str(self.prio), tid],
                        capture_output=True).returncode == 0:
                    self.done.add((pid, tid))

    def run(self):
        while not self.halt.wait(0.2):
            self.scan()

    def stop(self):
        self.halt.set()
        self.join(5)
        return len(self.done)


def node_env():
    return dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                AIMS_NODE_LOG_LEVEL="error")


def spawn_registry(node):
    return Proc([node, "--name", "reg", "--listen", "tcp://127.0.0.1:0", "--host-registry",
                 "--heartbeat-ms", "1000"], env=node_env()).wait_ready()


def spawn_node(node, name, reg, service_args, extra=(), http=False):
    args = [node, "--name", name, "--listen", "tcp://127.0.0.1:0", "--join", reg.addr,
            "--heartbeat-ms", "1000"] + list(service_args) + list(extra)
    if http:
        args += ["--http", "127.0.0.1:0", "--param", "http_timeout_ms=2000"]
    return Proc(args, env=node_env()).wait_ready(want_http=http)


def gen(exe, args, timeout=300):
    """Run the generator to completion; its last JSON line."""
    r = subprocess.run(PREFIX + [exe] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout)
    rows = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    if r.returncode != 0 or not rows:
        raise RuntimeError("bench_overload %s failed (%d): %s" % (args[0], r.returncode,
                                                                 r.stderr[-400:]))
    return rows[-1]


def gen_phase(exe, args, at_start, timeout=300):
    """Run an open-loop phase; at_start() runs when the generator says
    "start" (after its warm-up calls), its result is returned with the row."""
    g = subprocess.Popen(PREFIX + [exe] + [str(a) for a in args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = g.stdout.readline()
    mark = at_start() if line.strip() == "start" else None
    out, err = g.communicate(timeout=timeout)
    rows = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    if g.returncode != 0 or not rows:
        raise RuntimeError("bench_overload %s failed (%d): %s" % (args[0], g.returncode,
                                                                 err[-400:]))
    return rows[-1], mark


def proc_cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def runs_executed(urls):
    """Model executions so far, summed over the instances (their /metrics)."""
    import urllib.request
    total = 0.0
    for u in urls:
        try:
            with urllib.request.urlopen(u + "/metrics", timeout=5) as f:
                for line in f.read().decode().splitlines():
                    if line.startswith("aims_model_batch_executions_total"):
                        total += float(line.rsplit(None, 1)[1])
        except (OSError, ValueError):
            return None
    return total


def load1():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def nginx_conf(tmp, port, ups, max_conns):
    lim = " max_conns=%d" % max_conns if max_conns > 0 else ""
    # max_fails=0: with the default (1 failure in 10 s) every 429 that
    # proxy_next_upstream retries marks the server down for 10 s, and under
    # overload both are soon "no live upstreams" -> 502 for everything.
    servers = "".join("    server %s max_fails=0%s;\n" % (u, lim) for u in ups)
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""worker_processes 1;
daemon off;
pid %(t)s/nginx.pid;
error_log %(t)s/error.log error;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path %(t)s/body;
  proxy_temp_path %(t)s/proxy;
  fastcgi_temp_path %(t)s/fcgi;
  uwsgi_temp_path %(t)s/uwsgi;
  scgi_temp_path %(t)s/scgi;
  client_body_buffer_size 64k;
  upstream aims {
%(servers)s    keepalive 64;
  }
  server {
    listen 127.0.0.1:%(port)d backlog=4096;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://aims;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream error timeout http_429 http_503 non_idempotent;
      proxy_next_upstream_tries 2;
      proxy_next_upstream_timeout 2s;
      proxy_connect_timeout 1s;
      proxy_send_timeout 2s;
      proxy_read_timeout 2s;
    }
  }
}
""" % {"t": tmp, "port": port, "servers": servers})
    return conf


def start_nginx(tmp, ups, max_conns):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    os.makedirs(tmp, exist_ok=True)
    conf = nginx_conf(tmp, port, ups, max_conns)
    p = subprocess.Popen(PREFIX + ["nginx", "-c", conf, "-p", tmp, "-e", os.path.join(tmp, "error.log")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p, port
        except OSError:
            if p.poll() is not None:
                raise RuntimeError("nginx exited: %s" % p.stderr.read().decode()[-300:])
            time.sleep(0.05)
    p.terminate()
    raise RuntimeError("nginx did not listen on %d" % port)


def peer(build, factors, seconds, max_conns_list, log):
    """R6 side by side: libaims' client vs nginx (one per max_conns value; 0 =
    no max_conns: nginx forwards everything), the same two instances."""
    exe = os.path.join(build, "bench/bench_overload")
    node = os.path.join(build, "examples/aims_node")
    rows = []
    procs = []
    ngxs = []
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        try:
            bundle = os.path.join(tmp, "mlp.bundle")
            subprocess.run([exe, "bundle", bundle, str(HIDDEN), str(LAYERS)], check=True,
                           env=node_env(), timeout=300)
            reg = spawn_registry(node)
            procs.append(reg)
            # Default batching: batch_max (64) counts rows, so one 64-row call
            # is one predict whatever the queue (docs/OVERLOAD.md, "Batches
            # are rows"; before that fix this passed batch_max=1).
            svc = ["--infer", "mlp@1=" + bundle, "--workers", "1", "--concurrency", "1"]
            for i in range(2):
                procs.append(spawn_node(node, "mlp%d" % i, reg, svc, http=True))
            ups = [p.http.replace("http://", "") for p in procs[1:]]
            for mc in max_conns_list:
                ngx, nport = start_nginx(os.path.join(tmp, "nginx%d" % mc), ups, mc)
                ngxs.append((mc, ngx, nport))
            nport = ngxs[0][2]
            time.sleep(0.5)
            cap = gen(exe, ["cap-aims", reg.addr, "mlp@1", 8, 3])["capacity_per_s"]
            caph = gen(exe, ["http", "127.0.0.1", nport, "/v2/models/mlp/versions/1/infer", 0,
                             3])["capacity_per_s"]
            log("capacity of the two instances: %.1f calls/s (libaims client, closed loop); "
                "through nginx, 8 connections: %.1f/s" % (cap, caph))
            for f in factors:
                for via, max_conns, ngx, nport in [("libaims", None, None, None)] + [
                        ("nginx" if mc > 0 else "nginx_no_max_conns", mc, n, p)
                        for mc, n, p in ngxs]:
                    urls = [p.http for p in procs[1:]]

                    def snap():
                        return (runs_executed(urls), [proc_cpu_s(p.p.pid) for p in procs[1:]],
                                sum(proc_cpu_s(q) or 0 for q in nginx_pids(ngx)) if ngx else 0)
                    if ngx is None:
                        r, m = gen_phase(exe, ["aims", reg.addr, "mlp@1", f * cap, seconds], snap)
                    else:
                        r, m = gen_phase(exe, ["http", "127.0.0.1", nport,
                                               "/v2/models/mlp/versions/1/infer", f * cap,
                                               seconds], snap)
                    e0, c0, n0 = m if m else (None, [], 0)
                    e1 = runs_executed(urls)
                    runs = e1 - e0 if e0 is not None and e1 is not None else None
                    c1 = [proc_cpu_s(p.p.pid) for p in procs[1:]]
                    n1 = sum(proc_cpu_s(q) or 0 for q in nginx_pids(ngx)) if ngx else 0
                    r.update({"bench": "R6-peer", "via": via, "factor": f, "instances": 2,
                              "capacity_per_s": cap, "capacity_http_per_s": caph,
                              "goodput_pct_of_capacity": round(100.0 * r["goodput_per_s"] / cap, 1),
                              "goodput_pct_of_http_capacity":
                                  round(100.0 * r["goodput_per_s"] / caph, 1) if caph else None,
                              "nginx_max_conns": max_conns,
                              "runs_executed": runs, "load1_after": load1(),
                              "useful_pct_of_runs":
                                  round(100.0 * r["ok"] / runs, 1) if runs else None,
                              "instances_cpu_s": [round(b - a, 2) for a, b in zip(c0, c1)
                                                  if a is not None and b is not None],
                              "nginx_cpu_s": round(n1 - n0, 2) if ngx else None})
                    log("%-18s %.2fx: goodput %.1f/s = %.0f %% of capacity; answered in time "
                        "%s %% of the runs executed; ok p99 %.1f ms; timeouts %d, rejected %d %s; "
                        "generator cpu %.2f s, load %.1f" % (
                            via, f, r["goodput_per_s"], r["goodput_pct_of_capacity"],
                            r["useful_pct_of_runs"], r["ok_p99_ms"], r["timeout"], r["rejected"],
                            r["codes"], r["gen_cpu_s"], r["load1_after"]))
                    rows.append(r)
                    time.sleep(1.0)
        finally:
            for _, ngx, _ in ngxs:
                ngx.terminate()
                ngx.wait()
            for p in reversed(procs):
                p.stop()
    return rows


def nginx_pids(ngx):
    """nginx master and its worker(s)."""
    pids = [ngx.pid]
    try:
        with open("/proc/%d/task/%d/children" % (ngx.pid, ngx.pid)) as f:
            pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return pids


def hung(build, seconds, rate, log):
    """R4b: one of three instances SIGSTOPped for 4 s under a steady load."""
    exe = os.path.join(build, "bench/bench_overload")
    node = os.path.join(build, "examples/aims_node")
    procs = []
    try:
        reg = spawn_registry(node)
        procs.append(reg)
        svc = ["--echo", "echo", "--slow-us", "1000", "--workers", "2"]
        for i in range(3):
            procs.append(spawn_node(node, "echo%d" % i, reg, svc))
        time.sleep(0.5)
        g = subprocess.Popen(PREFIX + [exe, "aims", reg.addr, "echo", str(rate), str(seconds), "echo",
                              "nodirect"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = g.stdout.readline()
        if line.strip() != "start":
            raise RuntimeError("generator did not start: %s %s" % (line, g.stderr.read()[-300:]))
        time.sleep(3.0)
        victim = procs[2].p
        victim.send_signal(signal.SIGSTOP)
        time.sleep(4.0)
        victim.send_signal(signal.SIGCONT)
        out, err = g.communicate(timeout=seconds + 30)
        rows = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        if not rows:
            raise RuntimeError("generator failed: %s" % err[-300:])
        r = rows[-1]
        r.update({"bench": "R4b-hung", "instances": 3, "stopped_s": 4.0,
                  "failed": r["issued"] - r["ok"]})
        log("R4b: %d calls at %.0f/s, one of 3 instances stopped 4 s: %d failed (%d timeouts, "
            "%d rejected, %d late); ok p50 %.2f ms p99 %.2f ms max %.1f ms" % (
                r["issued"], rate, r["failed"], r["timeout"], r["rejected"], r["late"],
                r["ok_p50_ms"], r["ok_p99_ms"], r["ok_max_ms"]))
        return [r]
    finally:
        for p in reversed(procs):
            p.stop()


def lifo(build, factors, seconds, log):
    """FIFO (default) vs LIFO vs LIFO without the adaptive limit, one instance."""
    exe = os.path.join(build, "bench/bench_overload")
    node = os.path.join(build, "examples/aims_node")
    variants = [("fifo", []), ("lifo", ["--param", "lifo=1"]),
                ("lifo_no_climit", ["--param", "lifo=1", "--param", "climit_tolerance_pct=0"])]
    rows = []
    for name, extra in variants:
        procs = []
        try:
            reg = spawn_registry(node)
            procs.append(reg)
            svc = ["--echo", "echo", "--slow-us", "10000", "--workers", "1", "--concurrency", "1"]
            procs.append(spawn_node(node, "echo", reg, svc, extra))
            time.sleep(0.3)
            cap = gen(exe, ["cap-aims", reg.addr, "echo", 6, 3, "echo"])["capacity_per_s"]
            for f in factors:
                r = gen(exe, ["aims", reg.addr, "echo", f * cap, seconds, "echo"])
                r.update({"bench": "R6-lifo", "variant": name, "factor": f, "instances": 1,
                          "capacity_per_s": cap,
                          "goodput_pct_of_capacity": round(100.0 * r["goodput_per_s"] / cap, 1)})
                log("%-14s %.2fx: goodput %.1f/s = %.0f %% of %.1f/s; ok p50 %.1f p99 %.1f ms; "
                    "rejected %d (p50 %.2f p99 %.2f ms), timeouts %d; node's rejections n %d "
                    "p50 %.2f p99 %.2f max %.2f ms" % (
                        name, f, r["goodput_per_s"], r["goodput_pct_of_capacity"], cap,
                        r["ok_p50_ms"], r["ok_p99_ms"], r["rejected"], r["reject_p50_ms"],
                        r["reject_p99_ms"], r["timeout"], r["node_reject_n"],
                        r["node_reject_p50_ms"], r["node_reject_p99_ms"],
                        r["node_reject_max_ms"]))
                rows.append(r)
                time.sleep(0.5)
        finally:
            for p in reversed(procs):
                p.stop()
    return rows
