"""Registry event watches (aims_events.h, docs/EVENTS.md).

Why a module of its own: an EventWatch is a running subscription with a thread
of its own in the library, not a request/reply object, and it keeps a ctypes
callback alive for exactly as long as the C watch can call it.

How: ``Client.watch(url, callback, epoch=0, from_revision=0)`` runs
aims_client_watch with a trampoline that turns each ``aims_event`` into an
``Event`` named tuple (kind as a name: "put", "delete", "expire", "weight",
"version", "resync", "model", "job"; for "model" and "job" the address is
the state text, docs/EVENTS.md) and calls ``callback(event)`` on the library's watch
thread, in registry order. Resume after a restart of the program by passing
the last event's ``epoch`` and ``revision``. ``close()`` (or the context
manager) stops the watch and waits for a running callback; it may be called
from inside the callback. An exception in the callback is printed by ctypes
and does not stop the watch.
"""

import collections
import ctypes

from . import _enums
from . import _lib
from ._errors import _decode
from ._handle import _Handle, _new_handle
from ._lib import lib as _c

_KINDS = _enums.values("enum aims_event_kind")

#: One registry event (aims_event): kind name, epoch, revision, instance id,
#: service ("name" or "name@version"), address, weight.
Event = collections.namedtuple("Event", "kind epoch revision id service address weight")


class EventWatch(_Handle):
    """A running watch of a registry's events (aims_event_watch), from
    ``Client.watch``. ``errmsg`` says why the last poll failed (an unreachable
    registry is not an error: the watch keeps polling and resumes)."""

    _kind = "EventWatch"
    _c_prefix = "aims_event_watch"
    _no_init = "use Client.watch(url, callback)"

    @classmethod
    def _start(cls, client, url, callback, epoch, from_revision):
        if not callable(callback):
            raise TypeError("callback must be callable")

        def trampoline(_user, evp):
            ev = evp.contents
            callback(Event(_KINDS.get(ev.kind, ev.kind), int(ev.epoch), int(ev.revision),
                           int(ev.id), _decode(ev.service), _decode(ev.address),
                           int(ev.weight)))
        cb = _lib.event_fn(trampoline)
        ptr = _new_handle(_c.aims_client_watch, client._ptr, str(url).encode("utf-8"),
                          int(epoch), int(from_revision), cb, None)
        self = cls._wrap(ptr)
        self._cb = cb            # the C watch calls it until close()
        self._client = client    # keeps the client alive while the watch runs
        return self

    @property
    def errmsg(self):
        """Why the watch's last poll failed ("" when it succeeded)."""
        return _decode(_c.aims_event_watch_errmsg(self._ptr))
