"""Where the C library is: the search order of the ctypes binding.

Why a search. ``pip install ./bindings/python`` installs only Python files; the
C library comes from ``meson install`` (or a distribution package), from a build
tree, or from wherever a developer points. ``import aims`` must work in each case
without setting variables, and when it fails the error must say what was tried.

Order (the first library that opens wins):

1. ``$AIMS_LIBRARY``: a full path. When set it is the only candidate: a wrong
   path is an error, never silently replaced by another copy.
2. The loader path: ``dlopen("libaims.so.0")`` -- ``LD_LIBRARY_PATH``, the
   ld.so cache (``ldconfig``) and the system directories, as for a C program.
3. ``ctypes.util.find_library("aims")`` (the ld.so cache, gcc's search path).
4. ``pkg-config --variable=libdir libaims`` (so ``PKG_CONFIG_PATH`` or an
   install under /usr/local is enough).
5. The interpreter's prefix (``sys.prefix``/lib[/<multiarch>]): a library
   installed with ``meson setup --prefix=$VIRTUAL_ENV``.
6. A build tree next to this package's source (``<repo>/build*/src``), newest
   first: for ``import aims`` straight from a checkout.
"""

import ctypes
import ctypes.util
import glob
import os
import shutil
import subprocess
import sys

SONAME = "libaims.so.0"


def _pkg_config_libdir():
    exe = shutil.which("pkg-config")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--variable=libdir", "libaims"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    libdir = out.stdout.strip()
    return libdir if out.returncode == 0 and libdir else None


def _prefix_dirs():
    multiarch = getattr(sys.implementation, "_multiarch", None)
    dirs = []
    for prefix in dict.fromkeys([sys.prefix, sys.base_prefix]):
        if multiarch:
            dirs.append(os.path.join(prefix, "lib", multiarch))
        dirs.append(os.path.join(prefix, "lib"))
    return dirs


def _build_trees():
    """libaims.so.0 in <repo>/build*/src when this package sits in <repo>/bindings/python."""
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.abspath(os.path.join(here, "..", "..", ".."))
    if not os.path.isfile(os.path.join(repo, "src", "libaims.map")):
        return []
    found = []
    for path in glob.glob(os.path.join(repo, "build*", "src", SONAME)):
        try:
            found.append((os.path.getmtime(path), path))
        except OSError:  # a build tree being rebuilt right now
            continue
    return [path for _, path in sorted(found, reverse=True)]


def candidates():
    """Yield (how, name) in search order (see the module doc), lazily: the costly
    look-ups (find_library, pkg-config) run only when the earlier ones failed."""
    explicit = os.environ.get("AIMS_LIBRARY")
    if explicit:
        yield ("$AIMS_LIBRARY", explicit)
        return
    yield ("loader path", SONAME)
    found = ctypes.util.find_library("aims")
    if found:
        yield ("ctypes.util.find_library", found)
    libdir = _pkg_config_libdir()
    if libdir:
        yield ("pkg-config libaims", os.path.join(libdir, SONAME))
    for d in _prefix_dirs():
        path = os.path.join(d, SONAME)
        if os.path.exists(path):
            yield ("interpreter prefix", path)
    for path in _build_trees():
        yield ("build tree", path)


def loaded_path(lib):
    """The file the process mapped for ``lib`` (Linux /proc/self/maps), else its name."""
    name = getattr(lib, "_name", "")
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rstrip("\n").split(None, 5)[-1]
                if path.startswith("/") and os.path.basename(path).startswith("libaims.so"):
                    return path
    except OSError:
        pass
    return name


def open_library():
    """(CDLL, how, name) for the first candidate that opens; ImportError listing all tries."""
    tried = []
    for how, name in candidates():
        try:
            return ctypes.CDLL(name), how, name
        except OSError as exc:
            tried.append("  %s: %s (%s)" % (how, name, exc))
    explicit = os.environ.get("AIMS_LIBRARY")
    hint = ("check the AIMS_LIBRARY path" if explicit else
            "install libaims (meson install), or set AIMS_LIBRARY to the full path of "
            "libaims.so.0, or add its directory to LD_LIBRARY_PATH")
    raise ImportError("aims: cannot load the C library; tried:\n%s\n%s"
                      % ("\n".join(tried), hint))
