"""Mutual TLS for tls:// (aims_tls.h) for Python: aims.TlsConfig.

Why a module of its own: a TLS configuration is something nodes and clients
are given (Node.set_tls, Client.set_tls in _svc.py, which imports it); it was
declared in the prototype table without a wrapper.

How: TlsConfig wraps aims_tls_config. Nodes and clients take their own
reference (aims_node_set_tls, aims_client_set_tls), so the Python object may be
closed once given to them; files are read when set (and on reload()), so
errors name the file then.
"""

from ._handle import _Handle, _errmsg_property, _new_handle, _path
from ._lib import lib as _c


class TlsConfig(_Handle):
    """Mutual TLS for tls:// (aims_tls_config; docs/TLS.md).

    >>> tls = aims.TlsConfig(ca="ca.pem", cert="node.pem", key="node.key",
    ...                      peer_names=["client1.aims"])
    >>> node.set_tls(tls); node.listen("tls://127.0.0.1:0")
    >>> client.set_tls(aims.TlsConfig(ca="ca.pem", cert="client.pem", key="client.key"))

    Nodes and clients keep their own reference: the object may be closed after
    set_tls. ``reload()`` re-reads rotated files (new connections use them);
    ``identity`` is the identity the own certificate proves.
    """

    _kind = "TlsConfig"
    _c_prefix = "aims_tls_config"

    def __init__(self, ca=None, cert=None, key=None, peer_names=(), handshake_timeout_ms=None):
        self._adopt(_new_handle(_c.aims_tls_config_create))
        if ca is not None:
            self.set_ca(ca)
        if cert is not None or key is not None:
            self.set_cert(cert, key)
        for name in peer_names:
            self.add_peer_name(name)
        if handshake_timeout_ms is not None:
            self.set_handshake_timeout(handshake_timeout_ms)

    def _do(self, fn, *args):
        self._call(fn, *args)
        return self

    def set_ca(self, path):
        """Trust anchors: a PEM file of CA certificates or a directory of them."""
        return self._do(_c.aims_tls_config_set_ca, _path(path))

    def set_cert(self, chain_file, key_file):
        """Own certificate chain (PEM, leaf first) and its private key (PEM)."""
        return self._do(_c.aims_tls_config_set_cert,
                        None if chain_file is None else _path(chain_file),
                        None if key_file is None else _path(key_file))

    def add_peer_name(self, name):
        """Accept only peers whose certificate carries ``name`` (may repeat)."""
        return self._do(_c.aims_tls_config_add_peer_name, str(name).encode("utf-8"))

    def set_handshake_timeout(self, ms):
        """Bound on a server-side handshake, in ms."""
        return self._do(_c.aims_tls_config_set_handshake_timeout, int(ms))

    def reload(self):
        """Re-read the CA and certificate/key files (after rotation)."""
        return self._do(_c.aims_tls_config_reload)

    @property
    def identity(self):
        """The identity the own certificate gives ("" without one)."""
        raw = _c.aims_tls_config_identity(self._ptr)
        return raw.decode("utf-8") if raw else ""

    errmsg = _errmsg_property()
