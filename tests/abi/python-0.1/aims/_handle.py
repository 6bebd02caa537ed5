"""Handles and their lifetime: the one base class of every wrapper.

Why: each wrapper (Dataset, Model, Node, Client...) holds one C handle and needs
the same things -- destroy it exactly once, refuse use after close() with
AIMS_E_CLOSED, work as a context manager, call C and raise with the object's own
error text, read ``errmsg``, set parameters by name, and for objects kept in
container files, save/load/parse. They are written once here.

How: a subclass names its C prefix (``_c_prefix = "aims_model"``); the base then
finds ``<prefix>_destroy``, ``<prefix>_errmsg``, ``<prefix>_{set,get}_param_{i64,f64}``
and ``<prefix>_{save,load,parse}`` in the prototype table (a function the library
does not have is None). The C handle lives in an ``_Owner`` that the wrapper and
every array or view borrowed from it share: close() drops the wrapper's claim and
the handle goes with the last claim. Borrowed handles (owned by a node, a client
or a bundle) get ``_noop_destroy`` and, through ``_Borrowed``, fail with
AIMS_E_CLOSED once their host is closed.
"""

import ctypes
import os

from . import _lib
from ._arrays import _bytes_arg
from ._core import _get_typed, _set_typed
from ._errors import AimsError, _E_CLOSED, _check, _decode
from ._lib import lib as _c


def _cfn(prefix, suffix):
    """The C function ``<prefix>_<suffix>``, or None when the library has none."""
    name = "%s_%s" % (prefix, suffix)
    return getattr(_c, name) if name in _lib.PROTOTYPES else None


def _noop_destroy(_ptr):
    """Borrowed handles (a bundle's model and pipeline, a node's services) are not
    ours to destroy."""


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
    """Base of the wrapper classes: close(), context manager, C calls with the
    object's error text, parameters by name."""

    _kind = "object"
    #: C name prefix ("aims_model"); a subclass that sets it gets the functions below.
    _c_prefix = None
    _c_destroy = _c_errmsg = None
    _c_setters = _c_getters = (None, None)
    #: For a wrapper made only by factories (Dataset.parse, Client.watch...): the text
    #: of the TypeError that calling the class itself raises.
    _no_init = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        no_init = cls.__dict__.get("_no_init")
        if no_init and "__init__" not in cls.__dict__:
            def __init__(self, *_args, **_kwargs):
                raise TypeError(no_init)
            cls.__init__ = __init__
        prefix = cls.__dict__.get("_c_prefix")
        if not prefix:
            return
        found = {
            "_c_destroy": _cfn(prefix, "destroy"),
            "_c_errmsg": _cfn(prefix, "errmsg"),
            "_c_setters": (_cfn(prefix, "set_param_i64"), _cfn(prefix, "set_param_f64")),
            "_c_getters": (_cfn(prefix, "get_param_i64"), _cfn(prefix, "get_param_f64")),
        }
        for attr, value in found.items():
            if attr not in cls.__dict__:  # a class may name its own (LoadOptions)
                setattr(cls, attr, value)

    def _adopt(self, ptr, destroy=None, parent=None):
        self._owner = _Owner(ptr, destroy or self._c_destroy, parent)

    @classmethod
    def _wrap(cls, ptr, destroy=None, parent=None):
        """A wrapper around an existing handle (constructors that are not __init__)."""
        self = object.__new__(cls)
        self._adopt(ptr, destroy, parent)
        return self

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

    def _call(self, fn, *args):
        """fn(handle, *args), raising AimsError with this object's error text."""
        ptr = self._ptr
        _check(fn(ptr, *args), self._c_errmsg, ptr)

    def _set_param(self, name, value, lead=()):
        _set_typed(self._ptr, self._c_setters, self._c_errmsg, name, value, lead)

    def _get_param(self, name, lead=()):
        return _get_typed(self._ptr, self._c_getters, self._c_errmsg, name, lead)

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


class _Params:
    """Mixin: the public ``set_param`` / ``get_param`` of objects whose parameters
    are plain (typed from aims_param_info, no value names)."""

    def set_param(self, name, value):
        """Set a parameter by name (int or float by its type); returns self."""
        self._set_param(name, value)
        return self

    def get_param(self, name):
        """Read a parameter by name (int or float by its type)."""
        return self._get_param(name)


def _ptr_or_none(obj, cls):
    """The handle of ``obj`` (a ``cls``), or NULL for None; TypeError otherwise."""
    if obj is None:
        return None
    if not isinstance(obj, cls):
        raise TypeError("expected an aims.%s or None, got %s"
                        % (cls.__name__, type(obj).__name__))
    return obj._ptr


def _errmsg_property():
    """The ``errmsg`` property of a wrapper whose C object has ``<prefix>_errmsg``."""
    return property(lambda self: _decode(self._c_errmsg(self._ptr)),
                    doc="Detail of the last failure recorded on this object.")


class _Borrowed:
    """Mixin: a handle owned by a host object (node, client); using it after the
    host closed raises AIMS_E_CLOSED instead of touching freed memory."""

    @property
    def _ptr(self):
        if self._host.closed:
            raise AimsError(_E_CLOSED, "the %s owning this %s is closed"
                            % (self._host._kind, self._kind))
        return _Handle._ptr.fget(self)


def _new_handle(call, *args):
    """Run a constructor-style call whose last argument is an out-pointer."""
    out = ctypes.c_void_p()
    _check(call(*args, ctypes.byref(out)))
    return out.value


def _path(p):
    return os.fsencode(p)


class _Stored:
    """save/load/parse for the objects kept in container files (pipelines, models,
    bundles): the C functions are aims_<object>_{save,load,parse} and, where it
    exists, aims_<object>_errmsg."""

    def save(self, path):
        """Write the object to path (atomic: temp file + rename)."""
        self._call(_cfn(self._c_prefix, "save"), _path(path))

    @classmethod
    def load(cls, path):
        """Load an object saved with save()."""
        return cls._wrap(_new_handle(_cfn(cls._c_prefix, "load"), _path(path)))

    @classmethod
    def parse(cls, data):
        """Load an object from the bytes of a saved file."""
        ptr_arg, size, keep = _bytes_arg(data)
        out = _new_handle(_cfn(cls._c_prefix, "parse"), ptr_arg, size)
        del keep
        return cls._wrap(out)
