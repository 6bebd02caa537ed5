"""``python3 -m aims``: which aims is this, and which libaims does it use.

    python3 -m aims --version   package and library versions, the library's path
    python3 -m aims --where     how the library was found (see aims/_find.py)
    python3 -m aims --build     the library's build information (JSON)

Exit status: 0, 2 on a usage error, 1 when the library cannot be loaded.
"""

import argparse
import json
import sys


def _package_version():
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # Python < 3.8
        return None
    try:
        return version("aims")
    except PackageNotFoundError:
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m aims",
                                     description="The libaims Python binding.")
    parser.add_argument("--version", action="store_true",
                        help="print the package and library versions")
    parser.add_argument("--where", action="store_true",
                        help="print how and where the C library was found")
    parser.add_argument("--build", action="store_true",
                        help="print the C library's build information as JSON")
    args = parser.parse_args(argv)
    try:
        import aims
        from aims import _find, _lib
    except ImportError as exc:
        print("python3 -m aims: %s" % exc, file=sys.stderr)
        return 1
    path = _find.loaded_path(_lib.lib)
    if args.version or not (args.where or args.build):
        pkg = _package_version() or "(not installed: imported from %s)" % (
            aims.__file__.rsplit("/", 2)[0])
        print("aims %s (libaims %s, %s)" % (pkg, aims.version(), path))
    if args.where:
        print("found by: %s (%s)" % (_lib.found_how, _lib.found_name))
        print("loaded:   %s" % path)
    if args.build:
        info = aims.build_info()
        print(json.dumps(info, indent=2, sort_keys=True) if not isinstance(info, str) else info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
