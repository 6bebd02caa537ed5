"""The `aims` command line on real data (scikit-learn's iris CSV, Fashion-MNIST
IDX when the data cache is there) and on hostile files and wrong arguments:
exit 0 on success, 1 on a failure with the cause on stderr, 2 on usage errors."""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

from aims_testutil import IRIS, LeakCheckCase, assert_exit, iris_train_args, needs_iris


def cli_exe():
    """build/tools/aims next to the library under test (AIMS_LIBRARY)."""
    lib = os.environ.get("AIMS_LIBRARY", "")
    exe = os.path.join(os.path.dirname(os.path.dirname(lib)), "tools", "aims")
    return exe if lib and os.access(exe, os.X_OK) else None


EXE = cli_exe()
FMNIST = os.path.join(os.environ.get("AIMS_DATA_DIR", ""), "fashion-mnist")


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def run(*args):
    return subprocess.run([EXE] + list(args), capture_output=True, text=True, timeout=300)


@unittest.skipIf(EXE is None, "aims CLI not built next to AIMS_LIBRARY")
class CliTest(LeakCheckCase):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def path(self, name):
        return os.path.join(self.dir, name)

    @needs_iris
    def test_iris_train_eval_predict_inspect(self):
        bundle = self.path("iris.aimsb")
        r = run(*iris_train_args(bundle, "--batch", "16"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["classes"], 3)
        progress = [json.loads(line) for line in r.stderr.splitlines()]
        self.assertEqual(progress[-1]["epoch"], 30)  # JSON lines: stderr is not a TTY
        r = run("eval", bundle, IRIS, "--skip-rows", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(json.loads(r.stdout)["accuracy"], 0.9)
        r = run("predict", bundle, IRIS, "--skip-rows", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        preds = r.stdout.split()
        self.assertEqual(len(preds), 150)
        self.assertTrue(set(preds) <= {"0", "1", "2"})
        qbundle = self.path("iris-int8.aimsb")
        r = run("quantize", bundle, IRIS, "--skip-rows", "1", "--out", qbundle)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(json.loads(run("inspect", qbundle).stdout)["quantized"])
        r = run("eval", qbundle, IRIS, "--skip-rows", "1")
        self.assertGreater(json.loads(r.stdout)["accuracy"], 0.85)
        self.assertEqual(run("quantize", bundle, IRIS).returncode, 2)  # no --out
        r = run("inspect", bundle)
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout)
        self.assertEqual((info["kind"], info["checksums"], info["inputs"]), ("bundle", "ok", 4))
        self.assertTrue(any(s["tag"] == "MPRM" for s in info["sections"]))
        # hostile: a flipped byte, a truncated copy
        with open(bundle, "rb") as f:
            data = bytearray(f.read())
        data[-5] ^= 0x40
        bad = self.path("flipped.aimsb")
        write(bad, bytes(data))
        r = run("inspect", bad)
        assert_exit(self, r, 1, "flipped.aimsb")
        write(bad, bytes(data[:200]))
        self.assertEqual(run("inspect", bad).returncode, 1)
        self.assertEqual(run("eval", bad, IRIS).returncode, 1)

    @unittest.skipIf(not os.path.exists(os.path.join(FMNIST, "train-images-idx3-ubyte")),
                     "Fashion-MNIST cache missing (make data)")
    def test_fashion_mnist_idx(self):
        bundle = self.path("fm.aimsb")
        r = run("train", os.path.join(FMNIST, "train-images-idx3-ubyte"),
                "--labels", os.path.join(FMNIST, "train-labels-idx1-ubyte"),
                "--max-rows", "6000", "--epochs", "2", "--quiet", "--out", bundle)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = run("eval", bundle, os.path.join(FMNIST, "t10k-images-idx3-ubyte"),
                "--labels", os.path.join(FMNIST, "t10k-labels-idx1-ubyte"), "--max-rows", "2000")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(json.loads(r.stdout)["accuracy"], 0.7)

    def test_usage_and_failures(self):
        self.assertEqual(run("--help").returncode, 0)
        self.assertIn("aims", run("--version").stdout)
        for args in ([], ["bogus"], ["train"], ["train", "x.csv"], ["eval", "only-one"],
                     ["inspect"], ["train", "x.csv", "--out", "y", "--epochs", "ten"],
                     ["train", "x.csv", "--out", "y", "--frobnicate", "1"]):
            r = run(*args)
            self.assertEqual(r.returncode, 2, "%s: %s" % (args, r.stderr))
            self.assertIn("usage:", r.stderr)
        self.assertEqual(run("inspect", self.path("missing")).returncode, 1)
        csv = self.path("nan.csv")
        with open(csv, "w") as f:
            f.write("1,2,0\n3,nan,1\n")
        r = run("train", csv, "--out", self.path("o.aimsb"))
        assert_exit(self, r, 1, "nan.csv:2: column 2")
        junk = self.path("junk.bin")
        write(junk, b"\x00\x01garbage" * 10)
        r = run("inspect", junk)
        assert_exit(self, r, 1, "not a libaims file")


if __name__ == "__main__":
    unittest.main()
