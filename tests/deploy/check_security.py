"""check_security.py -- the security half of check_deploy.py (issue 13).

Checks, offline, what a cluster would only reveal at pod start:
  - the Secrets: made by `deploy/certs.sh DIR --k8s` (the openssl CLI) into a
    temporary directory and loaded with the manifests; every Secret a workload
    references (secret volumes, secretKeyRef, envFrom) is defined, and every
    key a mounted path needs is in it; the certificates verify against the CA
    and the etcd certificate names every host of the --join URL;
  - every file path a flag uses (aims_node's --tls-*, --join ?cacert=&cert=&key=,
    --policy, --model-dir, NAME=PATH bundles; etcd's --*-file) lies under a
    volumeMount of that container, secret mounts are readOnly;
  - ServiceAccounts exist and do not automount a token; pods run non-root,
    containers with a read-only root fs, no privilege escalation, all
    capabilities dropped;
  - probes: an httpGet probe of aims_node hits an endpoint the HTTP front door
    serves (src/svc/http/: the routing in http_request.c) on the --http port, HTTPS iff the door
    has --tls-cert; etcd's probes hit /health on its metrics listener;
  - TLS agrees end to end: tls:// listens have --tls-cert/--tls-key, a --join
    with ?cacert= goes to an etcd serving https, and etcd with
    --client-cert-auth gets cert= and key= from every node.
"""
import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse

import yaml

NODE_PATH_FLAGS = ("--tls-ca", "--tls-cert", "--tls-key", "--policy", "--model-dir",
                   "--train-store")


def get(obj, path, default=None):
    for p in path.split("."):
        if not isinstance(obj, dict) or p not in obj:
            return default
        obj = obj[p]
    return obj


def make_secrets(deploy, err):
    """Run deploy/certs.sh --k8s; return (Secret docs, the PKI dir or None)."""
    tmp = tempfile.mkdtemp(prefix="aims-certs-")
    r = subprocess.run(["sh", os.path.join(deploy, "certs.sh"), tmp, "--k8s"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        err("deploy/certs.sh --k8s failed: %s" % r.stderr.strip())
        return [], None
    with open(os.path.join(tmp, "secrets.yaml")) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for cert in ("etcd.pem", "etcd-client.pem", "node.pem"):
        v = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(tmp, "ca.pem"),
                            os.path.join(tmp, cert)], capture_output=True, text=True)
        if v.returncode != 0:
            err("certs.sh: %s does not verify against ca.pem: %s" % (cert, v.stdout + v.stderr))
    return docs, tmp


def cert_names(pki, cert):
    r = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                        os.path.join(pki, cert)], capture_output=True, text=True)
    return set(re.findall(r"(?:DNS|IP Address):([^,\s]+)", r.stdout))


def name_matches(host, names):
    for n in names:
        if n == host:
            return True
        if n.startswith("*.") and "." in host and host.split(".", 1)[1] == n[2:]:
            return True
    return False


def door_endpoints(src):
    """The paths the door's routing compares the URL with, in any file of src/svc/http/
    (the routing moved from http_server.c to http_request.c when it was split by job)."""
    folder = os.path.join(src, "src", "svc", "http")
    found = set()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".c"):
            with open(os.path.join(folder, name)) as f:
                found |= set(re.findall(r'strcmp\(url, "(/[^"]*)"\)', f.read()))
    return found


def node_args(c):
    """aims_node's '--flag value' args (and AIMS_NODE_<FLAG> env) as {flag: [values]}."""
    kv, args, i = {}, [str(a) for a in c.get("args") or []], 0
    while i < len(args):
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            kv.setdefault(args[i], []).append(args[i + 1])
            i += 2
        else:
            kv.setdefault(args[i], []).append("1")
            i += 1
    for e in c.get("env") or []:
        n = e.get("name", "")
        if n.startswith("AIMS_NODE_") and "value" in e:
            kv.setdefault("--" + n[10:].lower().replace("_", "-"), []).append(str(e["value"]))
    return kv


def etcd_args(c):
    kv = {}
    for a in (c.get("command") or [])[1:] + (c.get("args") or []):
        a = str(a)
        if a.startswith("--"):
            k, _, v = a.partition("=")
            kv[k] = v if _ else "1"
    return kv


