#!/usr/bin/env python3
"""check_deploy.py -- static check of deploy/ (and a live run of deploy/local.sh).

Kubernetes' own validator needs an API server, so this checks, offline, the
fields of the objects deploy/k8s uses that Kubernetes requires or that must
agree with each other and with the rest of the tree:

  - every document parses as YAML and has apiVersion, kind, metadata.name;
  - workloads: selector labels match the pod template, containers have name,
    image and resource requests, probes point at declared container ports;
    Services and PodDisruptionBudgets select an existing workload; a
    StatefulSet's serviceName is a Service in the set;
  - aims_node containers: the image is the one deploy/Containerfile documents,
    every flag is one the daemon parses (examples/aims_node.c), flags come as
    "--flag value" pairs, and --join / --listen / --heartbeat-ms / replicas
    agree with deploy/topology.env;
  - deploy/Containerfile: Debian 12 stages, a non-root USER, the daemon as
    ENTRYPOINT;
  - security (check_security.py): Secrets made by deploy/certs.sh defined for
    every reference, flag paths under volumeMounts, probes on the front
    door's endpoints, ServiceAccounts without tokens, securityContexts.

Then, when argv[1] is the aims_node binary and etcd is installed, it runs
`deploy/local.sh check` on free loopback ports (3 etcd members + nodes), over
plain http and again with AIMS_ETCD_TLS=1 (etcd https + client certificates).
Usage: check_deploy.py [AIMS_NODE]
"""
import os
import re
import shutil
import socket
import subprocess
import sys

try:
    import yaml
except ImportError:
    print("# python3-yaml not installed: skipped")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_security  # noqa: E402 (after the yaml check)
from check_security import get  # noqa: E402

