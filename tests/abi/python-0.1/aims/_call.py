"""Call handles and cancellation (aims_cancel.h, docs/CANCEL.md).

Why a module of its own: a Call is the one wrapper whose C handle belongs to a
call in flight rather than to an object the user built; it stays out of the
already long _svc.py (which imports it for Client.call_start).

How: ``Client.call_start`` returns a ``Call`` over aims_client_call_start. The
request is copied by the library when it needs it, so it is released as soon
as the call started. ``wait()`` runs aims_call_wait (ctypes releases the GIL
while it blocks) and keeps the outcome, because the C handle hands its reply
out once: a second ``wait()`` returns (or raises) the same thing again.
``wait(timeout)`` polls aims_call_is_done, as the C wait is bounded only by
the call's own deadline. ``close()`` (and the context manager, and garbage
collection) runs aims_call_destroy, which cancels a call still running and
waits for it to end. The handler side (``aims.is_cancelled()``) lives in _svc.py,
next to the trampoline that records which request a thread runs.
"""

import time

from . import _enums
from ._errors import AimsError, _decode, _status
from ._handle import _Handle, _Owner, _new_handle
from ._lib import lib as _c
from ._msg import _msg_dict

_E_TIMEOUT = _status("AIMS_E_TIMEOUT")
_CALL_IDEMPOTENT = _enums.DEFINES["AIMS_CALL_IDEMPOTENT"]


class Call(_Handle):
    """A call in flight (aims_call), from ``Client.call_start``.

    >>> with client.call_start("echo", "ping", {"x": arr}, idempotent=True) as call:
    ...     if not call.done: call.cancel()
    ...     reply = call.wait()            # AimsCancelledError if the cancel won

    ``wait(timeout=None)`` returns the reply dict or raises AimsError (the call's
    status and error text); the outcome is kept, so waiting again gives the same
    result. ``cancel()`` may be called from any thread, any number of times.
    ``close()`` cancels a call still running, waits for it to end and frees the
    handle; using the Call afterwards raises AIMS_E_CLOSED. A Call may outlive
    its Client (closing the client ends the call with AIMS_E_CLOSED).
    """

    _kind = "Call"
    _c_prefix = "aims_call"
    _no_init = "use Client.call_start(service, method, request)"

    @classmethod
    def _start(cls, client, service, method, request, idempotent, timeout_ms):
        cptr = client._ptr
        req = client._request(request)
        try:
            ptr = _new_handle(_c.aims_client_call_start, cptr, str(service).encode("utf-8"),
                              str(method).encode("utf-8"), req.ptr,
                              _CALL_IDEMPOTENT if idempotent else 0, int(timeout_ms))
        finally:
            req.release()
        self = cls._wrap(ptr)
        self._service = "%s.%s" % (service, method)
        self._outcome = None     # (reply dict, None) or (None, AimsError) once waited
        return self

    @property
    def done(self):
        """True when the outcome is in (wait() will not block)."""
        return self._outcome is not None or _c.aims_call_is_done(self._ptr) == 1

    def cancel(self):
        """Cancel the call (it ends with AIMS_E_CANCELLED unless its outcome is
        already in; the instance drops it if queued, flags it if running).
        Idempotent; returns self."""
        self._call(_c.aims_call_cancel)
        return self

    @property
    def errmsg(self):
        """Error text of the call's outcome ("" while running or on success)."""
        if self._outcome is not None and self._outcome[1] is not None:
            return self._outcome[1].message
        return _decode(_c.aims_call_errmsg(self._ptr))

    def wait(self, timeout=None):
        """Wait for the outcome: the reply dict, or AimsError. ``timeout`` (seconds,
        None: the call's own deadline) raises AimsTimeoutError when the call is
        still running then (the call goes on; cancel() or wait again)."""
        ptr = self._ptr
        if self._outcome is None:
            if timeout is not None:
                end = time.monotonic() + float(timeout)
                pause = 0.0005
                while _c.aims_call_is_done(ptr) != 1:
                    left = end - time.monotonic()
                    if left <= 0:
                        raise AimsError(_E_TIMEOUT, "call to %s still running after "
                                                    "wait(timeout=%g)" % (self._service,
                                                                          timeout))
                    time.sleep(min(pause, left))
                    pause = min(pause * 2, 0.02)
            reply = _Owner(_new_handle(_c.aims_msg_create), _c.aims_msg_destroy)
            rc = _c.aims_call_wait(ptr, reply.ptr)
            if rc == 0:
                self._outcome = (_msg_dict(reply.ptr, reply), None)
            else:
                text = _decode(_c.aims_msg_error(reply.ptr)) or \
                    _decode(_c.aims_call_errmsg(ptr)) or _decode(_c.aims_errmsg())
                self._outcome = (None, AimsError(rc, text))
        result, exc = self._outcome
        if exc is not None:
            raise exc
        return result

    def close(self):
        """Cancel the call if it still runs, wait for it to end, free the handle
        (idempotent). The outcome already waited for stays readable only
        through the values wait() returned."""
        owner, self._owner = getattr(self, "_owner", None), None
        if owner is not None:
            owner.release()

    def __repr__(self):
        if self.closed:
            return "<aims.Call closed>"
        return "<aims.Call %s %s>" % (self._service, "done" if self.done else "running")

