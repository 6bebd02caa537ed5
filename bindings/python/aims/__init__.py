"""aims -- Python ctypes binding for libaims (datasets, loaders, pipelines).

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
    "param_info", "HAVE_NUMPY",
]

HAVE_NUMPY = _np is not None

# ---------------------------------------------------------------------------------
# Status codes and errors

#: aims_status values (include/aims/aims_core.h); values never change.
STATUS_NAMES = {
    0: "AIMS_OK", 1: "AIMS_E_MISUSE", 2: "AIMS_E_NOMEM", 3: "AIMS_E_INVAL",
    4: "AIMS_E_RANGE", 5: "AIMS_E_CORRUPT", 6: "AIMS_E_IO", 7: "AIMS_E_UNSUPPORTED",
    8: "AIMS_E_NOTFOUND", 9: "AIMS_E_STATE", 10: "AIMS_E_BACKEND", 11: "AIMS_E_CANCELLED",
    12: "AIMS_E_TIMEOUT", 13: "AIMS_E_OVERLOADED", 14: "AIMS_E_CLOSED", 15: "AIMS_E_EXISTS",
    16: "AIMS_E_INTERNAL",
}
for _code, _name in STATUS_NAMES.items():
    globals()[_name] = _code
del _code, _name
_E_CLOSED = 14


class AimsError(Exception):
    """A libaims call failed.

    Attributes: ``code`` (int aims_status), ``name`` (e.g. "AIMS_E_CORRUPT"),
    ``message`` (the library's detail text; may name file, line, byte, parameter).
    """

    def __init__(self, code, message=""):
        self.code = int(code)
        self.name = STATUS_NAMES.get(self.code, "AIMS_E_%d" % self.code)
        self.message = message
        super().__init__(code, message)

    def __str__(self):
        text = self.message or strerror(self.code)
        return "%s: %s" % (self.name, text)


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
        _check(_c.aims_loadopts_set_i64(self._ptr, pid, _as_i64(name, value)))
        return self

    def get(self, name):
        """Read an integer loader option by name."""
        pid, _ = _param(name)
        out = ctypes.c_int64()
        _check(_c.aims_loadopts_get_i64(self._ptr, pid, ctypes.byref(out)))
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
    def from_dense(cls, x, labels=None, cols=None):
        """Copy a rows x cols float matrix (and optional int class ids) into a dataset.

        ``x``: 2-D numpy array / nested lists / 2-D buffer; 1-D input is one row
        unless ``cols`` is given.
        """
        inp = _float_matrix(x, cols, "x")
        rows, ncols = inp.shape
        lab = _int32_vector(labels, rows, "labels")
        out = _new_handle(_c.aims_dataset_create_dense, rows, ncols, inp.ptr,
                          lab.ptr if lab is not None else None)
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


class Pipeline(_Handle):
    """Preprocessing steps with fitted state (aims_pipeline).

    >>> p = Pipeline()
    >>> p.add("impute", strategy=1)            # parameters by name
    >>> p.add("standardize", col_begin=0, col_end=2)
    """

    _kind = "Pipeline"

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
                self._call(_c.aims_pipeline_set_step_f64, int(step), pid, _as_f64(name, value))
            else:
                self._call(_c.aims_pipeline_set_step_i64, int(step), pid, _as_i64(name, value))
        return self

    def get_step(self, step, name):
        """Read one step parameter by name (int or float by its type)."""
        pid, ptype = _param(name)
        if ptype == _PARAM_F64:
            out = ctypes.c_double()
            getter = _c.aims_pipeline_get_step_f64
        else:
            out = ctypes.c_int64()
            getter = _c.aims_pipeline_get_step_i64
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
    def save(self, path):
        """Save steps, parameters and fitted state (atomic write)."""
        ptr = self._ptr
        _check(_c.aims_pipeline_save(ptr, _path(path)), _c.aims_pipeline_errmsg, ptr)

    @classmethod
    def load(cls, path):
        return cls._wrap(_new_handle(_c.aims_pipeline_load, _path(path)))

    @classmethod
    def parse(cls, data):
        """Load a pipeline from the bytes of a saved file."""
        ptr_arg, size, keep = _bytes_arg(data)
        out = _new_handle(_c.aims_pipeline_parse, ptr_arg, size)
        del keep
        return cls._wrap(out)

    def __repr__(self):
        if self.closed:
            return "<aims.Pipeline closed>"
        return "<aims.Pipeline steps=%r fitted=%s>" % (self.steps, self.is_fitted)


def _dataset_ptr(ds):
    if not isinstance(ds, Dataset):
        raise TypeError("expected an aims.Dataset, got %s" % type(ds).__name__)
    return ds._ptr


__version__ = version()
