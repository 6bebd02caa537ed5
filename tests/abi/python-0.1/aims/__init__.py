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

Layout. This file only re-exports: the code lives in one private module per
layer (docs/PYTHON.md), and ``aims.<name>`` is the only public spelling --
_errors (status codes, AimsError and its subclasses), _core (version, log,
parameters by name), _handle (the handle base: lifetime, errmsg, typed params,
save/load/parse), _arrays (numpy / buffer conversion), _data (LoadOptions,
Dataset), _pipeline, _model (Model, Trainer, Eval, Bundle), _orch (Registry,
Balancer, Health, Metrics), _msg (Msg, Tensor), _svc (Node, Service, Client,
Policy); _lib declares the C prototypes, _enums is generated from the headers.
"""

# ctypes, json and os were public names of the single-file package: kept importable
# as aims.ctypes / aims.json / aims.os so that dir(aims) is unchanged.
import ctypes  # noqa: F401
import json  # noqa: F401
import os  # noqa: F401

from . import _lib
from ._arrays import HAVE_NUMPY, _float_matrix, _np  # noqa: F401 (tests use _np, _float_matrix)
from ._core import (LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_OFF, LOG_WARN, alloc_live,
                    build_info, param_info, set_log, version, version_number)
from ._data import Dataset, Format, LoadOptions
from ._errors import ERRORS, STATUS_CODES as _STATUS_CODES, STATUS_NAMES, AimsError, \
    status_name, strerror
from ._model import METRICS, STATS, Bundle, Eval, Model, Trainer
from ._msg import DTYPES, Msg, Tensor
from ._orch import EVENTS, HEALTH_STATES, LB_POLICIES, Balancer, Health, Metrics, Registry
from ._pipeline import Pipeline, StepKind
from ._svc import (AUDIT_ACTIONS, SVC_STATS, TRAIN_STATES, Client, Node, Policy, Service,
                   request_deadline_ns)
from ._svc import _HANDLER_THUNK, _handlers, _token  # noqa: F401 (used by the tests)
from ._call import Call
from ._events import Event, EventWatch
from ._http import HttpServer
from ._svc import is_cancelled
from ._tlsconfig import TlsConfig

__all__ = [
    "AimsError", "LoadOptions", "Dataset", "Pipeline", "Format", "StepKind",
    "version", "version_number", "build_info", "strerror", "alloc_live", "set_log",
    "param_info", "HAVE_NUMPY", "Model", "Trainer", "Eval", "Bundle", "METRICS", "STATS",
    "Registry", "Balancer", "Health", "Metrics", "LB_POLICIES", "EVENTS", "HEALTH_STATES",
    "Msg", "Node", "Service", "Client", "Tensor", "DTYPES", "SVC_STATS", "TRAIN_STATES",
    "request_deadline_ns", "Policy", "AUDIT_ACTIONS",
]
__all__ += ["Call", "is_cancelled", "HttpServer", "TlsConfig", "Event", "EventWatch"]

# Status codes as module constants (aims.AIMS_E_NOMEM ...) and one exception class
# per status (aims.AimsNoMemError ...), all from the library at import time.
globals().update(_STATUS_CODES)
for _cls in ERRORS.values():
    globals()[_cls.__name__] = _cls
__all__ += ["status_name", "STATUS_NAMES", "ERRORS"] + [c.__name__ for c in ERRORS.values()]

# The classes are defined in the layer modules but are aims.X to their users
# (repr, pickling, help): give them the package as their module.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _cls, _name, _obj

__version__ = version()
