"""Shared helpers for the aims binding tests (imported by the test_*.py modules).

Every test case checks that libaims holds no more blocks after the test than
before it (aims_alloc_live), so a handle the binding forgot to destroy, or
destroyed twice, shows up in the test that caused it.
"""

import gc
import os
import struct
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
