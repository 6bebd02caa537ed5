"""aims -- Python ctypes binding for libaims (datasets, loaders, pipelines, models:
Model, Trainer, Eval, Bundle; orchestration: Registry, Balancer, Health, Metrics;
services: Msg, Node, Service, Client).

Loading. The package opens ``$AIMS_LIBRARY`` (a full path) if set, else the
SONAME ``libaims.so.0`` through the normal dynamic-loader search (so
``LD_LIBRARY_PATH`` works). A library of another major version raises ImportError.

Errors. Every failing C call raises :class:`AimsError` with ``.code`` (the
``aims_status`` value), ``.name`` (e.g. ``"AIMS_E_CORRUPT"``) and ``.message``
(the library's detail text, read from the thread-local ``aims_errmsg()`` right
after the call). Python-side argument problems raise TypeError / ValueError.
Using a closed object raises AimsError with code AIMS_E_CLOSED.

Parameters are always addressed by name (``"delimiter"``, ``"col_begin"``,
``"threads"``...): the name is resolved with ``aims_param_by_name`` and the typed
setter is chosen from ``aims_param_info``, so no parameter number lives here.

Arrays. With numpy importable, ``Dataset.features()``, ``labels()``,
``targets()`` and ``tokens()`` return *read-only numpy arrays that share the C
memory* (no copy); ``Pipeline.transform_rows()`` returns a new float32 array of
shape (rows, output_cols) that the C code writes into directly. Without numpy
the same accessors return *read-only memoryviews* over the C memory (features:
format 'f', shape (rows, cols); labels 'i'; targets 'f'; offsets 'Q'; ids 'I';
weights 'f') and ``transform_rows()`` returns an ``array.array('f')`` of
rows*output_cols values, row-major.

Inputs accept numpy arrays (C-contiguous float32 / int32 are used without a
copy; anything else is converted), buffer-protocol objects of the right item
type (e.g. ``array.array('f')``, used without a copy when writable), and nested
Python lists.

Lifetime. Every object has ``close()`` (idempotent) and works as a context
manager. A borrowed array keeps the C object alive: ``close()`` drops the
Python object's claim, and the C object is destroyed once no array or view
borrowed from it remains. Views keep their parent alive likewise.

Services. ``Node`` hosts services (Python handlers ``handler(method, request)
-> reply`` on dicts of tensors, or the built-in infer / preprocess / train
services); ``Client`` calls them by name through a registry, by address, or
asynchronously (a Future plus an optional callback). Python code that the
library calls (handlers, completion callbacks) runs on library threads, takes
the GIL only while it runs and never lets an exception reach C: it becomes the
call's status and error text. Nodes and clients close for real on ``close()``
(and at interpreter exit when still open).

Threads. ctypes releases the GIL during C calls. The C thread-safety rules of
each object apply (see the C headers): e.g. a fitted Pipeline may transform from
many threads at once, while configuration and fit need exclusive access.
"""

import array as _array
import ctypes
import json
import os

from . import _lib
from ._lib import lib as _c

if os.environ.get("AIMS_PYTHON_NO_NUMPY"):
    _np = None
else:
    try:
        import numpy as _np
    except ImportError:  # numpy is optional
        _np = None

__all__ = [
    "AimsError", "LoadOptions", "Dataset", "Pipeline", "Format", "StepKind",
    "version", "version_number", "build_info", "strerror", "alloc_live", "set_log",
    "param_info", "HAVE_NUMPY", "Model", "Trainer", "Eval", "Bundle", "METRICS", "STATS",
    "Registry", "Balancer", "Health", "Metrics", "LB_POLICIES", "EVENTS", "HEALTH_STATES",
    "Msg", "Node", "Service", "Client", "Tensor", "DTYPES", "SVC_STATS", "TRAIN_STATES",
    "request_deadline_ns", "Policy", "AUDIT_ACTIONS",
]

HAVE_NUMPY = _np is not None

# ---------------------------------------------------------------------------------
# Status codes and errors

def _status_table():
    """{code: "AIMS_E_..."} read from the library (aims_status_name), so no status
    number is copied here; codes are dense from 0 and never renumbered, and a
    gap (NULL name) is skipped."""
    table = {}
    for code in range(1024):
        raw = _c.aims_status_name(code)
        if raw:
            table[code] = raw.decode("ascii")
    return table


#: aims_status values by code, from the library's AIMS_STATUS_MAP at import time.
STATUS_NAMES = _status_table()
for _code, _name in STATUS_NAMES.items():
    globals()[_name] = _code
del _code, _name
_E_CLOSED = AIMS_E_CLOSED  # noqa: F821 (defined by the loop above)


class AimsError(Exception):
    """A libaims call failed.

    Attributes: ``code`` (int aims_status), ``name`` (e.g. "AIMS_E_CORRUPT"),
    ``message`` (the library's detail text; may name file, line, byte, parameter).

    ``AimsError(code, message)`` returns the subclass for that code (see
    ``ERRORS``), so callers may catch the matching Python built-in:
    ``except FileNotFoundError`` / ``LookupError`` (AIMS_E_NOTFOUND),
    ``ValueError`` (INVAL, RANGE, CORRUPT), ``OSError`` (IO), ``TimeoutError``,
    ``MemoryError``, ``PermissionError`` (DENIED), ``NotImplementedError`` (UNSUPPORTED), ``RuntimeError``
    (MISUSE, STATE, BACKEND, INTERNAL). CANCELLED, OVERLOADED, CLOSED and EXISTS
    have no built-in that means the same thing and subclass AimsError only.
    ``except AimsError`` catches them all; ``err.code`` stays the exact status.
    """

    def __new__(cls, code=0, message=""):
        if cls is AimsError:
            cls = ERRORS.get(int(code), AimsError)
        # Allocate through the C base that owns the instance layout (the
        # __base__ chain, as CPython's "is it safe" check walks it).
        base = cls.__base__
        while issubclass(base, AimsError):
            base = base.__base__
        return base.__new__(cls)

    def __init__(self, code, message=""):
        self.code = int(code)
        self.name = STATUS_NAMES.get(self.code, "AIMS_E_%d" % self.code)
        self.message = message
        super().__init__(code, message)
        # OSError.__init__ keeps no args when __new__ got none: restore them.
        self.args = (self.code, message)

    def __str__(self):
        text = self.message or strerror(self.code)
        return "%s: %s" % (self.name, text)

    def __reduce__(self):
        return (AimsError, (self.code, self.message))


#: Python built-ins each status also subclasses, keyed by status *name* (the
#: numbers come from the library). A status not listed is a plain AimsError.
_BUILTIN_BASES = {
    "AIMS_E_MISUSE": (RuntimeError,),
    "AIMS_E_NOMEM": (MemoryError,),
    "AIMS_E_INVAL": (ValueError,),
    "AIMS_E_RANGE": (ValueError,),
    "AIMS_E_CORRUPT": (ValueError,),
    "AIMS_E_IO": (OSError,),
    "AIMS_E_UNSUPPORTED": (NotImplementedError,),
    "AIMS_E_NOTFOUND": (FileNotFoundError, LookupError),
    "AIMS_E_STATE": (RuntimeError,),
    "AIMS_E_BACKEND": (RuntimeError,),
    "AIMS_E_TIMEOUT": (TimeoutError,),
    "AIMS_E_INTERNAL": (RuntimeError,),
    "AIMS_E_DENIED": (PermissionError,),
}


def _error_class_name(status_name):
    """"AIMS_E_NOTFOUND" -> "AimsNotFoundError" (the C suffix, camel-cased; the
    Aims prefix keeps e.g. AimsTimeoutError from shadowing the built-in)."""
    words = {"NOTFOUND": "NotFound", "NOMEM": "NoMem", "INVAL": "Inval", "IO": "IO"}
    tail = status_name[len("AIMS_E_"):] if status_name.startswith("AIMS_E_") else status_name
    return "Aims" + words.get(tail, tail.capitalize()) + "Error"


def _error_classes():
    classes = {}
    for code, name in STATUS_NAMES.items():
        if code == 0:
            continue
        cls_name = _error_class_name(name)
        doc = "AimsError for %s (%s)." % (name, _c.aims_strerror(code).decode("ascii"))
        cls = type(cls_name, (AimsError,) + _BUILTIN_BASES.get(name, ()),
                   {"__doc__": doc, "__module__": __name__})
        classes[code] = cls
        globals()[cls_name] = cls
    return classes


#: {code: AimsError subclass}, one per status the library names (not AIMS_OK).
ERRORS = _error_classes()
__all__ += ["status_name", "STATUS_NAMES", "ERRORS"] + [c.__name__ for c in ERRORS.values()]


def _decode(raw):
    return raw.decode("utf-8", "replace") if raw else ""


def _check(rc, errmsg_fn=None, ptr=None):
    """Raise AimsError for a non-zero status.

    The thread-local aims_errmsg() is read first: it is set by every failing
    call on this thread (ctypes runs the call on the calling thread, and nothing
    else runs on it between the call and this read). The handle's own message is
    only a fallback.
    """
    if rc == 0:
        return
    message = _decode(_c.aims_errmsg())
    if not message and errmsg_fn is not None and ptr:
        message = _decode(errmsg_fn(ptr))
    raise AimsError(rc, message)


def strerror(code):
    """Static English text for a status code."""
    return _decode(_c.aims_strerror(int(code)))


def status_name(code):
    """C name of a status code ("AIMS_E_NOMEM"), or None for a code the library
    does not know."""
    raw = _c.aims_status_name(int(code))
    return raw.decode("ascii") if raw else None


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


#: log levels of aims_set_log
LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF = 10, 20, 30, 40, 100
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


_PARAM_I64 = 1
_PARAM_F64 = 2


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


# ---------------------------------------------------------------------------------
# Handles and lifetime

class _Owner:
    """Owns one C handle and destroys it exactly once, when the last Python
    reference to it goes: the wrapper object and every borrowed array or view
    hold one."""

    __slots__ = ("ptr", "_destroy", "parent", "__weakref__")

    def __init__(self, ptr, destroy, parent=None):
        self.ptr = ptr
        self._destroy = destroy
        self.parent = parent  # a view's parent _Owner, kept alive alongside

    def release(self):
        ptr, self.ptr = self.ptr, None
        if ptr:
            self._destroy(ptr)
        self.parent = None

    def __del__(self):
        try:
            self.release()
        except Exception:  # interpreter shutdown: module globals may be gone
            pass


class _Handle:
    """Base of the wrapper classes: close(), context manager, repr."""

    _kind = "object"

    def _adopt(self, ptr, destroy, parent=None):
        self._owner = _Owner(ptr, destroy, parent)

    @property
    def _ptr(self):
        owner = getattr(self, "_owner", None)
        if owner is None or not owner.ptr:
            raise AimsError(_E_CLOSED, "%s is closed" % self._kind)
        return owner.ptr

    @property
    def closed(self):
        owner = getattr(self, "_owner", None)
        return owner is None or not owner.ptr

    def close(self):
        """Drop this object's claim on the C handle (idempotent).

        The handle is destroyed now unless arrays or views borrowed from it are
        still alive; then it goes with the last of them.
        """
        self._owner = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _new_handle(call, *args):
    """Run a constructor-style call whose last argument is an out-pointer."""
    out = ctypes.c_void_p()
    _check(call(*args, ctypes.byref(out)))
    return out.value


def _path(p):
    return os.fsencode(p)


# ---------------------------------------------------------------------------------
# Loader options

class LoadOptions(_Handle):
    """Loader options (aims_loadopts). ``LoadOptions(delimiter=";", header=1)``."""

    _kind = "LoadOptions"

    def __init__(self, **options):
        self._adopt(_new_handle(_c.aims_loadopts_create), _c.aims_loadopts_destroy)
        for name, value in options.items():
            self.set(name, value)

    def set(self, name, value):
        """Set an integer loader option by name; returns self."""
        pid, _ = _param(name)
        _check(_c.aims_loadopts_set_param_i64(self._ptr, pid, _as_i64(name, value)))
        return self

    def get(self, name):
        """Read an integer loader option by name."""
        pid, _ = _param(name)
        out = ctypes.c_int64()
        _check(_c.aims_loadopts_get_param_i64(self._ptr, pid, ctypes.byref(out)))
        return out.value

    def __repr__(self):
        return "<aims.LoadOptions%s>" % (" closed" if self.closed else "")


def _with_opts(options, kwargs):
    """(handle-or-None, temporary) for an ``options=`` object and/or keyword options."""
    if options is not None and kwargs:
        raise TypeError("pass either options= or keyword options, not both")
    if options is not None:
        if not isinstance(options, LoadOptions):
            raise TypeError("options must be a LoadOptions, got %r" % (type(options),))
        return options, None
    if kwargs:
        tmp = LoadOptions(**kwargs)
        return tmp, tmp
    return None, None


# ---------------------------------------------------------------------------------
# Arrays: zero-copy exports and input conversion

def _borrow(addr, ctype, count, owner, shape=None):
    """A read-only array over ``count`` C values at ``addr`` that keeps ``owner`` alive.

    The ctypes array built on the address carries the reference; numpy's
    frombuffer (or the memoryview) keeps the ctypes array as its base.
    """
    if count == 0:
        if _np is not None:
            empty = _np.zeros(shape if shape is not None else (0,), dtype=_np.dtype(ctype))
            empty.flags.writeable = False
            return empty
        return memoryview(_array.array(_ARRAY_CODE[ctype])).toreadonly()
    if not addr:
        return None
    buf = (ctype * count).from_address(addr)
    buf._aims_owner = owner
    if _np is not None:
        arr = _np.frombuffer(buf, dtype=_np.dtype(ctype))
        if shape is not None:
            arr = arr.reshape(shape)
        arr.flags.writeable = False
        return arr
    view = memoryview(buf).cast("B").cast(_ARRAY_CODE[ctype],
                                           shape if shape is not None else [count])
    return view.toreadonly()