def node_paths(kv):
    paths = []
    for f in NODE_PATH_FLAGS:
        paths += [(f, v) for v in kv.get(f, [])]
    for f in ("--infer", "--preprocess", "--train"):
        for v in kv.get(f, []):
            if "=" in v and v.split("=", 1)[1].startswith("/"):
                paths.append((f, v.split("=", 1)[1]))
    for j in kv.get("--join", []):
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(j).query)
        for opt in ("cacert", "cert", "key"):
            paths += [("--join ?%s=" % opt, v) for v in q.get(opt, [])]
    return paths


def port_of(c, port):
    for p in c.get("ports", []):
        if port in (p.get("name"), p.get("containerPort")):
            return p.get("containerPort")
    return None


def check(src, deploy, docs, err):
    """docs: [(file, object)] of deploy/k8s. Returns the number of Secrets made."""
    secret_docs, pki = make_secrets(deploy, err)
    secrets = {get(d, "metadata.name"): d for d in secret_docs}
    for _, d in docs:
        if d.get("kind") == "Secret":
            secrets[get(d, "metadata.name")] = d
    sas = {get(d, "metadata.name"): d for _, d in docs if d.get("kind") == "ServiceAccount"}
    for name, sa in sas.items():
        if sa.get("automountServiceAccountToken") is not False:
            err("ServiceAccount/%s: automountServiceAccountToken must be false" % name)
    endpoints = door_endpoints(src)
    etcd_c = None
    for _, d in docs:
        if d.get("kind") == "StatefulSet":
            for c in get(d, "spec.template.spec.containers") or []:
                if c.get("name") == "etcd":
                    etcd_c = etcd_args(c)
    for fname, w in docs:
        if w.get("kind") not in ("Deployment", "StatefulSet", "Job"):
            continue
        where = "%s: %s/%s" % (fname, w["kind"], get(w, "metadata.name"))
        pod = get(w, "spec.template.spec", {})
        sa = pod.get("serviceAccountName")
        if sa not in sas:
            err("%s: serviceAccountName %s is not a ServiceAccount here" % (where, sa))
        if pod.get("automountServiceAccountToken") is not False:
            err("%s: pod must set automountServiceAccountToken: false" % where)
        psc = pod.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser"):
            err("%s: pod securityContext must run as a non-root runAsUser" % where)
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        for v in volumes.values():
            sn = get(v, "secret.secretName")
            if v.get("secret") is not None and sn not in secrets:
                err("%s: volume %s: Secret %s is not defined" % (where, v.get("name"), sn))
        for c in pod.get("containers") or []:
            cw = "%s container %s" % (where, c.get("name"))
            sc = c.get("securityContext") or {}
            if sc.get("readOnlyRootFilesystem") is not True:
                err("%s: readOnlyRootFilesystem must be true" % cw)
            if sc.get("allowPrivilegeEscalation") is not False:
                err("%s: allowPrivilegeEscalation must be false" % cw)
            if "ALL" not in (get(sc, "capabilities.drop") or []):
                err("%s: capabilities.drop must hold ALL" % cw)
            for e in c.get("env") or []:
                ref = get(e, "valueFrom.secretKeyRef")
                if ref and (ref.get("name") not in secrets or
                            ref.get("key") not in (secrets[ref["name"]].get("data") or {})):
                    err("%s: env %s: secret key %s/%s is not defined" %
                        (cw, e.get("name"), ref.get("name"), ref.get("key")))
            for e in c.get("envFrom") or []:
                n = get(e, "secretRef.name")
                if n and n not in secrets:
                    err("%s: envFrom Secret %s is not defined" % (cw, n))
            mounts = c.get("volumeMounts") or []
            for m in mounts:
                v = volumes.get(m.get("name"))
                if v is None and m.get("name") not in [get(t, "metadata.name") for t in
                                                       get(w, "spec.volumeClaimTemplates", [])]:
                    err("%s: volumeMount %s has no volume" % (cw, m.get("name")))
                if v is not None and v.get("secret") is not None and m.get("readOnly") is not True:
                    err("%s: secret volume %s must be mounted readOnly" % (cw, m.get("name")))

            def mounted(flag, path):
                best = None
                for m in mounts:
                    mp = m.get("mountPath", "").rstrip("/")
                    if path == mp or path.startswith(mp + "/"):
                        if best is None or len(mp) > len(best.get("mountPath", "")):
                            best = m
                if best is None:
                    err("%s: %s %s is in no volumeMount" % (cw, flag, path))
                    return
                v = volumes.get(best.get("name")) or {}
                sn = get(v, "secret.secretName")
                if sn in secrets:
                    key = path[len(best["mountPath"].rstrip("/")) + 1:]
                    items = get(v, "secret.items")
                    keys = ({i.get("path"): i.get("key") for i in items} if items else
                            {k: k for k in secrets[sn].get("data") or {}})
                    if key not in keys:
                        err("%s: %s %s: key %s is not in Secret %s" % (cw, flag, path, key, sn))

            if c.get("name") == "etcd":
                kv = etcd_args(c)
                for k, v in kv.items():
                    if k.endswith("-file") or k == "--data-dir":
                        mounted(k, v)
                metrics = kv.get("--listen-metrics-urls", "")
                for probe in ("readinessProbe", "livenessProbe"):
                    pr = c.get(probe) or {}
                    if pr.get("httpGet") is not None:
                        port = port_of(c, get(pr, "httpGet.port"))
                        plain = metrics if metrics.startswith("http://") else (
                            kv.get("--listen-client-urls", "") if
                            kv.get("--listen-client-urls", "").startswith("http://") else "")
                        if get(pr, "httpGet.path") != "/health" or not plain or \
                                not plain.endswith(":%s" % port):
                            err("%s: %s must GET /health on a plain-http listener of etcd" %
                                (cw, probe))
                continue
            if c.get("name") != "aims-node":
                continue
            kv = node_args(c)
            for flag, path in node_paths(kv):
                mounted(flag, path)
            tls_cert = bool(kv.get("--tls-cert"))
            if bool(kv.get("--tls-key")) != tls_cert:
                err("%s: --tls-cert and --tls-key go together" % cw)
            for lst in kv.get("--listen", []):
                if lst.startswith("tls://") and not (tls_cert and kv.get("--tls-ca")):
                    err("%s: --listen %s needs --tls-ca/--tls-cert/--tls-key" % (cw, lst))
                if lst.startswith("tcp://") and not re.match(r"tcp://(127\.|localhost|\[::1\])",
                                                             lst) and not kv.get("--insecure"):
                    err("%s: --listen %s: plain tcp off loopback is refused without --insecure"
                        % (cw, lst))
            http = (kv.get("--http") or [None])[0]
            http_port = int(http.rsplit(":", 1)[1]) if http else None
            for probe in ("readinessProbe", "livenessProbe"):
                pr = c.get(probe) or {}
                hg = pr.get("httpGet")
                if hg is None:
                    continue
                if not http:
                    err("%s: %s is httpGet but the daemon has no --http door" % (cw, probe))
                    continue
                if hg.get("path") not in endpoints:
                    err("%s: %s path %s is not an endpoint of the front door %s" %
                        (cw, probe, hg.get("path"), sorted(endpoints)))
                if port_of(c, hg.get("port")) != http_port:
                    err("%s: %s port %s is not the --http port %s" % (cw, probe, hg.get("port"),
                                                                       http_port))
                if (hg.get("scheme", "HTTP") == "HTTPS") != tls_cert:
                    err("%s: %s scheme %s but the door serves %s" %
                        (cw, probe, hg.get("scheme", "HTTP"), "HTTPS" if tls_cert else "HTTP"))
            for j in kv.get("--join", []):
                u = urllib.parse.urlsplit(j)
                q = urllib.parse.parse_qs(u.query)
                if etcd_c is None:
                    continue
                https = etcd_c.get("--listen-client-urls", "").startswith("https://")
                if https != ("cacert" in q):
                    err("%s: --join %s TLS options disagree with etcd's client urls" % (cw, j))
                if "--client-cert-auth" in etcd_c and not ("cert" in q and "key" in q):
                    err("%s: etcd requires client certificates: --join needs cert= and key=" % cw)
                if pki and https:
                    names = cert_names(pki, "etcd.pem")
                    for hp in u.netloc.rsplit("@", 1)[-1].split(","):
                        if not name_matches(hp.rsplit(":", 1)[0], names):
                            err("%s: etcd certificate (certs.sh) does not name %s" % (cw, hp))
    if pki:
        shutil.rmtree(pki, ignore_errors=True)
    return len(secret_docs)
