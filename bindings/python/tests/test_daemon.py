"""The node daemon as an operator runs it: --help/--version, flags from the
environment, the log sink (JSON lines when stderr is not a terminal), a wrong
--join URL logged as an error (before "ready": no waiting involved), SIGHUP
not killing it, SIGTERM draining; and a client that joined a dead registry
saying why no instance is live."""

import json
import os
import signal
import subprocess
import time
import unittest

import aims

from aims_testutil import LeakCheckCase


def node_exe():
    """build/examples/aims-node next to the library under test (AIMS_LIBRARY)."""
    lib = os.environ.get("AIMS_LIBRARY", "")
    exe = os.path.join(os.path.dirname(os.path.dirname(lib)), "examples", "aims-node")
    return exe if lib and os.access(exe, os.X_OK) else None


EXE = node_exe()


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMS_NODE_")}
    env.update(extra)
    return env


@unittest.skipIf(EXE is None, "aims-node not built next to AIMS_LIBRARY")
class DaemonTest(LeakCheckCase):
    def start(self, args, env=None):
        p = subprocess.Popen([EXE] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env or clean_env())
        self.addCleanup(self.reap, p)
        line = p.stdout.readline()
        self.assertTrue(line.startswith("ready "), "no ready line; stderr: %s"
                        % (p.stderr.read() if p.poll() is not None else ""))
        return p, line.split()[1]

    @staticmethod
    def reap(p):
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)
        p.stdout.close()
        p.stderr.close()

    def stop(self, p):
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=30), 0)
        return [json.loads(line) for line in p.stderr.read().splitlines() if line.strip()]

    def test_help_version_usage(self):
        r = subprocess.run([EXE, "--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        self.assertIn("usage: aims-node", r.stdout)
        self.assertIn("AIMS_NODE_", r.stdout)
        r = subprocess.run([EXE, "--version"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        self.assertIn(aims.version(), r.stdout)
        r = subprocess.run([EXE, "--name", "x"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        r = subprocess.run([EXE, "--name", "x", "--listen", "tcp://127.0.0.1:0",
                            "--log-format", "xml"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--log-format", r.stderr)

    def test_bad_join_logged_sighup_survives(self):
        # port 1 on loopback: nothing listens there
        p, _ = self.start(["--name", "n1", "--listen", "tcp://127.0.0.1:0",
                           "--join", "tcp://127.0.0.1:1", "--echo", "e1"])
        for _ in range(3):  # right after "ready" and back to back: none may kill it
            p.send_signal(signal.SIGHUP)
        time.sleep(0.2)  # let the reloads run; then the process must still be there
        self.assertIsNone(p.poll(), "SIGHUP killed the daemon")
        records = self.stop(p)
        errors = [r for r in records if r["level"] == "error"]
        self.assertTrue(errors, records)
        self.assertIn("tcp://127.0.0.1:1", errors[0]["msg"])
        self.assertIn("unreachable", errors[0]["msg"])
        # the error came before the daemon announced it was ready
        ready = [i for i, r in enumerate(records) if "ready at" in r["msg"]]
        self.assertLess(records.index(errors[0]), ready[0])
        self.assertTrue(any("SIGHUP" in r["msg"] for r in records))
        self.assertTrue(all(set(r) >= {"ts", "level", "src", "msg"} for r in records))

    def test_environment_config_and_bind_failure(self):
        env = clean_env(AIMS_NODE_NAME="envnode", AIMS_NODE_LISTEN="tcp://127.0.0.1:0",
                        AIMS_NODE_HOST_REGISTRY="1", AIMS_NODE_ECHO="a,b")
        p, addr = self.start([], env=env)
        records = self.stop(p)
        self.assertTrue(any("envnode ready" in r["msg"] and "2 service(s)" in r["msg"]
                            for r in records), records)
        # a port already taken: exit 1 and the cause in the log
        p2, addr2 = self.start(["--name", "b", "--listen", "tcp://127.0.0.1:0", "--echo", "x"])
        r = subprocess.run([EXE, "--name", "c", "--listen", addr2, "--echo", "y"],
                           capture_output=True, text=True, timeout=30, env=clean_env())
        self.assertEqual(r.returncode, 1)
        msgs = [json.loads(line)["msg"] for line in r.stderr.splitlines() if line.strip()]
        self.assertTrue(any("cannot listen on " + addr2 in m for m in msgs), msgs)
        self.stop(p2)

    def test_bad_bundle_logged_with_cause(self):
        r = subprocess.run([EXE, "--name", "b", "--listen", "tcp://127.0.0.1:0",
                            "--infer", "m=/nonexistent/model.aimsb"],
                           capture_output=True, text=True, timeout=30, env=clean_env())
        self.assertEqual(r.returncode, 1)
        records = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
        errors = [x["msg"] for x in records if x["level"] == "error"]
        self.assertTrue(any("/nonexistent/model.aimsb" in m for m in errors), records)

    def test_client_says_why_no_instance(self):
        with aims.Client() as c:
            c.set_param("sync_ms", 50)
            c.join("tcp://127.0.0.1:1")
            with self.assertRaises(aims.AimsError) as cm:
                c.call("nothing", "run", timeout_ms=500)
            msg = str(cm.exception)
            self.assertIn("no live instance", msg)
            self.assertIn("registry tcp://127.0.0.1:1 unreachable since", msg)
            self.assertIn("last error", msg)


if __name__ == "__main__":
    unittest.main()
