"""Library-wide calls of aims_core.h: version, build information, allocation
count, logging, and parameters by name.

Why here: these belong to no object. Parameters are always addressed by name:
``_param`` resolves the name with aims_param_by_name and its type with
aims_param_info, and ``_set_typed`` / ``_get_typed`` are the one typed
setter/getter every object's ``set_param`` / ``get_param`` goes through, so no
parameter number and no per-object copy of the i64/f64 choice lives in Python.
"""

import ctypes
import json

from . import _enums
from . import _lib
from ._errors import _check, _decode
from ._lib import lib as _c


def version():
    """Run-time library version string "M.m.p"."""
    return _decode(_c.aims_version_string())


def version_number():
    """Run-time library version as M*10000 + m*100 + p."""
    return int(_c.aims_version_number())


def build_info():
    """Build information (versions of the library, BLAS, zstd...) as a dict."""
    return json.loads(_decode(_c.aims_build_info()))


def alloc_live():
    """Number of blocks libaims currently holds (for leak checks)."""
    return int(_c.aims_alloc_live())


#: log levels of aims_set_log (aims_log_level, from the generated table)
_LOG_LEVELS = _enums.names("enum aims_log_level")
LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF = (
    _LOG_LEVELS[k] for k in ("debug", "info", "warn", "error", "off"))
_log_keepalive = None


def set_log(callback, min_level=LOG_INFO):
    """Install ``callback(level: int, message: str)`` as the library's log sink.

    Start-up only (call before using any other object, from one thread). Pass
    None to discard log records. The callback may be called from library worker
    threads; exceptions it raises are printed by ctypes and otherwise ignored.
    """
    global _log_keepalive
    if callback is None:
        cfn = _lib.log_fn()
    else:
        def _trampoline(_user, level, msg):
            callback(int(level), _decode(msg))
        cfn = _lib.log_fn(_trampoline)
    _check(_c.aims_set_log(cfn, None, int(min_level)))
    # The C side keeps the function pointer: keep the ctypes thunk alive with it.
    _log_keepalive = cfn


# ---------------------------------------------------------------------------------
# Parameters (by name only)

_param_cache = {}
_PARAM_TYPES = _enums.names("enum aims_param_type")
_PARAM_I64 = _PARAM_TYPES["i64"]
_PARAM_F64 = _PARAM_TYPES["f64"]


def _param(name):
    """(id, type) of the parameter called ``name``, via aims_param_by_name/info."""
    hit = _param_cache.get(name)
    if hit is not None:
        return hit
    if not isinstance(name, str):
        raise TypeError("parameter names are strings, got %r" % (name,))
    pid = ctypes.c_int()
    _check(_c.aims_param_by_name(name.encode("ascii", "replace"), ctypes.byref(pid)))
    ptype = ctypes.c_int()
    _check(_c.aims_param_info(pid.value, ctypes.byref(ptype), None, None, None))
    hit = (pid.value, ptype.value)
    _param_cache[name] = hit
    return hit


def param_info(name):
    """Describe a parameter: dict(name, type 'i64'|'f64', min, max, default)."""
    pid, _ = _param(name)
    ptype = ctypes.c_int()
    lo, hi, default = ctypes.c_double(), ctypes.c_double(), ctypes.c_double()
    _check(_c.aims_param_info(pid, ctypes.byref(ptype), ctypes.byref(lo), ctypes.byref(hi),
                              ctypes.byref(default)))
    return {"name": _decode(_c.aims_param_name(pid)),
            "type": "i64" if ptype.value == _PARAM_I64 else "f64",
            "min": lo.value, "max": hi.value, "default": default.value}


def _as_i64(name, value):
    # A one-character string is taken as its byte value: delimiter=";" reads well.
    if isinstance(value, (str, bytes)) and len(value) == 1:
        value = ord(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise TypeError("parameter %s takes an integer, got %r" % (name, value))
        value = int(value)
    try:
        value = int(value.__index__())
    except AttributeError:
        raise TypeError("parameter %s takes an integer, got %r" % (name, value)) from None
    if not -(1 << 63) <= value < (1 << 63):
        raise OverflowError("parameter %s = %d does not fit in 64 bits" % (name, value))
    return value


def _as_f64(name, value):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError("parameter %s takes a number, got %r" % (name, value)) from None


def _set_typed(ptr, setters, errmsg_fn, name, value, lead=()):
    """Set parameter ``name`` on the C object ``ptr``.

    ``setters`` is (set_i64, set_f64); set_f64 None for objects that take only
    integers. ``lead`` holds arguments that go between the handle and the
    parameter id (a pipeline's step index).
    """
    pid, ptype = _param(name)
    set_i64, set_f64 = setters
    if ptype == _PARAM_F64 and set_f64 is not None:
        rc = set_f64(ptr, *lead, pid, _as_f64(name, value))
    else:
        rc = set_i64(ptr, *lead, pid, _as_i64(name, value))
    _check(rc, errmsg_fn, ptr)


def _get_typed(ptr, getters, errmsg_fn, name, lead=()):
    """Read parameter ``name`` (int or float by its type); see _set_typed."""
    pid, ptype = _param(name)
    get_i64, get_f64 = getters
    if ptype == _PARAM_F64 and get_f64 is not None:
        out = ctypes.c_double()
        getter = get_f64
    else:
        out = ctypes.c_int64()
        getter = get_i64
    _check(getter(ptr, *lead, pid, ctypes.byref(out)), errmsg_fn, ptr)
    return out.value


def _enum(value, table, what):
    """The C value of ``value``: a name looked up (case-insensitive) in ``table``
    ({name: value}, usually from _enums.names), or a number passed through."""
    if isinstance(value, str):
        try:
            return table[value.lower()]
        except KeyError:
            raise ValueError("unknown %s %r (one of %s)"
                             % (what, value, ", ".join(sorted(table)))) from None
    return int(value)
