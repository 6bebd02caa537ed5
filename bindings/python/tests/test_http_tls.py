"""aims.HttpServer (the HTTP front door of a node) and aims.TlsConfig (mutual
TLS on tls://) through the binding. The HTTP tests use urllib on loopback; the
TLS tests make a throw-away PKI with tests/support/mkcerts.sh (openssl CLI).
"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest
import urllib.error
import urllib.request

import aims
from aims_testutil import source_dir

import test_svc as _ts


def get(url, timeout=10):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def built_with_http():
    try:
        with aims.Node(_ts.unique("probe")) as n:
            aims.HttpServer(n).close()
        return True
    except aims.AimsUnsupportedError:
        return False


@_ts.needs("aims_http_create")
class TestHttpServer(_ts.ServiceCase):
    def setUp(self):
        super().setUp()
        if not built_with_http():
            self.skipTest("libaims built without HTTP")

    def test_probes_metrics_and_v2(self):
        node, _svc = self.echo_node()
        with aims.HttpServer(node, listen="127.0.0.1:0", threads=2,
                             http_timeout_ms=5000) as http:
            self.assertIn("not started", repr(http))
            self.assertAimsError(aims.AIMS_E_STATE, lambda: http.url)
            http.start()
            url = http.url
            self.assertTrue(url.startswith("http://127.0.0.1:"), url)
            self.assertEqual(get(url + "/v2/health/live")[0], 200)
            self.assertEqual(get(url + "/v2/health/ready")[0], 200)
            status, body = get(url + "/v2")
            self.assertEqual(status, 200)
            self.assertIsInstance(json.loads(body), dict)
            status, body = get(url + "/metrics")
            self.assertEqual(status, 200)
            self.assertIn(b"# TYPE", body)
            self.assertEqual(get(url + "/v2/models/no_such_model")[0], 404)
            http.stop()
            http.stop()                                     # idempotent
            http.start()                                    # may start again
            self.assertEqual(get(http.url + "/v2/health/live")[0], 200)
        self.assertTrue(http.closed)
        self.assertAimsError(aims.AIMS_E_CLOSED, http.start)

    def test_misuse(self):
        node, _svc = self.echo_node()
        with self.assertRaises(TypeError):
            aims.HttpServer("not a node")
        http = aims.HttpServer(node)
        try:
            self.assertAimsError(aims.AIMS_E_INVAL, http.set_listen, "no port here")
            self.assertAimsError(aims.AIMS_E_RANGE, http.set_param, "threads", 0)
            self.assertAimsError(aims.AIMS_E_NOTFOUND, http.set_param, "no_such_param", 1)
            http.set_listen("0.0.0.0:0")                    # not loopback: needs insecure
            err = self.assertAimsError(aims.AIMS_E_STATE, http.start)
            self.assertIn("insecure", str(err).lower())
        finally:
            http.close()

    def test_node_close_stops_its_server(self):
        name = _ts.unique("httpnode")
        node = aims.Node(name, drain_grace_ms=1)
        node.listen("inproc://" + name)
        http = aims.HttpServer(node).start()
        self.assertEqual(get(http.url + "/v2/health/live")[0], 200)
        node.close()                   # stops and frees the server first
        self.assertTrue(http.closed)
        http.close()


def make_pki(tmp):
    script = os.path.join(source_dir(), "tests", "support", "mkcerts.sh")
    if not shutil.which("openssl") or not os.path.exists(script):
        raise unittest.SkipTest("needs the openssl CLI and tests/support/mkcerts.sh")
    subprocess.run(["sh", script, tmp], check=True, timeout=120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return lambda name: os.path.join(tmp, name)


@_ts.needs("aims_tls_config_create", "aims_node_set_tls", "aims_client_set_tls")
class TestTls(_ts.ServiceCase):
    @classmethod
    def setUpClass(cls):
        cls.pki_dir = tempfile.mkdtemp(prefix="aims-py-pki-")
        cls.pki = staticmethod(make_pki(cls.pki_dir))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki_dir, ignore_errors=True)

    def tls_node(self, **tls):
        p = self.pki
        cfg = aims.TlsConfig(ca=p("ca.pem"), cert=p("node.pem"), key=p("node.key"), **tls)
        node = self.node(_ts.unique("tlsnode"), workers=2)
        node.set_tls(cfg)
        cfg.close()                    # the node holds its own reference
        addr = node.listen("tls://127.0.0.1:0")
        node.add_handler("echo", _ts.echo).start()
        return node, addr

    def test_mutual_tls_call(self):
        p = self.pki
        _node, addr = self.tls_node(peer_names=["client1.aims"], handshake_timeout_ms=5000)
        self.assertTrue(addr.startswith("tls://127.0.0.1:"), addr)
        with aims.TlsConfig(ca=p("ca.pem"), cert=p("client.pem"), key=p("client.key")) as cfg:
            self.assertIn("client1.aims", cfg.identity)
            cfg.reload()
            c = self.own(aims.Client(max_attempts=1)).set_tls(cfg)
        self.assertEqual(c.call_addr(addr, "echo", "ping", {"x": b"tls"})["x"], b"tls")

    def test_peer_name_refused_and_misuse(self):
        p = self.pki
        _node, addr = self.tls_node(peer_names=["client1.aims"])
        cfg = aims.TlsConfig(ca=p("ca.pem"), cert=p("client2.pem"), key=p("client2.key"))
        c = self.own(aims.Client(max_attempts=1)).set_tls(cfg)
        cfg.close()
        with self.assertRaises(aims.AimsError):
            c.call_addr(addr, "echo", "ping", {}, timeout_ms=5000)
        with aims.TlsConfig() as bad:
            err = self.assertAimsError(aims.AIMS_E_NOTFOUND, bad.set_ca,
                                       os.path.join(self.pki_dir, "missing.pem"))
            self.assertIn("missing.pem", str(err))
            self.assertEqual(bad.identity, "")
        with self.assertRaises(TypeError):
            c.set_tls("ca.pem")

    def test_https_front_door(self):
        """HttpServer.set_tls: the door answers over HTTPS with the node's
        certificate, verified against the test CA; not without the CA."""
        if not built_with_http():
            self.skipTest("libaims built without HTTP")
        import ssl
        p = self.pki
        node, _addr = self.tls_node()
        with aims.TlsConfig(ca=p("ca.pem"), cert=p("node.pem"), key=p("node.key")) as cfg, \
                aims.HttpServer(node, listen="127.0.0.1:0") as http:
            http.set_tls(cfg).start()
            url = http.url
            self.assertTrue(url.startswith("https://127.0.0.1:"), url)
            ctx = ssl.create_default_context(cafile=p("ca.pem"))
            with urllib.request.urlopen(url + "/v2/health/live", timeout=10, context=ctx) as r:
                self.assertEqual(r.status, 200)
            with self.assertRaises(urllib.error.URLError):
                urllib.request.urlopen(url + "/v2/health/live", timeout=10,
                                       context=ssl.create_default_context())
            with self.assertRaises(TypeError):
                http.set_tls("node.pem")
            self.assertAimsError(aims.AIMS_E_STATE, http.set_tls, cfg)   # running
        with aims.TlsConfig(ca=p("ca.pem")) as no_cert, \
                aims.HttpServer(node, listen="127.0.0.1:0") as http:
            self.assertAimsError(aims.AIMS_E_STATE, http.set_tls, no_cert)

    def test_https_front_door_client_certs(self):
        """HttpServer.set_tls with a CA and peer names: mutual TLS at the door,
        client1's certificate in, no certificate or client2's out (403)."""
        if not built_with_http():
            self.skipTest("libaims built without HTTP")
        import ssl
        p = self.pki
        node, _addr = self.tls_node()
        with aims.TlsConfig(ca=p("ca.pem"), cert=p("node.pem"), key=p("node.key"),
                            peer_names=["client1.aims"]) as cfg, \
                aims.HttpServer(node, listen="127.0.0.1:0") as http:
            http.set_tls(cfg).start()
            url = http.url + "/v2/health/live"
            ctx = ssl.create_default_context(cafile=p("ca.pem"))
            ctx.load_cert_chain(p("client.pem"), p("client.key"))
            with urllib.request.urlopen(url, timeout=10, context=ctx) as r:
                self.assertEqual(r.status, 200)
            for who in (None, "client2"):
                ctx = ssl.create_default_context(cafile=p("ca.pem"))
                if who:
                    ctx.load_cert_chain(p(who + ".pem"), p(who + ".key"))
                with self.assertRaises(urllib.error.HTTPError) as e:
                    urllib.request.urlopen(url, timeout=10, context=ctx)
                self.assertEqual(e.exception.code, 403)
                self.assertIn(b"client certificate", e.exception.read())


if __name__ == "__main__":
    unittest.main()
