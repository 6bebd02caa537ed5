"""Services (aims_svc.h, aims_policy.h): nodes, services, clients, policies.

Why these live together: Python code that the library calls (handlers,
completion callbacks) is reached through two process-wide C thunks and token
tables here, and nodes and clients -- the two objects that own threads -- share
one base (_Host): both close for real on close() (not when the last reference
goes), refuse to close from inside their own callbacks, keep alive what the C
side borrows, expose their errmsg and metrics, and are closed at interpreter
exit when still open. Statistic names, audit actions and the idempotent-call flag
come from the generated enum table (_enums); status codes from the library.
"""

import atexit as _atexit
import ctypes
import threading as _threading
import weakref as _weakref
from concurrent.futures import Future as _Future

from . import _enums
from . import _lib
from ._call import Call
from ._core import _enum, _set_typed
from ._events import EventWatch
from ._errors import AimsError, _E_CLOSED, _E_INTERNAL, _E_MISUSE, _check, _decode, _status
from ._handle import _Borrowed, _Handle, _Owner, _errmsg_property, _new_handle, \
    _noop_destroy, _path, _ptr_or_none
from ._lib import lib as _c
from ._model import Bundle
from ._msg import Msg, _msg_dict, _msg_fill
from ._orch import LB_POLICIES, Metrics, Registry
from ._pipeline import Pipeline
from ._tlsconfig import TlsConfig

_CALL_IDEMPOTENT = _enums.DEFINES["AIMS_CALL_IDEMPOTENT"]
#: aims_service_stat values by name (Service.stat).
SVC_STATS = _enums.names("enum aims_service_stat")
#: Train-service job states (the "state" reply tensor). Not a public C enum (the
#: train service's wire values, src/svc/svc_train.c), so written here.
TRAIN_STATES = {0: "queued", 1: "running", 2: "done", 3: "failed", 4: "cancelled"}
#: Audited actions (aims_audit_action), by value.
AUDIT_ACTIONS = _enums.values("enum aims_audit_action")
_CANARY_STATES = _enums.values("enum aims_canary_state")
_E_RANGE = _status("AIMS_E_RANGE")
_E_DENIED = _status("AIMS_E_DENIED")


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
_EXC_STATUS = tuple((cls, _status(name)) for cls, name in (
    (MemoryError, "AIMS_E_NOMEM"), (TimeoutError, "AIMS_E_TIMEOUT"),
    (NotImplementedError, "AIMS_E_UNSUPPORTED"), (KeyError, "AIMS_E_NOTFOUND"),
    (LookupError, "AIMS_E_RANGE"), (ValueError, "AIMS_E_INVAL"), (TypeError, "AIMS_E_INVAL"),
    (OSError, "AIMS_E_IO")))


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
        prev_req = getattr(_tls, "req", None)
        _tls.in_callback = True
        _tls.deadline_ns = deadline_ns
        _tls.req = req      # the running request, for is_cancelled() below
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
            _tls.req = prev_req
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


def is_cancelled(request=None):
    """Inside a Python handler: True once the caller cancelled the request this
    thread is running (Call.cancel, a CANCEL frame, or a hedge that lost).

    A long handler polls it and returns early (any reply or exception: nobody
    waits for it any more). ``request`` (the handler's request dict) is accepted
    for readability and ignored: the request is the one running on this
    thread. Outside a handler it is False.
    """
    del request
    req = getattr(_tls, "req", None)
    return bool(req) and _c.aims_msg_is_cancelled(req) == 1


