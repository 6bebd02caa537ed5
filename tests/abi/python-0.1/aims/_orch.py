"""Orchestration primitives (aims_orch.h): registry, balancer, health, metrics.

Policy names, event kinds and health states come from the generated enum table
(_enums). Callbacks handed to C are ctypes thunks the object keeps alive.
"""

import ctypes

from . import _enums
from . import _lib
from ._core import _enum
from ._errors import _check, _decode, _status
from ._handle import _Handle, _new_handle
from ._lib import lib as _c

#: aims_lb_policy values by name.
LB_POLICIES = _enums.names("enum aims_lb_policy")
#: aims_event_kind values -> names.
EVENTS = _enums.values("enum aims_event_kind")
#: aims_health_state values -> names.
HEALTH_STATES = _enums.values("enum aims_health_state")
_E_RANGE = _status("AIMS_E_RANGE")


def _clock_cb(fn):
    """Wrap a Python clock (returns nanoseconds) as an aims_clock_fn; None -> NULL."""
    if fn is None:
        return _lib.clock_fn()
    return _lib.clock_fn(lambda _user: int(fn()))


def _set_clock(obj, setter, clock):
    """setter(handle, clock thunk, NULL); the object keeps the thunk alive."""
    cb = _clock_cb(clock)
    _check(setter(obj._ptr, cb, None))
    obj._clock = cb


class Registry(_Handle):
    """Service registry (aims_registry): instances with leases, revisions, watches.

    Callbacks run on a thread that calls into the registry; the object keeps every
    callback it was given alive until it is closed.
    """

    _kind = "Registry"
    _c_prefix = "aims_registry"

    def __init__(self, clock=None):
        self._adopt(_new_handle(_c.aims_registry_create))
        self._callbacks = {}
        self._clock = None
        if clock is not None:
            self.set_clock(clock)

    def set_clock(self, clock):
        """Install a clock: a callable returning monotonic nanoseconds (None: default)."""
        _set_clock(self, _c.aims_registry_set_clock, clock)

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
            if rc == _E_RANGE and n.value > cap:
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

    def publish(self, name, version, owner, meta=None):
        """Publish model version name@version exactly once (docs/PUBLISH.md);
        raises AimsError (AIMS_E_EXISTS, "... already published by OWNER") if
        somebody did before."""
        _check(_c.aims_registry_publish(self._ptr, str(name).encode(), str(version).encode(),
                                        str(owner).encode(),
                                        None if meta is None else str(meta).encode()))

    def publication(self, name, version):
        """(owner, meta) of a published version; raises AimsError (NOTFOUND) if none."""
        owner = ctypes.create_string_buffer(129)
        meta = ctypes.create_string_buffer(1025)
        _check(_c.aims_registry_get_publication(self._ptr, str(name).encode(),
                                                str(version).encode(), owner, len(owner),
                                                meta, len(meta)))
        return owner.value.decode(), meta.value.decode()

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
    _c_prefix = "aims_balancer"

    def __init__(self, policy="p2c", seed=1, clock=None):
        pol = _enum(policy, LB_POLICIES, "policy")
        self._adopt(_new_handle(_c.aims_balancer_create, pol, int(seed)))
        self._clock = None
        if clock is not None:
            _set_clock(self, _c.aims_balancer_set_clock, clock)

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
    _c_prefix = "aims_health"

    def __init__(self, clock=None, on_change=None, **params):
        self._adopt(_new_handle(_c.aims_health_create))
        self._clock = None
        self._on_change = None
        if clock is not None:
            _set_clock(self, _c.aims_health_set_clock, clock)
        for name, value in params.items():
            self._set_param(name, value)
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
    _c_prefix = "aims_metrics"

    def __init__(self):
        self._adopt(_new_handle(_c.aims_metrics_create))

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


