"""Shared helpers for the aims binding tests (imported by the test_*.py modules).

Every test case checks that libaims holds no more blocks after the test than
before it (aims_alloc_live), so a handle the binding forgot to destroy, or
destroyed twice, shows up in the test that caused it.
"""

import gc
import os
import struct
import subprocess
import threading
import unittest

import aims

# The numpy the package itself uses (None when missing or disabled by
# AIMS_PYTHON_NO_NUMPY): tests expect numpy results exactly when the package does.
numpy = aims._np

# Warm up everything the library builds once (static build info, parameter lookups).
aims.build_info()


def source_dir():
    """The project source root: $AIMS_SOURCE_DIR, else three levels above this file."""
    env = os.environ.get("AIMS_SOURCE_DIR")
    if env:
        return env
    return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


#: The iris CSV shipped with python3-sklearn (a header row, 4 features, 3 classes).
IRIS = "/usr/lib/python3/dist-packages/sklearn/datasets/data/iris.csv"


def iris_train_args(out, *extra):
    """`aims train` arguments for the small iris bundle the CLI tests share."""
    return ["train", IRIS, "--skip-rows", "1", "--out", out, "--epochs", "30",
            "--lr", "0.05"] + list(extra)


#: Decorator: skip a test (or class) that needs the iris CSV when it is missing.
needs_iris = unittest.skipIf(not os.path.exists(IRIS), "python3-sklearn data files missing")


def train_iris(exe, out, *extra):
    """Run the `aims` CLI exe to train the shared iris bundle into out; asserts
    success and returns the CompletedProcess (its stderr holds the progress log)."""
    r = subprocess.run([exe] + iris_train_args(out, *extra), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r


def assert_exit(case, r, code, *needles):
    """r (a CompletedProcess) exited with code and its stderr names every needle."""
    case.assertEqual(r.returncode, code, r.stderr)
    for needle in needles:
        case.assertIn(needle, r.stderr)


def idx_bytes(type_code, dims, payload):
    """An IDX file: 0, 0, element type, ndim, big-endian u32 dims, payload."""
    return bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) \
        + payload


def run_threads(work, n=4):
    """Run work(k) for k in range(n), each on its own thread, and join them all."""
    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def to_list(arr):
    """Nested Python list from a numpy array or a memoryview (or None)."""
    if arr is None:
        return None
    return arr.tolist()


class LeakCheckCase(unittest.TestCase):
    """A TestCase whose tests must leave aims_alloc_live() where they found it."""

    def setUp(self):
        gc.collect()
        self._live_before = aims.alloc_live()

    def tearDown(self):
        gc.collect()
        self.assertEqual(aims.alloc_live(), self._live_before,
                         "libaims blocks leaked by this test")

    def assertAimsError(self, code, fn, *args, **kwargs):
        """fn(*args) raises AimsError with ``code``; returns the exception."""
        with self.assertRaises(aims.AimsError) as ctx:
            fn(*args, **kwargs)
        err = ctx.exception
        self.assertEqual(err.code, code, "%s (%s)" % (err, err.name))
        self.assertEqual(err.name, aims.STATUS_NAMES[code])
        return err
