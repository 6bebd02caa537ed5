"""The binding declares exactly the library's exported symbols, with the arity
and void-ness the public headers give them."""

import os
import re
import unittest

from aims import _lib

from aims_testutil import source_dir


def map_symbols(path):
    """Symbols listed under 'global:' in a GNU ld version script."""
    with open(path) as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"#[^\n]*", " ", text)
    symbols = set()
    for block in re.findall(r"global\s*:(.*?)(?:local\s*:|})", text, flags=re.S):
        for item in block.split(";"):
            item = item.strip()
            if item:
                symbols.add(item)
    return symbols


def header_prototypes(include_dir):
    """name -> (is_void, arg_count) for every AIMS_API function in the headers."""
    protos = {}
    for name in sorted(os.listdir(include_dir)):
        if not name.endswith(".h"):
            continue
        with open(os.path.join(include_dir, name)) as f:
            text = f.read()
        text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
        text = re.sub(r"//[^\n]*", " ", text)
        for m in re.finditer(r"AIMS_API\s+([^;{(]*?)\b(aims_\w+)\s*\(([^)]*)\)\s*;", text):
            ret, fname, params = m.group(1), m.group(2), m.group(3).strip()
            count = 0 if params in ("", "void") else params.count(",") + 1
            is_void = re.fullmatch(r"\s*void\s*", ret) is not None
            protos[fname] = (is_void, count)
    return protos


class SymbolTableTest(unittest.TestCase):
    def setUp(self):
        root = source_dir()
        self.map_path = os.path.join(root, "src", "libaims.map")
        self.include_dir = os.path.join(root, "include", "aims")
        if not os.path.exists(self.map_path):
            self.fail("src/libaims.map not found under %s (set AIMS_SOURCE_DIR)" % root)

    def test_map_parses(self):
        symbols = map_symbols(self.map_path)
        self.assertIn("aims_version_number", symbols)
        self.assertGreater(len(symbols), 50)

    def test_every_declared_function_is_exported(self):
        missing = sorted(set(_lib.PROTOTYPES) - map_symbols(self.map_path))
        self.assertEqual(missing, [], "declared by the binding but not in libaims.map")

    def test_every_exported_symbol_is_declared(self):
        undeclared = sorted(map_symbols(self.map_path) - set(_lib.PROTOTYPES))
        self.assertEqual(undeclared, [], "in libaims.map but not declared by the binding")

    def test_declarations_are_applied_to_the_loaded_library(self):
        for name, (restype, argtypes) in _lib.PROTOTYPES.items():
            fn = getattr(_lib.lib, name)
            self.assertEqual(list(fn.argtypes), list(argtypes), name)
            self.assertIs(fn.restype, restype, name)

    def test_declarations_match_headers(self):
        protos = header_prototypes(self.include_dir)
        self.assertEqual(sorted(set(_lib.PROTOTYPES) - set(protos)), [],
                         "declared but not found in include/aims/*.h")
        for name, (restype, argtypes) in _lib.PROTOTYPES.items():
            is_void, count = protos[name]
            self.assertEqual(len(argtypes), count, "%s: argument count" % name)
            self.assertEqual(restype is None, is_void, "%s: void return" % name)


if __name__ == "__main__":
    unittest.main()
