"""Library loading, versions, errors, parameters by name, loader options."""

import os
import pickle
import re
import subprocess
import sys
import unittest

import aims
from aims import _lib

from aims_testutil import LeakCheckCase, run_threads, source_dir


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


class StatusTableTest(LeakCheckCase):
    """The status names and exception classes come from the library's one table
    (AIMS_STATUS_MAP) at run time; the exceptions also are the matching built-ins."""

    def header_rows(self):
        path = os.path.join(source_dir(), "include", "aims", "aims_core.h")
        with open(path) as f:
            text = f.read()
        body = text[text.index("#define AIMS_STATUS_MAP(X)"):]
        body = body[:body.index("\n\n")]
        return {int(v): n for n, v in re.findall(r"X\((AIMS_\w+), (\d+), ", body)}

    def test_names_come_from_the_library_and_match_the_header(self):
        rows = self.header_rows()
        self.assertEqual(len(rows), 18)
        self.assertEqual(aims.STATUS_NAMES, rows)
        for code, name in rows.items():
            self.assertEqual(aims.status_name(code), name)
            self.assertEqual(getattr(aims, name), code)
        self.assertIsNone(aims.status_name(len(rows)))
        self.assertIsNone(aims.status_name(-1))

    def test_constructor_returns_the_subclass_for_the_code(self):
        cases = {
            aims.AIMS_E_NOTFOUND: (FileNotFoundError, LookupError),
            aims.AIMS_E_IO: (OSError,),
            aims.AIMS_E_INVAL: (ValueError,),
            aims.AIMS_E_RANGE: (ValueError,),
            aims.AIMS_E_CORRUPT: (ValueError,),
            aims.AIMS_E_TIMEOUT: (TimeoutError,),
            aims.AIMS_E_NOMEM: (MemoryError,),
            aims.AIMS_E_UNSUPPORTED: (NotImplementedError,),
            aims.AIMS_E_MISUSE: (RuntimeError,),
            aims.AIMS_E_STATE: (RuntimeError,),
        }
        for code, bases in cases.items():
            err = aims.AimsError(code, "detail")
            self.assertIs(type(err), aims.ERRORS[code])
            self.assertIsInstance(err, aims.AimsError)
            for base in bases:
                self.assertIsInstance(err, base, aims.status_name(code))
            self.assertEqual((err.code, err.message), (code, "detail"))
            self.assertEqual(err.args, (code, "detail"))
            self.assertIn(aims.status_name(code), str(err))
            again = pickle.loads(pickle.dumps(err))
            self.assertIs(type(again), type(err))
            self.assertEqual((again.code, again.message), (code, "detail"))
        closed = aims.AimsError(aims.AIMS_E_CLOSED)
        self.assertNotIsInstance(closed, (ValueError, OSError, LookupError, RuntimeError))
        self.assertIs(type(aims.AimsError(999, "future code")), aims.AimsError)
        self.assertEqual(aims.AimsError(999).name, "AIMS_E_999")
        self.assertIs(aims.AimsNotFoundError, aims.ERRORS[aims.AIMS_E_NOTFOUND])
        self.assertIn("AimsTimeoutError", aims.__all__)
        self.assertFalse(hasattr(aims, "TimeoutError"))  # no built-in shadowed

    def test_idiomatic_except_on_real_calls(self):
        with self.assertRaises(FileNotFoundError) as ctx:
            aims.Dataset.load("csv", os.path.join(source_dir(), "no", "such", "file.csv"))
        self.assertEqual(ctx.exception.code, aims.AIMS_E_NOTFOUND)
        self.assertIn("file.csv", ctx.exception.message)
        with self.assertRaises(LookupError):
            aims.param_info("no_such_param")
        with aims.LoadOptions() as opts:
            with self.assertRaises(ValueError) as ctx:
                opts.set("header", 7)
            self.assertEqual(ctx.exception.code, aims.AIMS_E_RANGE)
            with self.assertRaises(NotImplementedError):
                opts.set("col_begin", 1)
        with self.assertRaises(ValueError) as ctx:
            aims.Dataset.parse("csv", b"1,2\n3,x,4\n")
        self.assertIsInstance(ctx.exception, aims.AimsError)


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

        run_threads(work)
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