_ARRAY_CODE = {ctypes.c_float: "f", ctypes.c_int32: "i", ctypes.c_uint32: "I",
               ctypes.c_uint64: "Q", ctypes.c_double: "d"}
if _array.array("i").itemsize != 4 or _array.array("I").itemsize != 4:
    _ARRAY_CODE[ctypes.c_int32] = "l"
    _ARRAY_CODE[ctypes.c_uint32] = "L"


class _Input:
    """A C pointer to converted input plus whatever keeps its memory alive."""

    __slots__ = ("ptr", "keep", "shape")

    def __init__(self, ptr, keep, shape):
        self.ptr = ptr
        self.keep = keep
        self.shape = shape


def _rows_shape(shape, cols, what):
    """(rows, cols) of an input of ``shape``; 1-D input is one row unless cols given."""
    if len(shape) == 2:
        if cols is not None and cols != shape[1]:
            raise ValueError("%s has %d columns, cols=%d" % (what, shape[1], cols))
        return shape[0], shape[1]
    if len(shape) == 1:
        n = shape[0]
        if cols is None:
            return (1, n) if n else (0, 0)
        if cols <= 0 or n % cols:
            raise ValueError("%s has %d values, not a multiple of cols=%d" % (what, n, cols))
        return n // cols, cols
    raise ValueError("%s must be 1-D or 2-D, got %d dimensions" % (what, len(shape)))


def _float_matrix(x, cols, what):
    """Rows x cols float32 input, without a copy when already C-contiguous float32."""
    if _np is not None:
        arr = _np.ascontiguousarray(x, dtype=_np.float32)
        rows, ncols = _rows_shape(arr.shape, cols, what)
        return _Input(arr.ctypes.data_as(_lib.f32p), arr, (rows, ncols))
    if isinstance(x, (list, tuple)):
        if x and isinstance(x[0], (list, tuple)):
            width = len(x[0])
            flat = _array.array("f")
            for i, row in enumerate(x):
                if len(row) != width:
                    raise ValueError("%s row %d has %d values, row 0 has %d"
                                     % (what, i, len(row), width))
                flat.extend(float(v) for v in row)
            shape = (len(x), width)
        else:
            flat = _array.array("f", (float(v) for v in x))
            shape = (len(flat),)
        rows, ncols = _rows_shape(shape, cols, what)
        return _Input(_addr_of(flat, _lib.f32p), flat, (rows, ncols))
    view = memoryview(x)
    if view.format.lstrip("@=<") != "f" or view.itemsize != 4:
        # Other element types: convert through a Python list (slow but general).
        flat = _array.array("f", (float(v) for v in _flatten(view)))
        rows, ncols = _rows_shape(view.shape if view.ndim == 2 else (len(flat),), cols, what)
        return _Input(_addr_of(flat, _lib.f32p), flat, (rows, ncols))
    if not view.c_contiguous:
        flat = _array.array("f", _flatten(view))
        keep, ptr = flat, _addr_of(flat, _lib.f32p)
    elif view.readonly:
        keep = (ctypes.c_float * (view.nbytes // 4)).from_buffer_copy(view)
        ptr = ctypes.cast(keep, _lib.f32p)
    else:
        keep = (ctypes.c_char * view.nbytes).from_buffer(view) if view.nbytes else None
        ptr = ctypes.cast(keep, _lib.f32p) if keep is not None else None
    rows, ncols = _rows_shape(view.shape, cols, what)
    return _Input(ptr, (keep, view), (rows, ncols))


def _flatten(view):
    data = view.tolist()
    if view.ndim > 1:
        out = []
        stack = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(reversed(item))
            else:
                out.append(item)
        return out
    return data


def _addr_of(arr, ptype):
    """Pointer to the first item of an array.array (its buffer lives as long as it)."""
    if len(arr) == 0:
        return None
    address, _ = arr.buffer_info()
    return ctypes.cast(ctypes.c_void_p(address), ptype)


def _int32_vector(values, n, what):
    """n int32 values (class ids); None passes through."""
    if values is None:
        return None
    if _np is not None:
        arr = _np.asarray(values)
        if arr.dtype != _np.int32:
            if arr.size and (arr.dtype.kind not in "iub"
                             or arr.min() < -(1 << 31) or arr.max() >= (1 << 31)):
                raise ValueError("%s must be integers that fit in int32" % what)
            arr = arr.astype(_np.int32)
        arr = _np.ascontiguousarray(arr).reshape(-1)
        if arr.shape[0] != n:
            raise ValueError("%s has %d values for %d rows" % (what, arr.shape[0], n))
        return _Input(arr.ctypes.data_as(_lib.i32p), arr, (n,))
    code = _ARRAY_CODE[ctypes.c_int32]
    try:
        view = memoryview(values)
    except TypeError:
        view = None
    if view is not None and view.format.lstrip("@=<") == code and view.itemsize == 4 \
            and view.c_contiguous and not view.readonly:
        keep = (ctypes.c_char * view.nbytes).from_buffer(view) if view.nbytes else None
        arr_ptr = ctypes.cast(keep, _lib.i32p) if keep is not None else None
        count = view.nbytes // 4
        if count != n:
            raise ValueError("%s has %d values for %d rows" % (what, count, n))
        return _Input(arr_ptr, (keep, view), (n,))
    try:
        arr = _array.array(code, (int(v) for v in (view.tolist() if view is not None
                                                    else values)))
    except OverflowError:
        raise ValueError("%s must be integers that fit in int32" % what) from None
    if len(arr) != n:
        raise ValueError("%s has %d values for %d rows" % (what, len(arr), n))
    return _Input(_addr_of(arr, _lib.i32p), arr, (n,))


def _texts(texts, what="texts"):
    """(char** array, size_t* lens, keep) for a sequence of str/bytes documents."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("%s must be a sequence of documents, not one %s"
                        % (what, type(texts).__name__))
    encoded = []
    for i, t in enumerate(texts):
        if isinstance(t, str):
            encoded.append(t.encode("utf-8", "surrogateescape"))
        elif isinstance(t, (bytes, bytearray, memoryview)):
            encoded.append(bytes(t))
        else:
            raise TypeError("%s[%d] is %s, not str or bytes" % (what, i, type(t).__name__))
    n = len(encoded)
    ptrs = (ctypes.c_char_p * max(n, 1))(*encoded)
    lens = (ctypes.c_size_t * max(n, 1))(*[len(e) for e in encoded])
    return n, ptrs, lens, encoded


def _bytes_arg(data):
    """(pointer-compatible object, size, keep) for bytes-like input, without a copy
    for bytes and writable buffers."""
    if isinstance(data, bytes):
        return (data if data else None), len(data), data
    if isinstance(data, str):
        raise TypeError("expected bytes, got str: encode the text first")
    view = memoryview(data)
    if not view.c_contiguous:
        raw = view.tobytes()
        return (raw if raw else None), len(raw), raw
    if view.nbytes == 0:
        return None, 0, view
    if view.readonly:
        raw = view.tobytes()
        return raw, len(raw), raw
    buf = (ctypes.c_char * view.nbytes).from_buffer(view)
    return ctypes.cast(buf, ctypes.c_void_p), view.nbytes, (buf, view)


# ---------------------------------------------------------------------------------
# Datasets

class Format:
    """aims_format values."""
    IDX = 1
    CSV = 2
    SVMLIGHT = 3
    TEXT = 4
    AIMS = 5


_FORMATS = {"idx": Format.IDX, "csv": Format.CSV, "svmlight": Format.SVMLIGHT,
            "libsvm": Format.SVMLIGHT, "text": Format.TEXT, "aims": Format.AIMS}


def _format(fmt):
    if isinstance(fmt, str):
        try:
            return _FORMATS[fmt.lower()]
        except KeyError:
            raise ValueError("unknown format %r (one of %s)"
                             % (fmt, ", ".join(sorted(_FORMATS)))) from None
    return int(fmt)


class Dataset(_Handle):
    """An immutable table of examples (aims_dataset): dense features and/or a
    token part, raw text, and class labels or float targets.

    Build with the classmethods (parse, load, load_idx, load_topics, from_dense,
    from_texts) or from another dataset (view, select, split, Pipeline.transform).
    """

    _kind = "Dataset"

    def __init__(self, *_args, **_kwargs):
        raise TypeError("use Dataset.parse/load/load_idx/load_topics/from_dense/from_texts")

    @classmethod
    def _wrap(cls, ptr, parent=None):
        self = object.__new__(cls)
        self._adopt(ptr, _c.aims_dataset_destroy, parent)
        return self

    # ---- constructors ----------------------------------------------------------
    @classmethod
    def parse(cls, fmt, data, options=None, **opts):
        """Parse bytes in memory. ``fmt``: "csv", "svmlight", "text", "idx", "aims"
        (or a Format value); keyword options are loader options by name."""
        ptr_arg, size, keep = _bytes_arg(data)
        lo, tmp = _with_opts(options, opts)
        try:
            out = _new_handle(_c.aims_dataset_parse, _format(fmt), ptr_arg, size,
                              lo._ptr if lo is not None else None)
        finally:
            if tmp is not None:
                tmp.close()
        del keep
        return cls._wrap(out)

    @classmethod
    def load(cls, fmt, path, options=None, **opts):
        """Load a file in format ``fmt`` (see parse)."""
        lo, tmp = _with_opts(options, opts)
        try:
            out = _new_handle(_c.aims_dataset_load_file, _format(fmt), _path(path),
                              lo._ptr if lo is not None else None)
        finally:
            if tmp is not None:
                tmp.close()
        return cls._wrap(out)

    @classmethod
    def load_idx(cls, images, labels=None, options=None, **opts):
        """Load an IDX image file and optionally its IDX label file."""
        lo, tmp = _with_opts(options, opts)
        try:
            out = _new_handle(_c.aims_dataset_load_idx, _path(images),
                              _path(labels) if labels is not None else None,
                              lo._ptr if lo is not None else None)
        finally:
            if tmp is not None:
                tmp.close()
        return cls._wrap(out)

    @classmethod
    def load_topics(cls, directory, options=None, **opts):
        """Load a one-topic-per-file directory (fortunes layout); e.g. min_docs=5."""
        lo, tmp = _with_opts(options, opts)
        try:
            out = _new_handle(_c.aims_dataset_load_topics, _path(directory),
                              lo._ptr if lo is not None else None)
        finally:
            if tmp is not None:
                tmp.close()
        return cls._wrap(out)

    @classmethod
    def from_dense(cls, x, labels=None, cols=None, allow_nonfinite=False):
        """Copy a rows x cols float matrix (and optional int class ids) into a dataset.

        ``x``: 2-D numpy array / nested lists / 2-D buffer; 1-D input is one row
        unless ``cols`` is given. NaN or inf in ``x`` raise AimsError naming the
        row and column, unless ``allow_nonfinite`` (e.g. NaN as missing values
        for an IMPUTE step).
        """
        inp = _float_matrix(x, cols, "x")
        rows, ncols = inp.shape
        lab = _int32_vector(labels, rows, "labels")
        with LoadOptions(allow_nonfinite=1 if allow_nonfinite else 0) as lo:
            out = _new_handle(_c.aims_dataset_create_dense_v2, rows, ncols, inp.ptr,
                              lab.ptr if lab is not None else None, lo._ptr)
        return cls._wrap(out)

    @classmethod
    def from_texts(cls, texts, labels=None):
        """Copy a list of documents (str, UTF-8 encoded; or bytes) into a text dataset."""
        n, ptrs, lens, keep = _texts(texts)
        lab = _int32_vector(labels, n, "labels")
        out = _new_handle(_c.aims_dataset_create_texts, n, ptrs, lens,
                          lab.ptr if lab is not None else None)
        del keep
        return cls._wrap(out)

    # ---- shape and metadata ----------------------------------------------------
    @property
    def rows(self):
        return int(_c.aims_dataset_rows(self._ptr))

    def __len__(self):
        return self.rows

    @property
    def cols(self):
        """Dense feature columns; 0 without a dense part."""
        return int(_c.aims_dataset_cols(self._ptr))

    @property
    def num_classes(self):
        return int(_c.aims_dataset_num_classes(self._ptr))

    @property
    def class_names(self):
        """List of class names (str); [] when the dataset has none."""
        ptr = self._ptr
        names = []
        for k in range(int(_c.aims_dataset_num_classes(ptr))):
            raw = _c.aims_dataset_class_name(ptr, k)
            if raw is None:
                return [] if k == 0 else names
            names.append(raw.decode("utf-8", "replace"))
        return names

    @property
    def token_dim(self):
        """Upper bound on token ids; 0 without a token part."""
        return int(_c.aims_dataset_token_dim(self._ptr))

    @property
    def errmsg(self):
        """Detail of the last failure recorded on this dataset."""
        return _decode(_c.aims_dataset_errmsg(self._ptr))

    # ---- zero-copy accessors ---------------------------------------------------
    def features(self):
        """Dense features, shape (rows, cols) float32, read-only and zero-copy; None
        without a dense part."""
        ptr = self._ptr
        addr = _c.aims_dataset_features(ptr)
        if not addr:
            return None
        rows, cols = int(_c.aims_dataset_rows(ptr)), int(_c.aims_dataset_cols(ptr))
        return _borrow(addr, ctypes.c_float, rows * cols, self._owner, (rows, cols))

    def labels(self):
        """Class ids, shape (rows,) int32, read-only and zero-copy; None without labels."""
        ptr = self._ptr
        addr = _c.aims_dataset_labels(ptr)
        if not addr:
            return None
        return _borrow(addr, ctypes.c_int32, int(_c.aims_dataset_rows(ptr)), self._owner)

    def targets(self):
        """Float targets, shape (rows,) float32, zero-copy; None without targets."""
        ptr = self._ptr
        addr = _c.aims_dataset_targets(ptr)
        if not addr:
            return None
        return _borrow(addr, ctypes.c_float, int(_c.aims_dataset_rows(ptr)), self._owner)

    def tokens(self):
        """The token part as (offsets, ids, weights), zero-copy.

        offsets: rows+1 uint64; row i's ids are ids[offsets[i]:offsets[i+1]] (for a
        view offsets[0] need not be 0). ids: uint32; weights: float32 or None.
        Raises AimsError(AIMS_E_STATE) when the dataset has no token part.
        """
        ptr = self._ptr
        offs, ids, weights = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        _check(_c.aims_dataset_tokens(ptr, ctypes.byref(offs), ctypes.byref(ids),
                                      ctypes.byref(weights)),
               _c.aims_dataset_errmsg, ptr)
        rows = int(_c.aims_dataset_rows(ptr))
        offsets = _borrow(offs.value, ctypes.c_uint64, rows + 1, self._owner)
        end = int(offsets[rows]) if rows + 1 > 0 and offsets is not None else 0
        ids_arr = _borrow(ids.value, ctypes.c_uint32, end, self._owner)
        w_arr = (_borrow(weights.value, ctypes.c_float, end, self._owner)
                 if weights.value else None)
        return offsets, ids_arr, w_arr

    def text(self, i, raw=False):
        """Raw text of row ``i`` as str (bytes with raw=True); None without a text part."""
        ptr = self._ptr
        rows = int(_c.aims_dataset_rows(ptr))
        i = int(i)
        if i < 0:
            i += rows
        if not 0 <= i < rows:
            raise IndexError("row %d out of range for %d rows" % (i, rows))
        n = ctypes.c_size_t()
        addr = _c.aims_dataset_text(ptr, i, ctypes.byref(n))
        if not addr:
            return None
        data = ctypes.string_at(addr, n.value)
        return data if raw else data.decode("utf-8", "replace")

    def texts(self):
        """All rows' text as a list of str (None entries without a text part)."""
        return [self.text(i) for i in range(self.rows)]

    # ---- derived datasets ------------------------------------------------------
    def shuffle(self, seed):
        """Shuffle rows in place (same seed, same order); returns self.
        AIMS_E_STATE when this is a view or has live views."""
        ptr = self._ptr
        _check(_c.aims_dataset_shuffle(ptr, int(seed) & 0xFFFFFFFFFFFFFFFF),
               _c.aims_dataset_errmsg, ptr)
        return self

    def view(self, begin, count):
        """Zero-copy view of rows [begin, begin+count)."""
        if begin < 0 or count < 0:
            raise ValueError("begin and count must be >= 0")
        out = _new_handle(_c.aims_dataset_view, self._ptr, int(begin), int(count))
        view = Dataset._wrap(out, parent=self._owner)
        # The C view holds a reference on the parent; the Python side keeps both the
        # parent's owner (for arrays borrowed through the view) and the parent object.
        view._parent = self
        return view

    def select(self, idx):
        """Copy of the rows listed in ``idx`` (in that order)."""
        if _np is not None:
            arr = _np.asarray(idx).reshape(-1)
            if arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0):
                raise ValueError("idx must hold non-negative integers")
            arr = _np.ascontiguousarray(arr, dtype=_np.uintp)
            n, cptr = arr.shape[0], arr.ctypes.data_as(_lib.sizep)
            keep = arr
        else:
            values = [int(v) for v in idx]
            if any(v < 0 for v in values):
                raise ValueError("idx must hold non-negative integers")
            keep = (ctypes.c_size_t * max(len(values), 1))(*values)
            n, cptr = len(values), keep
        out = _new_handle(_c.aims_dataset_select, self._ptr, cptr, n)
        del keep
        return Dataset._wrap(out)

    def split(self, test_fraction, seed=0, stratified=True):
        """(train, test) copies; stratified by class unless stratified=False."""
        train, test = ctypes.c_void_p(), ctypes.c_void_p()
        _check(_c.aims_dataset_split(self._ptr, float(test_fraction),
                                     int(seed) & 0xFFFFFFFFFFFFFFFF, 1 if stratified else 0,
                                     ctypes.byref(train), ctypes.byref(test)))
        return Dataset._wrap(train.value), Dataset._wrap(test.value)

    def save(self, path):
        """Save in the libaims container format (atomic write); load with
        Dataset.load("aims", path)."""
        ptr = self._ptr
        _check(_c.aims_dataset_save(ptr, _path(path)), _c.aims_dataset_errmsg, ptr)

    def __repr__(self):
        if self.closed:
            return "<aims.Dataset closed>"
        return "<aims.Dataset rows=%d cols=%d classes=%d token_dim=%d>" % (
            self.rows, self.cols, self.num_classes, self.token_dim)


