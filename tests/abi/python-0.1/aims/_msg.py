"""Messages (aims_svc.h: aims_msg): named tensors between Python and C.

Why a module of its own: requests, replies and handler arguments all convert
Python values (numpy arrays, bytes/str, array.array, memoryview, numbers, lists,
``(dtype, shape, data)``) to message tensors and back; nodes, services and
clients share these conversions. Dtype codes and the borrow flag come from the
generated enum table (_enums).
"""

import array as _array
import collections as _collections
import ctypes

from . import _enums
from . import _lib
from ._arrays import _ARRAY_CODE, _flatten, _np
from ._core import _enum
from ._errors import _check, _decode, _status
from ._handle import _Handle, _new_handle
from ._lib import lib as _c

#: aims_dtype values by name (wire codes).
DTYPES = _enums.names("enum aims_dtype")
_DTYPE_NAMES = _enums.values("enum aims_dtype")
_F32, _I32, _U8, _I64, _BYTES = (DTYPES[k] for k in ("f32", "i32", "u8", "i64", "bytes"))
_DTYPE_SIZE = {_F32: 4, _I32: 4, _U8: 1, _I64: 8, _BYTES: 1}
#: struct/array/memoryview item codes per dtype (native byte order).
_DTYPE_CODE = {_F32: "f", _I32: _ARRAY_CODE[ctypes.c_int32], _U8: "B",
               _I64: "q" if _array.array("q").itemsize == 8 else "l", _BYTES: "B"}
#: numpy dtype per dtype code (None without numpy).
_NP_DTYPE = None if _np is None else {_F32: _np.float32, _I32: _np.int32, _U8: _np.uint8,
                                      _I64: _np.int64, _BYTES: _np.uint8}
_MSG_BORROW = _enums.DEFINES["AIMS_MSG_BORROW"]
_MAX_NDIM = _enums.DEFINES["AIMS_MSG_MAX_NDIM"]
_E_NOTFOUND = _status("AIMS_E_NOTFOUND")

#: A message tensor without numpy: dtype name, shape tuple, data (a read-only
#: memoryview of that format and shape; bytes for "bytes" tensors). Also accepted
#: as input, with data any buffer (bytes, array.array, memoryview) or a flat list.
Tensor = _collections.namedtuple("Tensor", ["dtype", "shape", "data"])


# ---- Python value -> message tensor ---------------------------------------------

def _np_dtype_code(dt):
    """aims_dtype for a numpy dtype (converting ones that have no wire type)."""
    if dt == _np.float32:
        return _F32, None
    if dt == _np.int32:
        return _I32, None
    if dt == _np.uint8:
        return _U8, None
    if dt == _np.int64:
        return _I64, None
    if dt.kind in "SV":
        return _BYTES, None
    if dt.kind == "f":
        return _F32, _np.float32
    if dt.kind == "b":
        return _U8, _np.uint8
    if dt.kind in "iu":
        return (_I32, _np.int32) if dt.itemsize < 4 or (dt.kind == "i" and dt.itemsize == 4) \
            else (_I64, _np.int64)
    raise TypeError("numpy dtype %s has no message dtype (f32, i32, u8, i64, bytes)" % dt)


def _buffer_code(fmt, itemsize):
    """aims_dtype for a buffer's struct format, or None."""
    fmt = fmt.lstrip("@=<")
    if fmt == "f" and itemsize == 4:
        return _F32
    if fmt in ("i", "l") and itemsize == 4:
        return _I32
    if fmt in ("B", "c") and itemsize == 1:
        return _U8
    if fmt in ("q", "l") and itemsize == 8:
        return _I64
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
        if code == _F32:
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
            npdt = _NP_DTYPE[code]
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
        if code == _BYTES and arr.dtype.itemsize != 1:
            shape = arr.shape + (arr.dtype.itemsize,) if arr.ndim else (arr.dtype.itemsize,)
        return code, shape, (arr.ctypes.data if arr.nbytes else None), arr.nbytes, arr
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        addr, nbytes, keep = _buffer_ptr(value)
        return _BYTES, (nbytes,), addr, nbytes, keep
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
            code = _F32
        elif fmt in ("b", "h", "H", "i", "I", "l", "L", "q", "Q") and view.itemsize <= 8:
            code = _I32 if view.itemsize < 4 or (fmt in "il" and view.itemsize == 4) else _I64
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
    if len(shape) > _MAX_NDIM:
        raise ValueError("tensor %r has %d dimensions (at most %d)"
                         % (name, len(shape), _MAX_NDIM))
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
    if code == _BYTES and len(shape) == 1:
        return ctypes.string_at(addr, nbytes) if nbytes else b""
    itemcode = _DTYPE_CODE.get(code, "B")
    if _np is not None:
        npdt = _NP_DTYPE[code]
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
        return arr if code != _BYTES else Tensor("bytes", tuple(shape), arr.tobytes())
    if code == _BYTES:
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
    _c_prefix = "aims_msg"

    def __init__(self, tensors=None, error=None, borrow=True):
        keep = []
        self._keep = keep
        self._adopt(_new_handle(_c.aims_msg_create), parent=keep)
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
            return _tensor_out(None, code, shape, 0, None) if code != _BYTES else bytearray()
        buf = (ctypes.c_char * nbytes).from_address(out.value)
        buf._aims_owner = self._owner
        if _np is not None:
            return _np.frombuffer(buf, dtype=_NP_DTYPE[code]).reshape(shape)
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
        if rc == _E_NOTFOUND:
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