SRC = os.environ.get("AIMS_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
DEPLOY = os.path.join(SRC, "deploy")
errors = []


def err(msg):
    errors.append(msg)
    print("FAIL:", msg)


def topology():
    env = {}
    for line in open(os.path.join(DEPLOY, "topology.env")):
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            k, v = line.split("=", 1)
            env[k] = v
    return env


def daemon_flags():
    text = open(os.path.join(SRC, "examples", "aims_node.c")).read()
    flags = set(re.findall(r'strcmp\((?:flag|argv\[i\]), "(--[a-z-]+)"\)', text))
    if not flags:
        err("no flags found in examples/aims_node.c")
    return flags


def containerfile():
    text = open(os.path.join(DEPLOY, "Containerfile")).read()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    if len(froms) < 2 or not all("debian:12" in f for f in froms):
        err("Containerfile: expected a multi-stage build on debian:12, got %s" % froms)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    if not users or users[-1].split(":")[0] in ("0", "root"):
        err("Containerfile: the runtime stage must set a non-root USER")
    m = re.search(r'^ENTRYPOINT\s+\["([^"]+)"', text, re.M)
    if not m or not m.group(1).endswith("/aims_node"):
        err("Containerfile: ENTRYPOINT must be the aims_node daemon")
    tag = re.search(r"-t\s+(\S+)", text)
    return (m.group(1) if m else None), (tag.group(1) if tag else None)


def check_manifests(env, flags, image):
    docs = []
    kdir = os.path.join(DEPLOY, "k8s")
    for name in sorted(os.listdir(kdir)):
        if name.endswith(".yaml"):
            with open(os.path.join(kdir, name)) as f:
                for d in yaml.safe_load_all(f):
                    if d is not None:
                        docs.append((name, d))
    workloads, services = [], {}
    for fname, d in docs:
        where = "%s: %s/%s" % (fname, d.get("kind"), get(d, "metadata.name"))
        for field in ("apiVersion", "kind", "metadata"):
            if field not in d:
                err("%s: missing %s" % (where, field))
        if not get(d, "metadata.name"):
            err("%s: missing metadata.name" % where)
        kind = d.get("kind")
        if kind in ("Deployment", "StatefulSet"):
            workloads.append((where, d))
        elif kind == "Service":
            services[get(d, "metadata.name")] = d
            if not get(d, "spec.ports"):
                err("%s: spec.ports is required" % where)
        elif kind == "PodDisruptionBudget":
            if get(d, "spec.minAvailable") is None and get(d, "spec.maxUnavailable") is None:
                err("%s: needs minAvailable or maxUnavailable" % where)
        elif kind not in ("Job", "ServiceAccount", "Secret"):
            err("%s: kind not checked by this script" % where)

    def selects(sel):
        return [w for w in workloads
                if sel and all(get(w[1], "spec.template.metadata.labels", {}).get(k) == v
                               for k, v in sel.items())]

    for fname, d in docs:
        where = "%s: %s/%s" % (fname, d.get("kind"), get(d, "metadata.name"))
        if d.get("kind") == "Service" and not selects(get(d, "spec.selector")):
            err("%s: selector matches no workload" % where)
        if d.get("kind") == "PodDisruptionBudget" and not selects(get(d, "spec.selector.matchLabels")):
            err("%s: selector matches no workload" % where)

    prefix = env["AIMS_PREFIX"]
    replicas_by_service = {env["ECHO_SERVICE"]: int(env["ECHO_REPLICAS"]),
                           env["INFER_SERVICE"]: int(env["INFER_REPLICAS"])}
    for where, w in workloads:
        sel = get(w, "spec.selector.matchLabels")
        labels = get(w, "spec.template.metadata.labels", {})
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            err("%s: spec.selector.matchLabels must match the template labels" % where)
        if w["kind"] == "StatefulSet":
            if get(w, "spec.serviceName") not in services:
                err("%s: serviceName is not a Service here" % where)
            if int(get(w, "spec.replicas", 1)) != int(env["ETCD_MEMBERS"]):
                err("%s: replicas != ETCD_MEMBERS of topology.env" % where)
        containers = get(w, "spec.template.spec.containers") or []
        if not containers:
            err("%s: no containers" % where)
        for c in containers:
            cw = "%s container %s" % (where, c.get("name"))
            if not c.get("name") or not c.get("image"):
                err("%s: name and image are required" % cw)
            if not get(c, "resources.requests"):
                err("%s: resources.requests missing" % cw)
            ports = {p.get("containerPort") for p in c.get("ports", [])}
            names = {p.get("name") for p in c.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                pr = c.get(probe)
                if pr is None:
                    err("%s: %s missing" % (cw, probe))
                    continue
                port = get(pr, "tcpSocket.port", get(pr, "httpGet.port"))
                if port not in ports and port not in names:
                    err("%s: %s port %s is not a container port" % (cw, probe, port))
            if c.get("name") != "aims-node":
                continue
            if image and c.get("image") != image:
                err("%s: image %s, Containerfile builds %s" % (cw, c.get("image"), image))
            args = c.get("args") or []
            if c.get("command"):
                err("%s: must not override the Containerfile's ENTRYPOINT" % cw)
            kv = {}
            i = 0
            while i < len(args):
                a = str(args[i])
                if a not in flags:
                    err("%s: '%s' is not a flag of aims_node" % (cw, a))
                if a == "--host-registry":
                    i += 1
                    continue
                if i + 1 >= len(args) or str(args[i + 1]).startswith("--"):
                    err("%s: %s needs a value (the daemon takes '--flag value')" % (cw, a))
                    break
                kv.setdefault(a, []).append(str(args[i + 1]))
                i += 2
            join = kv.get("--join", [""])[0]
            if not re.match(r"^etcd://[^/]+/%s(\?.*)?$" % re.escape(prefix), join):
                err("%s: --join %s is not etcd://.../%s" % (cw, join, prefix))
            listen = kv.get("--listen", [""])[0]
            if not listen.endswith(":" + env["AIMS_PORT"]) or int(env["AIMS_PORT"]) not in ports:
                err("%s: --listen %s / containerPort disagree with AIMS_PORT" % (cw, listen))
            if kv.get("--heartbeat-ms") != [env["AIMS_HEARTBEAT_MS"]]:
                err("%s: --heartbeat-ms != AIMS_HEARTBEAT_MS" % cw)
            svcs = kv.get("--echo", []) + [s.split("=", 1)[0] for s in kv.get("--infer", [])]
            for s in svcs:
                if s in replicas_by_service and int(get(w, "spec.replicas", 1)) != replicas_by_service[s]:
                    err("%s: replicas of %s disagree with topology.env" % (cw, s))
    n = check_security.check(SRC, DEPLOY, docs, err)
    print("# %d objects checked (+%d Secrets made by deploy/certs.sh)" % (len(docs), n))


def free_base():
    """Six consecutive free loopback ports for local.sh (3 etcd members x client+peer).

    Bases are drawn below Linux's ephemeral range (32768+): the test suite's own
    connections leave thousands of TIME_WAIT sockets there, and a port with one
    cannot be bound. Probes use SO_REUSEADDR, as etcd's (Go's) listeners do."""
    import random
    rng = random.Random(os.getpid())
    for _ in range(400):
        base = rng.randrange(20000, 32000)
        ok = True
        for p in range(base, base + 6):
            t = socket.socket()
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                t.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            t.close()
            if not ok:
                break
        if ok:
            return base
    return None


def main():
    env = topology()
    flags = daemon_flags()
    entry, image = containerfile()
    check_manifests(env, flags, image)
    if errors:
        print("%d problem(s)" % len(errors))
        return 1
    node = sys.argv[1] if len(sys.argv) > 1 else None
    if node and shutil.which("etcd") and shutil.which("etcdctl"):
        # plain, then TLS to etcd as in deploy/k8s (AIMS_ETCD_TLS=1: certs.sh PKI)
        for tls in ("0", "1") if shutil.which("openssl") else ("0",):
            base = free_base()
            if base is None:
                print("FAIL: no 6 consecutive free loopback ports in 20000-32000 for local.sh")
                return 1
            e = dict(os.environ, AIMS_NODE=node, ETCD_BASE_PORT=str(base), AIMS_ETCD_TLS=tls,
                     AIMS_LOCAL_DIR=os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                 "aims-local-%d-%s" % (os.getpid(), tls)))
            r = subprocess.run([os.path.join(DEPLOY, "local.sh"), "check"], env=e, timeout=120)
            if r.returncode != 0:
                print("FAIL: AIMS_ETCD_TLS=%s deploy/local.sh check exited %d" % (tls, r.returncode))
                return 1
    else:
        print("# no daemon path or no etcd: deploy/local.sh not run")
    print("deploy: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