# ---------------------------------------------------------------------------------
# Pipelines

class StepKind:
    """aims_step_kind values."""
    STANDARDIZE = 1
    MINMAX = 2
    IMPUTE = 3
    CLIP = 4
    ONEHOT = 5
    SCALE = 6
    NORMALIZE = 20
    TOKENIZE = 21
    NGRAMS = 22
    HASH = 23
    TFIDF = 24


_STEP_KINDS = {name.lower(): value for name, value in vars(StepKind).items()
               if not name.startswith("_")}
_STEP_NAMES = {value: name for name, value in _STEP_KINDS.items()}


def _step_kind(kind):
    if isinstance(kind, str):
        try:
            return _STEP_KINDS[kind.lower()]
        except KeyError:
            raise ValueError("unknown step kind %r (one of %s)"
                             % (kind, ", ".join(sorted(_STEP_KINDS)))) from None
    return int(kind)


class _Stored:
    """save/load/parse for the objects kept in container files (pipelines, models,
    bundles): the C functions are aims_<object>_{save,load,parse} and, where it
    exists, aims_<object>_errmsg."""

    _c_prefix = None

    def save(self, path):
        """Write the object to path (atomic: temp file + rename)."""
        ptr = self._ptr
        name = self._c_prefix + "_errmsg"
        errmsg = getattr(_c, name) if name in _lib.PROTOTYPES else None
        _check(getattr(_c, self._c_prefix + "_save")(ptr, _path(path)), errmsg, ptr)

    @classmethod
    def load(cls, path):
        """Load an object saved with save()."""
        return cls._wrap(_new_handle(getattr(_c, cls._c_prefix + "_load"), _path(path)))

    @classmethod
    def parse(cls, data):
        """Load an object from the bytes of a saved file."""
        ptr_arg, size, keep = _bytes_arg(data)
        out = _new_handle(getattr(_c, cls._c_prefix + "_parse"), ptr_arg, size)
        del keep
        return cls._wrap(out)


class Pipeline(_Stored, _Handle):
    """Preprocessing steps with fitted state (aims_pipeline).

    >>> p = Pipeline()
    >>> p.add("impute", strategy=1)            # parameters by name
    >>> p.add("standardize", col_begin=0, col_end=2)
    """

    _kind = "Pipeline"
    _c_prefix = "aims_pipeline"

    def __init__(self, steps=()):
        self._adopt(_new_handle(_c.aims_pipeline_create), _c.aims_pipeline_destroy)
        for step in steps:
            if isinstance(step, (tuple, list)):
                kind, params = step[0], (step[1] if len(step) > 1 else {})
                self.add(kind, **params)
            else:
                self.add(step)

    @classmethod
    def _wrap(cls, ptr):
        self = object.__new__(cls)
        self._adopt(ptr, _c.aims_pipeline_destroy)
        return self

    def _call(self, fn, *args):
        ptr = self._ptr
        _check(fn(ptr, *args), _c.aims_pipeline_errmsg, ptr)

    # ---- configuration ---------------------------------------------------------
    def add(self, kind, **params):
        """Append a step ("standardize", "minmax", "impute", "clip", "onehot",
        "scale", "normalize", "tokenize", "ngrams", "hash", "tfidf") with
        parameters by name; returns the step's index."""
        index = ctypes.c_size_t()
        self._call(_c.aims_pipeline_add, _step_kind(kind), ctypes.byref(index))
        if params:
            self.set_step(index.value, **params)
        return index.value

    def set_step(self, step, **params):
        """Set step parameters by name (typed setter from aims_param_info); returns self."""
        for name, value in params.items():
            pid, ptype = _param(name)
            if ptype == _PARAM_F64:
                self._call(_c.aims_pipeline_set_step_param_f64, int(step), pid, _as_f64(name, value))
            else:
                self._call(_c.aims_pipeline_set_step_param_i64, int(step), pid, _as_i64(name, value))
        return self

    def get_step(self, step, name):
        """Read one step parameter by name (int or float by its type)."""
        pid, ptype = _param(name)
        if ptype == _PARAM_F64:
            out = ctypes.c_double()
            getter = _c.aims_pipeline_get_step_param_f64
        else:
            out = ctypes.c_int64()
            getter = _c.aims_pipeline_get_step_param_i64
        ptr = self._ptr
        _check(getter(ptr, int(step), pid, ctypes.byref(out)), _c.aims_pipeline_errmsg, ptr)
        return out.value

    def set_param(self, name, value):
        """Set a pipeline-wide parameter by name (e.g. "threads"); returns self."""
        pid, _ = _param(name)
        self._call(_c.aims_pipeline_set_param_i64, pid, _as_i64(name, value))
        return self

    def get_param(self, name):
        pid, _ = _param(name)
        out = ctypes.c_int64()
        ptr = self._ptr
        _check(_c.aims_pipeline_get_param_i64(ptr, pid, ctypes.byref(out)),
               _c.aims_pipeline_errmsg, ptr)
        return out.value

    @property
    def threads(self):
        """Worker threads for transform (0 = all cores)."""
        return self.get_param("threads")

    @threads.setter
    def threads(self, value):
        self.set_param("threads", value)

    def set_threads(self, value):
        return self.set_param("threads", value)

    # ---- introspection ---------------------------------------------------------
    @property
    def num_steps(self):
        return int(_c.aims_pipeline_num_steps(self._ptr))

    def __len__(self):
        return self.num_steps

    def step_kind(self, step):
        """Name of step ``step``'s kind (e.g. "standardize")."""
        value = int(_c.aims_pipeline_step_kind(self._ptr, int(step)))
        if value == 0:
            raise IndexError("no step %d (pipeline has %d)" % (step, self.num_steps))
        return _STEP_NAMES.get(value, str(value))

    @property
    def steps(self):
        return [self.step_kind(i) for i in range(self.num_steps)]

    @property
    def is_fitted(self):
        return bool(_c.aims_pipeline_is_fitted(self._ptr))

    @property
    def output_cols(self):
        """Output width after fit (dense columns, or token id bound for text)."""
        out = ctypes.c_size_t()
        ptr = self._ptr
        _check(_c.aims_pipeline_output_cols(ptr, ctypes.byref(out)),
               _c.aims_pipeline_errmsg, ptr)
        return out.value

    @property
    def errmsg(self):
        return _decode(_c.aims_pipeline_errmsg(self._ptr))

    # ---- fit and transform -----------------------------------------------------
    def fit(self, ds):
        """Fit every step on ``ds``; returns self."""
        self._call(_c.aims_pipeline_fit, _dataset_ptr(ds))
        return self

    def transform(self, ds):
        """Apply the fitted pipeline to a Dataset; returns a new Dataset."""
        return Dataset._wrap(_new_handle(_c.aims_pipeline_transform, self._ptr,
                                         _dataset_ptr(ds)))

    def fit_transform(self, ds):
        return Dataset._wrap(_new_handle(_c.aims_pipeline_fit_transform, self._ptr,
                                         _dataset_ptr(ds)))

    def transform_rows(self, x, cols=None):
        """Transform dense rows (numeric pipelines) without building a Dataset.

        Returns a float32 numpy array (rows, output_cols), or without numpy an
        array.array('f') of rows*output_cols values, row-major.
        """
        ptr = self._ptr
        inp = _float_matrix(x, cols, "x")
        rows, in_cols = inp.shape
        out_cols = self.output_cols
        n = rows * out_cols
        if _np is not None:
            result = _np.empty((rows, out_cols), dtype=_np.float32)
            out_ptr = result.ctypes.data_as(_lib.f32p)
        else:
            result = _array.array("f", bytes(4 * n))
            out_ptr = _addr_of(result, _lib.f32p)
        _check(_c.aims_pipeline_transform_rows(ptr, inp.ptr, rows, in_cols, out_ptr, n))
        return result

    def transform_texts(self, texts):
        """Transform documents with a fitted text pipeline; returns a Dataset with a
        token part."""
        n, ptrs, lens, keep = _texts(texts)
        out = _new_handle(_c.aims_pipeline_transform_texts, self._ptr, ptrs, lens, n)
        del keep
        return Dataset._wrap(out)

    # ---- persistence -----------------------------------------------------------

    def __repr__(self):
        if self.closed:
            return "<aims.Pipeline closed>"
        return "<aims.Pipeline steps=%r fitted=%s>" % (self.steps, self.is_fitted)


def _dataset_ptr(ds):
    if not isinstance(ds, Dataset):
        raise TypeError("expected an aims.Dataset, got %s" % type(ds).__name__)
    return ds._ptr


# ---------------------------------------------------------------------------------
# Models, training, evaluation, bundles (aims_model.h)

_MODEL_KINDS = {"linear": 1, "logistic": 2, "softmax": 3, "mlp": 4, "text": 5}
_MODEL_KIND_NAMES = {v: k for k, v in _MODEL_KINDS.items()}
_ACTIVATIONS = {"none": 0, "relu": 1, "gelu": 2, "tanh": 3, "sigmoid": 4}
_OUT_SCORES, _OUT_PROBA = 1, 2
#: aims_eval_metric values by name (Eval.get)
METRICS = {"accuracy": 1, "macro_f1": 2, "log_loss": 3, "mse": 4, "r2": 5, "rows": 6}
#: aims_trainer_stat values by name (Trainer.stat)
STATS = {"epoch": 1, "step": 2, "train_loss": 3, "val_loss": 4, "val_accuracy": 5,
         "samples_per_s": 6, "lr": 7, "best_epoch": 8, "steps_per_epoch": 9}


