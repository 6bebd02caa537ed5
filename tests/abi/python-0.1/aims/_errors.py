"""Status codes and exceptions (aims_core.h: aims_status).

Why a module of its own: every other module raises through ``_check``, and the
exception classes must exist before any of them. No status number is written
here: the codes and names come from the library at import time
(``aims_status_name``, which AIMS_STATUS_MAP generates), and the built-in each
status also subclasses is keyed by the status *name*.
"""

from concurrent import futures as _futures

from ._lib import lib as _c

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
#: {"AIMS_E_...": code}; the package re-exports each as a module constant.
STATUS_CODES = {_name: _code for _code, _name in STATUS_NAMES.items()}


def _status(name):
    """The code of the status called ``name`` ("AIMS_E_CLOSED"), from the library."""
    return STATUS_CODES[name]


_E_MISUSE = _status("AIMS_E_MISUSE")
_E_CLOSED = _status("AIMS_E_CLOSED")
_E_INTERNAL = _status("AIMS_E_INTERNAL")


class AimsError(Exception):
    """A libaims call failed.

    Attributes: ``code`` (int aims_status), ``name`` (e.g. "AIMS_E_CORRUPT"),
    ``message`` (the library's detail text; may name file, line, byte, parameter).

    ``AimsError(code, message)`` returns the subclass for that code (see
    ``ERRORS``), so callers may catch the matching Python built-in:
    ``except FileNotFoundError`` / ``LookupError`` (AIMS_E_NOTFOUND),
    ``ValueError`` (INVAL, RANGE, CORRUPT), ``OSError`` (IO), ``TimeoutError``,
    ``MemoryError``, ``PermissionError`` (DENIED), ``NotImplementedError`` (UNSUPPORTED), ``RuntimeError``
    (MISUSE, STATE, BACKEND, INTERNAL), ``concurrent.futures.CancelledError``
    (CANCELLED). OVERLOADED, CLOSED and EXISTS have no built-in that means the
    same thing and subclass AimsError only.
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
    # The futures' own "cancelled" (an Exception, unlike asyncio's BaseException).
    "AIMS_E_CANCELLED": (_futures.CancelledError,),
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
                   {"__doc__": doc, "__module__": "aims"})
        classes[code] = cls
    return classes


#: {code: AimsError subclass}, one per status the library names (not AIMS_OK).
ERRORS = _error_classes()


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

