"""Arrays: zero-copy exports of C memory and conversion of Python inputs.

Why a module of its own: every layer hands arrays to C (feature rows, class ids,
documents, raw bytes) and borrows C memory back (dataset columns, predictions),
with numpy when it is importable and with array.array / memoryview when it is
not. The two paths live here once, so both are tested through every object.

``_np`` is numpy, or None when it is missing or disabled by AIMS_PYTHON_NO_NUMPY
(the package and its tests read this one name).
"""

import array as _array
import ctypes
import os

from . import _lib

if os.environ.get("AIMS_PYTHON_NO_NUMPY"):
    _np = None
else:
    try:
        import numpy as _np
    except ImportError:  # numpy is optional
        _np = None

HAVE_NUMPY = _np is not None


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


def _float_out(rows, cols):
    """(result, f32 pointer, capacity) for rows x cols floats the C code writes into."""
    n = rows * cols
    if _np is not None:
        result = _np.empty((rows, cols), dtype=_np.float32)
        return result, result.ctypes.data_as(_lib.f32p), n
    result = _array.array("f", bytes(4 * n))
    return result, _addr_of(result, _lib.f32p), n