def _enum(value, table, what):
    if isinstance(value, str):
        try:
            return table[value.lower()]
        except KeyError:
            raise ValueError("unknown %s %r (one of %s)"
                             % (what, value, ", ".join(sorted(table)))) from None
    return int(value)


def _noop_destroy(_ptr):
    """Borrowed handles (a bundle's model and pipeline) are not ours to destroy."""


def _set_typed(obj_ptr, set_i64, set_f64, errmsg_fn, name, value):
    pid, ptype = _param(name)
    if ptype == _PARAM_F64:
        rc = set_f64(obj_ptr, pid, _as_f64(name, value))
    else:
        rc = set_i64(obj_ptr, pid, _as_i64(name, value))
    _check(rc, errmsg_fn, obj_ptr)


def _get_typed(obj_ptr, get_i64, get_f64, errmsg_fn, name):
    pid, ptype = _param(name)
    if ptype == _PARAM_F64:
        out = ctypes.c_double()
        _check(get_f64(obj_ptr, pid, ctypes.byref(out)), errmsg_fn, obj_ptr)
    else:
        out = ctypes.c_int64()
        _check(get_i64(obj_ptr, pid, ctypes.byref(out)), errmsg_fn, obj_ptr)
    return out.value


def _float_out(rows, cols):
    """(result, f32 pointer, capacity) for rows x cols floats the C code writes into."""
    n = rows * cols
    if _np is not None:
        result = _np.empty((rows, cols), dtype=_np.float32)
        return result, result.ctypes.data_as(_lib.f32p), n
    result = _array.array("f", bytes(4 * n))
    return result, _addr_of(result, _lib.f32p), n


def _what(proba):
    return _OUT_PROBA if proba else _OUT_SCORES


class Eval(_Handle):
    """Evaluation results (aims_eval): typed metrics and the confusion matrix.

    ``ev.accuracy``, ``ev.macro_f1``, ``ev.log_loss`` (classifiers), ``ev.mse``,
    ``ev.r2`` (regression), ``ev.rows``; ``ev.get(name)`` raises AimsError
    (AIMS_E_UNSUPPORTED) for a metric that does not apply; ``ev.as_dict()`` holds
    the ones that do.
    """

    _kind = "Eval"

    def __init__(self, *_args, **_kwargs):
        raise TypeError("Eval objects come from Model.evaluate()")

    @classmethod
    def _wrap(cls, ptr):
        self = object.__new__(cls)
        self._adopt(ptr, _c.aims_eval_destroy)
        return self

    def get(self, metric):
        out = ctypes.c_double()
        _check(_c.aims_eval_get_metric(self._ptr, _enum(metric, METRICS, "metric"),
                                       ctypes.byref(out)))
        return out.value

    accuracy = property(lambda self: self.get("accuracy"))
    macro_f1 = property(lambda self: self.get("macro_f1"))
    log_loss = property(lambda self: self.get("log_loss"))
    mse = property(lambda self: self.get("mse"))
    r2 = property(lambda self: self.get("r2"))
    rows = property(lambda self: int(self.get("rows")))

    @property
    def num_classes(self):
        return int(_c.aims_eval_num_classes(self._ptr))

    def confusion(self):
        """k x k counts, [true][predicted]: an int64 numpy array, or a list of lists."""
        k = self.num_classes
        buf = (ctypes.c_int64 * max(k * k, 1))()
        _check(_c.aims_eval_get_confusion(self._ptr, buf, k * k))
        if _np is not None:
            return _np.ctypeslib.as_array(buf)[:k * k].reshape(k, k).copy()
        return [list(buf[i * k:(i + 1) * k]) for i in range(k)]

    def as_dict(self):
        out = {}
        for name in METRICS:
            try:
                out[name] = self.get(name)
            except AimsError as exc:
                if exc.code != 7:  # AIMS_E_UNSUPPORTED: metric does not apply
                    raise
        return out

    def __repr__(self):
        if self.closed:
            return "<aims.Eval closed>"
        return "<aims.Eval %r>" % self.as_dict()


class Model(_Stored, _Handle):
    """A model (aims_model): linear, logistic, softmax, MLP or TEXT.

    >>> m = Model("mlp", 784, 10, hidden=[256], activation="relu")
    >>> Trainer(m, epochs=5, lr=0.1).fit(train)
    >>> m.evaluate(test).accuracy
    >>> m.predict(x, proba=True)          # float32 (rows, classes), written by C

    Parameters are addressed by name (``dropout``, ``loss``, ``embed_dim``,
    ``model_threads``, ``precision``). Predict and evaluate may run from many
    threads at once; configuration and training need exclusive access.
    """

    _kind = "Model"
    _c_prefix = "aims_model"

    def __init__(self, kind, input_dim, output_dim, hidden=(), activation="relu", **params):
        ptr = _new_handle(_c.aims_model_create, _enum(kind, _MODEL_KINDS, "model kind"),
                          int(input_dim), int(output_dim))
        self._adopt(ptr, _c.aims_model_destroy)
        for layer in hidden:
            if isinstance(layer, (tuple, list)):
                self.add_dense(layer[0], layer[1] if len(layer) > 1 else activation)
            else:
                self.add_dense(layer, activation)
        for name, value in params.items():
            self.set_param(name, value)

    @classmethod
    def _wrap(cls, ptr, destroy=None, parent=None):
        self = object.__new__(cls)
        self._adopt(ptr, destroy or _c.aims_model_destroy, parent)
        return self

    def _call(self, fn, *args):
        ptr = self._ptr
        _check(fn(ptr, *args), _c.aims_model_errmsg, ptr)

    # ---- configuration ---------------------------------------------------------
    def add_dense(self, units, activation="relu"):
        """Append a hidden layer (MLP, before training); returns self."""
        self._call(_c.aims_model_add_dense, int(units),
                   _enum(activation, _ACTIVATIONS, "activation"))
        return self

    def set_param(self, name, value):
        """Set a model parameter by name; returns self."""
        _set_typed(self._ptr, _c.aims_model_set_param_i64, _c.aims_model_set_param_f64,
                   _c.aims_model_errmsg, name, value)
        return self

    def get_param(self, name):
        return _get_typed(self._ptr, _c.aims_model_get_param_i64, _c.aims_model_get_param_f64,
                          _c.aims_model_errmsg, name)

    # ---- introspection ---------------------------------------------------------
    @property
    def kind(self):
        """"linear", "logistic", "softmax", "mlp" or "text"."""
        value = int(_c.aims_model_kind_of(self._ptr))
        return _MODEL_KIND_NAMES.get(value, str(value))

    input_dim = property(lambda self: int(_c.aims_model_input_dim(self._ptr)))
    output_dim = property(lambda self: int(_c.aims_model_output_dim(self._ptr)))
    num_params = property(lambda self: int(_c.aims_model_num_params(self._ptr)))
    is_trained = property(lambda self: bool(_c.aims_model_is_trained(self._ptr)))
    is_quantized = property(lambda self: bool(_c.aims_model_is_quantized(self._ptr)))
    errmsg = property(lambda self: _decode(_c.aims_model_errmsg(self._ptr)))

    # ---- inference ---------------------------------------------------------------
    def predict(self, x, proba=False, cols=None):
        """Scores (or probabilities) for dense rows: float32 (rows, output_dim), or
        without numpy an array.array('f') of rows*output_dim values."""
        ptr = self._ptr
        inp = _float_matrix(x, cols, "x")
        rows, in_cols = inp.shape
        result, out_ptr, cap = _float_out(rows, self.output_dim)
        _check(_c.aims_model_predict(ptr, _what(proba), inp.ptr, rows, in_cols, out_ptr, cap),
               _c.aims_model_errmsg, ptr)
        return result

    def predict_proba(self, x, cols=None):
        return self.predict(x, proba=True, cols=cols)

    def predict_class(self, x, cols=None):
        """Class ids for dense rows: int32 numpy array (rows,), or array.array."""
        ptr = self._ptr
        inp = _float_matrix(x, cols, "x")
        rows, in_cols = inp.shape
        if _np is not None:
            result = _np.empty((rows,), dtype=_np.int32)
            out_ptr = result.ctypes.data_as(_lib.i32p)
        else:
            result = _array.array(_ARRAY_CODE[ctypes.c_int32], bytes(4 * rows))
            out_ptr = _addr_of(result, _lib.i32p)
        _check(_c.aims_model_predict_class(ptr, inp.ptr, rows, in_cols, out_ptr, rows),
               _c.aims_model_errmsg, ptr)
        return result

    def predict_dataset(self, ds, proba=False):
        """Scores / probabilities for every row of a Dataset (dense or token part)."""
        ptr = self._ptr
        result, out_ptr, cap = _float_out(len(ds), self.output_dim)
        _check(_c.aims_model_predict_dataset(ptr, _what(proba), _dataset_ptr(ds), out_ptr,
                                             cap), _c.aims_model_errmsg, ptr)
        return result

    def evaluate(self, ds):
        """Metrics on a labelled Dataset; returns an Eval."""
        return Eval._wrap(_new_handle(_c.aims_model_evaluate, self._ptr, _dataset_ptr(ds)))

    # ---- copies, optimization, persistence ----------------------------------------
    def clone(self):
        return Model._wrap(_new_handle(_c.aims_model_clone, self._ptr))

    def quantize(self, calib):
        """int8 copy of the model calibrated on a Dataset; returns a new Model."""
        return Model._wrap(_new_handle(_c.aims_model_quantize, self._ptr,
                                       _dataset_ptr(calib)))


    # ---- convenience -------------------------------------------------------------
    def fit(self, train, val=None, progress=None, **trainer_params):
        """Train with a temporary Trainer (parameters by name); returns self.

        ``fit(train_ds, val_ds)`` with Datasets, or ``fit(X, y)`` with arrays: X
        rows x cols floats, y the rows' class ids (copied into a Dataset).
        """
        if not isinstance(train, Dataset):
            train, val = Dataset.from_dense(train, labels=val), None
        with Trainer(self, progress=progress, **trainer_params) as t:
            t.fit(train, val)
        return self

    def __repr__(self):
        if self.closed:
            return "<aims.Model closed>"
        return "<aims.Model %s %d->%d trained=%s quantized=%s>" % (
            self.kind, self.input_dim, self.output_dim, self.is_trained, self.is_quantized)


class Trainer(_Handle):
    """Trains a Model (aims_trainer): step-wise or to the end.

    >>> t = Trainer(model, optimizer=1, lr=1e-3, epochs=5, batch=128, seed=1)
    >>> t.fit(train, val)                       # or: t.begin(train); t.step() ...
    >>> t.stat("val_accuracy")

    Progress: ``progress(trainer)`` is called after every epoch on the training
    thread; a truthy return stops the run (fit raises AimsError AIMS_E_CANCELLED),
    an exception raised inside it stops the run and is re-raised by the call that
    was training. The trainer keeps the callback, the model and the datasets of the
    current run alive. The GIL is released while C trains and re-acquired only for
    the callback, so other Python threads run (and may call cancel()).
    """

    _kind = "Trainer"

    def __init__(self, model, progress=None, **params):
        if not isinstance(model, Model):
            raise TypeError("expected an aims.Model, got %s" % type(model).__name__)
        # The C trainer borrows the model: its owner is the trainer handle's parent,
        # so the model is destroyed only after the trainer, whatever the Python
        # objects' order of collection or model.close().
        self._adopt(_new_handle(_c.aims_trainer_create, model._ptr), _c.aims_trainer_destroy,
                    model._owner)
        self._model = model
        self._datasets = ()
        self._progress = None
        self._progress_c = None
        self._progress_exc = None
        for name, value in params.items():
            self.set_param(name, value)
        if progress is not None:
            self.set_progress(progress)

    def _call(self, fn, *args):
        ptr = self._ptr
        rc = fn(ptr, *args)
        exc, self._progress_exc = self._progress_exc, None
        if exc is not None:
            raise exc
        _check(rc, _c.aims_trainer_errmsg, ptr)

    @property
    def model(self):
        return self._model

    def set_param(self, name, value):
        _set_typed(self._ptr, _c.aims_trainer_set_param_i64, _c.aims_trainer_set_param_f64,
                   _c.aims_trainer_errmsg, name, value)
        return self

    def get_param(self, name):
        return _get_typed(self._ptr, _c.aims_trainer_get_param_i64,
                          _c.aims_trainer_get_param_f64, _c.aims_trainer_errmsg, name)

    def set_progress(self, callback):
        """Install ``callback(trainer) -> stop?`` (None removes it); returns self."""
        if callback is None:
            self._call(_c.aims_trainer_set_progress_fn, _lib.progress_fn(), None)
            self._progress = self._progress_c = None
            return self

        def _trampoline(_user, _t):
            try:
                return 1 if callback(self) else 0
            except BaseException as exc:  # surfaced by the training call
                self._progress_exc = exc
                return 1
        cfn = _lib.progress_fn(_trampoline)
        self._call(_c.aims_trainer_set_progress_fn, cfn, None)
        # C keeps the function pointer: the thunk must live as long as the trainer.
        self._progress, self._progress_c = callback, cfn
        return self

    def stat(self, name):
        out = ctypes.c_double()
        ptr = self._ptr
        _check(_c.aims_trainer_get_stat(ptr, _enum(name, STATS, "stat"), ctypes.byref(out)),
               _c.aims_trainer_errmsg, ptr)
        return out.value

    @property
    def stats(self):
        """All progress values as a dict (NaN where not available)."""
        return {name: self.stat(name) for name in STATS}

    def _run_args(self, train, val):
        self._datasets = (train._owner, val._owner if val is not None else None)
        return _dataset_ptr(train), (_dataset_ptr(val) if val is not None else None)

    def begin(self, train, val=None):
        """Start a run (weights, optimizer state, data order); returns self."""
        tp, vp = self._run_args(train, val)
        self._call(_c.aims_trainer_begin, tp, vp)
        return self

    def step(self):
        """One optimizer step; returns True when the run is over."""
        done = ctypes.c_int()
        self._call(_c.aims_trainer_step, ctypes.byref(done))
        return bool(done.value)

    def epoch(self):
        """Steps to the end of the epoch; returns True when the run is over."""
        done = ctypes.c_int()
        self._call(_c.aims_trainer_epoch, ctypes.byref(done))
        return bool(done.value)

    def fit(self, train, val=None):
        """Run to the end; returns self."""
        tp, vp = self._run_args(train, val)
        self._call(_c.aims_trainer_fit, tp, vp)
        return self

    def cancel(self):
        """Stop a running fit/step/epoch at the next step boundary (any thread)."""
        _c.aims_trainer_cancel(self._ptr)

    def checkpoint(self, path):
        self._call(_c.aims_trainer_checkpoint, _path(path))

    def restore(self, path):
        self._call(_c.aims_trainer_restore, _path(path))

    @property
    def errmsg(self):
        return _decode(_c.aims_trainer_errmsg(self._ptr))

    def close(self):
        super().close()
        self._datasets = ()

    def __repr__(self):
        if self.closed:
            return "<aims.Trainer closed>"
        return "<aims.Trainer epoch=%g step=%g>" % (self.stat("epoch"), self.stat("step"))


