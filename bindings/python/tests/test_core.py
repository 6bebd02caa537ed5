"""Library loading, versions, errors, parameters by name, loader options."""

import os
import subprocess
import sys
import threading
import unittest

import aims
from aims import _lib

from aims_testutil import LeakCheckCase


class VersionTest(LeakCheckCase):
    def test_version_number_matches_string(self):
        number = aims.version_number()
        major, minor, patch = (int(p) for p in aims.version().split("."))
        self.assertEqual(number, major * 10000 + minor * 100 + patch)
        self.assertEqual(major, _lib.EXPECTED_MAJOR)
        self.assertEqual(aims.__version__, aims.version())

    def test_build_info_is_json(self):
        info = aims.build_info()
        self.assertEqual(info["version"], aims.version())

    def test_strerror(self):
        self.assertTrue(aims.strerror(aims.AIMS_E_CORRUPT))
        self.assertEqual(aims.strerror(9999), "unknown status")

    def test_major_mismatch_raises_import_error(self):
        class FakeFn:
            def __call__(self):
                return 10203  # 1.2.3

        class FakeLib:
            _name = "libfake.so"
            aims_version_number = FakeFn()

        with self.assertRaises(ImportError) as ctx:
            _lib._check_version(FakeLib())
        self.assertIn("1.2.3", str(ctx.exception))
        self.assertIn("major version 0", str(ctx.exception))


class LoadingTest(unittest.TestCase):
    def _import_with(self, library):
        env = dict(os.environ)
        env["AIMS_LIBRARY"] = library
        return subprocess.run([sys.executable, "-c", "import aims"], env=env,
                              capture_output=True, text=True, timeout=60)

    def test_bad_library_path_is_a_clear_import_error(self):
        res = self._import_with("/nonexistent/libaims.so.0")
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("ImportError", res.stderr)
        self.assertIn("/nonexistent/libaims.so.0", res.stderr)
        self.assertIn("AIMS_LIBRARY", res.stderr)

    def test_soname_through_ld_library_path(self):
        path = _lib.lib._name
        if not os.path.isabs(path):
            self.skipTest("library was loaded by SONAME already")
        env = dict(os.environ)
        env.pop("AIMS_LIBRARY", None)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [os.path.dirname(path)] + [p for p in env.get("LD_LIBRARY_PATH", "").split(
                os.pathsep) if p])
        res = subprocess.run([sys.executable, "-c",
                              "import aims; print(aims._lib.lib._name, aims.version())"],
                             env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn("libaims.so.0", res.stdout)


class ErrorTest(LeakCheckCase):
    def test_error_attributes(self):
        err = aims.AimsError(aims.AIMS_E_CORRUPT, "bad byte 7")
        self.assertEqual(err.code, 5)
        self.assertEqual(err.name, "AIMS_E_CORRUPT")
        self.assertEqual(err.message, "bad byte 7")
        self.assertIn("AIMS_E_CORRUPT", str(err))
        self.assertIn("bad byte 7", str(err))

    def test_message_comes_from_the_failing_call(self):
        err = self.assertAimsError(aims.AIMS_E_NOTFOUND, aims.param_info, "no_such_param")
        self.assertIn("no_such_param", err.message)


class ThreadErrorTest(LeakCheckCase):
    def test_each_thread_reads_its_own_message(self):
        # Thread k parses CSV whose line k+2 is ragged; aims_errmsg() is thread-local,
        # so every AimsError must name its own thread's line even under contention.
        failures = []

        def work(k):
            data = b"1,2\n" * (k + 1) + b"3\n"
            for _ in range(200):
                try:
                    aims.Dataset.parse("csv", data).close()
                    failures.append((k, "no error"))
                except aims.AimsError as err:
                    if err.code != aims.AIMS_E_CORRUPT or ":%d:" % (k + 2) not in err.message:
                        failures.append((k, err.message))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(failures, [])


class ParamTest(LeakCheckCase):
    def test_info_by_name(self):
        info = aims.param_info("delimiter")
        self.assertEqual(info["name"], "delimiter")
        self.assertEqual(info["type"], "i64")
        self.assertEqual(info["default"], ord(","))
        self.assertEqual(aims.param_info("low")["type"], "f64")
        self.assertEqual(aims.param_info("threads")["type"], "i64")

    def test_non_string_name(self):
        with self.assertRaises(TypeError):
            aims.param_info(100)


class LoadOptionsTest(LeakCheckCase):
    def test_set_get(self):
        with aims.LoadOptions() as opts:
            self.assertEqual(opts.get("delimiter"), ord(","))
            opts.set("delimiter", ord(";"))
            self.assertEqual(opts.get("delimiter"), ord(";"))
            opts.set("delimiter", "\t")
            self.assertEqual(opts.get("delimiter"), 9)
            opts.set("header", 1).set("label_column", -2)
            self.assertEqual(opts.get("label_column"), -2)

    def test_kwargs_constructor(self):
        opts = aims.LoadOptions(header=2, max_rows=10)
        self.assertEqual(opts.get("header"), 2)
        self.assertEqual(opts.get("max_rows"), 10)
        opts.close()

    def test_errors(self):
        with aims.LoadOptions() as opts:
            err = self.assertAimsError(aims.AIMS_E_RANGE, opts.set, "header", 7)
            self.assertIn("header", err.message)
            self.assertEqual(opts.get("header"), 0)  # untouched on failure
            err = self.assertAimsError(aims.AIMS_E_UNSUPPORTED, opts.set, "col_begin", 1)
            self.assertIn("col_begin", err.message)
            self.assertAimsError(aims.AIMS_E_NOTFOUND, opts.set, "bogus", 1)
            with self.assertRaises(TypeError):
                opts.set("header", 1.5)
            with self.assertRaises(TypeError):
                opts.set("header", "yes")
            with self.assertRaises(OverflowError):
                opts.set("max_rows", 1 << 64)

    def test_close_is_idempotent_and_closed_use_fails(self):
        opts = aims.LoadOptions()
        opts.close()
        opts.close()
        self.assertTrue(opts.closed)
        self.assertAimsError(aims.AIMS_E_CLOSED, opts.get, "header")
        with aims.LoadOptions() as opts2:
            pass
        self.assertTrue(opts2.closed)


class LogTest(unittest.TestCase):
    def test_set_log(self):
        records = []
        aims.set_log(lambda level, msg: records.append((level, msg)), aims.LOG_DEBUG)
        aims.set_log(None)
        with self.assertRaises(aims.AimsError) as ctx:
            aims.set_log(None, 55)
        self.assertEqual(ctx.exception.code, aims.AIMS_E_INVAL)


if __name__ == "__main__":
    unittest.main()
