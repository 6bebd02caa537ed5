"""The HTTP front door of a node (aims_http.h) for Python.

Why a module of its own: a server is something a node is given rather than
something it is; keeping it here (above _svc in the layers) leaves _svc.py at
nodes, services, clients.

How: ``HttpServer`` wraps aims_http over a ``Node``. The C server borrows its
node and must stop before the node is destroyed, so the server registers
itself with the node (``Node._dependents``, a weak set that ``_Host._close``
closes first) and holds the node's handle (its ``_Owner``) as long as it
lives.
"""

import ctypes
import weakref

from ._errors import _check
from ._handle import _Handle, _errmsg_property, _new_handle
from ._lib import lib as _c
from ._svc import Node
from ._tlsconfig import TlsConfig


def _param_name(name):
    """HTTP parameters by their table name ("http_threads") or without the
    prefix ("threads")."""
    name = str(name)
    return name if name.startswith("http_") else "http_" + name


class HttpServer(_Handle):
    """An HTTP front door of a node (aims_http; routes and JSON in docs/HTTP.md):
    KServe v2 REST inference for the node's infer services, health probes
    (/v2/health/live, /v2/health/ready), Prometheus text at /metrics, a status page.

    >>> with aims.HttpServer(node, threads=2) as http:
    ...     http.start()
    ...     urllib.request.urlopen(http.url + "/v2/health/ready")

    ``listen``: "HOST:PORT" (default "127.0.0.1:0", a free loopback port); a
    non-loopback HOST needs ``insecure=1``. Parameters (by name, with or without
    the "http_" prefix): threads, max_connections, max_body, max_header,
    idle_timeout_s, timeout_ms, insecure; set before start(). Closing the node
    stops and frees its servers first. A library built without HTTP raises
    AimsUnsupportedError ("built without HTTP") here.
    """

    _kind = "HttpServer"
    _c_prefix = "aims_http"

    def __init__(self, node, listen=None, **params):
        if not isinstance(node, Node):
            raise TypeError("expected an aims.Node, got %s" % type(node).__name__)
        node_owner = node._owner if not node.closed else None
        self._adopt(_new_handle(_c.aims_http_create, node._ptr), parent=node_owner)
        self._node = weakref.ref(node)
        node.__dict__.setdefault("_dependents", weakref.WeakSet()).add(self)
        for name, value in params.items():
            self.set_param(name, value)
        if listen is not None:
            self.set_listen(listen)

    def set_param(self, name, value):
        """Set a server parameter by name (before start); returns self."""
        self._set_param(_param_name(name), value)
        return self

    def set_listen(self, addr):
        """Listen on "HOST:PORT" (before start); returns self."""
        self._call(_c.aims_http_set_listen, str(addr).encode("utf-8"))
        return self

    def set_tls(self, tls):
        """Serve HTTPS with the certificate and key of ``tls`` (an aims.TlsConfig
        with set_cert), read now (aims_https.h); before start(); returns self.
        The URL then starts with "https://". When ``tls`` has a CA and peer
        names (TlsConfig(..., peer_names=[...])) the door requires
        client certificates from that CA with one of those names (403
        otherwise) and the policy sees the certificate name (aims_https.h)."""
        if not isinstance(tls, TlsConfig):
            raise TypeError("expected an aims.TlsConfig, got %s" % type(tls).__name__)
        self._call(_c.aims_http_set_tls, tls._ptr)
        return self

    def start(self):
        """Bind and serve on the server's own threads; returns self."""
        self._call(_c.aims_http_start)
        return self

    def stop(self):
        """Stop serving (requests already in the node finish); may start again."""
        _c.aims_http_stop(self._ptr)
        return self

    @property
    def url(self):
        """Base URL ("http://127.0.0.1:PORT"), once started."""
        ptr = self._ptr
        buf = ctypes.create_string_buffer(128)
        n = ctypes.c_size_t()
        _check(_c.aims_http_url(ptr, buf, 128, ctypes.byref(n)), self._c_errmsg, ptr)
        return buf.value.decode("utf-8")

    errmsg = _errmsg_property()

    def close(self):
        """Stop and free the server now (idempotent)."""
        owner, self._owner = getattr(self, "_owner", None), None
        if owner is not None:
            owner.release()

    def __repr__(self):
        if self.closed:
            return "<aims.HttpServer closed>"
        try:
            return "<aims.HttpServer %s>" % self.url
        except Exception:
            return "<aims.HttpServer not started>"