class Bundle(_Stored, _Handle):
    """A fitted pipeline (or none) + a trained model + metadata, in one file.

    >>> b = Bundle(pipeline, model, name="fmnist", version="1")
    >>> b.save("m.aims"); b2 = Bundle.load("m.aims")
    >>> b2.predict_rows(raw_rows, proba=True); b2.predict_texts(["some text"])
    """

    _kind = "Bundle"
    _c_prefix = "aims_bundle"

    def __init__(self, pipeline, model, **meta):
        pp = None
        if pipeline is not None:
            if not isinstance(pipeline, Pipeline):
                raise TypeError("expected an aims.Pipeline or None, got %s"
                                % type(pipeline).__name__)
            pp = pipeline._ptr
        if not isinstance(model, Model):
            raise TypeError("expected an aims.Model, got %s" % type(model).__name__)
        self._adopt(_new_handle(_c.aims_bundle_create, pp, model._ptr), _c.aims_bundle_destroy)
        for key, value in meta.items():
            self.set_meta(key, value)

    @classmethod
    def _wrap(cls, ptr):
        self = object.__new__(cls)
        self._adopt(ptr, _c.aims_bundle_destroy)
        return self

    def set_meta(self, key, value):
        _check(_c.aims_bundle_set_meta(self._ptr, str(key).encode("utf-8"),
                                       str(value).encode("utf-8")))
        return self

    def get_meta(self, key, default=None):
        raw = _c.aims_bundle_meta(self._ptr, str(key).encode("utf-8"))
        return _decode(raw) if raw is not None else default

    @property
    def model(self):
        """The bundle's model (borrowed: keeps the bundle alive; do not train it)."""
        ptr = _c.aims_bundle_model(self._ptr)
        return Model._wrap(ptr, _noop_destroy, self._owner) if ptr else None

    @property
    def pipeline(self):
        """The bundle's pipeline (borrowed), or None."""
        ptr = _c.aims_bundle_pipeline(self._ptr)
        if not ptr:
            return None
        p = object.__new__(Pipeline)
        p._adopt(ptr, _noop_destroy, self._owner)
        return p


    def _out_dim(self):
        return int(_c.aims_model_output_dim(_c.aims_bundle_model(self._ptr)))

    def predict_rows(self, x, proba=False, cols=None):
        """Raw dense rows -> pipeline -> model; float32 (rows, output_dim)."""
        inp = _float_matrix(x, cols, "x")
        rows, in_cols = inp.shape
        result, out_ptr, cap = _float_out(rows, self._out_dim())
        _check(_c.aims_bundle_predict_rows(self._ptr, _what(proba), inp.ptr, rows, in_cols,
                                           out_ptr, cap))
        return result

    def predict_texts(self, texts, proba=False):
        """Raw documents -> text pipeline -> model; float32 (len(texts), output_dim)."""
        n, ptrs, lens, keep = _texts(texts)
        result, out_ptr, cap = _float_out(n, self._out_dim())
        _check(_c.aims_bundle_predict_texts(self._ptr, _what(proba), ptrs, lens, n, out_ptr,
                                            cap))
        del keep
        return result

    def __repr__(self):
        if self.closed:
            return "<aims.Bundle closed>"
        return "<aims.Bundle name=%r model=%r>" % (self.get_meta("name"), self.model)


# ---------------------------------------------------------------------------------
# Orchestration primitives (aims_orch.h): registry, balancer, health, metrics

#: aims_lb_policy values by name.
LB_POLICIES = {"p2c": 1, "round_robin": 2, "weighted_rr": 3, "least_outstanding": 4,
               "maglev": 5, "random": 6}
#: aims_event_kind values -> names.
EVENTS = {1: "put", 2: "delete", 3: "expire"}
#: aims_health_state values -> names.
HEALTH_STATES = {1: "healthy", 2: "ejected"}


def _clock_cb(fn):
    """Wrap a Python clock (returns nanoseconds) as an aims_clock_fn; None -> NULL."""
    if fn is None:
        return _lib.clock_fn()
    return _lib.clock_fn(lambda _user: int(fn()))


class Registry(_Handle):
    """Service registry (aims_registry): instances with leases, revisions, watches.

    Callbacks run on a thread that calls into the registry; the object keeps every
    callback it was given alive until it is closed.
    """

    _kind = "Registry"

    def __init__(self, clock=None):
        self._adopt(_new_handle(_c.aims_registry_create), _c.aims_registry_destroy)
        self._callbacks = {}
        self._clock = None
        if clock is not None:
            self.set_clock(clock)

    def set_clock(self, clock):
        """Install a clock: a callable returning monotonic nanoseconds (None: default)."""
        cb = _clock_cb(clock)
        _check(_c.aims_registry_set_clock(self._ptr, cb, None))
        self._clock = cb

    def register(self, service, address, weight=1, ttl_ms=10000):
        """Register an instance; returns its id."""
        out = ctypes.c_uint64()
        _check(_c.aims_registry_register(self._ptr, service.encode(), address.encode(),
                                         int(weight), int(ttl_ms), ctypes.byref(out)))
        return out.value

    def heartbeat(self, iid):
        _check(_c.aims_registry_heartbeat(self._ptr, int(iid)))

    def set_weight(self, iid, weight):
        _check(_c.aims_registry_set_weight(self._ptr, int(iid), int(weight)))

    def deregister(self, iid):
        _check(_c.aims_registry_deregister(self._ptr, int(iid)))

    def sweep(self):
        """Remove expired instances; returns how many."""
        n = ctypes.c_size_t()
        _check(_c.aims_registry_sweep(self._ptr, ctypes.byref(n)))
        return n.value

    @property
    def revision(self):
        return int(_c.aims_registry_revision(self._ptr))

    def lookup(self, service):
        """Ids of the live instances of service ("name" or "name@version")."""
        n = ctypes.c_size_t()
        cap = 16
        while True:
            ids = (ctypes.c_uint64 * cap)()
            rc = _c.aims_registry_lookup(self._ptr, service.encode(), ids, cap,
                                         ctypes.byref(n))
            if rc == AIMS_E_RANGE and n.value > cap:
                cap = n.value
                continue
            _check(rc)
            return [ids[i] for i in range(n.value)]

    def address(self, iid):
        n = ctypes.c_size_t()
        buf = ctypes.create_string_buffer(272)
        _check(_c.aims_registry_get_address(self._ptr, int(iid), buf, len(buf), ctypes.byref(n)))
        return buf.value.decode()

    def weight(self, iid):
        return int(_c.aims_registry_weight(self._ptr, int(iid)))

    def watch(self, callback, service=None, from_revision=None):
        """Call callback(revision, kind, id, service, address) per event; returns a
        watch id. kind is "put", "delete" or "expire"."""
        def trampoline(_user, rev, kind, iid, svc, addr):
            callback(rev, EVENTS.get(kind, kind), iid, _decode(svc), _decode(addr))
        cb = _lib.watch_fn(trampoline)
        start = self.revision if from_revision is None else int(from_revision)
        out = ctypes.c_uint64()
        _check(_c.aims_registry_watch(self._ptr, service.encode() if service else None,
                                      start, cb, None, ctypes.byref(out)))
        self._callbacks[out.value] = cb
        return out.value

    def unwatch(self, wid):
        _check(_c.aims_registry_unwatch(self._ptr, int(wid)))
        self._callbacks.pop(wid, None)


class Balancer(_Handle):
    """Load balancer (aims_balancer). ``Balancer("p2c", seed=1)``."""

    _kind = "Balancer"

    def __init__(self, policy="p2c", seed=1, clock=None):
        pol = _enum(policy, LB_POLICIES, "policy")
        self._adopt(_new_handle(_c.aims_balancer_create, pol, int(seed)),
                    _c.aims_balancer_destroy)
        self._clock = None
        if clock is not None:
            cb = _clock_cb(clock)
            _check(_c.aims_balancer_set_clock(self._ptr, cb, None))
            self._clock = cb

    def set_instances(self, ids, weights=None):
        n = len(ids)
        arr = (ctypes.c_uint64 * n)(*ids)
        w = (ctypes.c_uint32 * n)(*weights) if weights is not None else None
        _check(_c.aims_balancer_set_instances(self._ptr, arr, w, n))

    def set_available(self, iid, available=True):
        _check(_c.aims_balancer_set_available(self._ptr, int(iid), 1 if available else 0))

    def pick(self, key=0):
        out = ctypes.c_uint64()
        _check(_c.aims_balancer_pick(self._ptr, int(key), ctypes.byref(out)))
        return out.value

    def done(self, iid, latency_ns, ok=True):
        _check(_c.aims_balancer_done(self._ptr, int(iid), int(latency_ns), 1 if ok else 0))

    def outstanding(self, iid):
        return int(_c.aims_balancer_outstanding(self._ptr, int(iid)))


class Health(_Handle):
    """Passive health tracking (aims_health): outlier ejection and panic."""

    _kind = "Health"

    def __init__(self, clock=None, on_change=None, **params):
        self._adopt(_new_handle(_c.aims_health_create), _c.aims_health_destroy)
        self._clock = None
        self._on_change = None
        if clock is not None:
            cb = _clock_cb(clock)
            _check(_c.aims_health_set_clock(self._ptr, cb, None))
            self._clock = cb
        for name, value in params.items():
            pid, _ = _param(name)
            _check(_c.aims_health_set_param_i64(self._ptr, pid, _as_i64(name, value)))
        if on_change is not None:
            self.on_change(on_change)

    def on_change(self, callback):
        """callback(id, from_state, to_state) with state names; None removes it."""
        if callback is None:
            cb = _lib.health_fn()
        else:
            def trampoline(_user, iid, frm, to):
                callback(iid, HEALTH_STATES.get(frm, frm), HEALTH_STATES.get(to, to))
            cb = _lib.health_fn(trampoline)
        _check(_c.aims_health_set_change_fn(self._ptr, cb, None))
        self._on_change = cb

    def add(self, iid):
        _check(_c.aims_health_add(self._ptr, int(iid)))

    def remove(self, iid):
        _check(_c.aims_health_remove(self._ptr, int(iid)))

    def report(self, iid, ok):
        _check(_c.aims_health_report(self._ptr, int(iid), 1 if ok else 0))

    def state(self, iid):
        """ "healthy", "ejected", or None for an unknown id."""
        return HEALTH_STATES.get(int(_c.aims_health_state_of(self._ptr, int(iid))))

    @property
    def in_panic(self):
        return bool(_c.aims_health_is_in_panic(self._ptr))


class Metrics(_Handle):
    """Counters, gauges and latency histograms with Prometheus exposition."""

    _kind = "Metrics"

    def __init__(self):
        self._adopt(_new_handle(_c.aims_metrics_create), _c.aims_metrics_destroy)

    @staticmethod
    def _labels(labels):
        return labels.encode() if labels else None

    def count(self, name, delta=1, labels=None):
        _check(_c.aims_metrics_count(self._ptr, name.encode(), self._labels(labels), int(delta)))

    def gauge(self, name, value, labels=None):
        _check(_c.aims_metrics_set_gauge(self._ptr, name.encode(), self._labels(labels),
                                         float(value)))

    def observe(self, name, ns, labels=None):
        _check(_c.aims_metrics_observe(self._ptr, name.encode(), self._labels(labels),
                                       int(ns)))

    def quantile(self, name, q, labels=None):
        out = ctypes.c_double()
        _check(_c.aims_metrics_quantile(self._ptr, name.encode(), self._labels(labels),
                                        float(q), ctypes.byref(out)))
        return out.value

    def prometheus(self):
        """The Prometheus text exposition of every metric (str)."""
        out = ctypes.c_void_p()
        n = ctypes.c_size_t()
        _check(_c.aims_metrics_prometheus(self._ptr, ctypes.byref(out), ctypes.byref(n)))
        try:
            return ctypes.string_at(out.value, n.value).decode()
        finally:
            _c.aims_free(out.value)


# ---------------------------------------------------------------------------------
# Services (aims_svc.h): messages, nodes, services, clients

import atexit as _atexit
import collections as _collections
import threading as _threading
import weakref as _weakref
from concurrent.futures import Future as _Future

#: aims_dtype values by name (wire codes).
DTYPES = {"f32": 1, "i32": 2, "u8": 3, "i64": 4, "bytes": 5}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_DTYPE_SIZE = {1: 4, 2: 4, 3: 1, 4: 8, 5: 1}
#: struct/array/memoryview item codes per dtype (native byte order).
_DTYPE_CODE = {1: "f", 2: _ARRAY_CODE[ctypes.c_int32], 3: "B",
               4: "q" if _array.array("q").itemsize == 8 else "l", 5: "B"}
_MSG_BORROW = 1
_CALL_IDEMPOTENT = 1
#: aims_service_stat values by name (Service.stat).
SVC_STATS = {"requests": 1, "errors": 2, "rejected": 3, "inflight": 4, "queued": 5,
             "batches": 6, "batch_rows": 7, "busy_ns": 8, "p50_ns": 9, "p99_ns": 10}