def _not_in_callback(what):
    if getattr(_tls, "in_callback", False):
        raise AimsError(_E_MISUSE, "%s from inside a handler or completion callback would "
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



class _HostMetrics(_Borrowed, Metrics):
    """The metrics object of a node or client (owned by it)."""

    @classmethod
    def _of(cls, ptr, host):
        self = object.__new__(cls)
        self._host = host
        self._adopt(ptr, _noop_destroy)
        return self


def _svc_value(name, value):
    """A node/service/client parameter value: lb_policy may be given by name."""
    if name == "lb_policy" and isinstance(value, str):
        return _enum(value, LB_POLICIES, "policy")
    return value


def _registry_ptr(registry):
    if not isinstance(registry, Registry):
        raise TypeError("expected an aims.Registry, got %s" % type(registry).__name__)
    return registry._ptr



class Policy(_Handle):
    """Authorization policy (aims_policy; file format in docs/POLICY.md).

    >>> pol = Policy(text="allow uid:1000 call echo/*\\n")
    >>> pol.check("uid:1000", "call", "echo/ping")      # True
    >>> node.set_policy(pol)                            # deny by default from now on
    """

    _kind = "Policy"
    _c_prefix = "aims_policy"

    def __init__(self, path=None, text=None, name=None):
        self._adopt(_new_handle(_c.aims_policy_create))
        if path is not None:
            self.load_file(path)
        if text is not None:
            self.load_string(text, name)

    def _call(self, fn, *args):
        _Handle._call(self, fn, *args)
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
        if rc == _E_DENIED:
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


def _set_tls(host, fn, tls):
    if not isinstance(tls, TlsConfig):
        raise TypeError("expected an aims.TlsConfig, got %s" % type(tls).__name__)
    host._call(fn, tls._ptr)
    return host


class _Host(_Handle):
    """Base of Node and Client: objects that own library threads.

    close() stops and frees the C object now (not when the last reference goes),
    and refuses to run from inside one of its own callbacks (it would wait for
    itself). ``_keep`` holds what the C object borrows (registries, bundles,
    pipelines, policies, thunks) until it is destroyed.
    """

    def _adopt_host(self, ptr, on_destroy=None):
        keep = []    # objects the C side borrows, released after it is destroyed
        c_destroy = self._c_destroy

        def destroy(p):
            c_destroy(p)
            if on_destroy is not None:
                on_destroy()
            del keep[:]

        self._adopt(ptr, destroy)
        self._keep = keep
        _live.add(self)

    def set_param(self, name, value):
        self._set_param(name, _svc_value(name, value))
        return self

    def _keep_registry(self, fn, registry):
        self._call(fn, _registry_ptr(registry))
        self._keep.append(registry._owner)
        return self

    def _metrics(self):
        ptr = getattr(_c, self._c_prefix + "_metrics")(self._ptr)
        if not ptr:
            raise AimsError(_E_CLOSED, "%s has no metrics" % self._kind.lower())
        return _HostMetrics._of(ptr, self)

    errmsg = _errmsg_property()

    def _close(self):
        if self.closed:
            return
        _not_in_callback("%s.close()" % self._kind)
        for dep in list(self.__dict__.get("_dependents", ())):
            dep.close()     # HTTP servers borrow the node: they stop first (_http.py)
        owner, self._owner = self._owner, None
        owner.release()


class Node(_Host):
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
    _c_prefix = "aims_node"

    def __init__(self, name, registry=None, **params):
        tokens = []      # this node's handler tokens

        def forget_handlers():
            for t in tokens:
                _handlers.pop(t, None)
            del tokens[:]

        self._adopt_host(_new_handle(_c.aims_node_create, str(name).encode("utf-8")),
                         forget_handlers)
        self._name = str(name)
        self._tokens = tokens
        self._bundles = {}
        self._nlisten = 0
        for pname, value in params.items():
            self.set_param(pname, value)
        if registry is not None:
            self.set_registry(registry)

    @property
    def name(self):
        return self._name

    def set_param(self, name, value):
        """Set a node parameter by name (workers, max_frame, conn_inflight,
        heartbeat_ms, insecure, drain_ms, drain_grace_ms); before listen. Returns self."""
        return _Host.set_param(self, name, value)

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
            if rc == _E_RANGE and n.value + 1 > cap:
                cap = n.value + 1
                continue
            _check(rc, self._c_errmsg, ptr)
            return buf.value.decode("utf-8")

    @property
    def addresses(self):
        return [self.address(i) for i in range(self._nlisten)]

    def set_registry(self, registry):
        """Register services started here in ``registry`` (kept alive by the node)."""
        return self._keep_registry(_c.aims_node_set_registry, registry)

    def host_registry(self, registry):
        """Serve ``registry`` as "aims.registry" on this node (implies set_registry)."""
        return self._keep_registry(_c.aims_node_host_registry, registry)

    def join(self, url):
        """Register this node's services in the registry hosted at ``url``."""
        self._call(_c.aims_node_join, str(url).encode("utf-8"))
        return self

    def publish_version(self, name, version, owner, meta=None):
        """Publish model version name@version exactly once through this node's
        registry (docs/PUBLISH.md); AimsError AIMS_E_EXISTS names the winner."""
        self._call(_c.aims_node_publish_version, str(name).encode(), str(version).encode(),
                   str(owner).encode(), None if meta is None else str(meta).encode())

    def set_tls(self, tls):
        """Serve and dial tls:// with ``tls`` (an aims.TlsConfig; the node takes
        its own reference). Returns self."""
        return _set_tls(self, _c.aims_node_set_tls, tls)

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

    metrics = property(_Host._metrics,
                       doc="The node's Metrics (per service and instance; owned by the node).")

    # ---- services ------------------------------------------------------------------
    def add_handler(self, name, handler, **params):
        return Service.add_handler(self, name, handler, **params)

    def add_infer(self, name, bundle, **params):
        return Service.add_infer(self, name, bundle, **params)

    def add_preprocess(self, name, pipeline, **params):
        return Service.add_preprocess(self, name, pipeline, **params)

    def add_train(self, name, pipeline=None, **params):
        return Service.add_train(self, name, pipeline, **params)

    def add_optimize(self, name, **params):
        return Service.add_optimize(self, name, **params)

    def close(self):
        """Stop every service, close listeners, join threads, free (idempotent)."""
        self._close()

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
    _c_prefix = "aims_service"
    _no_init = "use Node.add_handler/add_infer/add_preprocess/add_train"

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
        pp = _ptr_or_none(pipeline, Pipeline)
        if pipeline is not None:
            node._keep.append(pipeline._owner)
        return cls._make(node, name, _c.aims_service_add_train, (pp,), params)

    @classmethod
    def add_optimize(cls, node, name, **params):
        """An optimize service ("optimize": "bundle", "x", "y", "max_drop" -> the
        int8 bundle and both models' accuracy/size/latency; docs/OPTIMIZE.md)."""
        return cls._make(node, name, _c.aims_service_add_optimize, (), params)

    @property
    def name(self):
        return self._name

    @property
    def node(self):
        return self._host

    def set_param(self, name, value):
        """Set a service parameter by name (concurrency, queue_cap, batch_max,
        batch_delay_us, inline, weight); before start. Returns self."""
        _set_typed(self._ptr, self._c_setters, None, name, _svc_value(name, value))
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

    def set_store(self, store):
        """Train services: keep the jobs in ``store`` ("dir:/shared/path[?lease_ms=N]"),
        shared by every instance, so a job survives its node (docs/JOBS.md); before
        the first submit. Returns self."""
        _check(_c.aims_service_set_store(self._ptr, str(store).encode("utf-8")))
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

    def set_model_dir(self, path):
        """Infer services: let "load"/"deploy" requests name bundle files under
        ``path`` only (None: refuse paths); docs/LIFECYCLE.md."""
        _check(_c.aims_service_set_model_dir(self._ptr, None if path is None else _path(path)))
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


class Client(_Host):
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
    _c_prefix = "aims_client"

    def __init__(self, registry=None, join=None, **params):
        self._adopt_host(_new_handle(_c.aims_client_create))
        for pname, value in params.items():
            self.set_param(pname, value)
        if registry is not None:
            self.use_registry(registry)
        if join is not None:
            self.join(join)

    def set_param(self, name, value):
        """Set a client parameter by name (timeout_ms, retry_budget, retry_min,
        max_attempts, lb_policy (name or number), max_pending, sync_ms, backoff_ms,
        hedge_ms: -1 off, N ms, 0 adaptive; for idempotent calls, docs/CANCEL.md)."""
        return _Host.set_param(self, name, value)

    def set_tls(self, tls):
        """Dial tls:// with ``tls`` (an aims.TlsConfig; the client takes its own
        reference). Returns self."""
        return _set_tls(self, _c.aims_client_set_tls, tls)

    def use_registry(self, registry):
        return self._keep_registry(_c.aims_client_set_registry, registry)

    def join(self, url):
        self._call(_c.aims_client_join, str(url).encode("utf-8"))
        return self

    def publish_version(self, name, version, owner, meta=None):
        """Publish model version name@version exactly once through the client's
        registry (docs/PUBLISH.md); AimsError AIMS_E_EXISTS names the winner."""
        self._call(_c.aims_client_publish_version, str(name).encode(), str(version).encode(),
                   str(owner).encode(), None if meta is None else str(meta).encode())

    def set_token(self, token):
        """Attach a bearer token (JWT) to every call from now on (None: stop);
        calling it again renews it (aims_client_set_token)."""
        self._call(_c.aims_client_set_token,
                   None if token is None else str(token).encode("ascii"))
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

    def call_start(self, service, method, request=None, idempotent=False, timeout_ms=0):
        """Start a call and return an aims.Call handle: wait(), done, cancel(),
        close() (docs/CANCEL.md, _call.py)."""
        return Call._start(self, service, method, request, idempotent, timeout_ms)

    def watch(self, url, callback, epoch=0, from_revision=0):
        """Watch the registry at ``url`` (its service address) and call
        ``callback(aims.Event)`` for every change, in order, on a library thread;
        returns an aims.EventWatch (close() stops it). Pass the last event's
        ``epoch`` and ``revision`` to resume without gaps (docs/EVENTS.md)."""
        return EventWatch._start(self, url, callback, epoch, from_revision)

    # ---- the model lifecycle of infer services (aims_lifecycle.h, docs/LIFECYCLE.md):
    # each call goes to every live instance of ``service``.

    def _life(self, fn, service, *args):
        _not_in_callback("Client model lifecycle calls")
        self._call(fn, str(service).encode("utf-8"), *args)
        return self

    @staticmethod
    def _source(bundle, path):
        if (bundle is None) == (path is None):
            raise ValueError("give exactly one of bundle (bytes of a saved bundle) and path")
        if path is not None:
            return None, 0, str(path).encode("utf-8")
        data = bytes(bundle)
        return data, len(data), None

    def load_version(self, service, version, bundle=None, path=None, timeout_ms=0):
        """Load ``version`` (bundle file bytes, or a path under the service's model
        directory) with weight 0; returns self."""
        data, n, p = self._source(bundle, path)
        return self._life(_c.aims_client_load_version, service, str(version).encode("utf-8"),
                          data, n, p, int(timeout_ms))

    def unload_version(self, service, version, timeout_ms=0):
        """Unload a version without traffic; returns self."""
        return self._life(_c.aims_client_unload_version, service,
                          str(version).encode("utf-8"), int(timeout_ms))

    def set_version_weight(self, service, version, weight, timeout_ms=0):
        """Set ``version``'s traffic weight (0..10000); returns self."""
        return self._life(_c.aims_client_set_version_weight, service,
                          str(version).encode("utf-8"), int(weight), int(timeout_ms))

    def rollback(self, service, timeout_ms=0):
        """Give all traffic back to the previous version; returns self."""
        return self._life(_c.aims_client_rollback, service, int(timeout_ms))

    def canary_start(self, service, version, bundle=None, path=None, percent=10, rule=None,
                     timeout_ms=0):
        """Deploy ``version`` as a canary at ``percent`` % judged by ``rule``
        ("key=value ..." or None for the defaults); returns self."""
        data, n, p = self._source(bundle, path)
        return self._life(_c.aims_client_canary_start, service, str(version).encode("utf-8"),
                          data, n, p, int(percent),
                          None if rule is None else str(rule).encode("utf-8"), int(timeout_ms))

    def canary_state(self, service, timeout_ms=0):
        """"none", "running", "promoted" or "rolled_back" over every instance."""
        out = ctypes.c_int()
        self._life(_c.aims_client_canary_state, service, ctypes.byref(out), int(timeout_ms))
        return _CANARY_STATES.get(out.value, out.value)

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

    metrics = property(_Host._metrics, doc="The client's Metrics (calls, errors, retries, "
                                           "latency; owned by the client).")

    def close(self):
        """Fail pending calls with AIMS_E_CLOSED, close connections, free now."""
        self._close()

    def __repr__(self):
        return "<aims.Client%s>" % (" closed" if self.closed else "")

