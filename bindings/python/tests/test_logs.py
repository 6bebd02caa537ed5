"""Failures to reach a registry are logged with the URL and the cause, for
every registry backend: a node joining an etcd:// registry nobody serves
logs an error before it says ready (so within its start-up, no waiting), a
client says since when and why no instance is live, and `aims call
--registry` with --log-format json shows both the record and the reason."""

import json
import subprocess
import unittest

import aims

from aims_testutil import LeakCheckCase
from test_cli import EXE as CLI
from test_daemon import EXE as NODE, clean_env

DEAD_ETCD = "etcd://127.0.0.1:1/aims"  # port 1 on loopback: nothing listens


def etcd_built():
    try:
        with aims.Client() as c:
            c.join(DEAD_ETCD)
        return True
    except aims.AimsError as e:  # "built without etcd"
        return "built without" not in str(e)


@unittest.skipIf(NODE is None or CLI is None, "aims-node / aims not built")
@unittest.skipIf(not etcd_built(), "libaims built without the etcd backend")
class RegistryLogTest(LeakCheckCase):
    def test_node_join_dead_etcd_logged_before_ready(self):
        p = subprocess.Popen([NODE, "--name", "n1", "--listen", "tcp://127.0.0.1:0",
                              "--join", DEAD_ETCD, "--echo", "e1", "--log-format", "json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=clean_env())
        try:
            self.assertTrue(p.stdout.readline().startswith("ready "))
            p.terminate()
            self.assertEqual(p.wait(timeout=30), 0)
            records = [json.loads(x) for x in p.stderr.read().splitlines() if x.strip()]
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
            p.stdout.close()
            p.stderr.close()
        errors = [i for i, r in enumerate(records) if r["level"] == "error"]
        self.assertTrue(errors, records)
        msg = records[errors[0]]["msg"]
        self.assertIn(DEAD_ETCD, msg)
        self.assertIn("unreachable", msg)
        self.assertIn("connect", msg.lower())  # the cause, from libcurl
        ready = [i for i, r in enumerate(records) if "ready at" in r["msg"]]
        self.assertLess(errors[0], ready[0])

    def test_client_says_why_no_instance_etcd(self):
        with aims.Client() as c:
            c.set_param("sync_ms", 50)
            c.join(DEAD_ETCD)
            with self.assertRaises(aims.AimsError) as cm:
                c.call("nothing", "run", timeout_ms=500)
        msg = str(cm.exception)
        self.assertIn("no live instance", msg)
        self.assertIn("registry %s unreachable since" % DEAD_ETCD, msg)
        self.assertIn("last error", msg)

    def test_cli_call_registry_logs_json(self):
        r = subprocess.run([CLI, "call", DEAD_ETCD, "svc", "run", "--registry", "--text", "x",
                            "--timeout", "1000", "--log-format", "json", "--log-level", "warn"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 1)
        lines = r.stderr.splitlines()
        records = [json.loads(x) for x in lines if x.startswith("{")]
        self.assertTrue(any(x["level"] == "error" and DEAD_ETCD in x["msg"] for x in records),
                        r.stderr)
        self.assertTrue(any(x.startswith("aims call: svc.run at %s" % DEAD_ETCD)
                            and "unreachable since" in x for x in lines), r.stderr)


if __name__ == "__main__":
    unittest.main()