#: Train-service job states (the "state" reply tensor).
TRAIN_STATES = {0: "queued", 1: "running", 2: "done", 3: "failed", 4: "cancelled"}

#: A message tensor without numpy: dtype name, shape tuple, data (a read-only
#: memoryview of that format and shape; bytes for "bytes" tensors). Also accepted
#: as input, with data any buffer (bytes, array.array, memoryview) or a flat list.
Tensor = _collections.namedtuple("Tensor", ["dtype", "shape", "data"])


# ---- Python value -> message tensor ---------------------------------------------

def _np_dtype_code(dt):
    """aims_dtype for a numpy dtype (converting ones that have no wire type)."""
    if dt == _np.float32:
        return 1, None
    if dt == _np.int32:
        return 2, None
    if dt == _np.uint8:
        return 3, None
    if dt == _np.int64:
        return 4, None
    if dt.kind in "SV":
        return 5, None
    if dt.kind == "f":
        return 1, _np.float32
    if dt.kind == "b":
        return 3, _np.uint8
    if dt.kind in "iu":
        return (2, _np.int32) if dt.itemsize < 4 or (dt.kind == "i" and dt.itemsize == 4) \
            else (4, _np.int64)
    raise TypeError("numpy dtype %s has no message dtype (f32, i32, u8, i64, bytes)" % dt)


def _buffer_code(fmt, itemsize):
    """aims_dtype for a buffer's struct format, or None."""
    fmt = fmt.lstrip("@=<")
    if fmt == "f" and itemsize == 4:
        return 1
    if fmt in ("i", "l") and itemsize == 4:
        return 2
    if fmt in ("B", "c") and itemsize == 1:
        return 3
    if fmt in ("q", "l") and itemsize == 8:
        return 4
    return None


def _buffer_ptr(obj):
    """(address or None, nbytes, keep) for a bytes-like object, borrowing its memory
    when it cannot change under us (bytes) or is pinned by an export (writable
    buffers: the ctypes from_buffer export blocks array.array/bytearray resizes);
    other read-only buffers are copied into bytes first."""
    if isinstance(obj, bytes):
        if not obj:
            return None, 0, obj
        return ctypes.cast(ctypes.c_char_p(obj), ctypes.c_void_p).value, len(obj), obj
    view = memoryview(obj)
    if view.nbytes == 0:
        return None, 0, view
    if not view.c_contiguous or view.readonly:
        raw = view.tobytes()
        return ctypes.cast(ctypes.c_char_p(raw), ctypes.c_void_p).value, len(raw), raw
    buf = (ctypes.c_char * view.nbytes).from_buffer(view)
    return ctypes.addressof(buf), view.nbytes, (buf, view)


def _pack_list(code, shape, values):
    """array.array of a flat or nested list with the dtype's item code."""
    flat = _flat_list(values) if values and isinstance(values[0], (list, tuple)) else values
    try:
        if code == 1:
            return _array.array("f", (float(v) for v in flat))
        return _array.array(_DTYPE_CODE[code], (int(v) for v in flat))
    except OverflowError:
        raise ValueError("a value does not fit in %s" % _DTYPE_NAMES[code]) from None


def _flat_list(values):
    out = []
    stack = [values]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def _list_shape(values):
    shape = []
    v = values
    while isinstance(v, (list, tuple)):
        shape.append(len(v))
        if not v:
            break
        v = v[0]
    return tuple(shape)


def _tensor_in(name, value):
    """(dtype code, shape, address, nbytes, keep) for one request/reply value.

    numpy arrays and scalars: their dtype (float32, int32, uint8, int64; other float
    and int types are converted; bytes_/void -> "bytes"). bytes/bytearray/str:
    a 1-D "bytes" tensor. array.array / memoryview: by item type. int: i64 scalar,
    float: f32 scalar. Nested lists: f32. A (dtype, shape, data) tuple (or Tensor)
    says everything explicitly; data may be any buffer or a flat/nested list.
    """
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[0], (str, int)) \
            and isinstance(value[1], (tuple, list)):
        code = _enum(value[0], DTYPES, "dtype") if isinstance(value[0], str) else int(value[0])
        if code not in _DTYPE_SIZE:
            raise ValueError("tensor %r: unknown dtype %r" % (name, value[0]))
        shape = tuple(int(d) for d in value[1])
        data = value[2]
        if isinstance(data, str):
            data = data.encode("utf-8")
        if isinstance(data, (list, tuple)):
            data = _pack_list(code, shape, data)
        elif _np is not None and isinstance(data, (_np.ndarray, _np.generic)):
            npdt = {1: _np.float32, 2: _np.int32, 3: _np.uint8, 4: _np.int64,
                    5: _np.uint8}[code]
            if data.dtype.kind not in "SV" and data.dtype != npdt:
                data = data.astype(npdt)   # convert values, never reinterpret bits
            data = _np.asarray(data)
            if not data.flags.c_contiguous:
                data = data.copy(order="C")
        addr, nbytes, keep = _buffer_ptr(data)
        count = 1
        for d in shape:
            if d < 0:
                raise ValueError("tensor %r: negative dimension in %r" % (name, shape))
            count *= d
        if nbytes != count * _DTYPE_SIZE[code]:
            raise ValueError("tensor %r: shape %r of %s needs %d bytes, data has %d"
                             % (name, shape, _DTYPE_NAMES[code], count * _DTYPE_SIZE[code],
                                nbytes))
        return code, shape, addr, nbytes, keep
    if _np is not None and isinstance(value, (_np.ndarray, _np.generic)):
        arr = _np.asarray(value)
        code, conv = _np_dtype_code(arr.dtype)
        if conv is not None:
            arr = arr.astype(conv)
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
        shape = arr.shape
        if code == 5 and arr.dtype.itemsize != 1:
            shape = arr.shape + (arr.dtype.itemsize,) if arr.ndim else (arr.dtype.itemsize,)
        return code, shape, (arr.ctypes.data if arr.nbytes else None), arr.nbytes, arr
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        addr, nbytes, keep = _buffer_ptr(value)
        return 5, (nbytes,), addr, nbytes, keep
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return _tensor_in(name, ("i64", (), [value]))
    if isinstance(value, float):
        return _tensor_in(name, ("f32", (), [value]))
    if isinstance(value, (list, tuple)):
        return _tensor_in(name, ("f32", _list_shape(value), value))
    try:
        view = memoryview(value)
    except TypeError:
        raise TypeError("tensor %r: cannot send a %s (use a numpy array, bytes, str, "
                        "array.array, int, float, a list, or (dtype, shape, data))"
                        % (name, type(value).__name__)) from None
    code = _buffer_code(view.format, view.itemsize)
    if code is None:
        # Other numeric item types (array('d'), array('h'), ...): converted, a copy.
        fmt = view.format.lstrip("@=<")
        if fmt in ("d", "e"):
            code = 1
        elif fmt in ("b", "h", "H", "i", "I", "l", "L", "q", "Q") and view.itemsize <= 8:
            code = 2 if view.itemsize < 4 or (fmt in "il" and view.itemsize == 4) else 4
        else:
            raise TypeError("tensor %r: buffer format %r has no message dtype"
                            % (name, view.format))
        return _tensor_in(name, (_DTYPE_NAMES[code], tuple(view.shape),
                                 _flatten(view) if view.ndim else [view.tolist()]))
    addr, nbytes, keep = _buffer_ptr(value)
    return code, tuple(view.shape) if view.ndim else (), addr, nbytes, keep


def _msg_add(mptr, name, value, borrow, keep):
    """Append one tensor; with borrow, its Python storage goes into ``keep``."""
    code, shape, addr, nbytes, holder = _tensor_in(name, value)
    if len(shape) > 4:
        raise ValueError("tensor %r has %d dimensions (at most 4)" % (name, len(shape)))
    dims = (ctypes.c_uint64 * max(len(shape), 1))(*shape)
    ename = name.encode("utf-8") if isinstance(name, str) else bytes(name)
    _check(_c.aims_msg_add(mptr, ename, code, dims, len(shape), addr,
                           _MSG_BORROW if (borrow and addr) else 0))
    if borrow and addr:
        keep.append(holder)


def _msg_fill(mptr, values, borrow, keep):
    if values is None:
        return
    if isinstance(values, Msg):
        raise TypeError("pass a dict, not a Msg, to fill a message")
    items = values.items() if hasattr(values, "items") else values
    for name, value in items:
        _msg_add(mptr, name, value, borrow, keep)


# ---- message tensor -> Python value ---------------------------------------------

def _tensor_out(addr, code, shape, nbytes, owner):
    """One tensor as a Python value: numpy array (a read-only zero-copy view that
    keeps ``owner`` alive, or a writable copy when owner is None), bytes for a 1-D
    "bytes" tensor, else (no numpy) a Tensor holding a memoryview."""
    count = 1
    for d in shape:
        count *= d
    if code == 5 and len(shape) == 1:
        return ctypes.string_at(addr, nbytes) if nbytes else b""
    itemcode = _DTYPE_CODE.get(code, "B")
    if _np is not None:
        npdt = {1: _np.float32, 2: _np.int32, 3: _np.uint8, 4: _np.int64, 5: _np.uint8}[code]
        if count == 0 or not addr:
            arr = _np.zeros(shape, dtype=npdt)
        elif owner is None:
            arr = _np.empty(shape, dtype=npdt)
            ctypes.memmove(arr.ctypes.data, addr, nbytes)
        else:
            buf = (ctypes.c_char * nbytes).from_address(addr)
            buf._aims_owner = owner
            arr = _np.frombuffer(buf, dtype=npdt).reshape(shape)
            arr.flags.writeable = False
        return arr if code != 5 else Tensor("bytes", tuple(shape), arr.tobytes())
    if code == 5:
        return Tensor("bytes", tuple(shape), ctypes.string_at(addr, nbytes) if nbytes else b"")
    if count == 0 or not addr:
        return Tensor(_DTYPE_NAMES[code], tuple(shape), memoryview(_array.array(itemcode)))
    if owner is None:
        raw = bytearray(ctypes.string_at(addr, nbytes))
        view = memoryview(raw)
    else:
        buf = (ctypes.c_char * nbytes).from_address(addr)
        buf._aims_owner = owner
        view = memoryview(buf).toreadonly()
    view = view.cast("B").cast(itemcode, list(shape))
    return Tensor(_DTYPE_NAMES[code], tuple(shape), view)


def _msg_get(mptr, index, owner):
    name = ctypes.c_char_p()
    code = ctypes.c_int()
    ndim = ctypes.c_size_t()
    dims = _lib.u64p()
    data = ctypes.c_void_p()
    nbytes = ctypes.c_size_t()
    _check(_c.aims_msg_get_tensor(mptr, index, ctypes.byref(name), ctypes.byref(code),
                                  ctypes.byref(ndim), ctypes.byref(dims), ctypes.byref(data),
                                  ctypes.byref(nbytes)))
    shape = tuple(int(dims[i]) for i in range(ndim.value))
    return (_decode(name.value),
            _tensor_out(data.value, code.value, shape, nbytes.value, owner))


def _msg_dict(mptr, owner=None):
    """Every tensor of a C message as {name: value}; copies unless ``owner`` (the
    message's _Owner) is given, in which case arrays are zero-copy views."""
    return dict(_msg_get(mptr, i, owner) for i in range(int(_c.aims_msg_num_tensors(mptr))))


class Msg(_Handle):
    """A message (aims_msg): an ordered set of named tensors plus an error text.

    >>> m = Msg({"x": numpy.ones((2, 3), numpy.float32), "text": "hello"})
    >>> m["x"], m.to_dict(), m.error

    Values are described at :func:`_tensor_in` (numpy arrays, bytes/str,
    array.array, memoryview, int, float, lists, ``(dtype, shape, data)``).
    Without a copy (``borrow=True``, the default) the message points at the
    Python object's memory and keeps that object alive until clear()/close();
    do not modify it meanwhile. Reading returns copies (numpy arrays, bytes, or
    Tensor tuples without numpy), so they outlive clear().
    """

    _kind = "Msg"

    def __init__(self, tensors=None, error=None, borrow=True):
        keep = []
        self._keep = keep
        self._adopt(_new_handle(_c.aims_msg_create), _c.aims_msg_destroy, keep)
        _msg_fill(self._ptr, tensors, borrow, keep)
        if error is not None:
            self.set_error(error)

    def add(self, name, value, borrow=True):
        """Append a tensor; returns self."""
        _msg_add(self._ptr, name, value, borrow, self._keep)
        return self

    def alloc(self, name, dtype, shape):
        """Append a zeroed tensor stored in the message and return a writable view
        of it (numpy array, or a memoryview): fill it in place, no copy."""
        code = _enum(dtype, DTYPES, "dtype")
        shape = tuple(int(d) for d in shape)
        dims = (ctypes.c_uint64 * max(len(shape), 1))(*shape)
        out = ctypes.c_void_p()
        ptr = self._ptr
        _check(_c.aims_msg_alloc(ptr, name.encode("utf-8"), code, dims, len(shape),
                                 ctypes.byref(out)))
        count = 1
        for d in shape:
            count *= d
        nbytes = count * _DTYPE_SIZE[code]
        if nbytes == 0 or not out.value:
            return _tensor_out(None, code, shape, 0, None) if code != 5 else bytearray()
        buf = (ctypes.c_char * nbytes).from_address(out.value)
        buf._aims_owner = self._owner
        if _np is not None:
            npdt = {1: _np.float32, 2: _np.int32, 3: _np.uint8, 4: _np.int64,
                    5: _np.uint8}[code]
            return _np.frombuffer(buf, dtype=npdt).reshape(shape)
        return memoryview(buf).cast("B").cast(_DTYPE_CODE[code], list(shape))

    def __len__(self):
        return int(_c.aims_msg_num_tensors(self._ptr))

    def names(self):
        ptr = self._ptr
        out = []
        for i in range(int(_c.aims_msg_num_tensors(ptr))):
            name = ctypes.c_char_p()
            _check(_c.aims_msg_get_tensor(ptr, i, ctypes.byref(name), None, None, None, None, None))
            out.append(_decode(name.value))
        return out

    keys = names

    def __contains__(self, name):
        idx = ctypes.c_size_t()
        return _c.aims_msg_find(self._ptr, name.encode("utf-8"), ctypes.byref(idx)) == 0

    def __getitem__(self, name):
        ptr = self._ptr
        idx = ctypes.c_size_t()
        rc = _c.aims_msg_find(ptr, name.encode("utf-8"), ctypes.byref(idx))
        if rc == AIMS_E_NOTFOUND:
            raise KeyError(name)
        _check(rc)
        return _msg_get(ptr, idx.value, None)[1]

    def get(self, name, default=None):
        try:
            return self[name]
        except KeyError:
            return default

    def to_dict(self):
        """{name: value} copies of every tensor, in message order."""
        return _msg_dict(self._ptr)

    @property
    def error(self):
        """The error text ("" when none)."""
        return _decode(_c.aims_msg_error(self._ptr))

    def set_error(self, text):
        _check(_c.aims_msg_set_error(self._ptr, str(text).encode("utf-8", "replace")))
        return self

    def clear(self):
        """Remove every tensor and the error text; releases borrowed objects."""
        _c.aims_msg_clear(self._ptr)
        del self._keep[:]

    def __repr__(self):
        if self.closed:
            return "<aims.Msg closed>"
        return "<aims.Msg %r%s>" % (self.names(), " error=%r" % self.error if self.error
                                    else "")


