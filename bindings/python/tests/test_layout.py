"""The package layout: generated enum table fresh, every module shipped, one
public spelling.

The C enum values the package uses come from aims/_enum_table.py, generated from
include/aims/*.h by bindings/python/gen_enums.py: test_enum_table_fresh fails
when a header changed and the table was not regenerated. test_modules_installed
catches a module missing from an installed package (run by python_install).
"""

import ast
import glob
import importlib.util
import os
import subprocess
import sys
import unittest

import aims
from aims import _enum_table, _enums, _lib

from aims_testutil import source_dir

PKG_SRC = os.path.join(source_dir(), "bindings", "python")


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_enums",
                                                  os.path.join(PKG_SRC, "gen_enums.py"))
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return gen


class LayoutTest(unittest.TestCase):
    def test_enum_table_fresh(self):
        gen = _load_generator()
        enums, defines = gen.parse_headers(os.path.join(source_dir(), "include", "aims"))
        with open(_enum_table.__file__, encoding="utf-8") as f:
            current = f.read()
        self.assertEqual(current, gen.render(enums, defines),
                         "%s is stale: run python3 bindings/python/gen_enums.py"
                         % _enum_table.__file__)
        # the command-line check agrees
        rc = subprocess.call([sys.executable, os.path.join(PKG_SRC, "gen_enums.py"), "--check",
                              "--include", os.path.join(source_dir(), "include", "aims"),
                              "--out", _enum_table.__file__])
        self.assertEqual(rc, 0)

    def test_generator_reads_every_public_enum(self):
        # Each enum type the headers declare is in the table, or skipped on purpose.
        gen = _load_generator()
        declared = set()
        for path in glob.glob(os.path.join(source_dir(), "include", "aims", "*.h")):
            with open(path, encoding="utf-8") as f:
                text = gen._strip_comments(f.read())
            declared.update(m.group(1) for m in gen._ENUM_RE.finditer(text))
        declared.discard("aims_status")  # the X-macro: read from the library at run time
        self.assertEqual({"enum " + t for t in declared - gen.SKIP}, set(_enums.ENUMS))

    def test_names_drop_the_shared_prefix(self):
        lb = _enums.ENUMS["enum aims_lb_policy"]
        self.assertEqual(_enums.names("enum aims_lb_policy")["round_robin"],
                         lb[[k for k in lb if k.endswith("_ROUND_ROBIN")][0]])
        for enum in _enums.ENUMS:
            names = _enums.names(enum)
            self.assertEqual(len(names), len(_enums.ENUMS[enum]), enum)
            self.assertTrue(all(n and n == n.lower() for n in names), (enum, names))
            self.assertEqual(_enums.values(enum), {v: k for k, v in names.items()})

    def test_tables_agree_with_the_library(self):
        # Where the library names values at run time, the generated table agrees.
        for value, name in aims.AUDIT_ACTIONS.items():
            self.assertEqual(aims._lib.lib.aims_audit_action_name(value).decode(), name)
        for pname, ptype in (("lr", "f64"), ("epochs", "i64")):
            self.assertEqual(aims.param_info(pname)["type"], ptype)

    def test_modules_installed(self):
        # Every module of the source package is in the package imported here (an
        # installed copy when python_install runs this suite).
        src = {os.path.basename(p) for p in glob.glob(os.path.join(PKG_SRC, "aims", "*.py"))}
        here = {os.path.basename(p)
                for p in glob.glob(os.path.join(os.path.dirname(aims.__file__), "*.py"))}
        self.assertEqual(src - here, set())

    def test_modules_import_down_the_layers(self):
        # The private modules mirror the C layers (docs/PYTHON.md): each imports
        # only modules listed before it here, so no upward import creeps in.
        order = ["_find", "_lib", "_enum_table", "_enums", "_errors", "_core", "_arrays",
                 "_handle", "_data", "_pipeline", "_model", "_orch", "_msg", "_call", "_events", "_tlsconfig",
                 "_svc", "_http"]
        pkg = os.path.join(PKG_SRC, "aims")
        for i, name in enumerate(order):
            with open(os.path.join(pkg, name + ".py"), encoding="utf-8") as f:
                tree = ast.parse(f.read())
            used = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 1:
                    if node.module:
                        used.add(node.module)
                    else:
                        used.update(a.name for a in node.names)
            self.assertEqual(used - set(order[:i]), set(), "%s imports upward" % name)

    def test_public_classes_live_in_aims(self):
        for name in aims.__all__:
            obj = getattr(aims, name)
            if isinstance(obj, type):
                self.assertEqual(obj.__module__, "aims", name)
        self.assertTrue(_lib.has("aims_status_name"))


if __name__ == "__main__":
    unittest.main()
