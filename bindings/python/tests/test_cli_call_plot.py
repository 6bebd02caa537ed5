"""`aims call` against a real aims-node (infer and echo services, by address
and through the node's registry; JSON, CSV-row and text requests; failures
exit 1 with the status and the cause, usage errors exit 2) and `aims plot`
(training curves from `aims train`'s JSON lines and the bench results in
bench/results/: well-formed SVG with axes, ticks, labels and a legend;
hostile inputs refused with the file named)."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import unittest
import xml.etree.ElementTree as ET

from aims_testutil import IRIS, assert_exit, needs_iris, source_dir, train_iris
from test_cli import EXE
from test_daemon import EXE as NODE, clean_env

SVG = "{http://www.w3.org/2000/svg}"


def run(*args, stdin=None):
    return subprocess.run([EXE] + list(args), capture_output=True, text=True, timeout=120,
                          input=stdin)


def start_node(*args):
    """An aims-node with these flags on a free loopback port: (process, address)."""
    p = subprocess.Popen([NODE, "--listen", "tcp://127.0.0.1:0"] + list(args),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=clean_env())
    line = p.stdout.readline()
    assert line.startswith("ready "), line
    return p, line.split()[1]


def stop_node(p):
    """SIGTERM (drain) and reap."""
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    p.stdout.close()
    p.stderr.close()


class IrisNodeCase(unittest.TestCase):
    """Class fixture shared by the CLI and wire tests: a temp dir (cls.dir), the iris
    bundle trained there with TRAIN_ARGS (cls.bundle; cls.trained is the CompletedProcess)
    and an aims-node started with node_args(bundle) (cls.node, cls.addr)."""

    TRAIN_ARGS = ()

    @classmethod
    def node_args(cls, bundle):
        raise NotImplementedError

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        cls.bundle = os.path.join(cls.dir, "iris.aimsb")
        cls.trained = train_iris(EXE, cls.bundle, *cls.TRAIN_ARGS)
        cls.node, cls.addr = start_node(*cls.node_args(cls.bundle))

    @classmethod
    def tearDownClass(cls):
        stop_node(cls.node)
        shutil.rmtree(cls.dir)


@unittest.skipIf(EXE is None or NODE is None, "aims / aims-node not built")
@needs_iris
class CallPlotTest(IrisNodeCase):
    TRAIN_ARGS = ("--batch", "16")

    @classmethod
    def node_args(cls, bundle):
        return ["--name", "n1", "--host-registry", "--infer", "iris=" + bundle, "--echo", "e1"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.train_log = os.path.join(cls.dir, "train.jsonl")
        with open(cls.train_log, "w") as f:
            f.write(cls.trained.stderr)

    def path(self, name):
        return os.path.join(self.dir, name)

    # ---- aims call ---------------------------------------------------------------

    def test_call_infer_json_stdin_and_csv_row(self):
        r = run("call", self.addr, "iris", "predict",
                stdin='{"x": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}')
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["tensors"]["y"]["dtype"], "f32")
        self.assertEqual(out["tensors"]["y"]["data"], [0, 2])  # setosa, virginica
        r = run("call", self.addr, "iris", "predict", "--csv", IRIS, "--header", "1",
                "--row", "120", "--label-column", "-1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["tensors"]["y"]["data"], [2])

    def test_call_echo_dtypes_text_and_registry(self):
        req = {"text": "h\u00e9llo \"q\"", "k": {"dtype": "i32", "shape": [2, 2],
                                                   "data": [1, 2, 3, -4]},
               "b": {"dtype": "u8", "data": [0, 255]}}
        req_file = self.path("req.json")
        with open(req_file, "w") as f:
            json.dump(req, f)
        r = run("call", self.addr, "e1", "anything", "--json", req_file)
        self.assertEqual(r.returncode, 0, r.stderr)
        t = json.loads(r.stdout)["tensors"]
        self.assertEqual(t["text"], {"dtype": "bytes", "shape": [10], "data": "h\u00e9llo \"q\""})
        self.assertEqual(t["k"]["data"], [[1, 2], [3, -4]])
        self.assertEqual(t["b"]["data"], [0, 255])
        self.assertEqual(t["pid"]["data"], self.node.pid)
        # by name through the registry the node hosts
        r = run("call", self.addr, "e1", "run", "--registry", "--text", "hi")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["tensors"]["text"]["data"], "hi")

    def test_call_failures_exit_1_with_cause(self):
        r = run("call", self.addr, "nosuch", "predict", "--text", "x")
        assert_exit(self, r, 1, "no service nosuch")
        r = run("call", self.addr, "iris", "predict", stdin='{"x": [[1, 2]]}')
        assert_exit(self, r, 1, "fitted on 4")
        r = run("call", "tcp://127.0.0.1:1", "iris", "predict", "--text", "x",
                "--timeout", "3000")
        assert_exit(self, r, 1, "tcp://127.0.0.1:1")
        self.assertIn("refused", r.stderr)

    def test_call_usage_errors_exit_2(self):
        for args, stdin, needle in [
                (("call", self.addr, "iris"), None, "METHOD"),
                (("call", self.addr, "iris", "predict", "--bogus", "1"), None, "--bogus"),
                (("call", self.addr, "iris", "predict", "--timeout", "-5"), None, "--timeout"),
                (("call", self.addr, "iris", "predict"), '{"x": [1,', "byte"),
                (("call", self.addr, "iris", "predict"), "[" * 100000, "nested"),
                (("call", self.addr, "iris", "predict"), '{"x": [[1, 2], [3]]}', "ragged"),
                (("call", self.addr, "iris", "predict"), '{"text": "\\ud800"}', "surrogate"),
                (("call", self.addr, "iris", "predict"), '{"x": {"dtype": "f16", "data": [1]}}',
                 "dtype"),
                (("call", self.addr, "iris", "predict"),
                 '{"x": {"shape": [3], "data": [1, 2]}}', "shape holds 3"),
                (("call", self.addr, "iris", "predict", "--csv", IRIS, "--row", "9999"), None,
                 "no row"),
                (("call", self.addr, "iris", "predict", "--csv", IRIS), None, "not a finite"),
                (("call", self.addr, "iris", "predict", "--text", "a", "--csv", IRIS), None,
                 "one of")]:
            r = run(*args, stdin=stdin)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(needle, r.stderr, args)

    # ---- aims plot ---------------------------------------------------------------

    def check_svg(self, path, min_texts):
        self.assertGreater(os.path.getsize(path), 500)
        root = ET.parse(path).getroot()  # raises on malformed XML
        self.assertEqual(root.tag, SVG + "svg")
        texts = ["".join(t.itertext()) for t in root.iter(SVG + "text")]
        self.assertGreaterEqual(len(texts), min_texts)
        self.assertGreater(len(list(root.iter(SVG + "line"))), 4)  # axes and ticks
        return texts

    def test_plot_training_curves(self):
        other = self.path("mlp <&>.jsonl")
        r = run("train", IRIS, "--skip-rows", "1", "--out", self.path("mlp.aimsb"),
                "--model", "mlp", "--hidden", "8", "--epochs", "12")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(other, "w") as f:
            f.write("not json\n" + r.stderr)
        out = self.path("curves.svg")
        r = run("plot", self.train_log, other, "--out", out, "--title", "iris <loss>")
        self.assertEqual(r.returncode, 0, r.stderr)
        texts = self.check_svg(out, 10)
        for want in ("iris <loss>", "epoch", "training loss", "train.jsonl", "mlp <&>.jsonl"):
            self.assertIn(want, texts)
        root = ET.parse(out).getroot()
        lines = list(root.iter(SVG + "polyline"))
        self.assertEqual(len(lines), 2)
        self.assertEqual(len(lines[0].get("points").split()), 30)

    def test_plot_bench_results(self):
        results = os.path.join(source_dir(), "bench", "results")
        files = sorted(os.path.join(results, f) for f in os.listdir(results)
                       if f.startswith("latest-") and f.endswith(".jsonl"))
        self.assertTrue(files)
        out = self.path("bench.svg")
        r = run("plot", *files, "--out", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        texts = self.check_svg(out, 20)
        self.assertIn("Benchmark results", texts)
        self.assertIn("libaims", texts)  # a legend entry
        root = ET.parse(out).getroot()
        self.assertGreater(len(list(root.iter(SVG + "rect"))), 5)

    def test_plot_refuses_bad_input(self):
        empty = self.path("empty.jsonl")
        with open(empty, "w") as f:
            f.write("{}\n[1,2]\n\x00\x01garbage\n")
        r = run("plot", empty, "--out", self.path("x.svg"))
        assert_exit(self, r, 1, "empty.jsonl")
        r = run("plot", self.path("missing.jsonl"), "--out", self.path("x.svg"))
        assert_exit(self, r, 1, "missing.jsonl")
        r = run("plot", self.train_log)
        self.assertEqual(r.returncode, 2)
        bench = os.path.join(source_dir(), "bench", "results", "latest-train.jsonl")
        r = run("plot", self.train_log, bench, "--out", self.path("x.svg"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("separate", r.stderr)
        r = run("plot", self.train_log, "--out", "/nonexistent/dir/x.svg")
        assert_exit(self, r, 1, "/nonexistent/dir/x.svg")

    def test_log_format_flag(self):
        r = run("--log-format", "xml", "inspect", IRIS)
        self.assertEqual(r.returncode, 2)
        r = run("call", "tcp://127.0.0.1:1", "e1", "run", "--text", "x", "--timeout", "2000",
                "--log-format", "json", "--log-level", "debug")
        self.assertEqual(r.returncode, 1)
        records = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
        self.assertTrue(records, r.stderr)
        self.assertTrue(all(set(x) >= {"ts", "level", "src", "msg"} for x in records))


if __name__ == "__main__":
    unittest.main()