# ---- callbacks -------------------------------------------------------------------

_tls = _threading.local()
_handlers = {}          # token -> Python handler (the one C thunk finds them here)
_pending = {}           # token -> (callback, Future) of async calls
_tokens_lock = _threading.Lock()
_next_token = [0]


def _token():
    with _tokens_lock:
        _next_token[0] += 1
        return _next_token[0]


#: Python exception classes -> the aims_status a caller sees.
_EXC_STATUS = ((MemoryError, 2), (TimeoutError, 12), (NotImplementedError, 7),
               (KeyError, 8), (LookupError, 4), (ValueError, 3), (TypeError, 3),
               (OSError, 6))
_E_INTERNAL = 16


def _exc_status(exc):
    if isinstance(exc, AimsError):
        return exc.code if exc.code != 0 else _E_INTERNAL, exc.message or str(exc)
    for cls, code in _EXC_STATUS:
        if isinstance(exc, cls):
            break
    else:
        code = _E_INTERNAL
    text = str(exc)
    if isinstance(exc, KeyError) and exc.args:
        text = repr(exc.args[0])
    return code, "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


def _handler_trampoline(user, method, req, reply, deadline_ns):
    """The C side of every Python handler. Never lets an exception reach C: ctypes
    would print it and return 0 (AIMS_OK) -- a failure reported as success."""
    try:
        prev = getattr(_tls, "in_callback", False)
        prev_deadline = getattr(_tls, "deadline_ns", 0)
        _tls.in_callback = True
        _tls.deadline_ns = deadline_ns
        try:
            fn = _handlers[user]
            result = fn(_decode(method), _msg_dict(req))
            if isinstance(result, Msg):
                result = result.to_dict()
            if result is not None:
                _msg_fill(reply, result, False, None)
            return 0
        finally:
            _tls.in_callback = prev
            _tls.deadline_ns = prev_deadline
    except BaseException as exc:  # noqa: B902 -- every failure becomes a status
        try:
            code, text = _exc_status(exc)
            # A reply half-filled before the failure must not travel back.
            _c.aims_msg_clear(reply)
            raw = text.encode("utf-8", "replace")[:1024]
            # Cut on a character boundary: the library takes UTF-8 only.
            raw = raw.decode("utf-8", "ignore").encode("utf-8")
            _c.aims_msg_set_error(reply, raw)
            return code
        except BaseException:
            return _E_INTERNAL


def _done_trampoline(user, status, reply, error):
    try:
        prev = getattr(_tls, "in_callback", False)
        _tls.in_callback = True
        try:
            callback, future = _pending.pop(user)
            if status == 0:
                result, exc = (_msg_dict(reply) if reply else {}), None
            else:
                text = _decode(error)
                if not text and reply:
                    text = _decode(_c.aims_msg_error(reply))
                result, exc = None, AimsError(status, text)
            if exc is None:
                future.set_result(result)
            else:
                future.set_exception(exc)
            if callback is not None:
                callback(result, exc)
        finally:
            _tls.in_callback = prev
    except BaseException:  # noqa: B902 -- nothing may propagate into C
        try:
            import sys
            import traceback
            traceback.print_exc(file=sys.stderr)
        except BaseException:
            pass


# One C thunk each, alive for the life of the process: objects hand C a token as the
# user pointer, so no thunk can be collected while a library thread may call it.
_HANDLER_THUNK = _lib.handler_fn(_handler_trampoline)
_DONE_THUNK = _lib.done_fn(_done_trampoline)


def request_deadline_ns():
    """Inside a handler: the request's CLOCK_MONOTONIC deadline in ns (0: none)."""
    return int(getattr(_tls, "deadline_ns", 0) or 0)


def _not_in_callback(what):
    if getattr(_tls, "in_callback", False):
        raise AimsError(1, "%s from inside a handler or completion callback would "
                           "wait for itself" % what)


# Nodes and clients still open at exit are closed before the interpreter goes away:
# their threads may otherwise call a Python handler during finalization.
_live = _weakref.WeakSet()


@_atexit.register
def _close_live():
    for kind in (Client, Node):
        for obj in [o for o in list(_live) if isinstance(o, kind)]:
            try:
                obj.close()
            except BaseException:
                pass


class _Borrowed:
    """Mixin: a handle owned by a host object (node, client); using it after the
    host closed raises AIMS_E_CLOSED instead of touching freed memory."""

    @property
    def _ptr(self):
        if self._host.closed:
            raise AimsError(_E_CLOSED, "the %s owning this %s is closed"
                            % (self._host._kind, self._kind))
        return _Handle._ptr.fget(self)


class _HostMetrics(_Borrowed, Metrics):
    """The metrics object of a node or client (owned by it)."""

    @classmethod
    def _of(cls, ptr, host):
        self = object.__new__(cls)
        self._host = host
        self._adopt(ptr, _noop_destroy)
        return self


def _set_param_i64(setter, errmsg_fn, ptr, name, value):
    pid, _ = _param(name)
    if name == "lb_policy" and isinstance(value, str):
        value = _enum(value, LB_POLICIES, "policy")
    _check(setter(ptr, pid, _as_i64(name, value)), errmsg_fn, ptr)


def _registry_ptr(registry):
    if not isinstance(registry, Registry):
        raise TypeError("expected an aims.Registry, got %s" % type(registry).__name__)
    return registry._ptr


#: Audited actions (aims_audit_action), by value.
AUDIT_ACTIONS = {1: "join", 2: "register", 3: "deregister", 4: "denied", 5: "train_submit",
                 6: "model_swap", 7: "result"}


class Policy(_Handle):
    """Authorization policy (aims_policy; file format in docs/POLICY.md).

    >>> pol = Policy(text="allow uid:1000 call echo/*\\n")
    >>> pol.check("uid:1000", "call", "echo/ping")      # True
    >>> node.set_policy(pol)                            # deny by default from now on
    """

    _kind = "Policy"

    def __init__(self, path=None, text=None, name=None):
        self._adopt(_new_handle(_c.aims_policy_create), _c.aims_policy_destroy)
        if path is not None:
            self.load_file(path)
        if text is not None:
            self.load_string(text, name)

    def _call(self, fn, *args):
        ptr = self._ptr
        _check(fn(ptr, *args), _c.aims_policy_errmsg, ptr)
        return self

    def load_file(self, path):
        """Add the rules of a policy file (all or nothing; errors name file:line)."""
        return self._call(_c.aims_policy_load_file, _path(path))

    def load_string(self, text, name=None):
        """Add the rules of policy text; ``name`` is used in error messages."""
        return self._call(_c.aims_policy_load_string, str(text).encode("utf-8"),
                          None if name is None else str(name).encode("utf-8"))

    def check(self, identity, action, resource):
        """True when ``identity`` may do ``action`` on ``resource``."""
        rc = _c.aims_policy_check(self._ptr, str(identity).encode("utf-8"),
                                  str(action).encode("utf-8"), str(resource).encode("utf-8"))
        if rc == AIMS_E_DENIED:
            return False
        _check(rc)
        return True

    def set_jwt_hs256(self, key):
        """Accept HS256 bearer tokens signed with ``key`` (bytes, 32..1024)."""
        key = bytes(key)
        return self._call(_c.aims_policy_set_jwt_hs256, key, len(key))

    def set_jwt_es256(self, pem):
        """Accept ES256 bearer tokens verified with a PEM P-256 public key."""
        return self._call(_c.aims_policy_set_jwt_es256, str(pem).encode("ascii"))

    def set_jwt_claims(self, audience=None, issuer=None, leeway_s=30):
        """Require these aud/iss claims (None: unchecked); clock skew in seconds."""
        enc = lambda v: None if v is None else str(v).encode("utf-8")
        return self._call(_c.aims_policy_set_jwt_claims, enc(audience), enc(issuer),
                          int(leeway_s))

    def verify_token(self, token):
        """Verify a compact JWT; returns the identity it proves ("jwt:<sub>")."""
        buf = ctypes.create_string_buffer(256)
        _check(_c.aims_policy_verify_token(self._ptr, str(token).encode("ascii"), buf, 256))
        return buf.value.decode("utf-8")


class Node(_Handle):
    """A node (aims_node): hosts services on worker threads; many may live in one
    process.

    >>> with Node("n1", workers=2) as node:
    ...     node.listen("inproc://n1"); node.set_registry(reg)
    ...     svc = node.add_handler("echo", lambda method, req: req).start()

    close() stops every service (draining it), joins the threads and frees the
    node now (not when the last reference goes): services and metrics obtained
    from it then raise AIMS_E_CLOSED. The node keeps the registry, bundles,
    pipelines and Python handlers it was given alive until then.
    """

    _kind = "Node"

    def __init__(self, name, registry=None, **params):
        keep = []        # objects the C node borrows, released after it is destroyed
        tokens = []      # this node's handler tokens

        def destroy(ptr):
            _c.aims_node_destroy(ptr)
            for t in tokens:
                _handlers.pop(t, None)
            del tokens[:], keep[:]

        self._adopt(_new_handle(_c.aims_node_create, str(name).encode("utf-8")), destroy)
        self._name = str(name)
        self._keep = keep
        self._tokens = tokens
        self._bundles = {}
        self._nlisten = 0
        _live.add(self)
        for pname, value in params.items():
            self.set_param(pname, value)
        if registry is not None:
            self.set_registry(registry)

    @property
    def name(self):
        return self._name

    def _call(self, fn, *args):
        ptr = self._ptr
        _check(fn(ptr, *args), _c.aims_node_errmsg, ptr)

    def set_param(self, name, value):
        """Set a node parameter by name (workers, max_frame, conn_inflight,
        heartbeat_ms, insecure, drain_ms, drain_grace_ms); before listen. Returns self."""
        _set_param_i64(_c.aims_node_set_param_i64, _c.aims_node_errmsg, self._ptr, name, value)
        return self

    def listen(self, url):
        """Listen on ``url`` ("inproc://name", "tcp://127.0.0.1:0", "ipc:///path");
        returns the bound address (port resolved)."""
        self._call(_c.aims_node_listen, str(url).encode("utf-8"))
        self._nlisten += 1
        return self.address(self._nlisten - 1)

    def address(self, index=0):
        """The ``index``-th bound address, in listen order."""
        ptr = self._ptr
        cap = 272
        while True:
            buf = ctypes.create_string_buffer(cap)
            n = ctypes.c_size_t()
            rc = _c.aims_node_get_address(ptr, int(index), buf, cap, ctypes.byref(n))
            if rc == AIMS_E_RANGE and n.value + 1 > cap:
                cap = n.value + 1
                continue
            _check(rc, _c.aims_node_errmsg, ptr)
            return buf.value.decode("utf-8")

    @property
    def addresses(self):
        return [self.address(i) for i in range(self._nlisten)]

    def set_registry(self, registry):
        """Register services started here in ``registry`` (kept alive by the node)."""
        self._call(_c.aims_node_set_registry, _registry_ptr(registry))
        self._keep.append(registry._owner)
        return self

    def host_registry(self, registry):
        """Serve ``registry`` as "aims.registry" on this node (implies set_registry)."""
        self._call(_c.aims_node_host_registry, _registry_ptr(registry))
        self._keep.append(registry._owner)
        return self

    def join(self, url):
        """Register this node's services in the registry hosted at ``url``."""
        self._call(_c.aims_node_join, str(url).encode("utf-8"))
        return self

    def set_policy(self, policy):
        """Enforce ``policy`` (a Policy, kept alive by the node; None: no policy)."""
        self._call(_c.aims_node_set_policy, None if policy is None else policy._ptr)
        if policy is not None:
            self._keep.append(policy._owner)
        return self

    def set_audit(self, fn):
        """Call ``fn(event)`` for every audit event (a dict: unix_ms, action,
        identity, peer, resource, status, detail) on a node thread; None: off."""
        if fn is None:
            self._call(_c.aims_node_set_audit, None, None)
            return self

        def trampoline(user, unix_ms, action, identity, peer, resource, status, detail):
            try:
                fn({"unix_ms": unix_ms, "action": AUDIT_ACTIONS.get(action, "?"),
                    "identity": _decode(identity), "peer": _decode(peer),
                    "resource": _decode(resource), "status": status,
                    "detail": _decode(detail)})
            except Exception:  # never unwind into C
                pass
        cb = _lib.audit_fn(trampoline)
        self._call(_c.aims_node_set_audit, ctypes.cast(cb, ctypes.c_void_p), None)
        self._keep.append(cb)
        return self

    @property
    def metrics(self):
        """The node's Metrics (per service and instance; owned by the node)."""
        ptr = _c.aims_node_metrics(self._ptr)
        if not ptr:
            raise AimsError(_E_CLOSED, "node has no metrics")
        return _HostMetrics._of(ptr, self)

    @property
    def errmsg(self):
        return _decode(_c.aims_node_errmsg(self._ptr))

    # ---- services ------------------------------------------------------------------
    def add_handler(self, name, handler, **params):
        return Service.add_handler(self, name, handler, **params)

    def add_infer(self, name, bundle, **params):
        return Service.add_infer(self, name, bundle, **params)

    def add_preprocess(self, name, pipeline, **params):
        return Service.add_preprocess(self, name, pipeline, **params)

    def add_train(self, name, pipeline=None, **params):
        return Service.add_train(self, name, pipeline, **params)

    def close(self):
        """Stop every service, close listeners, join threads, free (idempotent)."""
        if self.closed:
            return
        _not_in_callback("Node.close()")
        owner, self._owner = self._owner, None
        owner.release()

    def __repr__(self):
        if self.closed:
            return "<aims.Node closed>"
        return "<aims.Node %r %r>" % (self._name, self.addresses)


class Service(_Borrowed, _Handle):
    """A service on a node (aims_service; owned by the node).

    Python handlers: ``handler(method: str, request: dict) -> dict | Msg | None``. The
    request dict holds copies (numpy arrays, bytes, or Tensor tuples without numpy).
    Raising AimsError returns its status and text to the caller; any other
    exception returns a status by type (ValueError/TypeError: AIMS_E_INVAL,
    KeyError: AIMS_E_NOTFOUND, TimeoutError: AIMS_E_TIMEOUT, NotImplementedError:
    AIMS_E_UNSUPPORTED, MemoryError: AIMS_E_NOMEM, OSError: AIMS_E_IO, else
    AIMS_E_INTERNAL) with "ExceptionType: text". Handlers run on node worker
    threads (several at once up to the concurrency limit) or, inline, on the
    caller's thread; they hold the GIL only while Python runs.
    """

    _kind = "Service"

    def __init__(self, *_args, **_kwargs):
        raise TypeError("use Node.add_handler/add_infer/add_preprocess/add_train")

    @classmethod
    def _make(cls, node, name, fn, arg, params):
        if not isinstance(node, Node):
            raise TypeError("expected an aims.Node, got %s" % type(node).__name__)
        self = object.__new__(cls)
        self._host = node
        self._name = str(name)
        ptr = _new_handle(fn, node._ptr, self._name.encode("utf-8"), *arg)
        self._adopt(ptr, _noop_destroy)
        for pname, value in params.items():
            self.set_param(pname, value)
        return self

    @classmethod
    def add_handler(cls, node, name, handler, **params):
        """A service running the Python callable ``handler(method, request_dict)``."""
        if not callable(handler):
            raise TypeError("handler must be callable")
        token = _token()
        _handlers[token] = handler
        try:
            self = cls._make(node, name, _c.aims_service_add_handler,
                             (_HANDLER_THUNK, ctypes.c_void_p(token)), {})
        except BaseException:
            _handlers.pop(token, None)
            raise
        node._tokens.append(token)
        for pname, value in params.items():
            self.set_param(pname, value)
        return self

    @classmethod
    def _add_over(cls, node, name, add_fn, obj, kind, params):
        """A built-in service over ``obj`` (an instance of ``kind``), which the
        node keeps alive as long as it runs."""
        if not isinstance(obj, kind):
            raise TypeError("expected an aims.%s, got %s" % (kind.__name__, type(obj).__name__))
        self = cls._make(node, name, add_fn, (obj._ptr,), params)
        node._keep.append(obj._owner)
        return self

    @classmethod
    def add_infer(cls, node, name, bundle, **params):
        """An infer service over ``bundle`` ("predict": "x" or "text" -> "y"; "info")."""
        return cls._add_over(node, name, _c.aims_service_add_infer, bundle, Bundle, params)

    @classmethod
    def add_preprocess(cls, node, name, pipeline, **params):
        """A preprocess service over a fitted pipeline ("transform": "x" -> "x")."""
        return cls._add_over(node, name, _c.aims_service_add_preprocess, pipeline, Pipeline,
                             params)

    @classmethod
    def add_train(cls, node, name, pipeline=None, **params):
        """A train service ("submit", "status", "result", "cancel"); ``pipeline``
        (fitted, optional) goes into every bundle it produces."""
        pp = None
        if pipeline is not None:
            if not isinstance(pipeline, Pipeline):
                raise TypeError("expected an aims.Pipeline or None, got %s"
                                % type(pipeline).__name__)
            pp = pipeline._ptr
            node._keep.append(pipeline._owner)
        return cls._make(node, name, _c.aims_service_add_train, (pp,), params)

    @property
    def name(self):
        return self._name

    @property
    def node(self):
        return self._host

    def set_param(self, name, value):
        """Set a service parameter by name (concurrency, queue_cap, batch_max,
        batch_delay_us, inline, weight); before start. Returns self."""
        _set_param_i64(_c.aims_service_set_param_i64, None, self._ptr, name, value)
        return self

    def start(self):
        """Start accepting calls (and register in the node's registry); returns self."""
        _check(_c.aims_service_start(self._ptr))
        return self

    def stop(self, timeout_ms=5000):
        """Drain and stop (leave the registry, finish work for up to timeout_ms)."""
        _not_in_callback("Service.stop()")
        _check(_c.aims_service_stop(self._ptr, int(timeout_ms)))
        return self

    def swap_bundle(self, bundle):
        """Infer services: serve ``bundle`` from now on; returns once no call uses
        the previous one (which the node then stops keeping alive)."""
        if not isinstance(bundle, Bundle):
            raise TypeError("expected an aims.Bundle, got %s" % type(bundle).__name__)
        _not_in_callback("Service.swap_bundle()")
        _check(_c.aims_service_swap_bundle(self._ptr, bundle._ptr))
        self._host._keep.append(bundle._owner)
        return self

    def stat(self, name):
        out = ctypes.c_double()
        _check(_c.aims_service_get_stat(self._ptr, _enum(name, SVC_STATS, "statistic"),
                                        ctypes.byref(out)))
        return out.value

    @property
    def stats(self):
        return {name: self.stat(name) for name in SVC_STATS}

    def close(self):
        """Forget this wrapper (the node owns the service)."""
        self._owner = None

    def __repr__(self):
        if self.closed or self._host.closed:
            return "<aims.Service closed>"
        return "<aims.Service %r on %r>" % (self._name, self._host.name)


def _reply_or_raise(rc, reply, cptr):
    """The reply dict (zero-copy views that keep the reply message alive), or
    AimsError carrying the handler's / client's error text."""
    if rc != 0:
        text = _decode(_c.aims_msg_error(reply.ptr))
        if not text:
            text = _decode(_c.aims_errmsg()) or _decode(_c.aims_client_errmsg(cptr))
        raise AimsError(rc, text)
    return _msg_dict(reply.ptr, reply)


class _MsgRef:
    """A caller's Msg used as a request: same interface as a temporary _Owner,
    but release() leaves it alone."""

    __slots__ = ("ptr", "msg")

    def __init__(self, ptr, msg):
        self.ptr = ptr
        self.msg = msg

    def release(self):
        self.msg = None


class Client(_Handle):
    """A client (aims_client): calls services by name (registry view, balancer,
    health, retries) or by address.

    >>> with Client(registry=reg, timeout_ms=2000) as c:
    ...     c.call("echo", "ping", {"x": arr})            # -> {"x": array(...)}
    ...     fut = c.call_async("echo", "ping", {"x": arr}, callback=print)

    Calls release the GIL while they wait. Reply arrays are read-only numpy views
    of the reply message (no copy; it lives while any of them does), or Tensor
    tuples without numpy; "bytes" tensors come back as bytes. A failed call raises
    AimsError with the status and the handler's or client's error text.
    """

    _kind = "Client"

    def __init__(self, registry=None, join=None, **params):
        keep = []

        def destroy(ptr):
            _c.aims_client_destroy(ptr)
            del keep[:]

        self._adopt(_new_handle(_c.aims_client_create), destroy)
        self._keep = keep
        _live.add(self)
        for pname, value in params.items():
            self.set_param(pname, value)
        if registry is not None:
            self.use_registry(registry)
        if join is not None:
            self.join(join)

    def set_param(self, name, value):
        """Set a client parameter by name (timeout_ms, retry_budget, retry_min,
        max_attempts, lb_policy (name or number), max_pending, sync_ms, backoff_ms)."""
        ptr = self._ptr
        pid, ptype = _param(name)
        if ptype == _PARAM_F64:
            _check(_c.aims_client_set_param_f64(ptr, pid, _as_f64(name, value)),
                   _c.aims_client_errmsg, ptr)
        else:
            _set_param_i64(_c.aims_client_set_param_i64, _c.aims_client_errmsg, ptr, name,
                           value)
        return self

    def use_registry(self, registry):
        ptr = self._ptr
        _check(_c.aims_client_set_registry(ptr, _registry_ptr(registry)),
               _c.aims_client_errmsg, ptr)
        self._keep.append(registry._owner)
        return self

    def join(self, url):
        ptr = self._ptr
        _check(_c.aims_client_join(ptr, str(url).encode("utf-8")), _c.aims_client_errmsg, ptr)
        return self

    @staticmethod
    def _request(request):
        """The request as a C message: a Msg as it is, else a temporary message
        borrowing the request's memory (no copy), released after the call."""
        if isinstance(request, Msg):
            return _MsgRef(request._ptr, request)
        keep = []
        req = _Owner(_new_handle(_c.aims_msg_create), _c.aims_msg_destroy, keep)
        try:
            _msg_fill(req.ptr, request, True, keep)
        except BaseException:
            req.release()
            raise
        return req

    def call(self, service, method, request=None, idempotent=False, timeout_ms=0):
        """Call ``method`` of ``service`` ("name" or "name@version") and wait; returns
        the reply dict. ``request``: a dict of tensors (see Msg), a Msg, or None."""
        ptr = self._ptr
        req = self._request(request)
        try:
            reply = _Owner(_new_handle(_c.aims_msg_create), _c.aims_msg_destroy)
            rc = _c.aims_client_call(ptr, str(service).encode("utf-8"),
                                     str(method).encode("utf-8"), req.ptr, reply.ptr,
                                     _CALL_IDEMPOTENT if idempotent else 0, int(timeout_ms))
            return _reply_or_raise(rc, reply, ptr)
        finally:
            req.release()

    def call_addr(self, address, service, method, request=None, timeout_ms=0):
        """Call a service at one address (no registry, balancing or retries)."""
        ptr = self._ptr
        req = self._request(request)
        try:
            reply = _Owner(_new_handle(_c.aims_msg_create), _c.aims_msg_destroy)
            rc = _c.aims_client_call_addr(ptr, str(address).encode("utf-8"),
                                          str(service).encode("utf-8"),
                                          str(method).encode("utf-8"), req.ptr, reply.ptr,
                                          int(timeout_ms))
            return _reply_or_raise(rc, reply, ptr)
        finally:
            req.release()

    def call_async(self, service, method, request=None, callback=None, idempotent=False,
                   timeout_ms=0):
        """Start a call; returns a concurrent.futures.Future of the reply dict (its
        exception an AimsError). ``callback(reply_dict, error)`` -- error None or an
        AimsError -- runs once on a library thread (or here, when the call fails
        to start or completes at once); exceptions it raises are printed. The
        request is copied by the library when needed, so it may change after return.
        """
        ptr = self._ptr
        future = _Future()
        future.set_running_or_notify_cancel()
        token = _token()
        _pending[token] = (callback, future)
        req = self._request(request)
        try:
            rc = _c.aims_client_call_async(ptr, str(service).encode("utf-8"),
                                           str(method).encode("utf-8"), req.ptr,
                                           _CALL_IDEMPOTENT if idempotent else 0,
                                           int(timeout_ms), _DONE_THUNK,
                                           ctypes.c_void_p(token))
        finally:
            req.release()
        if token in _pending and rc != 0:
            # The library promises done() also on failure to start; should it not have
            # run, report the failure here rather than leave the future hanging.
            _pending.pop(token, None)
            exc = AimsError(rc, _decode(_c.aims_client_errmsg(ptr)))
            future.set_exception(exc)
            if callback is not None:
                callback(None, exc)
        return future

    def balance_degree(self, service, window_ms=1000):
        """The seed's load-balance degree of ``service`` over ``window_ms``: average /
        maximum utilisation of its live instances, from their own busy-time
        counters. Returns (degree, max_utilisation). Blocks for the window."""
        degree = ctypes.c_double()
        umax = ctypes.c_double()
        rc = _c.aims_client_balance_degree(self._ptr, str(service).encode("utf-8"),
                                           int(window_ms), ctypes.byref(degree),
                                           ctypes.byref(umax))
        if rc != 0:
            raise AimsError(rc, _decode(_c.aims_errmsg()))
        return degree.value, umax.value

    @property
    def metrics(self):
        """The client's Metrics (calls, errors, retries, latency; owned by the client)."""
        ptr = _c.aims_client_metrics(self._ptr)
        if not ptr:
            raise AimsError(_E_CLOSED, "client has no metrics")
        return _HostMetrics._of(ptr, self)

    @property
    def errmsg(self):
        return _decode(_c.aims_client_errmsg(self._ptr))

    def close(self):
        """Fail pending calls with AIMS_E_CLOSED, close connections, free now."""
        if self.closed:
            return
        _not_in_callback("Client.close()")
        owner, self._owner = self._owner, None
        owner.release()

    def __repr__(self):
        return "<aims.Client%s>" % (" closed" if self.closed else "")


__version__ = version()
